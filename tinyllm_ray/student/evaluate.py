"""Student evaluation as a Ray Data stage: the student generates an answer per question (greedy, the
``predict:`` task only, as at test time) and ``prompts.match_choice`` maps it to an option.

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

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question, to_table
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
        return {
            "split": batch["split"],
            "id": [q.id for q in questions],
            "generated": generated,
            "predicted": [-1 if p is None else p for p in predicted],
            "correct": [p == q.answer_index for p, q in zip(predicted, questions)],
        }


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
        correct = table.filter(pc.equal(table.column("split"), name)).column("correct").to_pylist()
        accuracy[name] = sum(correct) / len(correct) if correct else 0.0
    return accuracy, table
