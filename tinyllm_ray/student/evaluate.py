"""Student evaluation as a Ray Data stage, with two scorers over the ``predict:`` task (as at test time;
both in ``scoring.py``, for seq2seq, causal and one-encoder students):

- generate-and-match (the paper's): the student generates an answer (greedy) and
  ``replies.match_choice`` maps it to an option; an answer that names no option is wrong;
- rank classification: the student scores every option as the answer target (summed token
  log-likelihood) and the most likely option is its prediction; it always names an option.

An open-answer task (``data.task: open``) is scored by generating only: ``answers.correct`` judges each answer
by the data's scorer (normalised exact match or numeric equality); rank classification needs options, so its
columns hold -1/false and no ``rank_<split>`` accuracy is returned.

``evaluate(splits, model_dir, config)`` scores several splits in one pass (one model load per actor)
and returns the accuracy per split and one prediction row per question (``split, id, generated,
predicted, correct, rank_predicted, rank_correct``), which the pipeline stores as Parquet in the run
directory; ``evaluate_models`` does the same for the student and its baselines in one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
import transformers
from transformers import AutoTokenizer

from tinyllm_ray import answers, replies
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question, to_table
from tinyllm_ray.devices import device_for, use_bf16
from tinyllm_ray.student.arms import STUDENT_ARM
from tinyllm_ray.student.model import load_student, student_encoder
from tinyllm_ray.student.scoring import Scorer


def load_scorer(model_dir: str, config: Config, batch_size: int, num_gpus: float = 0.0) -> Scorer:
    """A ``Scorer`` over the student in ``model_dir`` with the layout the config trains it in."""
    s = config.student
    device = device_for(num_gpus)
    model = load_student(model_dir, s.trust_remote_code).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=s.trust_remote_code)
    return Scorer(model, student_encoder(model, tokenizer, config), batch_size, s.max_answer_tokens, device,
                  use_bf16(config.train.precision, device))


class StudentPredictor:
    """Ray Data UDF: loads the trained students once per actor (the run's and, with ``compare: true``, its
    baselines: one pass scores them all) and answers a batch of questions with each."""

    def __init__(self, model_dirs: dict[str, str], config: Config):
        transformers.utils.logging.disable_progress_bar()
        self.scorers = {name: load_scorer(d, config, config.eval.batch_size, config.eval.num_gpus)
                        for name, d in model_dirs.items()}
        self.judged_by = answers.scorer_of(config.data)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        keys = list(batch)
        questions = [Question.from_row(dict(zip(keys, v))) for v in zip(*(batch[k] for k in keys))]
        out: dict[str, list[Any]] = {k: [] for k in ("model", "split", "id", "generated", "predicted", "correct",
                                                     "rank_predicted", "rank_correct")}
        for name, scorer in self.scorers.items():
            generated = scorer.generate(questions)
            out["model"] += [name] * len(questions)
            out["split"] += list(batch["split"])
            out["id"] += [q.id for q in questions]
            out["generated"] += generated
            if self.judged_by != answers.CHOICE:  # open answers: judged as text or number, nothing to rank
                out["predicted"] += [-1] * len(questions)
                out["correct"] += [answers.correct(text, q.answer, self.judged_by)
                                   for text, q in zip(generated, questions)]
                out["rank_predicted"] += [-1] * len(questions)
                out["rank_correct"] += [False] * len(questions)
                continue
            predicted = [replies.match_choice(text, q.choices) for text, q in zip(generated, questions)]
            ranked = scorer.rank(questions)
            out["predicted"] += [-1 if p is None else p for p in predicted]
            out["correct"] += [p == q.answer_index for p, q in zip(predicted, questions)]
            out["rank_predicted"] += ranked
            out["rank_correct"] += [p == q.answer_index for p, q in zip(ranked, questions)]
        return out


def evaluate(splits: dict[str, list[Question]], model_dir: str, config: Config) -> tuple[dict[str, float], pa.Table]:
    """One student's accuracy per split (``<split>`` generating, ``rank_<split>`` ranking) and its predictions."""
    return evaluate_models(splits, {STUDENT_ARM: model_dir}, config)[STUDENT_ARM]


def evaluate_models(splits: dict[str, list[Question]], model_dirs: dict[str, str], config: Config
                    ) -> dict[str, tuple[dict[str, float], pa.Table]]:
    """``evaluate`` for several students (same config but their loss weights) in one Ray Data pass, by name."""
    tables = [to_table(qs).append_column("split", pa.array([name] * len(qs), pa.string()))
              for name, qs in splits.items()]
    refs = (
        ray.data.from_arrow(pa.concat_tables(tables))
        .map_batches(
            StudentPredictor,
            fn_constructor_kwargs={"model_dirs": model_dirs, "config": config},
            batch_size=config.eval.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.eval.replicas),
            num_cpus=config.eval.num_cpus,
            num_gpus=config.eval.num_gpus,
        )
        .to_arrow_refs()
    )
    every = pa.concat_tables(ray.get(refs))
    out = {}
    for model in model_dirs:
        table = every.filter(pc.equal(every.column("model"), model)).drop_columns(["model"])
        accuracy = {}
        for name in splits:
            rows = table.filter(pc.equal(table.column("split"), name))
            ranked = answers.scorer_of(config.data) == answers.CHOICE  # open answers: nothing to rank
            for scorer, column in (("", "correct"), ("rank_", "rank_correct"))[: 2 if ranked else 1]:
                correct = rows.column(column).to_pylist()
                accuracy[f"{scorer}{name}"] = sum(correct) / len(correct) if correct else 0.0
        out[model] = (accuracy, table)
    return out
