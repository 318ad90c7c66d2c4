"""VLLMEngine on a tiny teacher (CPU): its own module, since starting vLLM takes ~15 s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytest.importorskip("vllm")

from tinyllm_ray.teachers import engines, feeder  # noqa: E402

MAX_NEW = 5
PROMPTS = [
    "Tom has 3 apples and buys 2 more. How many apples does Tom have?",
    "Q: Anna is taller than Bob. Who is shorter?",
    "Explain step by step why (b) 5 is the correct answer.",
]


def test_vllm_engine_greedy_is_repeatable_and_limits_prompts(tiny_models: Path) -> None:
    engine = engines.VLLMEngine(str(tiny_models / "teacher-a"), engines.Settings(max_new_tokens=MAX_NEW, max_model_len=256))
    assert engine.max_prompt_tokens == 256 - MAX_NEW
    ids = engine.encode(PROMPTS)
    assert ids == [engine.tokenizer(p)["input_ids"] for p in PROMPTS]  # no chat template in the tiny tokenizer
    first = engine.generate_ids(ids)
    second = engine.generate(PROMPTS)
    assert len(first) == len(PROMPTS)
    assert [g.text for g in first] == [g.text for g in second]
    assert [g.prompt_tokens for g in first] == [len(x) for x in ids]
    assert all(0 < g.new_tokens <= MAX_NEW for g in first)


# --- ContinuousFeeder: several calls feed one engine ------------------------------------------------------------

class FakeEngine:
    """``LLMEngine``'s add_request/step/abort_request: each step finishes the oldest unfinished request; records
    how many requests were unfinished at each step and refuses prompts whose first id is negative."""

    def __init__(self):
        import threading

        self.unfinished: list[tuple[str, list[int]]] = []
        self.load: list[int] = []
        self.aborted: list[str] = []
        self.lock = threading.Lock()
        self.step_seen = threading.Event()

    def add_request(self, request_id, prompt, params):
        if prompt["prompt_token_ids"][0] < 0:
            raise ValueError("prompt refused")
        assert params.output_kind.name == "FINAL_ONLY"
        self.unfinished.append((request_id, prompt["prompt_token_ids"]))

    def abort_request(self, request_ids):
        self.aborted += request_ids
        self.unfinished = [r for r in self.unfinished if r[0] not in request_ids]

    def step(self):
        import time
        from types import SimpleNamespace

        self.load.append(len(self.unfinished))
        self.step_seen.set()
        time.sleep(0.01)
        if not self.unfinished:
            return []
        request, ids = self.unfinished.pop(0)
        text = " ".join(map(str, ids))
        return [SimpleNamespace(request_id=request, finished=True,
                                outputs=[SimpleNamespace(text=text, token_ids=ids)])]


def test_calls_from_several_threads_share_one_running_batch() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from vllm import SamplingParams

    fake = FakeEngine()
    feeding = feeder.ContinuousFeeder(fake, SamplingParams(max_tokens=4))
    first = [[1, i] for i in range(20)]
    second = [[2, i] for i in range(5)]
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(feeding.submit, first)
        fake.step_seen.wait(5)  # the first call is decoding when the second arrives
        b = pool.submit(feeding.submit, second)
        got_a, got_b = a.result(10), b.result(10)
    assert [o.outputs[0].text for o in got_a] == [f"1 {i}" for i in range(20)]  # each call's own, in order
    assert [o.outputs[0].text for o in got_b] == [f"2 {i}" for i in range(5)]
    # the second call's prompts joined the batch while the first call's were unfinished: more than 20 at once
    assert max(fake.load) > len(first)


def test_a_refused_prompt_fails_its_call_only() -> None:
    from vllm import SamplingParams

    fake = FakeEngine()
    feeding = feeder.ContinuousFeeder(fake, SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="prompt refused"):
        feeding.submit([[5, 1], [-1, 2]])
    assert fake.aborted == ["0-0", "0-1"] and fake.unfinished == []
    assert [o.outputs[0].text for o in feeding.submit([[7, 7]])] == ["7 7"]  # the engine goes on


def test_closing_the_feeder_stops_its_thread_after_the_work_in_the_engine() -> None:
    from vllm import SamplingParams

    fake = FakeEngine()
    feeding = feeder.ContinuousFeeder(fake, SamplingParams(max_tokens=4))
    assert [o.outputs[0].text for o in feeding.submit([[3, 1]])] == ["3 1"]
    thread = feeding.thread
    assert thread.is_alive()
    feeding.close()
    assert not thread.is_alive() and feeding.thread is None
    feeding.close()  # twice is fine
