"""What a run shares: the model card's hub metadata (model-index results) and the rationales as a Hugging Face
dataset that ``datasets.load_dataset`` reads back."""

from __future__ import annotations

import pytest
from huggingface_hub import DatasetCard, ModelCard

from tinyllm_ray import publish
from tinyllm_ray.config import from_dict
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.results import TeacherResult


def _report(model: str) -> dict:
    student = {"model": model, "mode": "prefix", "architecture": "seq2seq", "loss_weights": {"answer": 1.0},
               "steps": 3, "valid_accuracy": 0.5, "valid_accuracy_rank": 0.625, "test_accuracy": 0.25,
               "test_accuracy_rank": None}
    return {"run_name": "card", "student": student, "teachers": [], "dataset": {"name": "obqa", "train": 48}}


@pytest.mark.parametrize(("model", "base"), [("google/flan-t5-base", "google/flan-t5-base"),
                                             ("/models/student-t5", None)])
def test_the_model_card_carries_its_results_for_the_hub(model, base):
    card = ModelCard(publish.with_hub_metadata(_report(model), "# body\n"))
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {("validation", "accuracy (generate and match)"): 0.5,
                       ("validation", "accuracy (rank classification)"): 0.625,
                       ("test", "accuracy (generate and match)"): 0.25}  # a missing score is left out
    assert card.data.base_model == base  # a local path is no hub model
    assert "tinyllm" in card.data.tags and card.text.strip() == "# body"


def test_the_rationales_load_back_with_datasets(tmp_path):
    from datasets import load_dataset

    config = from_dict({"student": {"model": "s"}, "teachers": [{"name": "a", "model": "m", "shots": 1}]})
    train = generate(6, 0, 0, seed=0)["train"]
    rationales = {"a": {q.id: f"because {q.answer}" for q in train[:4]}, "precomputed": {train[5].id: "so"}}
    teachers = [TeacherResult("a", "m", rationales=4, rejected=2),
                TeacherResult("precomputed", "files", rationales=1, rejected=5)]
    out = publish.export_rationales(tmp_path, config, train, rationales, teachers)

    rows = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))["train"]
    assert rows.num_rows == 6 and rows["id"] == [q.id for q in train]
    assert rows["rationale_a"] == [f"because {q.answer}" for q in train[:4]] + [None, None]
    assert rows["rationale_precomputed"] == [None] * 5 + ["so"]
    assert [c[i] for c, i in zip(rows["choices"], rows["answer_index"], strict=True)] == [q.answer for q in train]
    card = DatasetCard.load(out / "README.md")
    assert card.data.configs[0]["data_files"][0]["split"] == "train"
    assert "| a | `m` | 4 | 2 | engine=hf" in card.text and "precomputed (imported" in card.text
    assert train[0].question in card.text  # the example prompt


def test_the_export_joins_arrow_rationales_in_chunks_like_the_dicts(tmp_path, monkeypatch):
    """Issue #17: the export joins a ``store.Rationales`` table by id in Arrow and writes a chunk of questions at a
    time; the file reads the same as one written from dicts, open-answer questions (no choices) included."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinyllm_ray.data.schema import Question
    from tinyllm_ray.teachers.store import Rationales

    config = from_dict({"student": {"model": "s"}, "teachers": [{"name": "a", "model": "m", "shots": 1}]})
    train = generate(5, 0, 0, seed=1)["train"] + [Question("open-1", "How many?", (), "7")]
    by_id = {q.id: f"because {q.answer}" for q in train[1:]}
    teachers = [TeacherResult("a", "m", rationales=5, rejected=1)]
    whole = pq.read_table(publish.export_rationales(tmp_path / "dicts", config, train, {"a": by_id}, teachers)
                          / publish.TRAIN_FILE)
    monkeypatch.setattr(publish, "EXPORT_CHUNK", 2)
    held = Rationales(pa.table({"id": list(by_id), "rationale": list(by_id.values())}))
    chunked = pq.read_table(publish.export_rationales(tmp_path / "arrow", config, train, {"a": held}, teachers)
                            / publish.TRAIN_FILE)
    assert chunked.equals(whole)
    assert chunked.column("rationale_a").to_pylist() == [None] + [by_id[q.id] for q in train[1:]]
    assert chunked.column("choices")[5].as_py() == [] and chunked.column("answer_index")[5].as_py() is None
    assert chunked.schema.field("choices").type == pa.list_(pa.string())
