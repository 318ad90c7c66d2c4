"""Teacher-stage benchmark: our engines against the bare libraries, same prompts, same tiny model.

    python bench/teachers.py [--questions 768] [--max-new-tokens 32] [--repeats 5] [--hf-repeats 7]
                             [--large 4] [--large-repeats 3] [--no-vllm] [--no-hf] [--dataset DIR]

Prompts: the teacher-forcing prompts (2 random in-context examples) of the built-in synthetic training
questions; model: the tiny random-weight Llama ``teacher-a`` of ``tinyllm_ray.tiny``; greedy decoding.
Measured in the same run: the two arms of a pair run back to back (which goes first alternates),
``--hf-repeats`` (HF) or ``--repeats`` (vLLM) times. A ratio is the median over the repeats of the ratio
within a repeat (the two runs of a repeat share the machine's state of the moment; the median ignores a
repeat that a burst of other load hit);
``*_best`` is the fastest run of one arm over the fastest of the other, for reference:

- ``vllm_vs_bare`` (R1): tokens/s of our teacher stage with the vLLM engine (Ray Data actor in its
  placement group, rows in calls of ``--vllm-batch``, token counting and the long-prompt check,
  rationale post-processing, blocks streamed back to the driver) / tokens/s of one bare
  ``vllm.LLM.generate`` call over the same prompts in one process. Both exclude engine start-up (and Ray
  Data's own actors, started once per session before the repeats: ``warm_up_ray_data``) and
  get one small warm-up call: the stage's clock runs from the moment its last warmed-up replica is ready (the
  replicas start together: ``stage.ReplicaGate``) to the arrival of its last block, the bare one around
  ``generate``. Target >= 0.95 (median).
- ``vllm_vs_bare_large``: the same on ``--large`` times the questions (12 calls of 256 instead of 3), where the
  calls after the first round show whether the engine's batch stays full from one call to the next.
- ``two_replicas_vs_one``: our stage with two replicas (the cores shared out between them) / with one, on the
  large workload. On a 2-core machine each replica gets one core.
- ``hf_vs_naive`` (R2): tokens/s of our ``HFEngine`` (length-sorted batches, a static key/value cache
  sized to each batch) / a naive loop of fixed-order batches of the same size through transformers
  ``generate`` (its default dynamic cache), same model and prompts, in this process. Target >= 1.2.
  ``hf_vs_naive_pairs``: the ratio within each repeat, to show the spread. ``padding``: padding tokens over
  prompt tokens in the naive loop's batches and in length-sorted ones; the tiny model's decoding costs both
  arms the same per step, so the padding the naive loop computes bounds what the engine can gain.

The last line is one JSON object with the ratios and the absolute tokens/s of every arm. On a machine
with a CUDA GPU the engines run there (bf16); on CPU they run on the CPU (vLLM's CPU build).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tinyllm_ray.config import TeacherConfig  # noqa: E402
from tinyllm_ray.data.synthetic import generate  # noqa: E402
from tinyllm_ray.teachers.engines import HFEngine, Settings, pick_device_and_dtype  # noqa: E402
from tinyllm_ray.teachers.runner import train_variants  # noqa: E402
from tinyllm_ray.tiny import build_tiny_models  # noqa: E402

HF_BATCH = 16


def prompts_for(n: int, dataset: str | None = None) -> list[str]:
    """Teacher prompts of n training questions: the built-in dataset, or a dataset directory in the
    TinyLLM authors' layout (real question lengths, e.g. ../shared/data/tinyllm-official/obqa)."""
    if dataset:
        from tinyllm_ray.config import DataConfig
        from tinyllm_ray.data.load import load_data

        train = load_data(DataConfig(dataset=Path(dataset).name, path=dataset, max_train=n)).splits["train"]
    else:
        train = generate(n_train=n, n_valid=8, n_test=8, seed=0)["train"]
    teacher = TeacherConfig(name="bench", model="unused", shots=2)
    variants = train_variants(teacher, train)
    return [variants[q.id][0] for q in train]


def padding_fraction(lengths: list[int], batch: int) -> float:
    """Padding tokens over real tokens when ``lengths`` are cut into batches of ``batch`` in this order: what a
    batched prefill computes for nothing, and so the most that reordering the prompts can save."""
    padded = sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))
    return padded / sum(lengths) - 1


def naive_hf(model_dir: str, prompts: list[str], max_new_tokens: int, on_gpu: bool) -> tuple[float, int]:
    """The loop a user would write: fixed-order batches, pad left, generate, decode."""
    device, dtype = pick_device_and_dtype(1 if on_gpu else 0, "auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tokens = 0
    with torch.inference_mode():  # warm-up, untimed, as every arm gets
        model.generate(**tokenizer(prompts[:HF_BATCH], return_tensors="pt", padding=True).to(device),
                       max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), HF_BATCH):
            enc = tokenizer(prompts[i : i + HF_BATCH], return_tensors="pt", padding=True).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            tokenizer.batch_decode(new, skip_special_tokens=True)
            tokens += int((new != tokenizer.pad_token_id).sum())
    return time.perf_counter() - start, tokens


def ours_hf(model_dir: str, prompts: list[str], max_new_tokens: int, on_gpu: bool) -> tuple[float, int]:
    engine = HFEngine(model_dir, Settings(max_new_tokens=max_new_tokens, num_gpus=1 if on_gpu else 0), batch_size=HF_BATCH)
    engine.generate(prompts[:HF_BATCH])  # warm-up, untimed
    start = time.perf_counter()
    generations = engine.generate(prompts)
    return time.perf_counter() - start, sum(g.new_tokens for g in generations)


def bare_vllm(model_dir: str, prompts: list[str], max_new_tokens: int, on_gpu: bool) -> tuple[float, int]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, dtype="bfloat16" if on_gpu else "float32", max_model_len=1024,
              gpu_memory_utilization=0.9 if on_gpu else 0.2, enforce_eager=not on_gpu, enable_prefix_caching=True,
              seed=0)
    params = SamplingParams(temperature=0, max_tokens=max_new_tokens, seed=0)
    llm.generate(prompts[:8], SamplingParams(temperature=0, max_tokens=2), use_tqdm=False)  # warm-up, untimed
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    gc.collect()
    return seconds, tokens


def ours_vllm(model_dir: str, prompts: list[str], max_new_tokens: int, on_gpu: bool, batch: int,
              replicas: int = 1) -> tuple[float, int]:
    import pyarrow as pa

    from tinyllm_ray.teachers.runner import reserved
    from tinyllm_ray.teachers.source import PromptSource
    from tinyllm_ray.teachers.stage import TeacherWorker, finished_calls, rationale_stage, rows_per_call

    class TimedWorker(TeacherWorker):
        """Our worker, warmed up like the bare engine, and saying when it was ready (engine start-up excluded)."""

        def __init__(self, teacher):
            super().__init__(teacher)
            self.engine.generate_ids(self.engine.encode(prompts[:8])[:8])
            self.ready_at = time.time()

        def __call__(self, batch):
            start = time.time()
            out = super().__call__(batch)
            n = len(out["id"])
            out["ready_at"] = [self.ready_at] * n
            out["call"] = [[start, time.time()]] * n
            return out

    # all the cores, as the bare engine in this process gets (Ray would give a 1-CPU actor one thread); with
    # several replicas, the cores shared out among them
    teacher = TeacherConfig(name="bench", model=model_dir, engine="vllm", batch_size=batch, num_gpus=1 if on_gpu else 0,
                            num_cpus=float(os.cpu_count() or 1) / replicas, replicas=replicas,
                            max_new_tokens=max_new_tokens, max_model_len=1024, min_rationale_words=1)
    rows = pa.table({"id": [str(i) for i in range(len(prompts))], "role": ["train"] * len(prompts),
                     "key": [str(i) for i in range(len(prompts))], "choices": [["x", "y"]] * len(prompts),
                     "answer": ["x"] * len(prompts), "variants": [[p] for p in prompts]})
    ready, last, tokens, calls = 0.0, 0.0, 0, []
    cpu_before = cpu_by_process()
    with reserved(teacher) as group, PromptSource.of_table(rows, rows_per_call(teacher)) as source:
        stage = rationale_stage(source, teacher, group, worker=TimedWorker)
        for block in finished_calls(stage):
            last = time.time()
            ready = max(ready, max(block.column("ready_at").to_pylist()))
            tokens += sum(block.column("new_tokens").to_pylist())
            calls.append(block.column("call")[0].as_py())
    busy = sum(end - start for start, end in calls)
    print(f"  (our stage: {len(calls)} calls, in them {busy:.2f} s of {last - ready:.2f} s; first call "
          f"{min(c[0] for c in calls) - ready:+.2f} s after ready, calls {[round(e - s, 2) for s, e in calls]}; "
          f"CPU seconds by process over the whole arm, start-up included: {cpu_spent(cpu_before)})")
    return last - ready, tokens


class _Echo:
    def __call__(self, batch):
        return batch


def warm_up_ray_data() -> None:
    """One tiny actor-pool pipeline before the repeats: Ray Data starts its own actors (stats, autoscaling
    coordinator, actor locations) at a session's first such pipeline, once per cluster, and their start-up
    (about 4 CPU-seconds on 2 cores) would otherwise land in the first repeat's stage arm only."""
    import ray.data

    ray.data.range(4).map_batches(_Echo, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1).take_all()


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of every process on the machine, by pid."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            out[proc.pid] = (proc.info["name"] or "?", times.user + times.system)
    return out


def cpu_spent(before: dict[int, tuple[str, float]], top: int = 5) -> dict[str, float]:
    """The processes that used the most CPU since ``before`` (diagnostics: on a machine with few cores, whatever
    our stage's driver and Ray's processes spend is taken from the engine)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in cpu_by_process().items():
        key = "driver" if pid == os.getpid() else name
        spent[key] = spent.get(key, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:top]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=768)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the vLLM pair (engine start-ups)")
    parser.add_argument("--hf-repeats", type=int, default=7, help="repeats of the HF pair (seconds each)")
    parser.add_argument("--vllm-batch", type=int, default=256, help="rows per actor call of our vLLM stage")
    parser.add_argument("--large", type=int, default=4, help="the second workload: this many times the questions")
    parser.add_argument("--large-repeats", type=int, default=3,
                        help="repeats of the large workload's pair and of the 2-replica pair (0: skip both)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the HF arms (one thread is steady on a machine others load too)")
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--dataset", help="questions from a dataset directory in the authors' layout instead of the "
                                          "built-in ones")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    torch.set_num_threads(args.threads)
    models = Path(tempfile.mkdtemp(prefix="bench-teachers-"))
    build_tiny_models(models)
    model_dir = str(models / "teacher-a")
    prompts = prompts_for(args.questions, args.dataset)
    lengths = [len(p) for p in prompts]
    print(f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} characters; device: {'cuda' if on_gpu else 'cpu'}")
    tokens = [len(ids) for ids in AutoTokenizer.from_pretrained(model_dir)(prompts)["input_ids"]]
    padding = {"fixed_order": round(padding_fraction(tokens, HF_BATCH), 4),
               "sorted": round(padding_fraction(sorted(tokens), HF_BATCH), 4)}
    print(f"{min(tokens)}-{max(tokens)} tokens; padding in batches of {HF_BATCH}: {padding['fixed_order']:.1%} in "
          f"the given order, {padding['sorted']:.1%} sorted by length")

    results: dict[str, list[float]] = {}

    def record(name: str, seconds: float, tokens: int) -> None:
        rate = tokens / seconds
        results.setdefault(name, []).append(rate)
        print(f"  {name:12s} {tokens:7d} tokens in {seconds:7.2f} s = {rate:9.1f} tokens/s", flush=True)

    def pair(r: int, arms: dict) -> None:
        """One repeat: both arms back to back, the first arm alternating between repeats so that neither
        always runs in the wake of the other (a torn-down engine, a warm cache)."""
        for name in list(arms)[:: 1 if r % 2 == 0 else -1]:
            record(name, *arms[name]())

    hf_ok = not args.no_hf
    for r in range(args.hf_repeats if hf_ok else 0):
        print(f"repeat {r + 1}/{args.hf_repeats}")
        pair(r, {"hf_naive": lambda: naive_hf(model_dir, prompts, args.max_new_tokens, on_gpu),
                 "hf_ours": lambda: ours_hf(model_dir, prompts, args.max_new_tokens, on_gpu)})
    vllm_ok = not args.no_vllm
    if vllm_ok:
        try:
            import vllm  # noqa: F401
        except ImportError:
            vllm_ok = False
            print("vLLM is not installed: the vLLM arms are skipped")
    if vllm_ok:
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
        warm_up_ray_data()
        for r in range(args.repeats):
            print(f"repeat {r + 1}/{args.repeats}")
            pair(r, {"vllm_bare": lambda: bare_vllm(model_dir, prompts, args.max_new_tokens, on_gpu),
                     "vllm_ours": lambda: ours_vllm(model_dir, prompts, args.max_new_tokens, on_gpu,
                                                    args.vllm_batch)})
        large = prompts_for(args.questions * args.large, args.dataset)
        for r in range(args.large_repeats):
            print(f"large workload ({len(large)} prompts), repeat {r + 1}/{args.large_repeats}")
            pair(r, {"vllm_bare_large": lambda: bare_vllm(model_dir, large, args.max_new_tokens, on_gpu),
                     "vllm_ours_large": lambda: ours_vllm(model_dir, large, args.max_new_tokens, on_gpu,
                                                          args.vllm_batch)})
        for r in range(args.large_repeats):
            print(f"one replica against two ({len(large)} prompts), repeat {r + 1}/{args.large_repeats}")
            pair(r, {"vllm_1_replica": lambda: ours_vllm(model_dir, large, args.max_new_tokens, on_gpu,
                                                         args.vllm_batch, replicas=1),
                     "vllm_2_replicas": lambda: ours_vllm(model_dir, large, args.max_new_tokens, on_gpu,
                                                          args.vllm_batch, replicas=2)})
        ray.shutdown()

    best = {name: max(rates) for name, rates in results.items()}

    def ratios(figure: str, ours: str, base: str, ran: bool) -> dict:
        """``figure`` (median of the pairs' ratios), ``figure_pairs`` and ``figure_best``; None where not run."""
        ran = ran and ours in results
        pairs = [round(o / b, 3) for o, b in zip(results[ours], results[base])] if ran else None
        return {figure: statistics.median(pairs) if ran else None, f"{figure}_pairs": pairs,
                f"{figure}_best": round(best[ours] / best[base], 3) if ran else None}

    summary = {
        "bench": "teachers",
        "device": "cuda" if on_gpu else "cpu",
        **ratios("vllm_vs_bare", "vllm_ours", "vllm_bare", vllm_ok),
        **ratios("vllm_vs_bare_large", "vllm_ours_large", "vllm_bare_large", vllm_ok),
        **ratios("two_replicas_vs_one", "vllm_2_replicas", "vllm_1_replica", vllm_ok),
        **ratios("hf_vs_naive", "hf_ours", "hf_naive", hf_ok),
        "tokens_per_s": {name: round(rate, 1) for name, rate in best.items()},
        "padding": padding,
        "questions": len(prompts),
        "questions_large": len(prompts) * args.large,
        "cpus": os.cpu_count(),
        "dataset": Path(args.dataset).name if args.dataset else "synthetic",
        "max_new_tokens": args.max_new_tokens,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
