"""Student evaluation as a Ray Data stage, with two scorers over the ``predict:`` task (as at test time):

- generate-and-match (the paper's): the student generates an answer (greedy) and
  ``prompts.match_choice`` maps it to an option; an answer that names no option is wrong;
- rank classification: the student scores every option as the answer target (summed token
  log-likelihood) and the most likely option is its prediction; it always names an option.

``evaluate(splits, model_dir, config)`` scores several splits in one pass (one model load per actor)
and returns the accuracy per split and one prediction row per question (``split, id, generated,
predicted, correct``), which the pipeline stores as Parquet in the run directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
import torch

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question, to_table
from tinyllm_ray.student.loss import IGNORE, sequence_log_likelihood
from tinyllm_ray.teachers.engines import HFEngine


class StudentPredictor:
    """Ray Data UDF: loads the trained student once per actor and answers a batch of questions."""

    def __init__(self, model_dir: str, config: Config):
        s, e = config.student, config.eval
        self.engine = HFEngine(
            model_dir,
            batch_size=e.batch_size,
            max_new_tokens=s.max_answer_tokens,
            num_gpus=e.num_gpus,
            max_input_tokens=s.max_input_tokens,
            trust_remote_code=s.trust_remote_code,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        keys = list(batch)
        questions = [Question.from_row(dict(zip(keys, v))) for v in zip(*(batch[k] for k in keys))]
        inputs = [prompts.student_input(q, prompts.ANSWER_TASK) for q in questions]
        generated = [g.text.strip() for g in self.engine.generate(inputs)]
        predicted = [prompts.match_choice(text, q.choices) for text, q in zip(generated, questions)]
        ranked = self.rank(inputs, questions)
        return {
            "split": batch["split"],
            "id": [q.id for q in questions],
            "generated": generated,
            "predicted": [-1 if p is None else p for p in predicted],
            "correct": [p == q.answer_index for p, q in zip(predicted, questions)],
            "rank_predicted": ranked,
            "rank_correct": [p == q.answer_index for p, q in zip(ranked, questions)],
        }

    @torch.inference_mode()
    def rank(self, inputs: list[str], questions: list[Question]) -> list[int]:
        """Index of the most likely option per question (one forward over every (question, option) pair)."""
        tok, model, device = self.engine.tokenizer, self.engine.model, self.engine.device
        pairs = [(i, c) for i, q in enumerate(questions) for c in q.choices]
        scores = []
        for start in range(0, len(pairs), self.engine.batch_size):
            chunk = pairs[start : start + self.engine.batch_size]
            enc = tok([inputs[i] for i, _ in chunk], return_tensors="pt", padding=True, truncation=True,
                      max_length=self.engine.max_input_tokens).to(device)
            labels = tok([c for _, c in chunk], return_tensors="pt", padding=True)["input_ids"].to(device)
            labels[labels == tok.pad_token_id] = IGNORE
            logits = model(**enc, labels=labels).logits
            scores += sequence_log_likelihood(logits, labels).tolist()
        best, at = [], 0
        for q in questions:
            option_scores = scores[at : at + len(q.choices)]
            best.append(max(range(len(q.choices)), key=option_scores.__getitem__))
            at += len(q.choices)
        return best


def evaluate(splits: dict[str, list[Question]], model_dir: str, config: Config) -> tuple[dict[str, float], pa.Table]:
    tables = [to_table(qs).append_column("split", pa.array([name] * len(qs), pa.string()))
              for name, qs in splits.items()]
    refs = (
        ray.data.from_arrow(pa.concat_tables(tables))
        .map_batches(
            StudentPredictor,
            fn_constructor_kwargs={"model_dir": model_dir, "config": config},
            batch_size=config.eval.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.eval.replicas),
            num_cpus=config.eval.num_cpus,
            num_gpus=config.eval.num_gpus,
        )
        .to_arrow_refs()
    )
    table = pa.concat_tables(ray.get(refs))
    accuracy = {}
    for name in splits:
        rows = table.filter(pc.equal(table.column("split"), name))
        for scorer, column in (("", "correct"), ("rank_", "rank_correct")):
            correct = rows.column(column).to_pylist()
            accuracy[f"{scorer}{name}"] = sum(correct) / len(correct) if correct else 0.0
    return accuracy, table
