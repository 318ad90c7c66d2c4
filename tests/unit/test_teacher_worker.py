"""Unit tests for the teacher stage's per-row post-processing (``teachers.stage.TeacherWorker``), with an
engine that answers from a script: rationale rows are cleaned, answer rows parsed to an option."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.teachers import stage
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


def test_prompt_blocks_put_full_calls_across_chunks_and_keep_every_row_in_order(ray_local):
    """Chunks of 5, 7 and 2 rows with calls of 4: blocks of 4, 4, 4 and the last 2, every row once and in order,
    and nothing of a chunk held by the driver but its left-over rows (copied)."""
    import pyarrow as pa
    import ray

    blocks = stage.PromptBlocks(4)
    start = 0
    for n, role in ((5, "train"), (7, "train"), (2, "valid")):
        blocks.add(pa.table({"key": [f"k{i}" for i in range(start, start + n)], "role": [role] * n}))
        start += n
        assert blocks.tail is None or blocks.tail.num_rows < 4
    blocks.add(pa.table({"key": pa.array([], pa.string()), "role": pa.array([], pa.string())}))
    assert blocks.num_rows == 14 and blocks.roles == {"train", "valid"}
    dataset = blocks.dataset()
    assert [b.num_rows for b in ray.get(blocks.refs)] == [4, 4, 4, 2]
    assert [r["key"] for r in dataset.take_all()] == [f"k{i}" for i in range(14)]


def test_prompt_blocks_copy_the_rows_they_leave_over(ray_local):
    """The left-over rows wait for the next chunk as a copy: a slice would keep the whole chunk's buffers."""
    import pyarrow as pa

    chunk = pa.table({"key": [f"key-{i:06d}" for i in range(10_001)], "role": ["train"] * 10_001})
    blocks = stage.PromptBlocks(4)
    blocks.add(chunk)
    assert blocks.tail.num_rows == 1
    assert blocks.tail.get_total_buffer_size() * 100 < chunk.get_total_buffer_size()


def test_prompt_blocks_without_rows_give_an_empty_dataset_of_the_schema(ray_local):
    import pyarrow as pa

    schema = pa.schema([("key", pa.string()), ("role", pa.string())])
    assert stage.PromptBlocks(4).dataset(schema).count() == 0


def test_the_stage_input_stats_do_not_grow_with_its_blocks(ray_local):
    """Ray Data sends a dataset's stats to its stats actor every few seconds while the driver iterates; with the
    input's per-block metadata in them (as ``from_blocks`` puts it) that message grew with the blocks, and at a
    million questions serialising it stalled the driver. The stats the iterator sends stay the same size."""
    import pyarrow as pa
    from ray import cloudpickle

    def stats_bytes(rows: int) -> int:
        blocks = stage.PromptBlocks(1)
        blocks.add(pa.table({"key": [str(i) for i in range(rows)], "role": ["train"] * rows}))
        return len(cloudpickle.dumps(blocks.dataset()._in_stats))  # the stats the iteration starts from

    few, many = stats_bytes(5), stats_bytes(2_000)
    assert many < 2 * few, (few, many)
