"""Issue #16: configs that are broken or hostile end in one bounded ``ConfigError``, never a traceback or hang.

A config path that is a directory or a FIFO, a YAML alias bomb, thousand-level nesting, an integer with
thousands of digits, NaN and infinity, and huge values quoted in messages. The entry point's own handling
(exit status 2, one ``error:`` line) is covered for every kind by test_fuzz.py.
"""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path

import pytest

from tinyllm_ray.config import ConfigError, from_dict, load_config, parse_yaml

BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdef"], "abcdefg")
)


def good(tmp_path: Path, text: str = "student: {model: some/hub-model}\n") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_the_bomb_is_small_and_would_expand_to_millions() -> None:
    assert len(BOMB) < 400 and BOMB.count("*") == 54  # 9**7 = 4.8 million strings once expanded


def test_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path: Path) -> None:
    """Before: 360 bytes gave a 39 MB error message (the expanded value quoted whole)."""
    path = good(tmp_path, "student: {model: m}\n" + BOMB.replace("g: ", "tiny_models: "))
    with pytest.raises(ConfigError, match="more than 100000 values once aliases are expanded") as info:
        load_config(path, check_paths=False)
    assert len(str(info.value)) < 300


def test_an_unknown_key_holding_a_huge_value_is_quoted_briefly() -> None:
    with pytest.raises(ConfigError, match="unknown key") as info:
        from_dict({"student": {"model": "m"}, "train": {"epochz": "x" * 1_000_000}})
    assert len(str(info.value)) < 400


def test_a_long_list_of_wrong_values_lists_twenty_errors() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({"student": {"model": "m"}, "teachers": [{"name": 1}] * 500})
    assert "and 980 more" in str(info.value) and len(str(info.value).splitlines()) == 22


@pytest.mark.parametrize("text", ["a: " + "[" * 100_000, "a: " + "{b: " * 40 + "1" + "}" * 40])
def test_deep_nesting_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        parse_yaml(text)


def test_an_integer_with_thousands_of_digits_is_refused(tmp_path: Path) -> None:
    """Before: PyYAML's int() raised a bare ValueError (Python's 4300-digit limit): a traceback."""
    with pytest.raises(ConfigError, match=r"run\.yaml: YAML line 2: integer 9+…\(4960 more characters\) has 5000 "):
        load_config(good(tmp_path, "student: {model: m}\ntrain: {epochs: " + "9" * 5000 + "}\n"), check_paths=False)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match="an alias refers to a value that contains it"):
        parse_yaml("a: &a [*a]")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
@pytest.mark.parametrize("key", ["train.gamma", "train.lr", "teachers.0.temperature", "train.alpha.t"])
def test_nan_and_infinity_are_refused_for_every_float(tmp_path: Path, key: str, value: str) -> None:
    """Before: NaN passed validation and a NaN run could never resume (NaN != NaN)."""
    path = good(tmp_path, "student: {model: m}\nteachers: [{name: t, model: m}]\n")
    with pytest.raises(ConfigError, match=re.escape(key) + ": Input should be a finite number"):
        load_config(path, [f"{key}={value}"], check_paths=False)


def test_finite_floats_still_load(tmp_path: Path) -> None:
    config = load_config(good(tmp_path), ["train.lr=1e-4", "train.gamma=0.5"], check_paths=False)
    assert math.isclose(config.train.lr, 1e-4) and config.train.gamma == 0.5


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    """Before: IsADirectoryError, a traceback."""
    with pytest.raises(ConfigError, match=r"config file .* is not a regular file: it is a directory"):
        load_config(tmp_path)


def test_config_path_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Before: reading a FIFO blocks until someone writes to it, i.e. for ever."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    raised: list[BaseException] = []

    def load() -> None:
        try:
            load_config(fifo)
        except BaseException as err:  # noqa: BLE001 -- handed to the test thread
            raised.append(err)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the reader so the suite goes on, then fail
        with open(fifo, "w") as f:
            f.write("{}")
        pytest.fail("load_config blocked on a FIFO")
    assert isinstance(raised[0], ConfigError) and "is not a regular file: it is a FIFO (named pipe)" in str(raised[0])


def test_config_symlink_loop_is_named(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(ConfigError, match="is a symlink loop"):
        load_config(loop)


def test_a_huge_config_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(2 << 20)
    with pytest.raises(ConfigError, match="a config is at most 1048576"):
        load_config(path)


def test_override_value_past_the_limits_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set train\.epochs: YAML line 1: integer"):
        load_config(good(tmp_path), ["train.epochs=" + "7" * 30], check_paths=False)


def test_an_override_of_an_aliased_section_changes_only_that_key(tmp_path: Path) -> None:
    """YAML aliases share one object: ``--set`` on one of them must not reach the others (before: both
    teachers were renamed, then refused as duplicates)."""
    path = good(tmp_path, "student: {model: m}\nteachers: [&t {name: a, model: m}, *t]\n")
    both = load_config(path, ["teachers.1.name=b", "teachers.0.shots=3"], check_paths=False)
    assert [(t.name, t.shots) for t in both.teachers] == [("a", 3), ("b", 2)]
