"""Unit tests for the teacher stage's per-row post-processing (``teachers.stage.TeacherWorker``), with an
engine that answers from a script: rationale rows are cleaned, answer rows parsed to an option."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.teachers import source, stage
from tinyllm_ray.teachers.engines import Generation


class ScriptedEngine:
    """Answers every prompt with the text scripted for it; prompts of over ``limit`` tokens never get here."""

    max_prompt_tokens = 1000

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [[len(p)] for p in prompts]  # the prompt's length as its only "token": decodable below

    def generate_ids(self, prompt_ids: list[list[int]]) -> list[Generation]:
        by_length = {len(p): r for p, r in self.replies.items()}
        return [Generation(text=by_length[ids[0]], prompt_tokens=1, new_tokens=5) for ids in prompt_ids]


class Recorder:
    """Stands in for a Ray metric: keeps the tags of every ``inc``/``set``."""

    def __init__(self) -> None:
        self.tags: list[dict[str, str]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.tags.append(tags)

    set = inc


@pytest.fixture
def worker(monkeypatch) -> stage.TeacherWorker:
    answers = Recorder()
    monkeypatch.setattr(stage.metrics, "teacher_answers", lambda: answers)
    monkeypatch.setattr(stage.metrics, "teacher_rationales", Recorder)
    monkeypatch.setattr(stage.metrics, "teacher_tokens_per_second", Recorder)
    w = stage.TeacherWorker.__new__(stage.TeacherWorker)  # no Ray actor, no model: the engine is scripted
    w.teacher = TeacherConfig(name="t", model="m", min_rationale_words=1)
    w.node, w.gpus = "node", ""
    w.answers = answers
    return w


def batch(roles: list[str], prompts: list[str]) -> dict[str, np.ndarray]:
    n = len(roles)
    return {"id": np.array([f"q{i}" for i in range(n)]), "role": np.array(roles), "key": np.array(["k"] * n),
            "choices": np.array([["12", "15", "20"]] * n, dtype=object), "answer": np.array(["15"] * n),
            "variants": np.array([[p] for p in prompts], dtype=object)}


def test_answer_rows_are_parsed_to_an_option_and_unparsable_ones_marked(worker) -> None:
    prompts = ["p" * 10, "p" * 11, "p" * 12, "p" * 13]
    worker.engine = ScriptedEngine({
        prompts[0]: " 12 + 3 = 15. The answer is 15.",
        prompts[1]: " So the answer is (a).",
        prompts[2]: " I am not sure at all.",
        prompts[3]: " 12 + 3 = 15. So the answer is 15.",
    })
    out = worker(batch(["valid", "test", "valid", "train"], prompts))
    assert out["predicted"] == [1, 0, -1, -1]  # a rationale row names no prediction
    assert out["reject_reason"] == ["", "", "no_answer", ""]
    assert out["rationale"][0] == "12 + 3 = 15. The answer is 15."
    outcomes = sorted((t["split"], t["outcome"]) for t in worker.answers.tags)
    assert outcomes == [("test", "wrong"), ("valid", "correct"), ("valid", "no_answer")]


def test_a_rationale_row_concluding_for_another_option_is_still_rejected(worker) -> None:
    prompt = "p" * 10
    worker.engine = ScriptedEngine({prompt: " 12 + 3 = 20, so the answer is 20."})
    out = worker(batch(["train"], [prompt]))
    assert out["reject_reason"] == ["argues_other_option"] and out["predicted"] == [-1]


def open_batch(roles: list[str], prompts: list[str], answer: str = "15") -> dict[str, np.ndarray]:
    out = batch(roles, prompts)
    out["choices"] = np.array([[] for _ in roles] + [["x"]], dtype=object)[:-1]  # an object array of empty lists
    out["answer"] = np.array([answer] * len(roles))
    return out


def test_open_answers_keep_what_the_teacher_concluded_and_are_judged_by_the_scorer(worker) -> None:
    worker.scorer = "numeric"
    prompts = ["p" * 10, "p" * 11, "p" * 12]
    worker.engine = ScriptedEngine({
        prompts[0]: " 12 + 3 = 15. The answer is 15 apples.",
        prompts[1]: " 12 + 4 = 16. So the answer is 16.",
        prompts[2]: " Hard to say.",
    })
    out = worker(open_batch(["valid", "test", "valid"], prompts))
    assert out["said"] == ["15 apples", "16", ""]
    assert out["predicted"] == [-1, -1, -1]  # no options to name
    assert out["reject_reason"] == ["", "", "no_answer"]
    outcomes = sorted((t["split"], t["outcome"]) for t in worker.answers.tags)
    assert outcomes == [("test", "wrong"), ("valid", "correct"), ("valid", "no_answer")]


def test_an_open_rationale_concluding_for_another_number_is_rejected_and_a_text_answer_is_not(worker) -> None:
    prompts = ["p" * 10, "p" * 11]
    worker.engine = ScriptedEngine({prompts[0]: " 12 + 4 = 16, so the answer is 16.",
                                    prompts[1]: " 12 + 3 = 15, so the answer is 15."})
    out = worker(open_batch(["train", "train"], prompts))
    assert out["reject_reason"] == ["argues_other_answer", ""]
    worker.engine = ScriptedEngine({prompts[0]: " Paris is in France, so the answer is Paris, the capital."})
    out = worker(open_batch(["train"], prompts[:1], answer="Lyon"))
    assert out["reject_reason"] == [""]  # a text answer's conclusion is not compared (docs: the report says so)


def _chunk(start: int, n: int, role: str = "train"):
    import pyarrow as pa

    return pa.table({"key": [f"k{i}" for i in range(start, start + n)], "role": [role] * n})


def _blocks(dataset) -> list[list[str]]:
    return [source.unpack(b).column("key").to_pylist()
            for b in dataset.iter_batches(batch_size=None, batch_format="pyarrow")]


def test_pending_without_done_keys_is_every_row() -> None:
    import pyarrow as pa

    rows = pa.table({"key": ["a", "b", "c"]})
    assert source.pending_rows(rows, set()).equals(rows)
    assert source.pending_rows(rows, {"b"}).column("key").to_pylist() == ["a", "c"]
    assert source.pending_rows(rows, pa.array(["a", "c"])).column("key").to_pylist() == ["b"]


def test_prompt_source_puts_full_calls_across_chunks_and_keeps_every_row_in_order(ray_local):
    """Chunks of 5, 7 and 2 rows with calls of 4: blocks of 4, 4, 4 and the last 2, every row once and in order,
    and every row's key returned (the stage's finish marker lists them)."""
    chunks = [_chunk(0, 5), _chunk(5, 7), _chunk(12, 0), _chunk(12, 2, "valid")]
    with source.PromptSource(chunks, 14, 4, {"train", "valid"}, chunk=4) as prompts:
        assert prompts.has_pending()
        blocks = _blocks(prompts.dataset())
        keys = prompts.keys()
    assert [len(b) for b in blocks] == [4, 4, 4, 2]
    assert sum(blocks, []) == [f"k{i}" for i in range(14)]
    assert [k for column in keys for k in column.to_pylist()] == [f"k{i}" for i in range(14)]
    assert prompts.pending == 14 and prompts.stored == 0 and prompts.to_generate() == 14


def test_prompt_source_skips_the_stored_rows_and_counts_them(ray_local):
    with source.PromptSource([_chunk(0, 6), _chunk(6, 6)], 12, 4, {"train"}, done={"k1", "k7", "k8"}) as prompts:
        assert sum(_blocks(prompts.dataset()), []) == [f"k{i}" for i in range(12) if i not in (1, 7, 8)]
        assert len(prompts.keys()) == 2
    assert prompts.stored == 3 and prompts.to_generate() == 9


def test_prompt_source_with_every_row_stored_has_nothing_to_generate(ray_local):
    with source.PromptSource([_chunk(0, 6)], 6, 4, {"train"}, done={f"k{i}" for i in range(6)}) as prompts:
        assert not prompts.has_pending()
        assert prompts.keys()[0].to_pylist() == [f"k{i}" for i in range(6)]


def test_prompt_source_builds_at_most_its_window_ahead_of_the_stage(ray_local):
    """The driver builds prompts only a few chunks ahead of the replicas: a million questions' prompts never
    all wait in the driver or the object store. Nothing reads: the thread stops after the window."""
    import time

    built: list[int] = []

    def chunks():
        for i in range(50):
            built.append(i)
            yield _chunk(4 * i, 4)

    with source.PromptSource(chunks(), 200, 4, {"train"}, chunk=4) as prompts:
        assert prompts.has_pending()
        time.sleep(1.5)
        ahead = len(built)
        rows = sum(len(b) for b in _blocks(prompts.dataset()))
    assert ahead <= source.WINDOW + 1, ahead
    assert rows == 200 and len(built) == 50


def test_a_failure_building_the_prompts_reaches_the_driver_as_it_was(ray_local):
    """What building the prompts raised comes to the caller itself (not Ray's error about a read task), after the
    rows built before it went through the stage (their results are stored: nothing computed is lost)."""
    read: list[list[str]] = []

    def chunks():
        yield _chunk(0, 4)
        raise ValueError("row 7 of train.json has no answer")

    with pytest.raises(ValueError, match="row 7 of train.json"):
        with source.PromptSource(chunks(), 8, 4, {"train"}) as prompts:
            assert prompts.has_pending()
            for block in prompts.dataset().iter_batches(batch_size=None, batch_format="pyarrow"):
                read.append(source.unpack(block).column("key").to_pylist())
    assert read == [["k0", "k1", "k2", "k3"]]
    with pytest.raises(ValueError, match="row 7 of train.json"):
        prompts.keys()


def test_a_prompt_source_without_rows_gives_an_empty_dataset(ray_local):
    import pyarrow as pa

    empty = pa.table({"key": pa.array([], pa.string()), "role": pa.array([], pa.string())})
    with source.PromptSource.of_table(empty, 4) as prompts:
        assert not prompts.has_pending()
        assert prompts.dataset().count() == 0


def test_the_stage_input_stats_do_not_grow_with_its_blocks(ray_local):
    """Ray Data sends a dataset's stats to its stats actor every few seconds while the driver iterates; with the
    input's per-block metadata in them (as ``from_blocks`` put it, the stage's input before ``PromptSource``) that
    message grew with the blocks, and at a million questions serialising it stalled the driver. The stats now hold
    one entry per read task (a chunk of rows, ~25 bytes), whatever the blocks (calls) in it."""
    import pyarrow as pa
    from ray import cloudpickle

    def stats_bytes(rows: int) -> int:
        table = pa.table({"key": [str(i) for i in range(rows)], "role": ["train"] * rows})
        with source.PromptSource.of_table(table, 1, chunk=4096) as prompts:  # a block per row
            return len(cloudpickle.dumps(prompts.dataset()._in_stats))  # the stats the iteration starts from

    few, many = stats_bytes(5), stats_bytes(4_000)
    assert many < 2 * few, (few, many)


def test_a_rationale_cut_at_the_token_limit_loses_its_unfinished_sentence_and_says_why_it_ended(worker) -> None:
    prompts = ["p" * 10, "p" * 11]

    class Ending(ScriptedEngine):
        def generate_ids(self, prompt_ids):
            return [Generation(g.text, g.prompt_tokens, g.new_tokens, finish="length" if ids[0] == 10 else "eos")
                    for g, ids in zip(super().generate_ids(prompt_ids), prompt_ids)]

    worker.engine = Ending({prompts[0]: " 12 + 3 = 15. So it is 15 and the oth", prompts[1]: " 12 + 3 = 15. So it"})
    out = worker(batch(["train", "train"], prompts))
    assert out["rationale"] == ["12 + 3 = 15.", "12 + 3 = 15. So it"]
    assert out["finish"] == ["length", "eos"]
