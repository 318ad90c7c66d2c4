"""Scale benchmark: the pipeline's own stages at 1k, 10k, 100k and 1M questions, with engines that answer at once.

    python bench/scale.py [--n 1000,10000,100000,1000000] [--stages read,prompts,teachers,ingest,eval]
                          [--hf-engine-max 0] [--quick] [--keep]

What it times, per N (training questions) and per stage, on this machine:

- ``read_official`` / ``read_jsonl``: ``load_data`` (reading and validating) of synthetic questions of OBQA's shape
  (question ~60 characters, 4 options of ~15) written to a temp dir in the authors' layout
  (``<name>_{train,valid,test}.json``, JSON Lines) and as one JSONL file with a column mapping;
- ``prompts``: one teacher's prompt rows (``runner.train_variants`` + ``runner.prompt_rows``, 2 random shots);
- ``teachers``: ``runner.run_all`` of two teachers over the N questions and their own answers to valid and test
  (N/20 each): prompts, the Ray Data actor pool of ``teachers/stage.py``, post-processing, the Parquet store's
  appends, the resume scan and compaction. The engine (``InstantEngine``, plugged in through a ``TeacherWorker``
  subclass) answers every prompt at once, so only the project's overhead is timed.
  ``resume_scan`` (``store.stored_keys`` over the stored parts, before compaction: what ``run_teacher`` reads on
  a restart) and ``compaction`` (``store.finish``, with its own driver peak) are timed inside it; ``resume_all_done``: ``run_all`` again, which must skip everything.
- ``teachers_hf``: the same with the real tiny HF teacher (``tinyllm_ray.tiny``), only for N <= ``--hf-engine-max``;
- ``student_ingest``: what the student's training reads: ``store.read_rationales`` per teacher,
  ``batches.example_table`` (as ``pipeline.training_examples`` calls it), ``feed.tokenized_dataset`` (a tiny BPE tokenizer), Ray Data's
  ``streaming_split`` into 2 shards, and one epoch of collated micro-batches per shard (``feed.epoch_batches``, local
  shuffle buffer) read in two threads, as two Train workers would;
- ``evaluation``: ``evaluate.evaluate_models`` over N questions with a scorer that answers at once.

Figures: seconds per 1k rows, and the peak memory of the driver (RSS, sampled every 50 ms by a thread with psutil;
``driver_rise_gib``: the peak over the driver's RSS when the stage began, what the stage itself added;
``driver_private_gib``: the peak of its RSS less its shared pages, i.e. without the object store's) and of the
Ray worker processes (``ray::*`` processes under this driver: their RSS summed, and the largest one),
per stage. Each N runs in a subprocess of its own (a fresh local Ray), so its peaks are its own.

The last line of stdout is one JSON object: ``per_row_ratio_1m_vs_10k`` (s/row at 1M over s/row at 10k, per stage;
targets <= 1.3), ``driver_peak_gib`` by N (target <= 4 at 1M), ``resume_all_done_s_1m`` (target <= 30), and every
figure in ``table``. ``--quick`` runs two tiny N in one subprocess (the unit test's smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_NS = (1_000, 10_000, 100_000, 1_000_000)
QUICK_NS = (60, 240)
STAGES = ("read", "prompts", "teachers", "ingest", "eval")
GIB = 1024**3


# -- memory ----------------------------------------------------------------------------------------------------

class Peaks:
    """RSS high-water marks of this process and of the Ray workers under it, sampled by a thread (psutil).

    Written here rather than taken from ``resource.getrusage``: that gives only this process's lifetime peak
    (not one per stage) and nothing for Ray's workers, which are not waited-for children of this process."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self.psutil, self.me, self.every = psutil, psutil.Process(), every_s
        self.driver = self.workers = self.worker_max = self.private = 0
        self.start = self.me.memory_info().rss  # the driver's RSS when the stage began
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="peaks")
        self.thread.start()

    def sample(self) -> None:
        info = self.me.memory_info()
        # RSS counts the pages of Ray's object store (shared memory) that the driver touched, e.g. by ``ray.put``:
        # those are the object store's memory, bounded by its own size and spilled to disk past it.
        driver, private = info.rss, info.rss - info.shared
        total = largest = 0
        try:
            children = self.me.children(recursive=True)
        except self.psutil.Error:
            children = []
        for child in children:
            try:
                if not child.name().startswith("ray::"):
                    continue
                rss = child.memory_info().rss
            except self.psutil.Error:  # a worker that exited between the listing and the read
                continue
            total += rss
            largest = max(largest, rss)
        with self.lock:
            self.driver, self.workers = max(self.driver, driver), max(self.workers, total)
            self.private = max(self.private, private)
            self.worker_max = max(self.worker_max, largest)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()

    def reset(self) -> None:
        with self.lock:
            self.driver = self.workers = self.worker_max = self.private = 0
            self.start = self.me.memory_info().rss
        self.sample()

    def read(self) -> dict[str, float]:
        """The peaks since ``reset``; ``driver_rise_gib``: the driver's peak over its RSS at ``reset`` (what the stage
        itself added: RSS rarely falls back, so a stage's peak also carries what the stages before it left)."""
        self.sample()
        with self.lock:
            return {"driver_gib": round(self.driver / GIB, 3), "driver_rise_gib": round((self.driver - self.start) / GIB, 3),
                    "driver_private_gib": round(self.private / GIB, 3),
                    "workers_gib": round(self.workers / GIB, 3), "worker_max_gib": round(self.worker_max / GIB, 3)}

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


# -- synthetic data of OBQA's shape ----------------------------------------------------------------------------

_WORDS = ("plants", "the sun", "a magnet", "water", "heat", "animals", "rocks", "light", "energy", "a seed", "wind",
          "soil", "ice", "metal", "a battery", "clouds", "the moon", "bacteria", "sound", "a mirror")
_VERBS = ("needs", "makes", "causes", "absorbs", "reflects", "melts", "grows from", "is made of", "moves", "feeds")


def question_record(i: int) -> dict[str, Any]:
    """A deterministic multiple-choice record of OBQA's lengths (question ~60 chars, 4 options ~15 chars)."""
    w = lambda k: _WORDS[(i * 7 + k * 13) % len(_WORDS)]
    v = lambda k: _VERBS[(i * 3 + k * 5) % len(_VERBS)]
    choices = [f"{w(k)} {v(k)} {k}" for k in range(4)]
    return {"id": f"q{i}", "question": f"Which of these is true when {w(9)} {v(9)} {w(8)} (case {i})?",
            "choices": choices, "answer": choices[i % 4]}


def write_data(root: Path, n: int) -> tuple[Path, Path]:
    """The authors' layout (train n, valid and test n/20 each) and one JSONL file of the same train rows."""
    official = root / "official"
    official.mkdir(parents=True)
    held = max(2, n // 20)
    counts = {"train": n, "valid": held, "test": held}
    start = 0
    for split, count in counts.items():
        with open(official / f"scale_{split}.json", "w") as f:
            f.writelines(json.dumps(question_record(i)) + "\n" for i in range(start, start + count))
        start += count
    jsonl = root / "train.jsonl"
    with open(jsonl, "w") as f:
        f.writelines(json.dumps({"uid": r["id"], "stem": r["question"], "options": r["choices"],
                                 "label": r["choices"].index(r["answer"])}) + "\n"
                     for r in map(question_record, range(n)))
    return official, jsonl


# -- engines and scorers that answer at once -------------------------------------------------------------------

class InstantEngine:
    """``engines.Engine`` that answers every prompt at once: a rationale for training rows, a conclusion naming
    option (a) for answering rows, so every post-processing path of the stage runs."""

    max_prompt_tokens = None

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [[len(p) % 97, 1] for p in prompts]  # two "tokens": what the stage does with them is all we time

    def generate_ids(self, prompt_ids: list[list[int]]) -> list[Any]:
        from tinyllm_ray.teachers.engines import Generation

        text = "First, look at what the question asks. Then check each option. The answer is (a)."
        return [Generation(text=text, prompt_tokens=len(ids), new_tokens=20) for ids in prompt_ids]


def instant_worker() -> type:
    """A ``stage.TeacherWorker`` with the instant engine (defined in ``__main__``, so Ray ships it by value)."""
    from tinyllm_ray.teachers.stage import TeacherWorker

    class InstantWorker(TeacherWorker):
        def __init__(self, teacher: Any):
            self.teacher, self.engine, self.node, self.gpus = teacher, InstantEngine(), "bench", ""

    return InstantWorker


class InstantScorer:
    def generate(self, questions: list[Any]) -> list[str]:
        return [q.choices[0] for q in questions]

    def rank(self, questions: list[Any]) -> list[int]:
        return [0] * len(questions)


def instant_predictor() -> type:
    from tinyllm_ray.student.evaluate import StudentPredictor

    class InstantPredictor(StudentPredictor):
        def __init__(self, model_dirs: dict[str, str], config: Any):
            from tinyllm_ray import answers

            self.scorers = {name: InstantScorer() for name in model_dirs}
            # as StudentPredictor sets it (multiple choice: the bench's questions have options)
            self.judged_by = config.data.scorer if config.data.task == "open" else answers.CHOICE

    return InstantPredictor


# -- one N -----------------------------------------------------------------------------------------------------

def teacher_configs(models: Path | None) -> list[Any]:
    from tinyllm_ray.config import TeacherConfig

    if models is None:
        return [TeacherConfig(name=f"teacher-{x}", model=f"instant-{x}", shots=2, max_new_tokens=32) for x in "ab"]
    return [TeacherConfig(name=f"teacher-{x}", model=str(models / f"teacher-{x}"), shots=2, max_new_tokens=8,
                          batch_size=16, min_rationale_words=1) for x in "ab"]


def student_config(tokenizer_dir: Path, out: Path) -> Any:
    from tinyllm_ray.config.loading import from_dict

    return from_dict({
        "data": {"dataset": "synthetic", "n_train": 48, "n_valid": 16, "n_test": 16, "seed": 1},
        "teachers": [{"name": f"teacher-{x}", "model": f"instant-{x}"} for x in "ab"],
        "student": {"model": str(tokenizer_dir), "max_input_tokens": 96, "max_target_tokens": 48},
        "train": {"epochs": 1, "batch_size": 8, "shuffle_buffer": 1000},
        "eval": {"batch_size": 64},
        "output": {"dir": str(out), "run_name": "scale"},
    })


def save_tokenizer(path: Path) -> Path:
    """A tiny BPE tokenizer for the student's tokenisation (trained in about a second; no model weights)."""
    from tinyllm_ray.tiny_parts import train_tokenizer, wrap_tokenizer

    wrap_tokenizer(train_tokenizer(), seq2seq=True).save_pretrained(path)
    return path


class Bench:
    """Runs the stages for one N, recording seconds and peaks per stage."""

    def __init__(self, n: int, root: Path, peaks: Peaks):
        self.n, self.root, self.peaks = n, root, peaks
        self.rows: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def stage(self, name: str, rows: int, **extra: Any):
        self.peaks.reset()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.record(name, rows, seconds, **self.peaks.read(), **extra)

    def record(self, name: str, rows: int, seconds: float, **extra: Any) -> None:
        row = {"stage": name, "n": self.n, "rows": rows, "seconds": round(seconds, 3),
               "s_per_1k": round(seconds / rows * 1000, 4) if rows else None, **extra}
        self.rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)


def run_one(n: int, stages: set[str], hf_max: int, tokenizer_dir: Path, peaks: Peaks,
            keep: bool = False) -> list[dict[str, Any]]:
    """The stages at ``n`` questions in a temp dir of their own (its data and run: ~0.5 GB at 1M), removed after
    unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix=f"scale-{n}-"))
    try:
        return _run_stages(n, stages, hf_max, tokenizer_dir, peaks, root)
    finally:
        if keep:
            print(f"kept the data and run of N={n} in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)  # made by mkdtemp above: ours


def _run_stages(n: int, stages: set[str], hf_max: int, tokenizer_dir: Path, peaks: Peaks,
                root: Path) -> list[dict[str, Any]]:
    from tinyllm_ray import keys
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.load import load_data
    from tinyllm_ray.teachers import runner, stage, store

    bench = Bench(n, root, peaks)
    official, jsonl = write_data(root, n)
    with bench.stage("read_official", n):
        data = load_data(DataConfig(dataset="scale", path=str(official), format="official"))
    if "read" in stages:
        with bench.stage("read_jsonl", n):
            load_data(DataConfig(dataset="scale", path=str(jsonl), format="jsonl",
                                 columns={"id": "uid", "question": "stem", "choices": "options", "answer": "label"}))
    train = data.splits["train"]
    held_out = {s: data.splits[s] for s in ("valid", "test")}
    answered = sum(len(qs) for qs in held_out.values())
    teachers = teacher_configs(None)
    if "prompts" in stages:
        with bench.stage("prompts", n):
            rows = runner.prompt_rows(runner.train_variants(teachers[0], train), train, "train",
                                      keys.settings_key(teachers[0]))
            assert rows.num_rows == n
            del rows
    run_dir = root / "run"
    if "teachers" in stages:
        timed: dict[str, float] = {"resume_scan": 0.0, "compaction": 0.0}
        compaction_peak = {"driver_gib": 0.0, "driver_rise_gib": 0.0, "driver_private_gib": 0.0}
        finish = store.finish

        def timed_finish(run_dir: Path, teacher: str, *args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            store.stored_keys(run_dir, teacher)  # the resume scan over the stored parts, as a restart does
            middle = time.perf_counter()
            own = Peaks(0.02)  # the driver during this compaction (the teachers' may overlap: their max is kept)
            try:
                out = finish(run_dir, teacher, *args, **kw)
            finally:
                seen = own.read()
                own.close()
            for k, value in compaction_peak.items():
                compaction_peak[k] = max(value, seen[k])
            timed["resume_scan"] += middle - start
            timed["compaction"] += time.perf_counter() - middle
            return out

        store.finish = timed_finish
        runner.rationale_stage = functools.partial(stage.rationale_stage, worker=instant_worker())
        try:
            rows_done = len(teachers) * (n + answered)
            with bench.stage("teachers", rows_done, teachers=len(teachers)):
                results = runner.run_all(teachers, train, run_dir, held_out)
            for teacher, result in results:
                if isinstance(result, BaseException):
                    raise result
                assert result["generated_now"] == n + answered, (teacher.name, result)
            bench.record("resume_scan", rows_done, timed["resume_scan"])
            bench.record("compaction", rows_done, timed["compaction"], **compaction_peak)
            with bench.stage("resume_all_done", rows_done):
                again = runner.run_all(teachers, train, run_dir, held_out)
            assert all(not isinstance(r, BaseException) and r["generated_now"] == 0 for _, r in again), again
        finally:
            store.finish = finish
            runner.rationale_stage = stage.rationale_stage
        if n <= hf_max:
            from tinyllm_ray.tiny import build_tiny_models

            models = root / "models"
            build_tiny_models(models)
            hf_dir = root / "run-hf"
            with bench.stage("teachers_hf", len(teachers) * (n + answered)):
                results = runner.run_all(teacher_configs(models), train, hf_dir, held_out)
            assert all(not isinstance(r, BaseException) for _, r in results), results
    if "ingest" in stages:
        _ingest(bench, train, run_dir, tokenizer_dir, [t.name for t in teachers], "teachers" in stages)
    if "eval" in stages:
        from tinyllm_ray.student import evaluate

        config = student_config(tokenizer_dir, root)
        predictor = evaluate.StudentPredictor
        evaluate.StudentPredictor = instant_predictor()
        try:
            with bench.stage("evaluation", n):
                scored = evaluate.evaluate_models({"valid": train}, {"student": "instant"}, config)
            assert scored["student"][1].num_rows == n
        finally:
            evaluate.StudentPredictor = predictor
    return bench.rows


def _ingest(bench: Bench, train: list[Any], run_dir: Path, tokenizer_dir: Path, names: list[str],
            stored: bool) -> None:
    from tinyllm_ray import prompts
    from tinyllm_ray.student.batches import example_table
    from tinyllm_ray.student.feed import epoch_batches, tokenized_dataset
    from tinyllm_ray.teachers import store

    config = student_config(tokenizer_dir, bench.root)
    tasks = [prompts.ANSWER_TASK, *names]
    n = len(train)
    with bench.stage("student_ingest", n):
        if stored:  # as pipeline.training_examples builds them
            rationales = {name: store.read_rationales(run_dir, name) for name in names}
        else:
            rationales = {name: {q.id: "First, look at the question. Then check each option." for q in train}
                          for name in names}
        examples = example_table(train, rationales, task_inputs=False)
        del rationales
        dataset = tokenized_dataset(examples, config, tasks, "seq2seq")
        del examples
        shards = dataset.streaming_split(2, equal=True)
        seen = [0, 0]

        def read(i: int) -> None:
            for batch in epoch_batches(shards[i], config, 0, tasks, 0, "seq2seq"):
                seen[i] += batch["rows"]

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(seen) >= n - 1, (seen, n)


# -- driver ----------------------------------------------------------------------------------------------------

RAY_STAGES = {"teachers", "ingest", "eval"}  # the others (read, prompts) run without Ray


def child(args: argparse.Namespace) -> None:
    import ray

    peaks = Peaks()
    on_ray = bool(set(args.stages) & RAY_STAGES)
    if on_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one local Ray for the child's Ns
    rows = []
    for n in args.n:
        rows += run_one(n, set(args.stages), args.hf_engine_max, Path(args.tokenizer or "."), peaks, args.keep)
    if on_ray:
        ray.shutdown()
    print(json.dumps({"rows": rows}))


def summary(rows: list[dict[str, Any]], ns: list[int]) -> dict[str, Any]:
    by = {(r["stage"], r["n"]): r for r in rows}
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    small, large = (10_000, 1_000_000) if {10_000, 1_000_000} <= set(ns) else (min(ns), max(ns))

    def ratio(stage: str, a: int, b: int) -> float | None:
        x, y = by.get((stage, b)), by.get((stage, a))
        return round(x["s_per_1k"] / y["s_per_1k"], 3) if x and y and y["s_per_1k"] else None

    out: dict[str, Any] = {"bench": "scale", "ns": ns, "stages": stages}
    if (small, large) == (10_000, 1_000_000):
        out["per_row_ratio_1m_vs_10k"] = {s: ratio(s, small, large) for s in stages}
    out["per_row_ratio_largest_vs_smallest"] = {s: ratio(s, small, large) for s in stages}
    out["compared"] = [small, large]
    if 100_000 in ns and 10_000 in ns:
        out["per_row_ratio_100k_vs_10k"] = {s: ratio(s, 10_000, 100_000) for s in stages}
    out["driver_peak_gib"] = {str(n): max((r["driver_gib"] for r in rows if r["n"] == n and "driver_gib" in r),
                                          default=None) for n in ns}
    out["worker_peak_gib"] = {str(n): max((r["workers_gib"] for r in rows if r["n"] == n and "workers_gib" in r),
                                          default=None) for n in ns}
    done = by.get(("resume_all_done", 1_000_000))
    out["resume_all_done_s_1m"] = done["seconds"] if done else None
    out["resume_all_done_s"] = {str(r["n"]): r["seconds"] for r in rows if r["stage"] == "resume_all_done"}
    out["driver_private_peak_gib"] = {str(n): max((r["driver_private_gib"] for r in rows
                                                   if r["n"] == n and "driver_private_gib" in r), default=None)
                                      for n in ns}
    out["table"] = [{k: r[k] for k in ("stage", "n", "s_per_1k", "seconds", "driver_gib", "driver_rise_gib",
                                       "driver_private_gib", "workers_gib", "worker_max_gib") if k in r} for r in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=list(DEFAULT_NS),
                        help="comma-separated question counts (default 1000,10000,100000,1000000)")
    parser.add_argument("--stages", type=lambda s: s.split(","), default=list(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (read_official always runs: it loads)")
    parser.add_argument("--hf-engine-max", type=int, default=0,
                        help="also run the teacher stage with the real tiny HF teachers for N up to this")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_NS} in one subprocess (smoke test)")
    parser.add_argument("--keep", action="store_true", help="keep each N's data and run dir (printed) for a look")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    ns = list(QUICK_NS) if args.quick else args.n
    with tempfile.TemporaryDirectory(prefix="scale-tok-") as tok:
        if set(args.stages) & {"ingest", "eval"}:
            save_tokenizer(Path(tok))
        groups = [ns] if args.quick else [[n] for n in ns]  # a fresh process per N: its own peaks
        rows: list[dict[str, Any]] = []
        for group in groups:
            cmd = [sys.executable, __file__, "--child", "--tokenizer", tok, "--n", ",".join(map(str, group)),
                   "--stages", ",".join(args.stages), "--hf-engine-max", str(args.hf_engine_max),
                   *(["--keep"] if args.keep else [])]
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False,
                                  env={**os.environ, "RAY_DEDUP_LOGS": "0"})
            if done.returncode != 0:
                raise SystemExit(f"scale bench failed at N={group} (exit {done.returncode})")
            rows += json.loads(done.stdout.strip().splitlines()[-1])["rows"]
    table = summary(rows, ns)
    print(f"{'stage':<18}{'N':>9}{'s/1k rows':>11}{'seconds':>10}{'driver GiB':>12}{'its rise':>10}"
          f"{'private':>10}{'workers GiB':>13}")
    for r in table["table"]:
        print(f"{r['stage']:<18}{r['n']:>9}{r['s_per_1k']:>11}{r['seconds']:>10}{r.get('driver_gib', ''):>12}"
              f"{r.get('driver_rise_gib', ''):>10}{r.get('driver_private_gib', ''):>10}{r.get('workers_gib', ''):>13}")
    print(json.dumps(table), flush=True)


if __name__ == "__main__":
    main()
