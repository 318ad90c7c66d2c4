"""Issue #16's hostile data files: every one ends as a ``DataError`` (or ``ConfigError`` for ``data.path``)
naming the path, or as a rejected row with a short reason; never a traceback, never a hang.

- Path kinds, looked at before anything is opened: a directory, a FIFO or a device where a data file is
  expected, a symlink loop, a dangling symlink, a permission error (simulated: the tests run as root).
- Parsing limits: JSON nested 100000 deep, an integer of 5000 digits, in a JSON array file and a JSON Lines
  line: a ``DataError`` naming the file and line.
- NaN and the infinities where text is expected: a reject that says so, not the text ``nan``.
- Bounded messages: a reject reason quotes at most ``input_checks.CLIP`` characters of a value.

A read that could block (a FIFO) runs in a thread with a deadline, so a regression fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tinyllm_ray import cli
from tinyllm_ray.config import ConfigError, DataConfig
from tinyllm_ray.data import official
from tinyllm_ray.data.hub import read_hub
from tinyllm_ray.data.load import infer_format, load_data
from tinyllm_ray.data.mapped import read_mapped
from tinyllm_ray.data.official import read_official
from tinyllm_ray.data.records import DataError, read_records
from tinyllm_ray.input_checks import CLIP, clip

GOOD = [{"id": f"q{i}", "question": f"What is {i} + 1?", "choices": [str(i), str(i + 1)], "answer": str(i + 1)}
        for i in range(3)]
COLUMNS = {"question": "question", "choices": "choices", "answer": "answer", "id": "id"}
MEGA = "x" * 1_000_000


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def official_dir(tmp_path: Path, train: list | None = None) -> Path:
    """An authors' layout dir with ``toy_valid.json`` (and ``toy_train.json`` when ``train`` is given)."""
    d = tmp_path / "toy"
    write_jsonl(d / "toy_valid.json", GOOD)
    if train is not None:
        write_jsonl(d / "toy_train.json", train)
    return d


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def within(seconds: float, call: Callable[[], Any], release: Path | None = None) -> Any:
    """``call()``'s result or exception, failing the test when it has not returned after ``seconds``; a reader
    blocked on the FIFO ``release`` is then let go (a writer opens and closes it) so the thread ends."""
    outcome: dict[str, Any] = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 -- handed to the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if release is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds} s: a read blocked")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def reasons(rows) -> list[str]:
    return [row.reason for row in rows]


# -- 1. path kinds -----------------------------------------------------------------------------------------------

def test_question_file_that_is_a_directory(tmp_path):
    d = official_dir(tmp_path)
    (d / "toy_train.json").mkdir()
    assert infer_format(DataConfig(dataset="toy", path=str(d))) == "official"  # the name is the authors'
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{d / 'toy_train.json'} is not a regular file: it is a directory"


def test_split_file_that_is_a_directory(tmp_path):
    (tmp_path / "train.jsonl").mkdir()
    with pytest.raises(DataError) as err:
        read_mapped(tmp_path, COLUMNS)
    assert str(err.value) == f"{tmp_path / 'train.jsonl'} is not a regular file: it is a directory"


def test_parquet_split_file_that_is_a_directory(tmp_path):
    """pyarrow would read a directory as a dataset; a split file must be a file."""
    (tmp_path / "train.parquet").mkdir()
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "train.parquet" / "part-0.parquet")
    with pytest.raises(DataError, match=r"train\.parquet is not a regular file: it is a directory$"):
        read_mapped(tmp_path, COLUMNS)


def test_fifo_split_file_is_reported_not_read(tmp_path):
    pipe = fifo(tmp_path / "train.jsonl")
    with pytest.raises(DataError) as err:
        within(5, lambda: read_mapped(tmp_path, COLUMNS), release=pipe)
    assert str(err.value) == f"{pipe} is not a regular file: it is a FIFO (named pipe)"


def test_fifo_question_file_while_inferring_the_format(tmp_path):
    d = official_dir(tmp_path)
    pipe = fifo(d / "toy_train.json")
    assert within(5, lambda: infer_format(DataConfig(dataset="toy", path=str(d))), release=pipe) == "official"
    with pytest.raises(DataError, match=r"toy_train\.json is not a regular file: it is a FIFO \(named pipe\)$"):
        within(5, lambda: read_official(d), release=pipe)


def test_fifo_rationale_file(tmp_path):
    d = official_dir(tmp_path, train=GOOD)
    pipe = fifo(d / "llm" / "train_CoT_0.json")
    with pytest.raises(DataError, match=r"train_CoT_0\.json is not a regular file: it is a FIFO \(named pipe\)$"):
        within(5, lambda: read_official(d), release=pipe)


def test_fifo_as_data_path(tmp_path):
    pipe = fifo(tmp_path / "questions.jsonl")
    data = DataConfig(dataset="mine", path=str(pipe), format="jsonl", columns=COLUMNS)
    with pytest.raises(ConfigError) as err:
        within(5, lambda: load_data(data), release=pipe)
    assert str(err.value) == f"data.path: {pipe} is not a regular file or directory: it is a FIFO (named pipe)"


def test_fifo_through_the_cli_is_one_error_line(tmp_path, capsys):
    pipe = fifo(tmp_path / "train.jsonl")
    code = within(5, lambda: cli.main(["data", "inspect", "--dataset", "mine", "--path", str(tmp_path),
                                       "--columns", "question=question,choices=choices,answer=answer"]),
                  release=pipe)
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {pipe} is not a regular file: it is a FIFO (named pipe)\n"


def test_device_file_as_split_file(tmp_path):
    (tmp_path / "train.jsonl").symlink_to(os.devnull)
    with pytest.raises(DataError) as err:
        read_mapped(tmp_path, COLUMNS)
    assert str(err.value) == f"{tmp_path / 'train.jsonl'} is not a regular file: it is a character device"


def test_symlink_loop(tmp_path):
    loop = tmp_path / "train.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(DataError) as err:
        read_mapped(tmp_path, COLUMNS)
    assert str(err.value) == f"{loop} is a symlink loop"
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(dataset="mine", path=str(loop), columns=COLUMNS))
    assert str(err.value) == f"data.path: {loop} is a symlink loop"


def test_dangling_symlink(tmp_path):
    link = tmp_path / "train.jsonl"
    link.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(DataError) as err:
        read_mapped(tmp_path, COLUMNS)
    assert str(err.value) == f"{link} is a dangling symlink (its target {tmp_path / 'gone.jsonl'} does not exist)"
    with pytest.raises(ConfigError, match=rf"^data\.path: {re.escape(str(link))} is a dangling symlink \("):
        load_data(DataConfig(dataset="toy", path=str(link), format="official"))


def test_permission_denied_reading_a_file(tmp_path, monkeypatch):
    """As root nothing is unreadable, so ``read_text`` is made to fail as it would for another user."""
    d = official_dir(tmp_path, train=GOOD)
    locked = d / "toy_train.json"
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{locked} cannot be read: permission denied"


def test_permission_denied_looking_at_data_path(tmp_path, monkeypatch):
    """A directory above the path that cannot be searched: ``stat`` itself fails (``Path.exists`` raised)."""
    path = official_dir(tmp_path)
    real = os.stat

    def stat(target, *args, **kwargs):
        if isinstance(target, (str, os.PathLike)) and Path(target) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(dataset="toy", path=str(path), format="official"))
    assert str(err.value) == f"data.path: {path} cannot be read: permission denied"


def test_permission_denied_listing_a_directory(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "data" / "train.jsonl", GOOD)
    real = Path.iterdir

    def iterdir(self):
        if self == tmp_path / "data":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(DataError) as err:
        read_hub("obqa", tmp_path)
    assert str(err.value) == f"{tmp_path / 'data'} cannot be read: permission denied"


def test_home_of_an_unknown_user(tmp_path):
    data = DataConfig(dataset="toy", path="~no-such-user-here/toy", format="official")
    with pytest.raises(ConfigError, match=r"^data\.path: ~no-such-user-here/toy: Could not determine home directory"):
        load_data(data)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_file_for_real(tmp_path):
    locked = write_jsonl(tmp_path / "train.jsonl", GOOD)
    locked.chmod(0)
    try:
        with pytest.raises(DataError, match=r"train\.jsonl cannot be read: permission denied$"):
            read_mapped(tmp_path, COLUMNS)
    finally:
        locked.chmod(0o600)


# -- 2. parsing limits -------------------------------------------------------------------------------------------

def test_deep_nesting_in_a_json_array_file(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    f = d / "toy_train.json"
    f.write_text("[\n" + json.dumps(GOOD[0]) + ",\n" + "[" * 100_000 + "]" * 100_000 + "\n]\n")
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{f}: line 3: JSON nested 100001 levels deep, too deep to read"


def test_deep_nesting_in_a_json_lines_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps(GOOD[0]) + "\n" + '{"id": ' * 100_000 + "\n")
    with pytest.raises(DataError) as err:
        list(read_records(f))
    assert str(err.value) == f"{f}: line 2: JSON nested 100000 levels deep, too deep to read"


def test_huge_integer_in_a_json_array_file(tmp_path):
    f = tmp_path / "train.json"
    digits = "7" * 5000
    # The same digits inside a string are text, not a number: the error names the line of the number.
    f.write_text(json.dumps([{**GOOD[0], "question": digits}, GOOD[1]], indent=1)[:-2]
                 + f',\n {{"id": {digits}}}\n]')
    with pytest.raises(DataError) as err:
        list(read_records(f))
    line = f.read_text().splitlines().index(f' {{"id": {digits}}}') + 1
    assert str(err.value) == f"{f}: line {line}: an integer of 5000 digits; at most 4300 can be read"


def test_huge_integer_in_a_json_lines_line(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", GOOD)
    with f.open("a") as out:
        out.write('{"id": -' + "1" * 4301 + "}\n")
    with pytest.raises(DataError) as err:
        read_mapped(f, COLUMNS)
    assert str(err.value) == f"{f}: line 4: an integer of 4301 digits; at most 4300 can be read"


def test_long_numbers_that_python_reads_are_kept(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps({**GOOD[0], "id": "@"}).replace('"@"', "9" * 4300) + "\n"
                 + json.dumps({**GOOD[1], "id": "@"}).replace('"@"', "0." + "3" * 5000) + "\n")
    rows = read_mapped(f, COLUMNS)["train"]
    assert [row.question.id for row in rows] == ["9" * 4300, "0.3333333333333333"]


# -- 3. NaN and the infinities -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, literal, reason", [
    ("answer", "NaN", "'answer' is NaN, not text"),
    ("id", "Infinity", "'id' is Infinity, not text"),
    ("question", "-Infinity", "'question' is -Infinity, not text"),
    ("context", "NaN", "'context' is NaN, not text"),
    ("context", '["a", "b"]', "'context' is a list, not text"),
])
def test_official_non_finite_fields_are_rejects(tmp_path, key, literal, reason):
    base = {**GOOD[0], "choices": ["nan", "inf", "-inf"], "answer": "nan"}  # read as text, NaN would be kept
    record = json.dumps({**base, key: "@"}).replace('"@"', literal)
    d = official_dir(tmp_path)
    (d / "toy_train.json").write_text(record + "\n" + json.dumps(GOOD[1]) + "\n")
    rows = read_official(d).rows["train"]
    assert reasons(rows) == [reason, ""]


def test_mapped_non_finite_values_are_rejects(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('''\
{"id": "a", "question": "q?", "choices": ["nan", "b"], "answer": NaN}
{"id": "b", "question": "q?", "choices": ["inf", Infinity], "answer": 0}
{"id": NaN, "question": "q?", "choices": ["x", "y"], "answer": 1}
{"id": "d", "question": "q?", "choices": ["x", "y"], "answer": 1, "context": ["p", -Infinity]}
{"id": 17, "question": 2.5, "choices": [1, 2.5], "answer": 1}
''')
    rows = read_mapped(f, {**COLUMNS, "context": "context"})["train"]
    assert reasons(rows) == ["'answer' is NaN, not text", "'choices' holds Infinity, not text",
                             "'id' is NaN, not text", "'context' holds -Infinity, not text", ""]
    assert rows[-1].question.id == "17" and rows[-1].question.choices == ("1", "2.5")  # numbers stay text


def test_parquet_nan_is_a_reject(tmp_path):
    f = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": [1.0, float("nan")], "question": ["q?", "q?"], "choices": [["a", "b"]] * 2,
                             "answer": ["a", "b"]}), f)
    rows = read_mapped(f, COLUMNS)["train"]
    assert reasons(rows) == ["", "'id' is NaN, not text"]


def test_hub_choices_with_nan(tmp_path):
    record = {"id": "7-1", "question_stem": "q?", "choices": {"text": ["a", "@"], "label": ["A", "B"]},
              "answerKey": "A"}
    (tmp_path / "train.jsonl").write_text(json.dumps(record).replace('"@"', "NaN") + "\n")
    assert reasons(read_hub("obqa", tmp_path)["train"]) == ["'choices.text' holds NaN, not text"]


# -- 4. bounded messages -----------------------------------------------------------------------------------------

def test_clip():
    assert clip("short") == "'short'"
    assert clip("x" * 1000) == "'" + "x" * (CLIP - 1) + "…(802 more characters)"
    assert clip(10 ** 500).endswith("…(301 more characters)")


def assert_bounded(reason: str, start: str, end: str) -> None:
    assert len(reason) < 400, reason[:500]
    assert reason.startswith(start) and reason.endswith(end), reason[:500]
    assert "more characters)" in reason


def test_official_megabyte_answer(tmp_path):
    d = official_dir(tmp_path, train=[{**GOOD[0], "answer": MEGA}])
    (reason,) = reasons(read_official(d).rows["train"])
    assert_bounded(reason, "answer 'xxx", "more characters) is not among the choices")


def test_mapped_megabyte_answer(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{**GOOD[0], "answer": MEGA}, {**GOOD[1], "answer": 10 ** 4000}])
    first, second = reasons(read_mapped(f, COLUMNS)["train"])
    assert_bounded(first, "'answer' value 'xxx", "is neither a choice, a letter nor a 0-based index")
    assert_bounded(second, "answer index 1000", "is out of range for 2 choices")


def test_strict_mode_error_is_bounded(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{**GOOD[0], "answer": MEGA}])
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mine", path=str(f), columns=COLUMNS, strict=True))
    assert_bounded(str(err.value), "train.jsonl:line 1: 'answer' value", "(data.strict is on)")


@pytest.mark.parametrize("name, record, start, end", [
    ("obqa", {"id": "1", "question_stem": "q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
              "answerKey": MEGA}, "answer key 'xxx", "is not among the labels A, B"),
    ("obqa", {"id": "1", "question_stem": "q?", "choices": {"text": ["a", "b"], "label": [MEGA, "B"]},
              "answerKey": "C"}, "answer key 'C' is not among the labels xxx", "more characters)"),
    ("piqa", {"goal": "g", "sol1": "a", "sol2": "b", "label": MEGA}, "'label' is 'xxx", ", not 0 or 1"),
    ("pubmedqa", {"pubid": 1, "question": "q?", "final_decision": MEGA}, "'final_decision' is 'xxx",
     ", not yes, no or maybe"),
    ("bioasq", {"id": "1", "body": "q?", "type": MEGA, "exact_answer": "yes"}, "type 'xxx", "not a yes/no question"),
    ("bioasq", {"id": "1", "body": "q?", "exact_answer": MEGA}, "'exact_answer' is 'xxx", ", not yes or no"),
])
def test_hub_megabyte_values(tmp_path, name, record, start, end):
    write_jsonl(tmp_path / "train.jsonl", [record])
    (reason,) = reasons(read_hub(name, tmp_path)["train"])
    assert_bounded(reason, start, end)


def test_piqa_label_digits_that_int_refuses(tmp_path):
    """``"²".isdigit()`` is true but ``int("²")`` raises: a reject, not a traceback."""
    write_jsonl(tmp_path / "train.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b", "label": "²"},
                                           {"goal": "g", "sol1": "a", "sol2": "b", "label": " 1 "}])
    rows = read_hub("piqa", tmp_path)["train"]
    assert reasons(rows) == ["'label' is '²', not 0 or 1", ""]
    assert rows[1].question.answer == "b"


def test_official_module_reads_question_files_by_name(tmp_path):
    """Hidden and odd names match the glob as ``Path.glob`` did; entries that do not match are never read."""
    d = official_dir(tmp_path)
    fifo(d / "toy_train.json.bak")
    write_jsonl(d / ".hidden_test.json", GOOD)
    assert official.question_file(d, "train") is None
    assert official.question_file(d, "test") == d / ".hidden_test.json"
