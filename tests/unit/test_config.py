"""Unit tests for tinyllm_ray.config: loading, overrides, type checks, cross-field rules, helpers."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO
from tinyllm_ray.config import (
    Config,
    ConfigError,
    apply_override,
    from_dict,
    load_config,
    to_yaml,
    validate,
    validate_against_data,
    with_absolute_paths,
)
from tinyllm_ray.markers import stage_key

QUICKSTART = REPO / "configs" / "quickstart.yaml"
HUB_ID = "google/flan-t5-small"


def base_raw() -> dict[str, Any]:
    """A valid plain config with two teachers (hub ids, so no path checks can trip)."""
    return {
        "student": {"model": HUB_ID},
        "teachers": [{"name": "t1", "model": HUB_ID}, {"name": "t2", "model": HUB_ID}],
        "train": {"gamma": 1.0, "alpha": {"t1": 0.5}},
    }


def check(raw: dict[str, Any], check_paths: bool = False) -> Config:
    config = from_dict(raw)
    validate(config, check_paths=check_paths)
    return config


def assert_names_key(err: ConfigError, key: str) -> None:
    """The message has an error line that starts with ``key:``."""
    msg = str(err)
    assert re.search(rf"^\s*{re.escape(key)}:", msg, re.M), f"{key!r} not named as an error line in:\n{msg}"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty directory, so relative model paths and hub ids resolve predictably."""
    monkeypatch.chdir(tmp_path)


# --- loading --------------------------------------------------------------------------------------


def test_quickstart_loads() -> None:
    config = load_config(QUICKSTART, check_paths=False)
    assert isinstance(config, Config)
    assert [t.name for t in config.teachers] == ["teacher-a", "teacher-b"]
    assert config.compare is True and config.tune is None
    on_disk = yaml.safe_load(QUICKSTART.read_text())
    assert config.train.epochs == on_disk["train"]["epochs"]
    assert config.train.lr == pytest.approx(on_disk["train"]["lr"])
    assert config.tiny_models == ".tiny_models"
    assert config.student.model == ".tiny_models/student-t5"


def test_quickstart_with_check_paths_names_missing_models() -> None:
    # cwd is an empty tmp dir: the relative .tiny_models/... directories do not exist there
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, check_paths=True)
    assert_names_key(info.value, "student.model")
    assert_names_key(info.value, "teachers.0.model")
    assert_names_key(info.value, "teachers.1.model")


def test_base_config_is_valid() -> None:
    check(base_raw(), check_paths=True)


@pytest.mark.parametrize("model", [";", "a/b/c", "owner/name--x", "x" * 97, "name with spaces", "owner/"])
def test_a_model_that_is_neither_a_directory_nor_a_hub_id_is_refused(model: str) -> None:
    """The fuzz test's find (2026-12-07): ``--set student.model=;`` reached Ray, to fail there on a download."""
    raw = base_raw()
    raw["student"]["model"] = model
    raw["teachers"][1]["model"] = model
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, "student.model")
    assert_names_key(info.value, "teachers.1.model")


@pytest.mark.parametrize("model", ["google/flan-t5-base", "Qwen/Qwen2.5-0.5B-Instruct", "gpt2", "a_b.c-d/x.y"])
def test_hub_ids_pass_the_model_check(model: str) -> None:
    raw = base_raw()
    raw["student"]["model"] = model
    check(raw)


def test_load_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(missing)


def test_load_config_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\n  student: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    assert "YAML" in str(info.value)


def test_load_config_top_level_not_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping") as info:
        load_config(bad)
    assert str(bad) in str(info.value)


def test_load_config_error_names_the_file_and_missing_student(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert str(empty) in str(info.value)
    assert_names_key(info.value, "student")


# --- invalid configs ------------------------------------------------------------------------------


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return raw


INVALID = [
    # (id, path to set, value, key the error must name)
    ("unknown-top-level", "bogus", 1, "bogus"),
    ("unknown-nested", "train.bogus", 1, "train.bogus"),
    ("unknown-in-teacher", "teachers.1.bogus", 1, "teachers.1.bogus"),
    ("epochs-str", "train.epochs", "3", "train.epochs"),
    ("use_gpu-int", "train.use_gpu", 1, "train.use_gpu"),
    ("teachers-mapping", "teachers", {}, "teachers"),
    ("student-model-int", "student.model", 3, "student.model"),
    ("epochs-zero", "train.epochs", 0, "train.epochs"),
    ("gamma-negative", "train.gamma", -0.5, "train.gamma"),
    ("alpha-negative", "train.alpha", {"t1": -0.1}, "train.alpha.t1"),
    ("alpha-unknown-teacher", "train.alpha", {"ghost": 0.5}, "train.alpha.ghost"),
    ("teacher-named-answer", "teachers.0.name", "answer", "teachers.0.name"),
    ("teacher-name-chars", "teachers.0.name", "bad name!", "teachers.0.name"),
    ("duplicate-teachers", "teachers.1.name", "t1", "teachers.0.name"),
    ("if_exists-literal", "output.if_exists", "overwrite", "output.if_exists"),
    ("run_name-pattern", "output.run_name", "../escape", "output.run_name"),
]


@pytest.mark.parametrize(("path", "value", "key"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_config_names_key(path: str, value: Any, key: str) -> None:
    raw = _set(base_raw(), path, value)
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, key)


def test_unknown_key_says_unknown() -> None:
    with pytest.raises(ConfigError, match=r"train\.bogus: unknown key"):
        check(_set(base_raw(), "train.bogus", 1))


def test_duplicate_teacher_names_reported_once() -> None:
    raw = _set(base_raw(), "teachers.1.name", "t1")
    with pytest.raises(ConfigError, match="more than one teacher") as info:
        check(raw)
    assert str(info.value).count("more than one teacher") == 1


def test_all_loss_weights_zero() -> None:
    raw = base_raw()
    raw["train"] = {"gamma": 0.0, "alpha": {"t1": 0.0, "t2": 0.0}}
    with pytest.raises(ConfigError, match="all loss weights are zero") as info:
        check(raw)
    assert "train.gamma" in str(info.value)


def test_zero_gamma_without_teachers_is_all_zero() -> None:
    with pytest.raises(ConfigError, match="all loss weights are zero"):
        check({"student": {"model": HUB_ID}, "train": {"gamma": 0.0}})


def test_one_nonzero_weight_is_enough() -> None:
    raw = base_raw()
    raw["train"] = {"gamma": 0.0, "alpha": {"t1": 0.0, "t2": 0.3}}
    check(raw)


def test_alpha_without_teachers() -> None:
    raw = {"student": {"model": HUB_ID}, "train": {"alpha": {"x": 0.5}}}
    with pytest.raises(ConfigError, match="no teachers") as info:
        check(raw)
    assert_names_key(info.value, "train.alpha.x")


def test_min_choices_above_max_choices() -> None:
    raw = base_raw()
    raw["data"] = {"min_choices": 4, "max_choices": 3}
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, "data.min_choices")
    raw["data"] = {"min_choices": 3, "max_choices": 3}
    check(raw)


def test_every_problem_listed_in_one_error() -> None:
    raw = base_raw()
    raw["teachers"][0]["name"] = "answer"
    raw["data"] = {"min_choices": 5, "max_choices": 2}
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, "teachers.0.name")
    assert_names_key(info.value, "data.min_choices")


# --- model paths ----------------------------------------------------------------------------------


def test_local_model_path_missing() -> None:
    raw = base_raw()
    raw["student"]["model"] = "./nope"
    with pytest.raises(ConfigError, match="does not exist") as info:
        check(raw, check_paths=True)
    assert_names_key(info.value, "student.model")
    check(raw, check_paths=False)  # paths are only checked on request


def test_local_model_dir_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    raw = base_raw()
    raw["teachers"][1]["model"] = "./empty-model"
    with pytest.raises(ConfigError, match="has no config.json") as info:
        check(raw, check_paths=True)
    assert_names_key(info.value, "teachers.1.model")
    (tmp_path / "empty-model" / "config.json").write_text("{}")
    check(raw, check_paths=True)


def test_absolute_model_path_missing(tmp_path: Path) -> None:
    raw = base_raw()
    raw["student"]["model"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match="does not exist"):
        check(raw, check_paths=True)


def test_hub_id_not_rejected() -> None:
    raw = base_raw()
    raw["student"]["model"] = HUB_ID
    raw["teachers"][0]["model"] = "Qwen/Qwen2.5-0.5B-Instruct"
    check(raw, check_paths=True)


# --- data-dependent rules -------------------------------------------------------------------------


def test_more_shots_than_training_questions() -> None:
    raw = base_raw()
    raw["teachers"][1]["shots"] = 8
    config = check(raw)
    validate_against_data(config, n_train=9)
    with pytest.raises(ConfigError, match="teachers.1.shots") as info:
        validate_against_data(config, n_train=8)
    assert_names_key(info.value, "teachers.1.shots")
    assert "teachers.0.shots" not in str(info.value)


# --- --set overrides ------------------------------------------------------------------------------


def test_override_nested_creates_sections() -> None:
    raw: dict[str, Any] = {"student": {"model": HUB_ID}}
    apply_override(raw, "train.epochs=3")
    apply_override(raw, "data.n_train=7")
    assert raw["train"] == {"epochs": 3} and raw["data"] == {"n_train": 7}
    config = from_dict(raw)
    assert config.train.epochs == 3 and config.data.n_train == 7


def test_override_list_index() -> None:
    config = load_config(QUICKSTART, ["teachers.0.replicas=2"], check_paths=False)
    assert config.teachers[0].replicas == 2
    assert config.teachers[1].replicas == 1


def test_override_whole_list_entry() -> None:
    raw = base_raw()
    apply_override(raw, "teachers.1={name: t3, model: m/x}")
    assert raw["teachers"][1] == {"name": "t3", "model": "m/x"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("3", 3), ("0.5", 0.5), ("[1,2]", [1, 2]), ("hello", "hello"),
     ("{a: 1}", {"a": 1}), ("null", None), ("", "")],
)
def test_override_values_parsed_as_yaml(text: str, expected: Any) -> None:
    raw: dict[str, Any] = {}
    apply_override(raw, f"x.y={text}")
    assert raw["x"]["y"] == expected
    assert type(raw["x"]["y"]) is type(expected)


def test_override_value_keeps_equals_signs() -> None:
    raw: dict[str, Any] = {}
    apply_override(raw, "output.run_name=a=b")
    assert raw["output"]["run_name"] == "a=b"


def test_override_scientific_notation_is_a_float() -> None:
    raw: dict[str, Any] = {"student": {"model": HUB_ID}}
    apply_override(raw, "train.lr=1e-3")
    assert from_dict(raw).train.lr == pytest.approx(1e-3)


def test_override_scientific_notation_with_dot() -> None:
    raw: dict[str, Any] = {"student": {"model": HUB_ID}}
    apply_override(raw, "train.lr=1.0e-3")
    assert from_dict(raw).train.lr == pytest.approx(1e-3)


def test_override_bool_value_reaches_config() -> None:
    config = load_config(QUICKSTART, ["train.use_gpu=true"], check_paths=False)
    assert config.train.use_gpu is True


@pytest.mark.parametrize("assignment", ["train.epochs", "train.epochs 3", ""])
def test_override_without_equals(assignment: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_override({}, assignment)


@pytest.mark.parametrize("assignment", ["train..epochs=3", ".epochs=3", "=3", "train.=3"])
def test_override_malformed_key(assignment: str) -> None:
    with pytest.raises(ConfigError, match="malformed key"):
        apply_override({}, assignment)


def test_override_invalid_yaml_value() -> None:
    with pytest.raises(ConfigError, match=r"train\.alpha.*not valid YAML"):
        apply_override({}, "train.alpha={a: [1")


@pytest.mark.parametrize(
    ("assignment", "where"),
    [("teachers.5.replicas=2", "teachers.5"), ("teachers.x.replicas=2", "teachers.x"),
     ("teachers.-1.replicas=2", "teachers.-1"), ("teachers.2=x", "teachers.2")],
)
def test_override_bad_list_index(assignment: str, where: str) -> None:
    raw = base_raw()
    before = copy.deepcopy(raw)
    with pytest.raises(ConfigError, match=rf"{re.escape(where)}: expected an index below 2"):
        apply_override(raw, assignment)
    assert raw == before


def test_override_into_a_scalar() -> None:
    raw = {"train": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"train\.epochs is .*not a section"):
        apply_override(raw, "train.epochs.x=1")
    assert raw == {"train": {"epochs": 3}}


def test_override_through_a_scalar_names_the_scalar() -> None:
    raw = {"train": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"train\.epochs is a int, not a section"):
        apply_override(raw, "train.epochs.x.y=1")


@pytest.mark.parametrize(
    ("assignment", "key"),
    [("train.epochs=three", "train.epochs"), ("train.use_gpu=1", "train.use_gpu"),
     ("teachers.0.shots=[1,2]", "teachers.0.shots"), ("train.bogus=1", "train.bogus"),
     ("teachers=5", "teachers")],
)
def test_override_type_errors_surface(assignment: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [assignment], check_paths=False)
    assert_names_key(info.value, key)
    assert str(QUICKSTART) in str(info.value)


def test_override_does_not_leak_between_loads() -> None:
    before = load_config(QUICKSTART, check_paths=False).train.epochs
    assert load_config(QUICKSTART, [f"train.epochs={before + 7}"], check_paths=False).train.epochs == before + 7
    assert load_config(QUICKSTART, check_paths=False).train.epochs == before


# --- helpers --------------------------------------------------------------------------------------


def test_task_weights_order_and_default_alpha() -> None:
    raw = base_raw()
    raw["teachers"].insert(0, {"name": "t0", "model": HUB_ID})
    raw["train"] = {"gamma": 0.7, "alpha": {"t2": 0.25}}
    config = check(raw)
    weights = config.task_weights()
    assert list(weights) == ["answer", "t0", "t1", "t2"]
    assert weights == {"answer": 0.7, "t0": 1.0, "t1": 1.0, "t2": 0.25}
    assert config.alpha_of("t1") == 1.0 and config.alpha_of("t2") == 0.25


def test_task_weights_quickstart() -> None:
    config = load_config(QUICKSTART, check_paths=False)
    assert config.task_weights() == {"answer": 1.0, "teacher-a": 0.5, "teacher-b": 0.5}


def test_the_quickstart_sweep_variant_sweeps_instead_of_comparing() -> None:
    config = load_config(QUICKSTART.parent / "quickstart-sweep.yaml", check_paths=False)
    assert config.compare is False and config.tune.leave_one_teacher_out is True
    assert [t.name for t in config.teachers] == ["teacher-a", "teacher-b"]


def test_the_trained_quickstart_uses_the_trained_teachers_zero_shot() -> None:
    from tinyllm_ray.tiny_trained import TRAINED_TEACHERS

    config = load_config(QUICKSTART.parent / "quickstart-trained.yaml", check_paths=False)
    assert [t.name for t in config.teachers] == list(TRAINED_TEACHERS)
    assert [t.model for t in config.teachers] == [f".tiny_models/{n}" for n in TRAINED_TEACHERS]
    assert all(t.shots == 0 for t in config.teachers) and config.compare is True


def test_stage_key_stable_for_equal_configs() -> None:
    a, b = check(base_raw()), check(base_raw())
    assert a is not b
    assert stage_key(a) == stage_key(b)
    assert stage_key(a.data, a.teachers[0], "v1") == stage_key(b.data, b.teachers[0], "v1")
    assert re.fullmatch(r"[0-9a-f]{16}", stage_key(a))


@pytest.mark.parametrize(
    "change", ["train.epochs=2", "teachers.0.temperature=0.7", "data.seed=1", "student.max_input_tokens=64"]
)
def test_stage_key_changes_with_a_field(change: str) -> None:
    raw = base_raw()
    before = stage_key(check(raw))
    apply_override(raw, change)
    assert stage_key(check(raw)) != before


def test_stage_key_depends_on_extra_parts() -> None:
    config = check(base_raw())
    assert stage_key(config.data, "template/1") != stage_key(config.data, "template/2")


def test_with_absolute_paths(tmp_path: Path) -> None:
    raw = base_raw()
    raw["student"]["model"] = "./models/student"
    raw["teachers"][0]["model"] = "models/teacher"  # no leading dot, but exists on disk
    (tmp_path / "models" / "teacher").mkdir(parents=True)
    raw["output"] = {"dir": "runs"}
    raw["tiny_models"] = ".tiny"
    config = check(raw)
    absolute = with_absolute_paths(config)
    here = tmp_path.resolve()
    assert absolute.student.model == str(here / "models" / "student")
    assert absolute.teachers[0].model == str(here / "models" / "teacher")
    assert absolute.teachers[1].model == HUB_ID
    assert absolute.output.dir == str(here / "runs")
    assert absolute.tiny_models == str(here / ".tiny")
    # the original is untouched, and nothing else changed
    assert config.student.model == "./models/student" and config.output.dir == "runs"
    assert absolute.train == config.train and absolute.data == config.data
    assert with_absolute_paths(absolute) == absolute


def test_with_absolute_paths_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    raw = base_raw()
    raw["student"]["model"] = "~/student"
    absolute = with_absolute_paths(check(raw))
    assert absolute.student.model == str((tmp_path / "home" / "student").resolve())
    assert absolute.tiny_models is None


def test_to_yaml_round_trips() -> None:
    config = load_config(
        QUICKSTART, ["train.lr=1.0e-5", "ray.num_cpus=2", "teachers.1.temperature=0.7", "data.path=/x"],
        check_paths=False,
    )
    text = to_yaml(config)
    again = from_dict(yaml.safe_load(text))
    assert again == config
    assert to_yaml(again) == text


def test_to_yaml_round_trips_defaults() -> None:
    config = check({"student": {"model": HUB_ID}})
    assert from_dict(yaml.safe_load(to_yaml(config))) == config


# --- teacher engines and shot modes ---------------------------------------------------------------


def _model_dir(tmp_path: Path, name: str, encoder_decoder: bool) -> str:
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(f'{{"is_encoder_decoder": {str(encoder_decoder).lower()}}}')
    return f"./{name}"


def test_vllm_refuses_encoder_decoder_local_model(tmp_path: Path) -> None:
    raw = base_raw()
    raw["teachers"][0].update(engine="vllm", model=_model_dir(tmp_path, "t5", encoder_decoder=True))
    with pytest.raises(ConfigError, match="encoder-decoder") as info:
        check(raw, check_paths=True)
    assert_names_key(info.value, "teachers.0.engine")
    assert "teachers.1" not in str(info.value)
    check(raw, check_paths=False)  # the model's config is only read with the path checks
    raw["teachers"][0]["engine"] = "hf"  # the HF engine serves encoder-decoders
    check(raw, check_paths=True)
    raw["teachers"][0].update(engine="vllm", model=_model_dir(tmp_path, "llama", encoder_decoder=False))
    check(raw, check_paths=True)


def test_generated_shots_need_a_pool_larger_than_shots() -> None:
    raw = base_raw()
    raw["teachers"][1].update(shots_mode="generated", shots=4, shot_pool=4)
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, "teachers.1.shot_pool")
    raw["teachers"][1]["shot_pool"] = 5
    check(raw)
    raw["teachers"][1].update(shots_mode="random", shot_pool=2)  # the pool is only used in generated mode
    check(raw)
    raw["teachers"][1].update(shots_mode="generated", shots=0, shot_pool=1)  # zero-shot needs no pool
    check(raw)


def test_max_model_len_must_leave_room_for_a_prompt() -> None:
    raw = base_raw()
    raw["teachers"][0].update(max_model_len=64, max_new_tokens=64)
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, "teachers.0.max_model_len")
    raw["teachers"][0]["max_model_len"] = 65
    check(raw)


@pytest.mark.parametrize("engine", ["vllm", "hf"])
def test_fractional_gpus_above_one_refused(engine: str) -> None:
    raw = base_raw()
    raw["teachers"][0].update(engine=engine, num_gpus=1.5)
    with pytest.raises(ConfigError, match="whole GPUs") as info:
        check(raw)
    assert_names_key(info.value, "teachers.0.num_gpus")
    for gpus in (0.5, 1.0, 2.0):  # a share of one GPU, or whole GPUs (vllm: tensor parallel; hf: its layers)
        raw["teachers"][0]["num_gpus"] = gpus
        check(raw)


@pytest.mark.parametrize(("field", "value"), [("shots_mode", "nearest"), ("engine", "tgi"),
                                              ("chat_template", "always")])
def test_unknown_teacher_choice_refused(field: str, value: str) -> None:
    raw = base_raw()
    raw["teachers"][1][field] = value
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert_names_key(info.value, f"teachers.1.{field}")


def test_teacher_engine_defaults() -> None:
    teacher = check(base_raw()).teachers[0]
    assert (teacher.engine, teacher.shots_mode, teacher.chat_template) == ("hf", "random", "auto")
    assert teacher.max_model_len is None and teacher.enforce_eager is None


def test_a_huge_malformed_override_is_quoted_short():
    """Found by the fuzz test: an empty key with a 5,000-character value was echoed whole in the error."""
    from tinyllm_ray.config.loading import apply_override

    for assignment in ("=" + "9" * 5000, "x" * 5000):
        with pytest.raises(ConfigError) as err:
            apply_override({}, assignment)
        assert len(str(err.value)) < 300


@pytest.mark.parametrize(("key", "meant"), [("train.lrr", "train.lr"), ("teachers.0.max_new_token",
                                                                         "teachers.0.max_new_tokens"),
                                            ("student.modle", "student.model"), ("tune.gama", "tune.gamma")])
def test_a_misspelt_key_gets_the_closest_known_key(key: str, meant: str) -> None:
    raw = _set(base_raw(), key, 1)
    if key.startswith("tune."):
        raw["tune"] = {"gama": 1}
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: unknown key \(did you mean {re.escape(meant)}\?\)"):
        check(raw)


def test_an_unknown_key_like_no_known_one_gets_no_guess() -> None:
    with pytest.raises(ConfigError) as err:
        check(_set(base_raw(), "train.zzzzzz", 1))
    assert "train.zzzzzz: unknown key (got 1)" in str(err.value)


def test_the_model_checks_are_validates_own_and_run_apart_by_validate_models(tmp_path) -> None:
    """``prepare`` checks the rules first (``check_paths=False``) and the models once the tiny ones are built
    (``validate_models``): between them they find what ``validate`` finds, each only its own part."""
    from tinyllm_ray.config import validate_models

    raw = base_raw()
    raw["student"] = {"model": str(tmp_path / "no-such-student")}
    raw["train"] = {"gamma": 1.0, "alpha": {"nobody": 0.5}}
    config = from_dict(raw)
    with pytest.raises(ConfigError) as everything:
        validate(config)
    with pytest.raises(ConfigError) as rules:
        validate(config, check_paths=False)
    with pytest.raises(ConfigError) as models:
        validate_models(config)
    assert_names_key(everything.value, "train.alpha.nobody")
    assert_names_key(everything.value, "student.model")
    assert "train.alpha.nobody" in str(rules.value) and "no-such-student" not in str(rules.value)
    assert "no-such-student" in str(models.value) and "train.alpha" not in str(models.value)
    raw["train"] = {"gamma": 1.0, "alpha": {"t1": 0.5}}
    validate(from_dict(raw), check_paths=False)  # the rules pass; only the model is missing
