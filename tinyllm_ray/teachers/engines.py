"""Inference engines behind one small protocol (``Engine``): prompts in, ``Generation``s out.

- ``VLLMEngine``: vLLM's engine inside the calling process (a Ray actor): continuous batching, also across
  calls (``feeder.ContinuousFeeder``: one thread steps the engine, the prompts of every call that arrives join the
  running batch, so several calls in flight never let it drain), prefix caching (the in-context examples repeat
  across prompts), tensor parallel over the replica's GPUs. Causal LMs only. On a GPU it takes the replica's share of each GPU's memory
  (``gpu_memory_utilization``: default 0.9, times ``num_gpus`` for a fraction of a GPU), and first waits
  (``wait_for_gpu_memory``, up to 180 s) until that much is free: the GPUs of a teacher that ran before
  it may take seconds to be released, and vLLM refuses to start on too little free memory.
- ``HFEngine``: transformers ``generate`` for any model, including encoder-decoders (T5/FLAN-T5, which
  vLLM does not serve): prompts are sorted by length and cut into batches so padding stays small,
  causal models pad on the left and decode into a ``StaticCache`` (preallocated: no per-step
  concatenation of the key/value cache) whose width is the batch's rounded up to a multiple of
  ``CACHE_BUCKET`` tokens, with transformers' automatic ``torch.compile`` of static-cache decoding turned
  off (``disable_compile``: it would recompile for every new cache shape); a model that cannot decode
  into a static cache falls back to the dynamic one. bf16 on GPU (float16 is refused for the T5 family,
  whose activations overflow it), only the new tokens are decoded. A replica of more than one GPU
  spreads the model's layers over them (``device_map="auto"``, through ``accelerate``).

Both render a prompt through the tokenizer's chat template when it has one (``chat_template: auto``; ``on``
demands one, ``off`` sends the raw text), decode greedily whatever the model's own ``generation_config`` says
(``devices.plain_generation_config``; vLLM: ``generation_config="vllm"``), never write special tokens into the
text, and say why each generation stopped (``Generation.finish``: ``eos`` or ``length``). Both expose
``encode`` and ``max_prompt_tokens`` so the teacher stage can check a prompt's length *before* submitting it (a prompt over vLLM's ``max_model_len`` would abort the whole batch).
Both take their generation settings as one ``Settings`` (``Settings.from_teacher``); ``ENGINES`` maps the
config's ``engine`` name to a class; ``make_engine`` builds one from a teacher. Device, dtype, pad id and
encoder-decoder detection are ``tinyllm_ray.devices``' rules, shared with the student.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch._dynamo.exc
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, StaticCache

from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.config.checks import is_t5_family
from tinyllm_ray.devices import (
    device_for,
    is_encoder_decoder,
    pad_id,
    pick_device_and_dtype,
    plain_generation_config,
    weights_dtype,
)
from tinyllm_ray.teachers.feeder import ContinuousFeeder

log = logging.getLogger("tinyllm_ray.teachers")
# Context lengths above this in a tokenizer's ``model_max_length`` are transformers' "no limit" marker.
_NO_LIMIT = 1_000_000
# Static key/value cache widths are rounded up to a multiple of this many tokens, so the cache shapes a
# run meets stay few (each new shape would be a new compiled graph, were compilation on).
CACHE_BUCKET = 64
# What a static cache may fail with: models that do not support one, and torch.compile errors.
_NO_STATIC_CACHE = (ValueError, TypeError, NotImplementedError, AttributeError, torch._dynamo.exc.TorchDynamoException)
# vLLM's share of a whole GPU's memory (weights, activations, key/value cache), and of host memory on CPU.
GPU_MEMORY_UTILIZATION, CPU_MEMORY_UTILIZATION = 0.9, 0.2
GPU_MEMORY_WAIT_S = 180.0


# Why a generation ended: the model wrote its end-of-sequence token, or it reached ``max_new_tokens``.
EOS, LENGTH = "eos", "length"


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    finish: str = ""
    """``EOS`` or ``LENGTH`` (empty where the engine could not tell)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What both engines take from a teacher's config; each engine's own knobs stay its keywords."""

    max_new_tokens: int
    num_gpus: float = 0.0
    dtype: str = "auto"
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_model_len: int | None = None
    chat_template: str = "auto"
    trust_remote_code: bool = False

    @classmethod
    def from_teacher(cls, teacher: TeacherConfig) -> Settings:
        return cls(**{f.name: getattr(teacher, f.name) for f in dataclasses.fields(cls)})


class Engine(Protocol):
    max_prompt_tokens: int | None
    """Longest prompt, in tokens, that leaves room for ``max_new_tokens`` (None: no known limit)."""

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt as the model will see it (chat template applied)."""

    def generate_ids(self, prompt_ids: list[list[int]]) -> list[Generation]:
        """One generation per encoded prompt, in order."""


def uses_chat_template(tokenizer: Any, setting: str, model: str) -> bool:
    """Whether prompts may go through the tokenizer's chat template (``encode_prompts`` applies it when the
    tokenizer has one): ``auto`` and ``on`` yes, ``off`` no; ``on`` with a tokenizer without one is an error."""
    if setting == "on" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"chat_template: on, but the tokenizer of {model!r} has no chat template; use auto or off")
    return setting != "off"


def encode_prompts(tokenizer: Any, prompts: list[str], chat: bool, max_tokens: int | None = None) -> list[list[int]]:
    """Token ids per prompt; through the chat template (as one user turn) when ``chat`` and the tokenizer has one."""
    truncate = {"truncation": True, "max_length": max_tokens} if max_tokens else {}
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        return tokenizer(texts, add_special_tokens=False, **truncate)["input_ids"]
    return tokenizer(prompts, **truncate)["input_ids"]


def context_limit(model_config: Any, tokenizer: Any) -> int | None:
    """The model's context length from its config (or tokenizer), None when it declares none (T5)."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < _NO_LIMIT else None


def cache_width(prompt_width: int, max_new_tokens: int, bucket: int = CACHE_BUCKET) -> int:
    """A batch's static cache width: prompt plus new tokens, rounded up to a multiple of ``bucket``."""
    return -(-(prompt_width + max_new_tokens) // bucket) * bucket


def placement(num_gpus: float, device: torch.device) -> dict:
    """``from_pretrained``'s placement keywords: a replica of more than one GPU spreads the model's layers
    over the GPUs it sees (``device_map="auto"``, Ray's actor sees just its own); else none (moved after)."""
    if device.type == "cuda" and num_gpus > 1 and torch.cuda.device_count() > 1:
        return {"device_map": "auto"}
    return {}


def refuse_float16_t5(model: str, model_config: Any, dtype: torch.dtype) -> None:
    """T5-family activations overflow float16 (NaN/inf rationales): refuse it rather than generate garbage."""
    if dtype == torch.float16 and is_t5_family(model_config.to_dict()):
        raise ValueError(f"teacher model {model!r} is a T5-family model ({model_config.model_type}), whose "
                         f"activations overflow float16 (NaN/inf); use dtype bfloat16, float32 or auto")


class HFEngine:
    """transformers ``generate``; one model per actor, loaded once."""

    def __init__(self, model: str, settings: Settings, *, batch_size: int, max_input_tokens: int | None = None,
                 sort_by_length: bool = True, static_cache: bool = True):
        st = settings
        trust_remote_code = st.trust_remote_code
        self.batch_size, self.max_new_tokens, self.max_input_tokens = batch_size, st.max_new_tokens, max_input_tokens
        self.sort_by_length = sort_by_length
        self.sampling: dict = {"do_sample": False}
        if st.temperature > 0:
            self.sampling = {"do_sample": True, "temperature": st.temperature, "top_p": st.top_p}
        self.seed = st.seed
        transformers.utils.logging.disable_progress_bar()
        self.device, torch_dtype = pick_device_and_dtype(st.num_gpus, st.dtype)
        model_config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        refuse_float16_t5(model, model_config, torch_dtype)
        self.encoder_decoder = is_encoder_decoder(model_config)
        auto = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        spread = placement(st.num_gpus, self.device)
        self.model = auto.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code, **spread)
        if spread:  # inputs go where the first layers (the embeddings) are
            self.device = self.model.device
        else:
            self.model.to(self.device)
        self.model.eval()
        self.model.generation_config, dropped = plain_generation_config(self.model)
        if dropped:
            log.info("%s: its generation_config's %s left out (the teacher's temperature and top_p decide)", model,
                     ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right" if self.encoder_decoder else "left"
        if self.tokenizer.pad_token is None:  # ``tokenizer.pad`` needs one: eos, what ``pad_id`` falls back to
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = pad_id(self.tokenizer)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in [*eos, self.tokenizer.eos_token_id] if e is not None}
        self.chat = uses_chat_template(self.tokenizer, st.chat_template, model)
        # Causal models only: an encoder-decoder's decoder cache spans just the new tokens.
        self.static_cache = static_cache and not self.encoder_decoder
        limit = st.max_model_len or context_limit(model_config, self.tokenizer)
        if limit is None:
            self.max_prompt_tokens = None
        elif self.encoder_decoder:  # the rationale is decoded separately: the prompt has the whole context
            self.max_prompt_tokens = limit
        else:
            self.max_prompt_tokens = max(limit - st.max_new_tokens, 0)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts, self.chat, self.max_input_tokens)

    def generate(self, prompts: list[str]) -> list[Generation]:
        return self.generate_ids(self.encode(prompts))

    @torch.inference_mode()
    def generate_ids(self, prompt_ids: list[list[int]]) -> list[Generation]:
        order = list(range(len(prompt_ids)))
        if self.sort_by_length:  # similar lengths share a batch: little padding, no wasted compute
            order.sort(key=lambda i: len(prompt_ids[i]))
        results: list[Generation | None] = [None] * len(prompt_ids)
        if self.sampling["do_sample"]:
            torch.manual_seed(self.seed)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": [prompt_ids[i] for i in idx]}, return_tensors="pt").to(self.device)
            out = self._generate(enc)
            new = out if self.encoder_decoder else out[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row]
                # generate pads a row after its EOS (with the pad id, which is often the EOS itself): a row that
                # holds an EOS ended there (its tokens counted up to it, as vLLM counts them), one without it ran
                # to max_new_tokens.
                tokens = ids[int(self.encoder_decoder):].tolist()
                first_eos = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
                ended = first_eos is not None
                n_new = first_eos + 1 if ended else int((ids != self.pad_id).sum())
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                results[i] = Generation(text=text, prompt_tokens=len(prompt_ids[i]), new_tokens=n_new,
                                        finish=EOS if ended else LENGTH)
        return results  # type: ignore[return-value]

    def _generate(self, enc: Any) -> torch.Tensor:
        # disable_compile: a static cache would make transformers compile the forward on CUDA, and
        # recompile for every new cache shape until torch's recompile limit.
        kwargs = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.pad_id, "disable_compile": True,
                  **self.sampling}
        if self.static_cache:
            # Sized to this batch (prompt width + new tokens, bucketed), not to the longest batch so far as
            # ``cache_implementation="static"`` would: the attention spans little more than the batch needs.
            width = cache_width(enc["input_ids"].shape[1], self.max_new_tokens)
            try:
                return self.model.generate(**enc, past_key_values=StaticCache(config=self.model.config,
                                                                              max_cache_len=width), **kwargs)
            except _NO_STATIC_CACHE as err:
                log.warning("%s: no static key/value cache (%s); using the dynamic one",
                            type(self.model).__name__, err)
                self.static_cache = False
        return self.model.generate(**enc, **kwargs)


def vllm_memory_utilization(num_gpus: float, explicit: float | None, on_gpu: bool) -> float:
    """vLLM's ``gpu_memory_utilization`` for a replica: the configured one, else 0.9 of a GPU times the
    replica's share of it (``num_gpus`` below 1: replicas sharing a GPU split its memory), or 0.2 of host
    memory on CPU."""
    if explicit is not None:
        return explicit
    if not on_gpu:
        return CPU_MEMORY_UTILIZATION
    return GPU_MEMORY_UTILIZATION * min(num_gpus, 1.0)


def wait_for_gpu_memory(
    teacher: str,
    utilization: float,
    devices: int = 1,
    *,
    timeout_s: float = GPU_MEMORY_WAIT_S,
    interval_s: float = 2.0,
    mem_get_info: Callable[[int], tuple[int, int]] = torch.cuda.mem_get_info,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once each of the first ``devices`` GPUs has ``utilization`` of its memory free, as vLLM's
    start-up check demands; the processes of a teacher that ran before may take seconds to release theirs.
    Raises ``RuntimeError`` naming the teacher and the memory seen after ``timeout_s``; logs once while waiting."""
    start, logged = clock(), False
    while True:
        short = []
        for d in range(devices):
            free, total = mem_get_info(d)
            if free < utilization * total:
                short.append(f"GPU {d}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, "
                             f"needs {utilization * total / 2**30:.1f} GiB")
        if not short:
            return
        waited = clock() - start
        if waited >= timeout_s:
            raise RuntimeError(f"teacher {teacher!r}: not enough free GPU memory for vLLM's gpu_memory_utilization "
                               f"{utilization:g} after {waited:.0f} s ({'; '.join(short)}); another process "
                               f"holds it: lower gpu_memory_utilization or free the GPU")
        if not logged:
            log.info("teacher %r: waiting up to %.0f s for GPU memory to be released (%s)",
                     teacher, timeout_s, "; ".join(short))
            logged = True
        sleep(interval_s)


class VLLMEngine:
    """vLLM's offline engine in this process; the replica's GPUs (``num_gpus``) become its tensor-parallel size.
    ``name`` (the teacher's) names it in the messages of the wait for GPU memory."""

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        name: str | None = None,
    ):
        st = settings
        # The engine core runs in this actor's process rather than a child it would spawn: Ray has
        # already given this process its GPUs, and a spawned child would re-import the driver's modules.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, SamplingParams  # imported here: vLLM is an optional extra

        device = device_for(st.num_gpus)
        on_gpu = device.type == "cuda"
        tensor_parallel = max(1, int(st.num_gpus))
        # Tensor-parallel workers as child processes of this actor, on the GPUs Ray gave it (one bundle
        # per replica). vLLM's Ray backend would look for one bundle per GPU in the current group instead.
        backend = {"distributed_executor_backend": "mp"} if tensor_parallel > 1 else {}
        utilization = vllm_memory_utilization(st.num_gpus, gpu_memory_utilization, on_gpu)
        if on_gpu:
            wait_for_gpu_memory(name or model, utilization, min(tensor_parallel, torch.cuda.device_count()))
        self.llm = LLM(
            model=model,
            tensor_parallel_size=tensor_parallel,
            **backend,
            dtype=weights_dtype(st.dtype, device),
            max_model_len=st.max_model_len,
            gpu_memory_utilization=utilization,
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            enable_prefix_caching=True,
            seed=st.seed,
            trust_remote_code=st.trust_remote_code,
            generation_config="vllm",  # vLLM's neutral defaults, not the model's sampling ones
        )
        self.sampling = SamplingParams(temperature=st.temperature, top_p=st.top_p if st.temperature > 0 else 1.0,
                                       max_tokens=st.max_new_tokens, seed=st.seed)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat = uses_chat_template(self.tokenizer, st.chat_template, model)
        self.max_prompt_tokens = max(self.llm.llm_engine.model_config.max_model_len - st.max_new_tokens, 0)

        self.feeder = ContinuousFeeder(self.llm.llm_engine, self.sampling)
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to call from two threads at once

    def close(self) -> None:
        """Stop the engine's stepping thread and drop the engine, so its memory (vLLM budgets the process's whole
        footprint on CPU) is free for another engine in this process."""
        import gc

        self.feeder.close()
        del self.feeder, self.llm
        gc.collect()

    def encode(self, prompts: list[str]) -> list[list[int]]:
        with self._tokenizer_lock:
            return encode_prompts(self.tokenizer, prompts, self.chat)

    def generate(self, prompts: list[str]) -> list[Generation]:
        return self.generate_ids(self.encode(prompts))

    def generate_ids(self, prompt_ids: list[list[int]]) -> list[Generation]:
        """One generation per prompt, in order. Safe to call from several threads at once (the actor takes
        ``VLLM_CALLS_PER_ACTOR`` calls concurrently): every call's prompts join the same running batch."""
        return [Generation(text=o.outputs[0].text, prompt_tokens=len(ids), new_tokens=len(o.outputs[0].token_ids),
                           finish=_FINISH.get(o.outputs[0].finish_reason or "", ""))
                for o, ids in zip(self.feeder.submit(prompt_ids), prompt_ids)]


# vLLM's finish reasons: "stop" is its EOS (or a stop string, which teachers do not set).
_FINISH = {"stop": EOS, "length": LENGTH}


ENGINES: dict[str, type] = {"hf": HFEngine, "vllm": VLLMEngine}


def make_engine(teacher: TeacherConfig) -> Engine:
    settings = Settings.from_teacher(teacher)
    if teacher.engine == "vllm":
        return VLLMEngine(teacher.model, settings, gpu_memory_utilization=teacher.gpu_memory_utilization,
                          enforce_eager=teacher.enforce_eager, name=teacher.name)
    return HFEngine(teacher.model, settings, batch_size=teacher.prompts_per_batch())
