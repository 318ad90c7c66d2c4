"""The GPU path on a CUDA GPU (marker ``gpu``; skipped without CUDA): each check of ``bench/gpu.py`` as a test, on
the FLAN-T5-base shape for the student and the ~1B Llama shape for the teacher engine. Run them with
``bash bench/gpu_check.sh`` (or ``python -m pytest tests/gpu -m gpu``)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import gpu_check

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

gpu = gpu_check()
CUDA = torch.device("cuda")


def test_a_bf16_student_step_is_finite_keeps_fp32_state_and_reads_nothing_back():
    r = gpu.student_step("flan-t5-base", CUDA, batch=8, input_tokens=128, steps=2, peak_tflops=None)
    assert all(math.isfinite(v) for v in r["loss_first_last"])
    assert r["project_syncs"] == 0, r
    assert r["ok"], r


def test_fsdp_wraps_each_block_and_trains():
    r = gpu.fsdp_step("flan-t5-base", CUDA, batch=4, input_tokens=64)
    assert r["fsdp_units"] == r["blocks"] > 0 and r["ok"], r


def test_scoring_on_the_gpu_picks_what_the_cpu_picks():
    r = gpu.scoring(CUDA, 32)
    assert r["rank_same"] == r["generate_same"] == r["questions"], r


def test_adamw_state_saved_on_the_gpu_resumes_through_the_cpu():
    r = gpu.resume(CUDA)
    assert r["loaded_on_cpu"] and r["state_on_param_device"] and r["ok"], r


def test_the_hf_engine_compiles_nothing_and_its_static_cache_changes_no_text():
    r = gpu.hf_engine("llama-1b", CUDA, prompts=32, new_tokens=32)
    assert r["compiled_frames"] == 0 and r["greedy_same"] == r["prompts"], r
