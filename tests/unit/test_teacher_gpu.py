"""The teachers' GPU rules (issue #22), checked on the CPU: what each engine would do on CUDA is read off the
keywords it passes (``generate``, ``from_pretrained``, vLLM's ``LLM``) with CUDA, the GPU memory and vLLM
faked; the config and cluster rules on fake model directories and node lists. No GPU, no vLLM import."""

from __future__ import annotations

import functools
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch._dynamo.exc

from tinyllm_ray import prompts
from tinyllm_ray.config import ConfigError, from_dict, validate
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.resources import NodeType, check_fits
from tinyllm_ray.teachers import engines

MAX_NEW = 3
QUESTIONS = generate(12, 1, 1, seed=3)["train"]
GIB = 2**30


@pytest.fixture(scope="module")
def teacher(tiny_models: Path) -> engines.HFEngine:
    return engines.HFEngine(str(tiny_models / "teacher-a"), engines.Settings(max_new_tokens=MAX_NEW), batch_size=2)


def _many_widths(engine: engines.HFEngine) -> list[list[int]]:
    """Prompts of ten different lengths (5 to ~150 tokens): five batches of two, five prompt widths."""
    texts = [prompts.teacher_prompt(q, QUESTIONS[i + 1 : i + 1 + i % 3]) for i, q in enumerate(QUESTIONS[:10])]
    ids = engine.encode(texts)
    return [x[: 5 + 15 * i] for i, x in enumerate(sorted(ids, key=len))]


def _assert_names_key(err: pytest.ExceptionInfo, key: str) -> None:
    assert re.search(rf"^\s*{re.escape(key)}:", str(err.value), re.MULTILINE), str(err.value)


# --- 1. HFEngine: a static cache without torch.compile, of few shapes ------------------------------------


def test_cache_width_rounds_up_to_the_bucket() -> None:
    assert engines.cache_width(1, 3) == 64
    assert engines.cache_width(61, 3) == 64
    assert engines.cache_width(62, 3) == 128
    assert engines.cache_width(100, 64, bucket=32) == 192


def test_generate_turns_off_compilation_and_buckets_the_cache(teacher, monkeypatch) -> None:
    ids = _many_widths(teacher)
    calls = []
    real = teacher.model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(teacher.model, "generate", spy)
    teacher.generate_ids(ids)
    widths = {kw["past_key_values"].max_cache_len for kw in calls}
    prompt_widths = {kw["input_ids"].shape[1] for kw in calls}
    assert len(calls) == 5 and len(prompt_widths) == 5
    assert all(kw["disable_compile"] is True for kw in calls)  # no CUDA-graph compile of the static cache
    assert all(w % engines.CACHE_BUCKET == 0 for w in widths)
    assert len(widths) < len(prompt_widths)  # fewer cache shapes than batch shapes


def test_a_compile_error_falls_back_to_the_dynamic_cache_with_the_same_text(teacher, monkeypatch, caplog) -> None:
    ids = _many_widths(teacher)[:4]
    static = teacher.generate_ids(ids)
    real = teacher.model.generate

    def compile_fails(**kwargs):
        if kwargs.get("past_key_values") is not None:
            raise torch._dynamo.exc.Unsupported("recompile limit reached")
        return real(**kwargs)

    monkeypatch.setattr(teacher.model, "generate", compile_fails)
    try:
        dynamic = teacher.generate_ids(ids)
        assert not teacher.static_cache
        assert "no static key/value cache" in caplog.text
    finally:
        teacher.static_cache = True
    assert [g.text for g in dynamic] == [g.text for g in static]  # greedy: the cache changes nothing
    assert all(g.new_tokens > 0 for g in dynamic)


# --- 2. T5-family teachers refuse float16 ------------------------------------------------------------------


def _teacher_config(model: str, **teacher):
    return from_dict({"student": {"model": "google/flan-t5-small"},
                      "teachers": [{"name": "t", "model": model, **teacher}]})


def _model_dir(tmp_path: Path, name: str, **config) -> str:
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps(config))
    return str(tmp_path / name)


@pytest.mark.parametrize("model_type", ["t5", "mt5", "umt5", "longt5"])
def test_config_refuses_float16_for_a_local_t5_family_model(tmp_path, model_type) -> None:
    model = _model_dir(tmp_path, model_type, model_type=model_type, is_encoder_decoder=True)
    with pytest.raises(ConfigError, match="overflow float16") as err:
        validate(_teacher_config(model, dtype="float16"))
    _assert_names_key(err, "teachers.0.dtype")
    for dtype in ("bfloat16", "float32", "auto"):
        validate(_teacher_config(model, dtype=dtype))
    validate(_teacher_config(model, dtype="float16"), check_paths=False)  # the model's config is not read


def test_config_t5_family_by_its_layers_and_other_models_keep_float16(tmp_path) -> None:
    t5_layers = _model_dir(tmp_path, "custom", model_type="my-t5", is_encoder_decoder=True,
                           architectures=["T5ForConditionalGeneration"])
    with pytest.raises(ConfigError) as err:
        validate(_teacher_config(t5_layers, dtype="float16"))
    _assert_names_key(err, "teachers.0.dtype")
    for name, config in [("llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
                         ("bart", {"model_type": "bart", "is_encoder_decoder": True})]:
        validate(_teacher_config(_model_dir(tmp_path, name, **config), dtype="float16"))


def test_hf_engine_refuses_float16_for_t5_at_load(tiny_models) -> None:
    with pytest.raises(ValueError, match="T5-family .* overflow float16"):
        engines.HFEngine(str(tiny_models / "student-t5"), engines.Settings(max_new_tokens=MAX_NEW, dtype="float16"),
                         batch_size=2)


# --- 3. an hf teacher spreads over a replica's GPUs ---------------------------------------------------------


def _fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_placement(monkeypatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    _fake_cuda(monkeypatch, 2)
    assert engines.placement(2, cuda) == {"device_map": "auto"}
    assert engines.placement(1, cuda) == {} and engines.placement(0.5, cuda) == {}
    assert engines.placement(2, cpu) == {}
    _fake_cuda(monkeypatch, 1)  # Ray gave the replica one GPU only
    assert engines.placement(2, cuda) == {}


def test_hf_engine_with_two_gpus_loads_with_device_map_auto(tiny_models, monkeypatch) -> None:
    """A replica that sees 2 GPUs asks ``from_pretrained`` to spread the layers (``device_map="auto"``), leaves
    the model where the load put it, and sends its inputs to the model's first layers, not to the device it picks
    alone ("cuda"). The load is transformers' own, given the engine's keywords unchanged, on this machine as it
    is (no GPU: accelerate's "auto" puts every layer on the CPU, which a copy of the model to "cuda" would not)."""
    _fake_cuda(monkeypatch, 2)
    asked = {}
    load = engines.AutoModelForCausalLM.from_pretrained

    def from_pretrained(model, **kwargs):
        asked.update(kwargs)
        with monkeypatch.context() as here:  # what accelerate sees while it places the layers: no GPU
            here.setattr(torch.cuda, "is_available", lambda: False)
            here.setattr(torch.cuda, "device_count", lambda: 0)
            return load(model, **kwargs)

    monkeypatch.setattr(engines.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    engine = engines.HFEngine(str(tiny_models / "teacher-a"),
                              engines.Settings(max_new_tokens=MAX_NEW, num_gpus=2, dtype="float32"), batch_size=2)
    assert asked["device_map"] == "auto"
    assert engines.device_for(2) == torch.device("cuda")  # where a one-GPU replica's model and inputs would go
    assert engine.device == engine.model.device == torch.device("cpu")
    alone = engines.HFEngine(str(tiny_models / "teacher-a"), engines.Settings(max_new_tokens=MAX_NEW), batch_size=2)
    prompt = ["Tom has 3 apples."]
    assert engine.generate(prompt) == alone.generate(prompt)  # CUDA still looks available: "cuda" inputs would fail


def test_fractional_gpus_above_one_refused_for_hf_too() -> None:
    with pytest.raises(ConfigError, match="whole GPUs") as err:
        validate(_teacher_config("some/llm", engine="hf", num_gpus=1.5), check_paths=False)
    _assert_names_key(err, "teachers.0.num_gpus")
    validate(_teacher_config("some/llm", engine="hf", num_gpus=2.0), check_paths=False)


# --- 4. vLLM takes its replica's share of the GPU's memory --------------------------------------------------


def test_vllm_memory_utilization() -> None:
    assert engines.vllm_memory_utilization(1, None, on_gpu=True) == pytest.approx(0.9)
    assert engines.vllm_memory_utilization(4, None, on_gpu=True) == pytest.approx(0.9)  # of each GPU
    assert engines.vllm_memory_utilization(0.5, None, on_gpu=True) == pytest.approx(0.45)
    assert engines.vllm_memory_utilization(0.25, None, on_gpu=True) == pytest.approx(0.225)
    assert engines.vllm_memory_utilization(0.5, 0.3, on_gpu=True) == 0.3
    assert engines.vllm_memory_utilization(0, None, on_gpu=False) == pytest.approx(0.2)


def test_config_refuses_a_utilization_above_the_replicas_share() -> None:
    def check(**teacher):
        validate(_teacher_config("some/llm", engine="vllm", **teacher), check_paths=False)

    with pytest.raises(ConfigError, match="share") as err:
        check(num_gpus=0.5, gpu_memory_utilization=0.9)
    _assert_names_key(err, "teachers.0.gpu_memory_utilization")
    check(num_gpus=0.5, gpu_memory_utilization=0.5)
    check(num_gpus=0.5)
    check(num_gpus=1.0, gpu_memory_utilization=0.95)
    check(num_gpus=0.0, gpu_memory_utilization=0.5)  # on CPU: a share of host memory


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


class BusyGPU:
    """A GPU of 80 GiB whose memory is released on a clock as a previous teacher's processes exit:
    ``free_from`` maps a time to the GiB free from then on."""

    def __init__(self, clock: Clock, free_from: dict[float, float]) -> None:
        self.clock, self.free_from, self.polled = clock, free_from, []

    def free_gib(self) -> float:
        return max((t, gib) for t, gib in self.free_from.items() if t <= self.clock.now)[1]

    def mem_get_info(self, device: int) -> tuple[int, int]:
        self.polled.append(device)
        return int(self.free_gib() * GIB), 80 * GIB


def _fake_vllm(monkeypatch, gpu: BusyGPU) -> list[dict]:
    """A stand-in ``vllm`` module whose ``LLM`` starts as vLLM does: on a GPU, only with ``gpu_memory_utilization``
    of its memory free (vLLM's start-up check refuses less). Returns what each start took, and when."""
    started: list[dict] = []

    class LLM:
        def __init__(self, **kwargs):
            share = kwargs["gpu_memory_utilization"]
            if torch.cuda.is_available() and gpu.free_gib() < share * 80:
                raise ValueError(f"Free memory on device ({gpu.free_gib()}/80 GiB) is less than desired GPU "
                                 f"memory utilization ({share})")
            started.append({"gpu_memory_utilization": share, "at": gpu.clock.now})
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=256))

        def get_tokenizer(self):
            return None

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", module)
    return started


def test_vllm_engine_on_a_shared_gpu_waits_for_then_takes_its_share(monkeypatch, caplog) -> None:
    """Half a GPU (``num_gpus: 0.5``): vLLM takes 0.45 of its memory (half of 0.9), and starts only once that
    much is free. The engine's own wait (``wait_for_gpu_memory``) runs, on a fake clock, against a GPU whose
    memory a previous teacher frees after 5 s (10 GiB of 80 free, then 40: the 36 GiB needed)."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    clock = Clock()
    gpu = BusyGPU(clock, {0.0: 10, 5.0: 40})
    started = _fake_vllm(monkeypatch, gpu)
    _fake_cuda(monkeypatch, 1)
    monkeypatch.setattr(engines, "wait_for_gpu_memory", functools.partial(
        engines.wait_for_gpu_memory, mem_get_info=gpu.mem_get_info, sleep=clock.sleep, clock=clock))
    caplog.set_level("INFO", logger="tinyllm_ray.teachers")
    engines.VLLMEngine("some/llm", engines.Settings(max_new_tokens=5, num_gpus=0.5), name="big")
    assert [s["gpu_memory_utilization"] for s in started] == [pytest.approx(0.45)]
    assert 5.0 <= started[0]["at"] <= 7.0  # once the memory was free, at the next poll (every 2 s)
    assert set(gpu.polled) == {0}  # its one GPU
    assert "teacher 'big': waiting" in caplog.text  # the wait names the teacher

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # on the CPU: no GPU memory to wait for
    clock.now, gpu.polled = 0.0, []
    engines.VLLMEngine("some/llm", engines.Settings(max_new_tokens=5), name="cpu")
    assert started[1] == {"gpu_memory_utilization": pytest.approx(0.2), "at": 0.0} and gpu.polled == []


# --- 5. vLLM waits for the previous teacher's GPU memory ---------------------------------------------------


def test_wait_for_gpu_memory_polls_until_enough_is_free(caplog) -> None:
    clock = Clock()
    free = iter([10, 30, 60, 75])  # GiB of 80 free, as the previous teacher's processes exit

    def mem_get_info(device):
        return next(free) * GIB, 80 * GIB

    caplog.set_level("INFO", logger="tinyllm_ray.teachers")
    engines.wait_for_gpu_memory("big", 0.85, mem_get_info=mem_get_info, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == 3  # 10, 30, 60 GiB < the 68 GiB needed; 75 is enough
    waiting = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waiting) == 1 and "'big'" in waiting[0].getMessage()


def test_wait_for_gpu_memory_returns_at_once_when_free() -> None:
    clock = Clock()
    engines.wait_for_gpu_memory("t", 0.9, devices=2, mem_get_info=lambda d: (79 * GIB, 80 * GIB),
                                sleep=clock.sleep, clock=clock)
    assert clock.sleeps == 0


def test_wait_for_gpu_memory_times_out_naming_the_teacher_and_the_memory() -> None:
    clock = Clock()
    polled = []

    def mem_get_info(device):
        polled.append(device)
        return (80 * GIB, 80 * GIB) if device == 0 else (20 * GIB, 80 * GIB)  # GPU 1 stays busy

    with pytest.raises(RuntimeError) as err:
        engines.wait_for_gpu_memory("big", 0.9, devices=2, timeout_s=180, mem_get_info=mem_get_info,
                                    sleep=clock.sleep, clock=clock)
    text = str(err.value)
    assert "'big'" in text and "GPU 1: 20.0 of 80.0 GiB free" in text and "GPU 0" not in text
    assert 180 <= clock.now < 185 and set(polled) == {0, 1}


# --- 6. a vllm teacher without GPUs on a cluster with GPUs ------------------------------------------------


CPU_NODE = NodeType("cpu", {"CPU": 2.0})
GPU_NODE = NodeType("gpu", {"CPU": 8.0, "GPU": 4.0})


def test_vllm_without_gpus_refused_when_a_node_has_gpus(monkeypatch) -> None:
    from tinyllm_ray import resources

    monkeypatch.delenv(resources.SKIP_ENV, raising=False)
    cfg = from_dict({"student": {"model": "google/flan-t5-small"},
                     "teachers": [{"name": "a", "model": "some/llm", "engine": "vllm", "num_gpus": 1},
                                  {"name": "b", "model": "some/llm", "engine": "vllm"},
                                  {"name": "c", "model": "some/llm", "engine": "hf"}]})
    with pytest.raises(ConfigError) as err:
        check_fits(cfg, [CPU_NODE, GPU_NODE])
    _assert_names_key(err, "teachers.1.num_gpus")
    assert "teachers.0" not in str(err.value) and "teachers.2" not in str(err.value)  # GPUs given; hf on CPU
    autoscaled = NodeType("gpu (autoscaler, up to 2)", {"CPU": 8.0, "GPU": 1.0}, 2)
    with pytest.raises(ConfigError, match="teachers.1.num_gpus"):
        check_fits(cfg, [NodeType("head", {"CPU": 2.0}), autoscaled])  # a GPU node the cluster may add
    cpu_only = from_dict({"student": {"model": "google/flan-t5-small"},
                          "teachers": [{"name": "b", "model": "some/llm", "engine": "vllm"}]})
    check_fits(cpu_only, [CPU_NODE])  # a CPU-only cluster runs vLLM on the CPU
