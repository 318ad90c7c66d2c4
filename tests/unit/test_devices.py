"""tinyllm_ray.devices: device, precision and dtype rules, the pad id and encoder-decoder detection (CPU only:
a CUDA device is a ``torch.device`` object, and CUDA's presence is monkeypatched)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, T5Config

from tinyllm_ray import devices

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(params=[False, True], ids=["no-cuda", "fake-cuda"])
def cuda_available(request, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def test_device_needs_gpus_and_cuda(cuda_available: bool) -> None:
    assert devices.device_for(0) == CPU
    assert devices.device_for(0.0) == CPU
    assert devices.device_for(1) == (CUDA if cuda_available else CPU)
    assert devices.device_for(0.5) == (CUDA if cuda_available else CPU)  # a share of a GPU is still a GPU


@pytest.mark.parametrize("precision, on_cpu, on_cuda", [("auto", False, True), ("bf16", True, True),
                                                        ("fp32", False, False)])
def test_student_autocast(precision: str, on_cpu: bool, on_cuda: bool) -> None:
    assert devices.use_bf16(precision, CPU) is on_cpu
    assert devices.use_bf16(precision, CUDA) is on_cuda


def test_auto_means_bf16_on_cuda_only() -> None:
    assert devices.auto_is_bf16(CUDA) and devices.auto_is_bf16(torch.device("cuda:1"))
    assert not devices.auto_is_bf16(CPU)


@pytest.mark.parametrize("dtype, on_cpu, on_cuda", [("auto", "float32", "bfloat16"), ("float32",) * 3,
                                                    ("bfloat16",) * 3, ("float16",) * 3])
def test_teacher_weights_dtype(dtype: str, on_cpu: str, on_cuda: str) -> None:
    assert devices.weights_dtype(dtype, CPU) == on_cpu  # the name vLLM takes
    assert devices.weights_dtype(dtype, CUDA) == on_cuda
    assert devices.torch_dtype(dtype, CPU) is getattr(torch, on_cpu)  # the dtype transformers takes
    assert devices.torch_dtype(dtype, CUDA) is getattr(torch, on_cuda)


def test_teacher_device_and_dtype(cuda_available: bool) -> None:
    assert devices.pick_device_and_dtype(0, "auto") == (CPU, torch.float32)
    assert devices.pick_device_and_dtype(0, "float16") == (CPU, torch.float16)
    expected = (CUDA, torch.bfloat16) if cuda_available else (CPU, torch.float32)
    assert devices.pick_device_and_dtype(1, "auto") == expected


@pytest.mark.parametrize("enabled", [False, True])
def test_bf16_autocast_on_cpu(enabled: bool) -> None:
    a = torch.ones(2, 2)
    with devices.bf16_autocast(CPU, enabled):
        out = a @ a
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)


def test_pad_id_falls_back_to_eos() -> None:
    assert devices.pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert devices.pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=1)) == 0  # 0 is a pad id, not "none"
    assert devices.pad_id(SimpleNamespace(pad_token_id=5, eos_token_id=1)) == 5


def test_encoder_decoder_from_a_config_a_model_or_a_path(tmp_path: Path) -> None:
    t5, llama = T5Config(), LlamaConfig()
    assert devices.is_encoder_decoder(t5) is True
    assert devices.is_encoder_decoder(llama) is False
    assert devices.is_encoder_decoder(SimpleNamespace(config=t5)) is True  # a loaded model: its .config
    assert devices.is_encoder_decoder(SimpleNamespace(config=llama)) is False
    assert devices.is_encoder_decoder(SimpleNamespace()) is False  # a config that does not say: decoder-only
    t5.save_pretrained(tmp_path / "t5")
    llama.save_pretrained(tmp_path / "llama")
    assert devices.is_encoder_decoder(str(tmp_path / "t5")) is True  # a path: its config.json is read
    assert devices.is_encoder_decoder(tmp_path / "llama") is False


def test_student_and_teachers_share_the_rules() -> None:
    from tinyllm_ray.student import model
    from tinyllm_ray.teachers import engines

    assert model.is_encoder_decoder is devices.is_encoder_decoder
    assert engines.pick_device_and_dtype is devices.pick_device_and_dtype
