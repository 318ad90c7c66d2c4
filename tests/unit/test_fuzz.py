"""Issue #16's fuzz test: whatever a user hands ``tinyllm distill``, it either gets as far as Ray or exits 2
with one ``error:`` line; never a traceback or a hang, nothing written outside the run directory, nothing of
the user's touched.

Hypothesis generates ``--set`` overrides (real keys, values of every YAML kind: huge integers, NaN, text with
YAML syntax, aliases, nesting), data rows (JSON values of every kind, NaN, garbage lines) and the kind of file
at the config and data paths (directory, FIFO, symlink loop, dangling link, empty, missing). Ray is replaced
by a tripwire: reaching it means the input was accepted. Each example runs ``cli.main`` in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinyllm_ray import cli, pipeline
from tinyllm_ray.config.environment import OutputConfig
from tinyllm_ray.config.loading import parse_yaml

KEYS = [
    "train.gamma", "train.lr", "train.epochs", "train.batch_size", "train.alpha.teacher-a", "train.alpha",
    "teachers.0.temperature", "teachers.0.shots", "teachers.0.name", "teachers.0.max_new_tokens", "teachers",
    "data.n_train", "data.dataset", "data.format", "data.valid_fraction", "data.columns", "data.seed",
    "student.max_input_tokens", "student.model", "output.run_name", "output.if_exists", "output.access",
    "eval.batch_size", "tune", "tune.gamma", "ray.num_cpus", "extends", "train.epochz", "",
]
YAML_SNIPPETS = ["&a [*a]", "[" * 200, "{a: 1, a: 2}", "!!python/object:os.system ls", "~", "[1, [2, [3]]]",
                 ".nan", "-.inf", "1e999", "0x1f", "0o17", "2026-12-02", "'quoted'", '"\\x00"', "|\n  block",
                 "- a\n- b", "*undefined", "&x 1", "{model: m}"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.integers(min_value=10**40, max_value=10**60),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
yaml_values = (st.integers().map(str) | st.floats().map(repr) | st.text(max_size=40) | st.sampled_from(YAML_SNIPPETS)
               | st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n) | json_values.map(json.dumps))
overrides = st.lists(st.tuples(st.sampled_from(KEYS), yaml_values).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=3)
ROW_KEYS = ["id", "question", "choices", "answer", "context"]
rows = st.lists(
    st.dictionaries(st.sampled_from(ROW_KEYS), json_values | st.just(float("nan")), max_size=5)
    | st.fixed_dictionaries({"question": st.text(max_size=20), "choices": st.lists(st.text(max_size=8), max_size=5),
                             "answer": json_values}),
    max_size=6,
)
garbage = st.lists(st.binary(max_size=40) | st.sampled_from([b"[" * 5000, b"9" * 5000, b"NaN", b"{\"a\": Infinity}"]),
                   max_size=2)
FILE_KINDS = ["regular", "directory", "fifo", "symlink-loop", "dangling-symlink", "empty", "missing"]

GOOD_ROWS = [{"id": f"g{i}", "question": f"What is {i} + 1?", "choices": [str(i), str(i + 1)], "answer": str(i + 1)}
             for i in range(8)]


class ReachedRay(BaseException):
    """The input passed every check before Ray (a BaseException: the pipeline turns any Exception raised while
    starting Ray into one StageError line, and this one must reach the test)."""


# A blocked open() waits for ever; real work never comes near this, even a generated ``data.n_train=44444``
# (2.3 s alone here, but it once passed 20 s on a loaded 2-core CI machine and failed as a hang).
HANG_S = 90


class Hung(Exception):
    """An example ran past its time: something blocked (a FIFO opened for reading waits for a writer)."""


def hung(signum, frame):
    raise Hung(f"the entry point blocked for {HANG_S} s")


def make_kind(path: Path, kind: str, content: bytes) -> None:
    if kind == "regular":
        path.write_bytes(content)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-loop":
        path.symlink_to(path)
    elif kind == "dangling-symlink":
        path.symlink_to(path.with_name("nowhere"))


def fingerprint(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (not following links) with its kind, size and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            content = hash(path.read_bytes()) if path.is_file() and not path.is_symlink() else None
            out[str(path.relative_to(root))] = (info.st_mode, info.st_size, content)
    return out


@pytest.fixture(scope="module")
def sandbox(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    models = root / "user" / "models"
    shutil.copytree(tiny_models, models, ignore=shutil.ignore_patterns("teacher-b"))
    return root


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(sets=overrides, data_rows=rows, junk=garbage, config_kind=st.sampled_from(FILE_KINDS + ["regular"] * 6),
       data_kind=st.sampled_from(FILE_KINDS + ["regular"] * 3), use_data=st.booleans())
def test_entry_point_accepts_or_refuses_in_one_line(sandbox: Path, sets: list[str], data_rows: list, junk: list,
                                                     config_kind: str, data_kind: str, use_data: bool) -> None:
    case = sandbox / "case"
    shutil.rmtree(case, ignore_errors=True)  # the test's own scratch space, rebuilt for every example
    (case / "user").mkdir(parents=True)
    models = sandbox / "user" / "models"
    data = case / "user" / "questions.jsonl"
    lines = [json.dumps(r).encode() for r in GOOD_ROWS + data_rows] + junk
    make_kind(data, data_kind, b"\n".join(lines))
    config = {
        "data": {"dataset": "mine", "format": "jsonl", "path": str(data),
                 "columns": {"question": "question", "choices": "choices", "answer": "answer", "id": "id"}}
        if use_data else {"dataset": "synthetic", "n_train": 8, "n_valid": 4, "n_test": 4},
        "teachers": [{"name": "teacher-a", "model": str(models / "teacher-a"), "shots": 1}],
        "student": {"model": str(models / "student-t5")},
        "output": {"dir": str(case / "runs"), "run_name": "run"},
    }
    config_path = case / "user" / "config.yaml"
    make_kind(config_path, config_kind, json.dumps(config).encode())
    user_before, models_before = fingerprint(case / "user"), fingerprint(models)

    args = ["distill", "--config", str(config_path)]
    for assignment in sets:
        args += ["--set", assignment]
    err = io.StringIO()
    reached = False
    previous = signal.signal(signal.SIGALRM, hung)  # a blocking open() is interrupted, not waited on for ever
    signal.alarm(HANG_S)
    with (mock.patch.object(pipeline, "connect_ray", side_effect=ReachedRay), contextlib.redirect_stderr(err),
          contextlib.chdir(case)):
        try:
            code = cli.main(args)
        except ReachedRay:
            reached = True
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    text = err.getvalue()
    event("reached Ray" if reached else f"refused: {text.partition('error: ')[2][:40]}")
    assert "Traceback" not in text
    if not reached:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, (code, text[-2000:])
        assert len(text) < 5000, text[:500]
    assert fingerprint(case / "user") == user_before
    assert fingerprint(models) == models_before
    assert {p.name for p in case.iterdir()} <= {"user", "runs"}  # relative paths resolve in here
    written = {p.name for p in (case / "runs").iterdir()} if (case / "runs").is_dir() else set()
    # the config's run name, the schema's default for an empty config (found 2026-12-07: ``student.model=A``), or
    # an overriding one
    named = {"run", OutputConfig().run_name if config_kind == "empty" else "run"}
    named |= {_as_given(a.split("=", 1)[1]) for a in sets if a.startswith("output.run_name=")}
    assert written <= named, written  # nothing beside the run directory (of the config's or an overriding name)
    assert not written or reached  # a refused run writes nothing


def _as_given(text: str) -> str:
    """An override's value as the config reads it (YAML: ``'0'`` is the name ``0``), else as written."""
    try:
        return str(parse_yaml(text))
    except Exception:  # noqa: BLE001 -- a value the loader refuses names nothing
        return text
