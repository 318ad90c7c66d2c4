"""Every stage's key (``keys.py``) is pinned: a run directory written before a change must be reused after it.

The figures below are the keys the quickstart configs had when they were pinned (before the keys
moved into ``keys.py``); a change that moves any of them makes every finished stage of that kind run again.
A key that must change (a new prompt template, a new setting) is re-pinned here on purpose, and the change says
what re-runs.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import REPO
from tinyllm_ray import compare, keys
from tinyllm_ray.config import load_config
from tinyllm_ray.data import synthetic


@pytest.fixture(scope="module")
def quickstart():
    config = load_config(REPO / "configs" / "quickstart.yaml", check_paths=False)
    splits = synthetic.generate(n_train=256, n_valid=64, n_test=64, seed=0)
    return config, splits


def test_teacher_keys_are_the_pinned_ones(quickstart):
    config, splits = quickstart
    held_out = {s: splits[s] for s in ("valid", "test")}
    assert keys.teacher_keys(config.teachers, splits["train"], held_out) == {
        "teacher-a": "1b7d3bd75b017caab8e07fd6", "teacher-b": "1fb258d009e2c8a9e1066f0a"}
    assert keys.teacher_key(config.teachers[0], splits["train"]) == "c0d973e80b4c82f2bc8d4641"  # not evaluated
    assert [keys.settings_key(t) for t in config.teachers] == ["2074a6bce2174659def94d3c", "162371ddfb9ef03dfc55a650"]


def test_student_baseline_and_precomputed_keys_are_the_pinned_ones(quickstart):
    config, _ = quickstart
    assert keys.rationales_key(config) == "9dc05c0e3707209f"
    assert keys.student_key(config) == "d6ed459fa5c25917"
    assert {name: keys.baseline_key(variant, name, keys.rationales_key(config))
            for name, variant in compare.variants(config).items()} == {
        "label-only": "0d0a9cd13714239c", "only-teacher-a": "071ccba9be165e48", "only-teacher-b": "4cce829a330fe977"}
    assert keys.precomputed_key(config, "flan-t5-xl", {"train": "obqa_train.json"}) == "f06ccf85cbad8d3a"


def test_sweep_key_is_the_pinned_one():
    config = load_config(REPO / "configs" / "quickstart-sweep.yaml", check_paths=False)
    assert keys.sweep_key(config) == "e1736780a817ff44"
    # how many trials run at once is not part of it
    more_at_once = dataclasses.replace(config, tune=dataclasses.replace(config.tune, max_concurrent_trials=7))
    assert keys.sweep_key(more_at_once) == keys.sweep_key(config)


def test_a_generation_setting_changes_the_teacher_key_and_a_speed_setting_does_not(quickstart):
    config, splits = quickstart
    teacher = config.teachers[0]
    base = keys.teacher_key(teacher, splits["train"])
    assert keys.teacher_key(dataclasses.replace(teacher, temperature=0.7), splits["train"]) != base
    assert keys.teacher_key(dataclasses.replace(teacher, batch_size=64, replicas=3), splits["train"]) == base


def test_a_run_directory_written_with_the_pinned_keys_is_reused_by_every_stage(quickstart, tmp_path):
    """The markers a run wrote before the keys moved (their keys are the pinned ones, written here as literals, not
    made by the code under test): every stage of the same config finds its result finished."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinyllm_ray import markers, workflow
    from tinyllm_ray.teachers import store

    config, splits = quickstart
    written = {"teacher-a": "1b7d3bd75b017caab8e07fd6", "teacher-b": "1fb258d009e2c8a9e1066f0a"}
    for teacher, key in written.items():
        directory = store.teacher_dir(tmp_path, teacher)
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"id": ["q1"]}), directory / store.COMPACTED)
        (directory / markers.MARKER).write_text(json.dumps({"key": key, "stored_rows": 1, "rationales": 1}))
    exports = {"": "d6ed459fa5c25917", "compare/label-only": "0d0a9cd13714239c",
               "compare/only-teacher-a": "071ccba9be165e48", "compare/only-teacher-b": "4cce829a330fe977"}
    for path, key in exports.items():
        directory = tmp_path / path / "student"
        directory.mkdir(parents=True)
        (directory / markers.MARKER).write_text(json.dumps({"key": key, "steps": 3}))

    held_out = {s: splits[s] for s in ("valid", "test")}
    teachers = workflow.teacher_stages(config, splits["train"], held_out)
    assert [s.finished(tmp_path) is not None for s in teachers] == [True, True]
    assert workflow.student_stage(config).finished(tmp_path) == {"key": "d6ed459fa5c25917", "steps": 3}
    assert all(stage.finished(tmp_path) for _, stage in workflow.baseline_stages(config).values())
    # and a changed setting is not reused
    hotter = dataclasses.replace(config, teachers=[dataclasses.replace(config.teachers[0], temperature=0.5),
                                                   config.teachers[1]])
    assert [s.finished(tmp_path) is not None for s in workflow.teacher_stages(hotter, splits["train"], held_out)] \
        == [False, True]
    assert workflow.student_stage(hotter).finished(tmp_path) is None
