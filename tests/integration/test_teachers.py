"""The teacher stage on the session's local Ray: engines, placement, resume, shot modes, long prompts, faults.

Teachers are the tiny random-weight models of ``tinyllm_ray.tiny``; the vLLM tests run vLLM's CPU build
and are skipped where vLLM is not installed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from tinyllm_ray import markers, prompts
from tinyllm_ray.config import TeacherConfig, TeacherPromptConfig
from tinyllm_ray.data import synthetic
from tinyllm_ray.teachers import engines, runner, store

pytestmark = pytest.mark.ray


def _train(n: int, seed: int = 3):
    return synthetic.generate(n_train=n, n_valid=4, n_test=4, seed=seed)["train"]


def _teacher(models: Path, name: str = "teacher-a", **kw) -> TeacherConfig:
    settings = dict(name=name, model=str(models / "teacher-a"), shots=2, max_new_tokens=8, batch_size=8,
                    min_rationale_words=1)
    return TeacherConfig(**{**settings, **kw})


def _ok(results):
    out = []
    for teacher, result in results:
        assert not isinstance(result, BaseException), f"{teacher.name}: {result!r}"
        out.append(result)
    return out


def _rows(run_dir: Path, teacher: str):
    return pq.read_table(store.teacher_dir(run_dir, teacher) / store.COMPACTED).to_pylist()


def _groups_left() -> list[str]:
    import ray

    return [g["name"] for g in ray.util.placement_group_table().values()
            if g["name"].startswith("tinyllm-teacher-") and g["state"] != "REMOVED"]


def test_changed_settings_regenerate_only_that_teacher(ray_local, tiny_models, tmp_path):
    """Each teacher also asks for both CPUs of the session cluster, so they cannot run side by side: the
    second waits for the first's placement group, and a changed teacher reruns alone."""
    train = _train(24)
    a = _teacher(tiny_models, "teacher-a", num_cpus=2.0)
    b = _teacher(tiny_models, "teacher-b", model=str(tiny_models / "teacher-b"), num_cpus=2.0)
    first = _ok(runner.run_all([a, b], train, tmp_path))
    assert [r["generated_now"] for r in first] == [24, 24]
    assert _groups_left() == []  # every placement group removed before anything else runs

    b2 = dataclasses.replace(b, max_new_tokens=6)
    again = _ok(runner.run_all([a, b2], train, tmp_path))
    assert [r["generated_now"] for r in again] == [0, 24]
    assert again[0]["key"] == first[0]["key"] and again[1]["key"] != first[1]["key"]
    rows = _rows(tmp_path, "teacher-b")
    assert len(rows) == 24 and max(r["new_tokens"] for r in rows) <= 6  # stale rows compacted away

    # A prompt in other words (teachers.N.prompt) is a changed setting too, and the words reach the engine.
    before = {r["id"]: (r["shots_used"], r["prompt_tokens"]) for r in _rows(tmp_path, "teacher-a")}
    a2 = dataclasses.replace(a, prompt=TeacherPromptConfig(
        instruction=prompts.TEACHER_INSTRUCTION + " Read every option with care first."))
    third = _ok(runner.run_all([a2, b2], train, tmp_path))
    assert [r["generated_now"] for r in third] == [24, 0]
    after = {r["id"]: (r["shots_used"], r["prompt_tokens"]) for r in _rows(tmp_path, "teacher-a")}
    assert after.keys() == before.keys()
    # the default's words and more: more tokens in every prompt that kept as many examples (some drop one to fit)
    same_shots = [i for i in before if after[i][0] == before[i][0]]
    assert len(same_shots) >= 12 and all(after[i][1] > before[i][1] for i in same_shots)


def test_turning_evaluation_on_generates_only_the_teachers_own_answers(ray_local, tiny_models, tmp_path):
    """A teacher stored without evaluation keeps its rationales; evaluation adds one answer row per held-out
    question, scored from the store; a re-run generates nothing."""
    splits = synthetic.generate(n_train=16, n_valid=4, n_test=3, seed=3)
    held_out = {"valid": splits["valid"], "test": splits["test"]}
    quiet = _teacher(tiny_models, evaluate=False)
    [before] = _ok(runner.run_all([quiet], splits["train"], tmp_path, held_out))
    assert before["generated_now"] == 16 and before["evaluated"] is False and "valid_accuracy" not in before
    rationales = {r["id"]: r["raw"] for r in _rows(tmp_path, "teacher-a")}

    teacher = dataclasses.replace(quiet, evaluate=True)
    [info] = _ok(runner.run_all([teacher], splits["train"], tmp_path, held_out))
    assert info["generated_now"] == 7 and info["evaluated"] is True
    rows = _rows(tmp_path, "teacher-a")
    assert {r["id"]: r["raw"] for r in rows if r["role"] == "train"} == rationales
    for split, questions in held_out.items():
        answers = [r for r in rows if r["role"] == split]
        assert sorted(r["id"] for r in answers) == sorted(q.id for q in questions)
        gold = {q.id: q.answer_index for q in questions}
        right = sum(r["predicted"] == gold[r["id"]] for r in answers)
        assert info[f"{split}_accuracy"] == round(right / len(questions), 4)
        assert info["unparsed"][split] == sum(r["reject_reason"] == "no_answer" for r in answers)
        assert all((r["predicted"] == -1) == bool(r["reject_reason"]) for r in answers)
    [again] = _ok(runner.run_all([teacher], splits["train"], tmp_path, held_out))
    assert again["generated_now"] == 0 and again["valid_accuracy"] == info["valid_accuracy"]


@pytest.mark.parametrize(("shots", "passes"), [(0, [{"train", "valid", "test"}]),
                                              (2, [{"train"}, {"valid", "test"}])])
def test_answers_share_the_engine_pass_they_can(ray_local, tiny_models, tmp_path, monkeypatch, shots, passes):
    """Without examples the answers need none of the teacher's rationales: one pass (one model load) holds
    rationales and answers. With random examples they show its rationales, so they wait for a second pass,
    valid and test together."""
    splits = synthetic.generate(n_train=8, n_valid=3, n_test=3, seed=3)
    seen: list[set[str]] = []
    generate = runner._generate

    def recording(rows, *args):
        seen.append(set(rows.roles))  # the PromptBlocks of one pass
        return generate(rows, *args)

    monkeypatch.setattr(runner, "_generate", recording)
    [info] = _ok(runner.run_all([_teacher(tiny_models, shots=shots)], splits["train"], tmp_path,
                                {"valid": splits["valid"], "test": splits["test"]}))
    assert seen == passes
    assert info["generated_now"] == 14 and info["evaluated"] is True


def test_a_crash_loses_only_the_blocks_in_flight(ray_local, tiny_models, tmp_path):
    """Half the rows stored as parts, no marker: the re-run generates exactly the other half, and greedy
    decoding writes them as the first run did although the re-run has 2 replicas and another batch size."""
    train = _train(32)
    teacher = _teacher(tiny_models)
    _ok(runner.run_all([teacher], train, tmp_path))
    directory = store.teacher_dir(tmp_path, "teacher-a")
    table = pq.read_table(directory / store.COMPACTED)
    (directory / markers.MARKER).unlink()
    (directory / store.COMPACTED).unlink()
    store.append(tmp_path, "teacher-a", table.slice(0, 12))
    store.append(tmp_path, "teacher-a", table.slice(8, 4))  # a block stored twice (a retried batch)
    (directory / "part-torn.parquet").write_bytes(b"PAR1 torn")  # a part cut short by the crash
    [info] = _ok(runner.run_all([dataclasses.replace(teacher, replicas=2, batch_size=3)], train, tmp_path))
    assert info["generated_now"] == 20  # replicas and batch size are not part of the key: the stored rows count
    rows = _rows(tmp_path, "teacher-a")
    assert sorted(r["id"] for r in rows) == sorted(q.id for q in train)  # one row per question
    assert {r["id"]: r["raw"] for r in rows} == {r["id"]: r["raw"] for r in table.to_pylist()}


def test_prompts_too_long_drop_shots_then_are_rejected(ray_local, tiny_models, tmp_path):
    train = _train(24)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "teacher-a")
    full = [v[0] for v in runner.train_variants(_teacher(tiny_models), train).values()]  # the 2-shot prompts
    lengths = sorted(map(len, engines.encode_prompts(tokenizer, full, chat=True)))  # as the engine counts them
    # A context that fits some 2-shot prompts, so others must drop examples and the longest may not fit at all.
    limit = lengths[len(lengths) // 2]
    teacher = _teacher(tiny_models, max_model_len=limit + 8, max_new_tokens=8)
    [info] = _ok(runner.run_all([teacher], train, tmp_path / "short"))
    rows = _rows(tmp_path / "short", "teacher-a")
    assert len(rows) == 24
    used = [r["shots_used"] for r in rows if not r["reject_reason"]]
    assert 2 in used and min(used) < 2
    assert all(r["prompt_tokens"] <= limit for r in rows if r["reject_reason"] != "prompt_too_long")
    tiny = _teacher(tiny_models, max_model_len=20, max_new_tokens=8)
    [info] = _ok(runner.run_all([tiny], train, tmp_path / "tiny"))
    assert info["rejected_by_reason"] == {"prompt_too_long": 24} and info["tokens_generated"] == 0
    print(f"context {limit + 8}: shots used {sorted(used)}; context 20: 24 of 24 rejected prompt_too_long")


def test_generated_and_similar_examples(ray_local, tiny_models, tmp_path):
    train = _train(24)
    generated = _teacher(tiny_models, "gen", shots_mode="generated", shot_pool=6)
    similar = _teacher(tiny_models, "sim", shots_mode="similar")
    gen, sim = _ok(runner.run_all([generated, similar], train, tmp_path))
    rows = _rows(tmp_path, "gen")
    assert sum(r["role"] == "shot" for r in rows) == 6 and sum(r["role"] == "train" for r in rows) == 24
    assert gen["rows"] == 24 and gen["example_rationales"] == 6
    assert sim["rows"] == 24 and {r["shots_used"] for r in _rows(tmp_path, "sim")} == {2}
    assert set(store.read_rationales(tmp_path, "gen")) <= {q.id for q in train}
    again = _ok(runner.run_all([generated], train, tmp_path))
    assert again[0]["generated_now"] == 0


def _teacher_actor_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("TeacherWorker" in part for part in (p.info["cmdline"] or []))]


def test_a_teacher_actor_killed_mid_run_loses_nothing(ray_local, tiny_models, tmp_path, monkeypatch):
    """SIGKILL one replica after the first block is stored: Ray Data restarts it and retries its batch;
    the store ends with exactly one row per question."""
    # A part per finished block, so the first is stored early (at the default 10 s, a run shorter than that
    # stored its first part only at the end, and the kill never happened).
    monkeypatch.setenv(runner.APPEND_SECONDS_ENV, "0")
    train = _train(160)
    teacher = _teacher(tiny_models, replicas=2, batch_size=2, num_cpus=1.0, max_new_tokens=16)
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(result=runner.run_all([teacher], train, tmp_path)))
    start = time.perf_counter()
    worker.start()
    directory = store.teacher_dir(tmp_path, "teacher-a")
    while worker.is_alive() and not list(directory.glob("part-*.parquet")):
        time.sleep(0.05)
    pids = _teacher_actor_pids()
    assert pids and worker.is_alive(), "the run finished before a replica could be killed"
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.perf_counter()
    worker.join(timeout=600)
    [(_, info)] = box["result"]
    assert not isinstance(info, BaseException), info
    rows = _rows(tmp_path, "teacher-a")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 160
    print(f"killed a replica {killed_at - start:.1f} s in; run ended {time.perf_counter() - killed_at:.1f} s later")


def test_vllm_and_hf_t5_teachers_in_one_run(ray_local, tiny_models, tmp_path):
    pytest.importorskip("vllm")
    train = _train(24)
    llama = _teacher(tiny_models, "llama-vllm", engine="vllm", batch_size=64, max_model_len=320)
    t5 = _teacher(tiny_models, "t5-hf", model=str(tiny_models / "student-t5"))
    llama_info, t5_info = _ok(runner.run_all([llama, t5], train, tmp_path))
    assert llama_info["rows"] == t5_info["rows"] == 24
    assert llama_info["tokens_generated"] > 0 and t5_info["tokens_generated"] > 0
    rows = _rows(tmp_path, "llama-vllm")
    assert {r["teacher"] for r in rows} == {"llama-vllm"}
    # max_model_len 320 - 8 new tokens: the longest 2-shot prompts drop an example instead of aborting vLLM
    assert all(r["prompt_tokens"] <= 312 for r in rows)
    # vLLM's greedy repeatability is pinned by tests/unit/test_vllm_engine.py (the engine alone, no second load here)


@pytest.mark.slow  # about 1.5 minutes on 2 cores; the store's resume is also pinned by the crash tests above
def test_a_killed_driver_resumes_without_regenerating_stored_rows(ray_local, tiny_models, tmp_path):
    """``jobs/distill.py`` on the session cluster, SIGKILLed once the teacher has stored a block: running the
    same config again generates only the rows that were not stored, then finishes the whole run."""
    import subprocess
    import sys

    import yaml

    from tests.helpers import REPO, tiny_run_config
    from tinyllm_ray import pipeline
    from tinyllm_ray.config import from_dict

    raw = tiny_run_config(tiny_models, tmp_path / "runs", "killed", teachers=1,
                          data={"n_train": 200}, train={"alpha": {"teacher-a": 0.5}})
    raw["teachers"][0].update(batch_size=2, max_new_tokens=16)
    raw["ray"] = {"address": ray_local.get_runtime_context().gcs_address}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    driver = subprocess.Popen([sys.executable, str(REPO / "jobs" / "distill.py"), "--config", str(tmp_path / "run.yaml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, runner.APPEND_SECONDS_ENV: "0"})  # a part per block: kill early
    directory = tmp_path / "runs" / "killed" / "rationales" / "teacher-a"
    deadline = time.monotonic() + 300
    while driver.poll() is None and not list(directory.glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the driver ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stored = store.stored(tmp_path / "runs" / "killed", "teacher-a").num_rows
    assert 0 < stored < 200
    raw.pop("ray")
    report = pipeline.run(from_dict(raw))
    [teacher] = report["teachers"]
    # the teacher also answers every valid and test question by itself (``evaluate``), in the same store
    answers = report["dataset"]["valid"] + report["dataset"]["test"]
    assert teacher["generated_now"] == 200 + answers - stored
    assert teacher["rationales"] + teacher["rejected"] == 200
    rows = _rows(tmp_path / "runs" / "killed", "teacher-a")
    assert len({r["id"] for r in rows if r["role"] == "train"}) == 200 and len(rows) == 200 + answers
    print(f"driver killed with {stored} of 200 rows stored; the re-run generated {teacher['generated_now']}")


def test_replicas_that_load_at_different_times_share_the_first_calls(ray_local, tiny_models, tmp_path):
    """The stage starts reading while its replicas load, yet no replica starts before the others have loaded:
    one loads 3 s later, and the three calls of a small stage still go to both (without the gate, the first one
    up took all three)."""
    import pyarrow as pa

    from tinyllm_ray.teachers.source import PromptSource
    from tinyllm_ray.teachers.stage import TeacherWorker, finished_calls, rationale_stage, rows_per_call

    first = tmp_path / "first-replica"

    class OneSlowReplica(TeacherWorker):
        def __init__(self, teacher):
            super().__init__(teacher)
            try:
                first.open("x").close()
            except FileExistsError:
                time.sleep(3.0)

        def __call__(self, batch):
            return {**super().__call__(batch), "pid": [os.getpid()] * len(batch["id"])}

    teacher = _teacher(tiny_models, replicas=2, batch_size=2, num_cpus=1.0, engine="hf")
    size = rows_per_call(teacher)
    n = 3 * size
    rows = pa.table({"id": [str(i) for i in range(n)], "role": ["train"] * n, "key": [str(i) for i in range(n)],
                     "choices": [["x", "y"]] * n, "answer": ["x"] * n, "variants": [["Q: 1 + 1?"]] * n})
    with runner.reserved(teacher) as group, PromptSource.of_table(rows, size) as source:
        calls = [set(block.column("pid").to_pylist()) for block in
                 finished_calls(rationale_stage(source, teacher, group, worker=OneSlowReplica))]
    assert len(calls) == 3 and all(len(pids) == 1 for pids in calls)
    assert len(set().union(*calls)) == 2, "one replica took every call"


def test_a_teacher_group_left_behind_is_reported(ray_local, caplog):
    from ray.util.placement_group import placement_group, remove_placement_group

    teacher = TeacherConfig(name="leaky", model="unused")
    group = placement_group([{"CPU": 0.01}], name="tinyllm-teacher-leaky")
    group.wait(timeout_seconds=30)
    try:
        runner._check_released([teacher])
        assert "placement group tinyllm-teacher-leaky is still CREATED" in caplog.text
    finally:
        remove_placement_group(group)
    caplog.clear()
    runner._check_released([teacher])
    assert "still" not in caplog.text


@pytest.mark.slow  # about 1.5 minutes on 2 cores
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_driver_stops_in_one_line_and_resumes(ray_local, tiny_models, tmp_path, how):
    """``jobs/distill.py`` interrupted (Ctrl-C, or SIGTERM as ``ray job stop`` sends) once the teacher has stored a
    block: it ends within 30 s with one line saying what is kept, no traceback, its lock released; the same
    config again generates only the rows that were not stored."""
    import yaml

    from tests.helpers import driver_until, tiny_run_config
    from tinyllm_ray import pipeline, run_lock
    from tinyllm_ray.config import from_dict

    raw = tiny_run_config(tiny_models, tmp_path / "runs", "stopped", teachers=1,
                          data={"n_train": 200}, train={"alpha": {"teacher-a": 0.5}})
    raw["teachers"][0].update(batch_size=2, max_new_tokens=48)  # a longer stage: the stop comes in its middle
    raw["ray"] = {"address": ray_local.get_runtime_context().gcs_address}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "stopped"
    directory = run_dir / "rationales" / "teacher-a"
    driver = driver_until(tmp_path / "run.yaml", lambda: any(directory.glob("part-*.parquet")),
                          env={runner.APPEND_SECONDS_ENV: "0"})
    sent = time.monotonic()
    driver.send_signal(how)
    out, err = driver.communicate(timeout=60)
    took = time.monotonic() - sent
    assert driver.returncode == 130 and took < 30, (driver.returncode, took, err[-2000:])
    assert err.strip().splitlines()[-1].startswith(f"interrupted: finished stages, stored rationales and checkpoints "
                                                   f"are kept in {run_dir}")
    assert "Traceback" not in out + err
    assert not (run_dir / run_lock.LOCK_FILE).exists()
    stored = store.stored(run_dir, "teacher-a").num_rows
    assert 0 < stored < 200  # stopped mid-stage, at the next finished call, what it finished stored
    raw.pop("ray")
    report = pipeline.run(from_dict(raw))
    [teacher] = report["teachers"]
    answers = report["dataset"]["valid"] + report["dataset"]["test"]
    assert teacher["generated_now"] == 200 + answers - stored  # nothing stored is generated again
    print(f"{how.name}: stopped in {took:.1f} s with {stored} of 200 rows stored; the re-run generated "
          f"{teacher['generated_now']}")
