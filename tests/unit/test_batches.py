"""Unit tests for tinyllm_ray.student.batches: text rows, tokenisation UDF and per-task collation (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tinyllm_ray import prompts
from tinyllm_ray.data.schema import Question
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.student.batches import Tokenize, collate, example_table, input_col, target_col
from tinyllm_ray.student.loss import IGNORE, token_cross_entropy

TEACHERS = ["teacher-a", "teacher-b"]
TASKS = ["answer", *TEACHERS]
MAX_INPUT, MAX_TARGET = 24, 12


@pytest.fixture(scope="module")
def student_dir(tiny_models: Path) -> Path:
    return tiny_models / "student-t5"  # the session's build (tests/conftest.py)


@pytest.fixture(scope="module")
def tokenizer(student_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(student_dir)


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return generate(5, 1, 1, seed=11)["train"]


@pytest.fixture(scope="module")
def rationales(questions: list[Question]) -> dict[str, dict[str, str]]:
    q = questions
    return {
        # teacher-a explains questions 0, 2 and 3 (a long one, to be truncated); teacher-b none at all
        "teacher-a": {q[0].id: "Add the prices.", q[2].id: "Count the days " * 20, q[3].id: "Compare."},
        "teacher-b": {},
    }


@pytest.fixture(scope="module")
def table(questions: list[Question], rationales: dict[str, dict[str, str]]) -> Any:
    return example_table(questions, rationales)


def numpy_batch(table: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in table.to_pydict().items()}


def object_array(seqs: list[np.ndarray]) -> np.ndarray:
    """What Ray Data hands a numpy-format UDF for a column of variable-length lists."""
    out = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        out[i] = np.asarray(s)
    return out


@pytest.fixture(scope="module")
def tokenized(student_dir: Path, table: Any) -> dict[str, Any]:
    udf = Tokenize(str(student_dir), TASKS, max_input_tokens=MAX_INPUT, max_target_tokens=MAX_TARGET)
    return udf(numpy_batch(table))


@pytest.fixture(scope="module")
def ray_like(tokenized: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: (v if k == "id" else object_array(list(v))) for k, v in tokenized.items()}


# --- example_table --------------------------------------------------------------------------------


def test_example_table_columns(table: Any, questions: list[Question]) -> None:
    expected = {"id", input_col("question")} | {input_col(t) for t in TASKS} | {target_col(t) for t in TASKS}
    assert set(table.column_names) == expected
    assert table.num_rows == len(questions)
    assert table.column("id").to_pylist() == [q.id for q in questions]


def test_example_table_inputs_and_targets(table: Any, questions: list[Question],
                                          rationales: dict[str, dict[str, str]]) -> None:
    rows = table.to_pylist()
    for q, row in zip(questions, rows):
        assert row[input_col("answer")] == prompts.student_input(q, "answer")
        assert row[input_col("answer")].startswith("predict: ")
        for teacher in TEACHERS:
            assert row[input_col(teacher)].startswith(f"explain_{teacher}: ")
            assert row[target_col(teacher)] == rationales[teacher].get(q.id, "")
        assert row[target_col("answer")] == q.answer
    assert rows[1][target_col("teacher-a")] == ""
    assert all(r[target_col("teacher-b")] == "" for r in rows)


def test_example_table_without_teachers(questions: list[Question]) -> None:
    t = example_table(questions, {})
    assert set(t.column_names) == {"id", input_col("question"), input_col("answer"), target_col("answer")}


# --- Tokenize -------------------------------------------------------------------------------------


def test_tokenize_columns(tokenized: dict[str, Any], questions: list[Question]) -> None:
    expected = {"id"} | {f"ids__{t}" for t in TASKS} | {f"labels__{t}" for t in TASKS}
    assert set(tokenized) == expected
    assert list(tokenized["id"]) == [q.id for q in questions]
    for task in TASKS:
        assert len(tokenized[f"ids__{task}"]) == len(questions)
        assert len(tokenized[f"labels__{task}"]) == len(questions)
        for ids in tokenized[f"ids__{task}"]:
            assert isinstance(ids, np.ndarray) and np.issubdtype(ids.dtype, np.integer)
            assert len(ids) > 0


def test_tokenize_truncates_inputs(tokenized: dict[str, Any], tokenizer: Any) -> None:
    for task in TASKS:
        lengths = [len(ids) for ids in tokenized[f"ids__{task}"]]
        assert max(lengths) <= MAX_INPUT
        # synthetic questions are far longer than MAX_INPUT tokens: all are cut to exactly the limit
        assert lengths == [MAX_INPUT] * len(lengths)
        assert all(ids[-1] == tokenizer.eos_token_id for ids in tokenized[f"ids__{task}"])


def test_tokenize_inputs_differ_by_task_prefix(tokenized: dict[str, Any], tokenizer: Any) -> None:
    for i in range(len(tokenized["id"])):
        texts = {t: tokenizer.decode(tokenized[f"ids__{t}"][i], skip_special_tokens=True) for t in TASKS}
        assert texts["answer"].startswith("predict:")
        assert texts["teacher-a"].startswith("explain_teacher-a:")


def test_tokenize_untruncated_inputs_match_the_text(student_dir: Path, table: Any, tokenizer: Any) -> None:
    udf = Tokenize(str(student_dir), ["answer"], max_input_tokens=1000, max_target_tokens=1000)
    out = udf(numpy_batch(table))
    for ids, text in zip(out["ids__answer"], table.column(input_col("answer")).to_pylist()):
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert len(ids) > MAX_INPUT


def test_tokenize_labels(tokenized: dict[str, Any], tokenizer: Any, questions: list[Question],
                         rationales: dict[str, dict[str, str]]) -> None:
    for i, q in enumerate(questions):
        answer = tokenized["labels__answer"][i]
        assert tokenizer.decode(answer, skip_special_tokens=True) == q.answer
        assert answer[-1] == tokenizer.eos_token_id
        for teacher in TEACHERS:
            labels = tokenized[f"labels__{teacher}"][i]
            if q.id in rationales[teacher]:
                assert 0 < len(labels) <= MAX_TARGET
            else:
                # no rationale: no labels at all (not a lone EOS)
                assert len(labels) == 0
    long = tokenized["labels__teacher-a"][2]
    assert len(long) == MAX_TARGET
    assert tokenizer.decode(tokenized["labels__teacher-a"][0], skip_special_tokens=True) == "Add the prices."


# --- collate --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["lists", "ray_like"])
def test_collate_pads_each_task(source: str, tokenized: dict[str, Any], ray_like: dict[str, np.ndarray],
                                tokenizer: Any) -> None:
    batch = tokenized if source == "lists" else ray_like
    pad = tokenizer.pad_token_id
    out = collate(batch, TASKS, pad)
    assert out["rows"] == len(tokenized["id"])
    assert set(out) == {"rows", *TASKS}
    answer = out["answer"]
    assert set(answer) == {"input_ids", "attention_mask", "labels"}
    n = len(tokenized["id"])
    label_lens = [len(x) for x in tokenized["labels__answer"]]
    assert answer["input_ids"].shape == (n, MAX_INPUT)
    assert answer["labels"].shape == (n, max(label_lens))
    for part in answer.values():
        assert part.dtype == torch.long
    for i in range(n):
        ids, labels = tokenized["ids__answer"][i], tokenized["labels__answer"][i]
        assert answer["input_ids"][i, : len(ids)].tolist() == list(ids)
        assert answer["attention_mask"][i].tolist() == [1] * len(ids) + [0] * (MAX_INPUT - len(ids))
        assert answer["labels"][i, : len(labels)].tolist() == list(labels)
        assert (answer["labels"][i, len(labels):] == IGNORE).all()
    assert len(set(label_lens)) > 1, "answers of different lengths are needed to see label padding"
    assert (answer["labels"] == IGNORE).any()


@pytest.fixture(scope="module")
def untruncated(student_dir: Path, questions: list[Question]) -> dict[str, Any]:
    """Answer-task rows whose inputs are not truncated, so their lengths differ."""
    udf = Tokenize(str(student_dir), ["answer"], max_input_tokens=1000, max_target_tokens=64)
    return udf(numpy_batch(example_table(questions, {})))


def test_collate_pads_inputs_to_longest_row(untruncated: dict[str, Any], tokenizer: Any) -> None:
    lengths = [len(x) for x in untruncated["ids__answer"]]
    assert len(set(lengths)) > 1
    out = collate(untruncated, ["answer"], tokenizer.pad_token_id)["answer"]
    assert out["input_ids"].shape == (len(lengths), max(lengths))
    assert out["attention_mask"].sum(dim=1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert out["input_ids"][i, :n].tolist() == list(untruncated["ids__answer"][i])
        assert (out["attention_mask"][i, :n] == 1).all() and (out["attention_mask"][i, n:] == 0).all()
        assert (out["input_ids"][i, n:] == tokenizer.pad_token_id).all()


def test_collate_uses_the_given_pad_id(untruncated: dict[str, Any]) -> None:
    out = collate(untruncated, ["answer"], pad_id=7)["answer"]
    padding = out["attention_mask"] == 0
    assert padding.any()
    assert (out["input_ids"][padding] == 7).all()
    # labels are padded with IGNORE, never with the pad id
    for i, labels in enumerate(untruncated["labels__answer"]):
        assert (out["labels"][i, len(labels):] == IGNORE).all()


def test_collate_drops_rows_without_target(tokenized: dict[str, Any], tokenizer: Any,
                                           questions: list[Question], rationales: dict[str, dict[str, str]]) -> None:
    out = collate(tokenized, TASKS, tokenizer.pad_token_id)
    keep = [i for i, q in enumerate(questions) if q.id in rationales["teacher-a"]]
    assert keep == [0, 2, 3]
    a = out["teacher-a"]
    assert a["input_ids"].shape[0] == len(keep) == a["labels"].shape[0] == a["attention_mask"].shape[0]
    for row, i in enumerate(keep):
        ids = tokenized["ids__teacher-a"][i]
        assert a["input_ids"][row, : len(ids)].tolist() == list(ids)
    assert a["labels"].shape[1] == MAX_TARGET
    # teacher-b has no rationale for any question
    assert out["teacher-b"] is None
    assert out["rows"] == len(questions)


@pytest.mark.parametrize("layout", ["seq2seq", "one_encoder"])
def test_fixed_shape_padding_fills_rows_and_rounds_lengths_without_changing_the_loss(
        student_dir: Path, table: Any, tokenizer: Any, layout: str) -> None:
    from tinyllm_ray.student.model import MultiTask, load_student

    out = Tokenize(str(student_dir), TASKS, max_input_tokens=MAX_INPUT, max_target_tokens=MAX_TARGET,
                   layout=layout)(numpy_batch(table))
    plain = collate(out, TASKS, tokenizer.pad_token_id, layout)
    fixed = collate(out, TASKS, tokenizer.pad_token_id, layout, multiple=16, rows=8)
    assert fixed["rows"] == plain["rows"] == 5  # the real questions, for the throughput meter
    # a task without any target is all filler rows (every batch makes the same forward calls: FSDP, fewer graphs)
    assert fixed["teacher-b"]["labels"].shape[0] == 8 and (fixed["teacher-b"]["labels"] == IGNORE).all()
    assert plain["teacher-b"] is None
    for task in ["answer", "teacher-a"]:
        labels = fixed[task]["labels"]
        assert labels.shape[0] == 8 and labels.shape[1] % 16 == 0  # rows filled, lengths rounded up
        real = plain[task]["labels"].shape[0]
        assert (labels[real:] == IGNORE).all()  # filler rows carry no target
        width = plain[task]["labels"].shape[1]
        assert torch.equal(labels[:real, :width], plain[task]["labels"]) and (labels[:real, width:] == IGNORE).all()
    if layout == "one_encoder":
        assert fixed["question"]["input_ids"].shape == (8, 32) and fixed["question"]["attention_mask"][5:, 0].all()
    else:
        assert fixed["teacher-a"]["input_ids"].shape == (8, 32) and fixed["teacher-a"]["attention_mask"][3:, 0].all()
    torch.manual_seed(0)
    model = MultiTask(load_student(str(student_dir)), layout, TASKS).eval()
    with torch.no_grad():
        want, got = model(plain), model(fixed)
    assert set(want) == {"answer", "teacher-a"} and set(got) == {*want, "teacher-b"}
    assert got["teacher-b"].item() == 0.0  # its filler rows add nothing
    for task in want:
        assert got[task].item() == pytest.approx(want[task].item(), rel=1e-5)


def test_collate_subset_of_tasks(tokenized: dict[str, Any], tokenizer: Any) -> None:
    out = collate(tokenized, ["teacher-a"], tokenizer.pad_token_id)
    assert set(out) == {"rows", "teacher-a"}


# --- the tiny student on a collated batch ---------------------------------------------------------


def test_forward_pass_gives_finite_loss(student_dir: Path, tokenized: dict[str, Any], tokenizer: Any) -> None:
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_pretrained(student_dir).eval()
    out = collate(tokenized, TASKS, tokenizer.pad_token_id)
    for task in ["answer", "teacher-a"]:
        inputs = out[task]
        result = model(**inputs)
        assert result.logits.shape[:2] == inputs["labels"].shape
        assert result.logits.shape[2] == model.config.vocab_size
        loss = token_cross_entropy(result.logits, inputs["labels"])
        assert torch.isfinite(loss) and loss.item() > 0
        # the same mean token cross-entropy as the model's own loss
        assert loss.item() == pytest.approx(result.loss.item(), rel=1e-4)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        model.zero_grad()


# --- causal and one-encoder layouts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_dir(student_dir: Path) -> Path:
    return student_dir.parent / "teacher-a"  # a tiny Llama: a causal student


def test_causal_rows_mask_the_prompt_and_end_in_eos(causal_dir: Path, table: Any, questions: list[Question]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_dir)
    out = Tokenize(str(causal_dir), TASKS, max_input_tokens=200, max_target_tokens=MAX_TARGET,
                   layout="causal")(numpy_batch(table))
    assert set(out) == {"id"} | {f"{k}__{t}" for k in ("ids", "labels") for t in TASKS}
    for i, q in enumerate(questions):
        ids, labels = out["ids__answer"][i], out["labels__answer"][i]
        assert len(ids) == len(labels)
        target = labels != IGNORE
        n_prompt = int((~target).sum())
        assert not target[:n_prompt].any() and target[n_prompt:].all()  # prompt first, then the target
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.decode(ids[:n_prompt], skip_special_tokens=True) == prompts.student_input(q, "answer") + "\n"
        assert tok.decode(labels[target], skip_special_tokens=True) == q.answer
        assert list(labels[target]) == list(ids[n_prompt:])
    assert len(out["labels__teacher-b"][0]) == 0  # no rationale: no row for that task
    assert len(out["labels__teacher-a"][2]) - int((out["labels__teacher-a"][2] == IGNORE).sum()) == MAX_TARGET


def test_one_encoder_rows_put_the_task_marker_on_the_decoder(student_dir: Path, table: Any, tokenizer: Any,
                                                            questions: list[Question]) -> None:
    out = Tokenize(str(student_dir), TASKS, max_input_tokens=200, max_target_tokens=MAX_TARGET,
                   layout="one_encoder")(numpy_batch(table))
    assert set(out) == {"id", "ids__question"} | {f"{k}__{t}" for k in ("dec", "labels") for t in TASKS}
    marker = tokenizer("explain_teacher-a:", add_special_tokens=False)["input_ids"]
    for i, q in enumerate(questions):
        assert tokenizer.decode(out["ids__question"][i], skip_special_tokens=True) == prompts.question_block(q)
        dec, labels = out["dec__teacher-a"][i], out["labels__teacher-a"][i]
        if not len(labels):
            continue
        assert dec[0] == 0 and list(dec[1 : 1 + len(marker)]) == marker  # decoder start, then the marker
        assert (labels[: len(marker)] == IGNORE).all() and labels[-1] == tokenizer.eos_token_id
        assert list(dec[1 + len(marker):]) == list(labels[len(marker):-1])  # the target, shifted by one
    answer_marker = tokenizer("predict:", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(out["labels__answer"][0][len(answer_marker):], skip_special_tokens=True) == questions[0].answer


def test_one_encoder_collate_shares_the_question_and_indexes_task_rows(student_dir: Path, table: Any,
                                                                     tokenizer: Any) -> None:
    out = Tokenize(str(student_dir), TASKS, max_input_tokens=MAX_INPUT, max_target_tokens=MAX_TARGET,
                   layout="one_encoder")(numpy_batch(table))
    batch = collate(out, TASKS, tokenizer.pad_token_id, layout="one_encoder")
    n = len(out["id"])
    assert batch["question"]["input_ids"].shape == (n, MAX_INPUT)
    assert batch["answer"]["rows"].tolist() == list(range(n))
    assert batch["teacher-a"]["rows"].tolist() == [0, 2, 3]
    assert batch["teacher-a"]["decoder_input_ids"].shape == batch["teacher-a"]["labels"].shape
    assert batch["teacher-b"] is None


def test_bucketing_groups_rows_of_similar_length(tokenized: dict[str, Any]) -> None:
    from tinyllm_ray.student.batches import bucketed, row_lengths

    window = {k: (v if k == "id" else object_array(list(v))) for k, v in tokenized.items()}
    window["id"] = np.asarray(window["id"])
    batches = bucketed(window, 2, np.random.default_rng(0))
    assert sorted(x for b in batches for x in b["id"]) == sorted(window["id"])  # every row once
    assert [len(b["id"]) for b in batches].count(1) == 1  # 5 rows: two pairs and one single
    ranked = list(np.sort(row_lengths(window)))
    for b in batches:  # each batch is a run of neighbours in length order
        mine = sorted(row_lengths(b))
        assert any(ranked[i : i + len(mine)] == mine for i in range(len(ranked)))


# --- the student's rows in Arrow (issue #17): rationales joined by id, the question block held once -------------


def test_example_table_joins_arrow_rationales_like_the_dicts(table: Any, questions: list[Question],
                                                             rationales: dict[str, dict[str, str]]) -> None:
    import pyarrow as pa

    from tinyllm_ray.teachers.store import Rationales

    held = {t: Rationales(pa.table({"id": pa.array(list(r), pa.string()), "rationale": pa.array(list(r.values()),
                                                                                               pa.string())}))
            for t, r in rationales.items()}
    assert example_table(questions, held).equals(table)
    mine = prompts.StudentText(answer_prefix="a: ", rationale_prefix="why_{teacher}: ")
    custom = example_table(questions, rationales, mine)
    assert custom.column(input_col("teacher-a")).to_pylist() == [prompts.student_input(q, "teacher-a", mine)
                                                                 for q in questions]


def test_example_table_in_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch, table: Any,
                                                  questions: list[Question],
                                                  rationales: dict[str, dict[str, str]]) -> None:
    from tinyllm_ray.student import batches

    monkeypatch.setattr(batches, "EXAMPLE_CHUNK", 2)
    assert example_table(questions, rationales).equals(table)
    assert example_table([], rationales).num_rows == 0


@pytest.mark.parametrize("layout", ["seq2seq", "causal", "one_encoder"])
def test_rows_without_task_inputs_tokenize_to_the_same_ids(layout: str, student_dir: Path, causal_dir: Path,
                                                           table: Any, questions: list[Question],
                                                           rationales: dict[str, dict[str, str]]) -> None:
    mine = prompts.StudentText(answer_prefix="a: ", rationale_prefix="why_{teacher}: ")
    lean = example_table(questions, rationales, mine, task_inputs=False)
    assert set(lean.column_names) == {"id", input_col("question")} | {target_col(t) for t in TASKS}
    full = example_table(questions, rationales, mine)
    model = str(causal_dir if layout == "causal" else student_dir)
    udf = Tokenize(model, TASKS, max_input_tokens=200, max_target_tokens=MAX_TARGET, layout=layout, text=mine)
    got, want = udf(numpy_batch(lean)), udf(numpy_batch(full))
    assert set(got) == set(want)
    for key in want:
        assert [list(x) for x in got[key]] == [list(x) for x in want[key]], key
    if layout == "seq2seq":  # the prefix of ``text`` is what Tokenize put in front of the block
        other = Tokenize(model, TASKS, max_input_tokens=200, max_target_tokens=MAX_TARGET, layout=layout)
        assert [list(x) for x in other(numpy_batch(lean))["ids__answer"]] != [list(x) for x in got["ids__answer"]]
