"""Loading a run configuration: YAML (with ``extends``), ``--set a.b=c`` overrides, typed parsing.

``load_config(path, overrides)`` reads the file, applies overrides such as ``train.epochs=3`` or
``teachers.0.replicas=2``, checks every field's type (``schema.py``) and then the rules that span fields
(``checks.validate``). Every problem is one ``ConfigError`` naming the key, before Ray starts.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from tinyllm_ray.config.checks import is_local_model, validate
from tinyllm_ray.config.schema import Config, ConfigError
from tinyllm_ray.input_checks import FILE, clip, require_problem, shorten


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; configs mean a float (learning rates), as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


# Limits on what a config may be. Configs are a few kB with a handful of levels; these stop hostile or broken
# input (a YAML alias "bomb" that expands 300 bytes into millions of values, thousand-level nesting, a
# number with thousands of digits) with one clear error instead of a hang, a crash or a flooded console.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_INT_DIGITS = 19  # any setting fits in 64 bits


def parse_yaml(text: str) -> Any:
    """YAML text as plain data, refusing input past the limits above (``ConfigError``)."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"YAML nested more than {MAX_DEPTH} levels deep") from None
        if node is None:
            return None
        _check_node(node, 0, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_node(node: yaml.Node, depth: int, seen: dict[int, tuple[int, int]], path: set[int]) -> tuple[int, int]:
    """(values, levels) of ``node`` with every alias expanded; raises past the limits. Aliases share their
    node object, so ``seen`` makes this linear in the text, not in the expansion."""
    where = f"line {node.start_mark.line + 1}"
    if id(node) in path:
        raise ConfigError(f"YAML {where}: an alias refers to a value that contains it")
    if id(node) in seen:
        size, height = seen[id(node)]
    elif isinstance(node, yaml.ScalarNode):
        digits = sum(c.isdigit() for c in node.value)
        if node.tag == "tag:yaml.org,2002:int" and digits > MAX_INT_DIGITS:
            raise ConfigError(f"YAML {where}: integer {shorten(node.value, 40)} has {digits} digits "
                              f"(at most {MAX_INT_DIGITS})")
        size, height = 1, 0
    else:
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        path.add(id(node))
        size, height = 1, 0
        for child in children:
            child_size, child_height = _check_node(child, depth + 1, seen, path)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_VALUES:
                raise ConfigError(f"YAML {where}: more than {MAX_VALUES} values once aliases are expanded")
        path.discard(id(node))
        seen[id(node)] = size, height
    if depth + height > MAX_DEPTH:
        raise ConfigError(f"YAML {where}: nested more than {MAX_DEPTH} levels deep")
    return size, height


_ADAPTER = TypeAdapter(Config)
MAX_ERRORS = 20


def _section_type(loc: Sequence[Any]) -> type | None:
    """The config dataclass at ``loc`` (``("teachers", 0)`` -> ``TeacherConfig``), None where it is not one."""
    current: Any = Config
    for part in loc:
        if isinstance(part, int) or str(part).isdigit():
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[0] if typing.get_origin(current) is list and args else None
        elif dataclasses.is_dataclass(current):
            current = typing.get_type_hints(current).get(str(part))
        else:
            return None
        while typing.get_origin(current) in (typing.Union, types.UnionType, typing.Annotated):
            options = [a for a in typing.get_args(current) if a is not type(None)]
            current = options[0] if options else None
    return current if dataclasses.is_dataclass(current) else None


def closest_key(loc: Sequence[Any]) -> str | None:
    """The known key closest to an unknown one at ``loc`` (``train.lrr`` -> ``train.lr``), None when none is close."""
    section = _section_type(loc[:-1])
    if section is None:
        return None
    names = [f.name for f in dataclasses.fields(section)]
    near = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return ".".join([*map(str, loc[:-1]), near[0]]) if near else None


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a ``Config`` from plain data, raising ``ConfigError`` that names every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        lines = [f"{source}: invalid configuration:"]
        errors = err.errors()
        for e in errors[:MAX_ERRORS]:
            key = shorten(".".join(str(p) for p in e["loc"]) or "(top level)")
            got = "" if e["type"] == "missing" else f" (got {clip(e.get('input'))})"
            msg = e["msg"]
            if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                near = closest_key(e["loc"])
                msg = "unknown key" + (f" (did you mean {near}?)" if near else "")
            lines.append(f"  {key}: {msg}{got}")
        if len(errors) > MAX_ERRORS:
            lines.append(f"  ... and {len(errors) - MAX_ERRORS} more")
        raise ConfigError("\n".join(lines)) from None


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (``3``, ``true``, ``[1]``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {clip(assignment)}: expected KEY=VALUE, e.g. train.epochs=3")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {clip(assignment)}: malformed key {clip(key)}")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {shorten(key)}: value is not valid YAML: {shorten(str(err))}") from None
    except ConfigError as err:
        raise ConfigError(f"--set {shorten(key)}: {err}") from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, ".".join(parts[: i + 1]))]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")


def _list_index(items: list, part: str, where: str) -> int:
    if not re.fullmatch(r"\d+", part) or int(part) >= len(items):
        raise ConfigError(f"--set: {where}: expected an index below {len(items)}")
    return int(part)


def read_yaml_file(path: Path, what: str = "config file", note: str = "") -> Any:
    """The YAML data of one file, after checking it is a readable regular file of at most
    ``MAX_CONFIG_BYTES`` (a FIFO or a directory is refused, never opened); every failure is a ``ConfigError``."""
    problem = require_problem(path, FILE)
    if problem == "does not exist":
        raise ConfigError(f"{what} not found: {path}{note}")
    if problem:
        raise ConfigError(f"{what} {path} {problem}{note}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what} {path} is {size} bytes; a config is at most {MAX_CONFIG_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 at byte {err.start}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {shorten(str(err), 600)}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as plain data, with ``extends: other.yaml`` (relative to the file) merged under it:
    mappings merge key by key, anything else (lists included) is replaced by the extending file."""
    raw = read_yaml_file(path, "config file", f" (extended by {chain[-1]})" if chain else "") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    inline_prompt_files(raw, path.parent, str(path))
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {clip(base)}")
    parent = (path.parent / base).resolve()
    if parent in chain or parent == path.resolve():
        raise ConfigError(f"{path}: extends: {base} extends itself (cycle)")
    return _merge(read_yaml(parent, (*chain, path.resolve())), raw)


def inline_prompt_files(raw: dict[str, Any], base_dir: Path, where: str) -> None:
    """Replace each ``teachers[i].prompt`` given as a file name (a YAML template: a mapping of the same keys,
    relative to ``base_dir``, the directory of the config that names it) by that file's mapping, in place; the
    run directory's saved config then holds the words themselves."""
    teachers = raw.get("teachers")
    if not isinstance(teachers, list):
        return
    for i, teacher in enumerate(teachers):
        if not isinstance(teacher, dict) or not isinstance(teacher.get("prompt"), str):
            continue
        file = base_dir / Path(teacher["prompt"]).expanduser()
        words = read_yaml_file(file, f"teachers.{i}.prompt: template file", f" (named in {where})")
        if not isinstance(words, dict):
            raise ConfigError(f"teachers.{i}.prompt: template file {file} must hold a mapping of prompt keys "
                              f"(instruction, explain_request, ...), got {type(words).__name__}")
        teacher["prompt"] = words


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _unshared(value: Any) -> Any:
    """A copy of plain YAML data in which no two places share a mapping or a list (the limits in
    ``parse_yaml`` bound its size and depth)."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def load_config(path: str | os.PathLike, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """Read a YAML config, apply ``--set`` overrides, check types and cross-field rules.

    ``check_paths=False`` leaves model directories unchecked (``prepare.prepare`` checks them after
    building the tiny models a config may ask for).
    """
    path = Path(path)
    raw = read_yaml(path)
    raw = _unshared(raw)  # YAML aliases share one object: an override of one must not change the others
    for assignment in overrides:
        apply_override(raw, assignment)
    inline_prompt_files(raw, Path.cwd(), "--set")  # a template named on the command line: relative to here
    config = from_dict(raw, source=str(path))
    validate(config, source=str(path), check_paths=check_paths)
    return config


def with_absolute_paths(config: Config) -> Config:
    """A copy whose local model directories, output dir and tiny-models dir are absolute.

    Ray workers do not share the driver's working directory (Ray Train runs them elsewhere), so
    relative paths are resolved once, in the driver.
    """

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    def model(ref: str) -> str:
        return absolute(ref) if is_local_model(ref) else ref

    return dataclasses.replace(
        config,
        student=dataclasses.replace(config.student, model=model(config.student.model)),
        teachers=[dataclasses.replace(t, model=model(t.model)) for t in config.teachers],
        output=dataclasses.replace(config.output, dir=absolute(config.output.dir)),
        tiny_models=absolute(config.tiny_models) if config.tiny_models else None,
    )


def to_yaml(config: Config) -> str:
    """Every field of ``config`` as YAML, in the schema's order, defaults included (``tinyllm config``, a run
    directory's saved config); ``load_config`` and ``from_dict`` read it back as an equal config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
