"""Inference engines behind one small protocol: ``engine.generate(prompts) -> list[Generation]``.

``HFEngine`` runs transformers ``generate`` for causal LMs (Llama, Qwen, ...) and encoder-decoders
(T5/FLAN-T5, which vLLM does not serve): prompts are sorted by length and cut into batches so padding
stays small, causal models pad on the left, and only the new tokens are decoded. ``ENGINES`` maps the
config's ``engine`` name to a class.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tinyllm_ray.config import TeacherConfig


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int


class Engine(Protocol):
    def generate(self, prompts: list[str]) -> list[Generation]: ...


def pick_device_and_dtype(num_gpus: float, dtype: str) -> tuple[torch.device, torch.dtype]:
    on_gpu = num_gpus > 0 and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if dtype == "auto":
        return device, (torch.bfloat16 if on_gpu else torch.float32)
    return device, getattr(torch, dtype)


class HFEngine:
    """transformers ``generate``; one model per actor, loaded once (teachers and the student's evaluation)."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int,
        max_new_tokens: int,
        num_gpus: float = 0.0,
        dtype: str = "auto",
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        max_input_tokens: int | None = None,
        trust_remote_code: bool = False,
    ):
        self.batch_size, self.max_new_tokens, self.max_input_tokens = batch_size, max_new_tokens, max_input_tokens
        self.sampling: dict = {"do_sample": False}
        if temperature > 0:
            self.sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        self.seed = seed
        transformers.utils.logging.disable_progress_bar()
        self.device, torch_dtype = pick_device_and_dtype(num_gpus, dtype)
        model_config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        self.model = auto.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right" if self.encoder_decoder else "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.inference_mode()
    def generate(self, prompts: list[str]) -> list[Generation]:
        truncate = {"truncation": True, "max_length": self.max_input_tokens} if self.max_input_tokens else {}
        lengths = [len(ids) for ids in self.tokenizer(prompts, **truncate)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        results: list[Generation | None] = [None] * len(prompts)
        if self.sampling["do_sample"]:
            torch.manual_seed(self.seed)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = [prompts[i] for i in idx]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, **truncate).to(self.device)
            out = self.model.generate(
                **enc, max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **self.sampling
            )
            new = out if self.encoder_decoder else out[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row]
                n_new = int((ids != self.tokenizer.pad_token_id).sum())
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                results[i] = Generation(text=text, prompt_tokens=lengths[i], new_tokens=n_new)
        return results  # type: ignore[return-value]


ENGINES: dict[str, type] = {"hf": HFEngine}


def make_engine(teacher: TeacherConfig) -> Engine:
    return ENGINES[teacher.engine](
        teacher.model,
        batch_size=teacher.batch_size,
        max_new_tokens=teacher.max_new_tokens,
        num_gpus=teacher.num_gpus,
        dtype=teacher.dtype,
        temperature=teacher.temperature,
        top_p=teacher.top_p,
        seed=teacher.seed,
        trust_remote_code=teacher.trust_remote_code,
    )
