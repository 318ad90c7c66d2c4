"""The student-training keys of the config: types, ranges and cross-field rules name the key."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import ConfigError, from_dict, validate

HUB_ID = "google/flan-t5-small"


def config(train: dict | None = None, eval_: dict | None = None, data: dict | None = None):
    raw = {"student": {"model": HUB_ID}, "train": train or {}, "eval": eval_ or {}, "data": data or {}}
    cfg = from_dict(raw)
    validate(cfg, check_paths=False)
    return cfg


def test_defaults() -> None:
    tc, ec = config().train, config().eval
    assert (tc.mode, tc.shuffle, tc.precision, tc.strategy) == ("prefix", "local", "auto", "ddp")
    assert (tc.checkpoint_every, tc.keep_checkpoints, tc.grad_accum_steps, tc.length_bucketing) == (None, 2, 1, 0)
    assert (ec.every_steps, ec.select_on, ec.max_valid) == (None, "rank", None)


@pytest.mark.parametrize("section, key, value", [
    ("train", "checkpoint_every", 0), ("train", "keep_checkpoints", 0), ("train", "grad_accum_steps", 0),
    ("train", "precision", "fp16"), ("train", "strategy", "zero3"), ("train", "mode", "shared"),
    ("train", "shuffle", "full"), ("train", "length_bucketing", -1), ("eval", "every_steps", 0),
    ("eval", "select_on", "bleu"), ("eval", "max_valid", 0), ("train", "grad_accum_steps", "2"),
    ("train", "compile", "max-autotune"), ("train", "compile", True), ("train", "pad_multiple", -8),
])
def test_bad_values_name_the_key(section: str, key: str, value) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{key}:"):
        config(**{"train" if section == "train" else "eval_": {key: value}})


def test_fsdp_needs_gpus() -> None:
    with pytest.raises(ConfigError, match="train.strategy: fsdp .* needs train.use_gpu: true"):
        config({"strategy": "fsdp"})
    assert config({"strategy": "fsdp", "use_gpu": True}).train.strategy == "fsdp"


def test_compile_is_refused_with_fsdp_and_sets_fixed_shapes() -> None:
    from tinyllm_ray.student.batches import COMPILE_PAD_MULTIPLE, padding

    with pytest.raises(ConfigError, match="train.compile: not with train.strategy fsdp"):
        config({"compile": "default", "strategy": "fsdp", "use_gpu": True})
    assert padding(config().train) == (0, None)  # off: each batch padded to its longest row, rows as they come
    assert padding(config({"pad_multiple": 8}).train) == (8, None)
    assert padding(config({"compile": "reduce-overhead", "batch_size": 12}).train) == (COMPILE_PAD_MULTIPLE, 12)
    assert padding(config({"compile": "default", "pad_multiple": 32, "batch_size": 4}).train) == (32, 4)


def test_a_bucketing_window_of_one_batch_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.length_bucketing: 1 batch per window"):
        config({"length_bucketing": 1})


def test_synthetic_precomputed_rationales_are_the_reference_teacher() -> None:
    cfg = config({"alpha": {"reference": 0.5}}, data={"dataset": "synthetic", "rationales": "precomputed"})
    assert cfg.teacher_names() == ["reference"]
    assert cfg.task_weights() == {"answer": 1.0, "reference": 0.5}
