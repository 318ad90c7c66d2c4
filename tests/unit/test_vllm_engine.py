"""VLLMEngine on a tiny teacher (CPU): its own module, since starting vLLM takes ~15 s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytest.importorskip("vllm")

from tinyllm_ray.teachers import engines  # noqa: E402

MAX_NEW = 5
PROMPTS = [
    "Tom has 3 apples and buys 2 more. How many apples does Tom have?",
    "Q: Anna is taller than Bob. Who is shorter?",
    "Explain step by step why (b) 5 is the correct answer.",
]


def test_vllm_engine_greedy_is_repeatable_and_limits_prompts(tiny_models: Path) -> None:
    engine = engines.VLLMEngine(str(tiny_models / "teacher-a"), engines.Settings(max_new_tokens=MAX_NEW, max_model_len=256))
    assert engine.max_prompt_tokens == 256 - MAX_NEW
    ids = engine.encode(PROMPTS)
    assert ids == [engine.tokenizer(p)["input_ids"] for p in PROMPTS]  # no chat template in the tiny tokenizer
    first = engine.generate_ids(ids)
    second = engine.generate(PROMPTS)
    assert len(first) == len(PROMPTS)
    assert [g.text for g in first] == [g.text for g in second]
    assert [g.prompt_tokens for g in first] == [len(x) for x in ids]
    assert all(0 < g.new_tokens <= MAX_NEW for g in first)
