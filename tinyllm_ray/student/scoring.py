"""The two scorers of the student's answer task, for every layout (seq2seq, causal, one-encoder), batched.

- ``Scorer.generate``: greedy answers (the paper's generate-and-match; ``replies.match_choice`` maps them
  to options). Causal students decode only the new tokens; one-encoder students start the decoder with
  the ``predict:`` marker and decode what follows it.
- ``Scorer.rank``: rank classification, the index of the option whose tokens the student finds most likely
  (summed log-likelihood), through the same forward as training (``model.task_logits``).

An open-answer question (no options) is scored by generating only: ``answers.correct`` judges the generated
text against the gold answer (normalised exact match or numeric equality); there is nothing to rank.

Used inside training (rank 0 scores valid to pick checkpoints) and by the evaluation stage (``evaluate.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tinyllm_ray import answers, prompts, replies
from tinyllm_ray.data.schema import Question
from tinyllm_ray.devices import bf16_autocast, pad_id, plain_generation
from tinyllm_ray.student.batches import QUESTION, Encoder, collate
from tinyllm_ray.student.loss import sequence_log_likelihood
from tinyllm_ray.student.model import encode_questions, task_logits, to_device

ANSWER = prompts.ANSWER_TASK


class Scorer:
    def __init__(self, model: torch.nn.Module, encoder: Encoder, batch_size: int, max_answer_tokens: int,
                 device: torch.device | str = "cpu", autocast: bool = False):
        self.model, self.enc, self.batch_size = model, encoder, batch_size
        self.max_answer_tokens, self.device = max_answer_tokens, torch.device(device)
        self.autocast = autocast
        self.pad_id = pad_id(encoder.tok)

    def _sources(self, questions: Sequence[Question], task: str = ANSWER) -> list[np.ndarray]:
        if self.enc.layout == "one_encoder":
            return self.enc.sources([prompts.question_block(q) for q in questions])
        return self.enc.sources([prompts.student_input(q, task, self.enc.text) for q in questions])

    def _amp(self):
        return bf16_autocast(self.device, self.autocast)

    @torch.inference_mode()
    def rank(self, questions: Sequence[Question]) -> list[int]:
        """Most likely option per question; (question, option) pairs in batches of ``batch_size``."""
        sources = self._sources(questions)
        pairs = [(i, c) for i, q in enumerate(questions) for c in q.choices]
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            src = [sources[i] for i, _ in chunk]
            rows = self.enc.rows(ANSWER, src, self.enc.targets([c for _, c in chunk]))
            batch = {"id": np.arange(len(chunk)), **{f"{k}__{ANSWER}": v for k, v in rows.items()}}
            if self.enc.layout == "one_encoder":
                batch[f"ids__{QUESTION}"] = src
            collated = to_device(collate(batch, [ANSWER], self.pad_id, self.enc.layout), self.device)
            with self._amp():
                encoded = (encode_questions(self.model, collated[QUESTION])
                           if self.enc.layout == "one_encoder" else None)
                logits, labels = task_logits(self.model, self.enc.layout, collated[ANSWER],
                                             collated.get(QUESTION), encoded)
            scores += sequence_log_likelihood(logits, labels).tolist()
        best, at = [], 0
        for q in questions:
            option_scores = scores[at : at + len(q.choices)]
            best.append(max(range(len(q.choices)), key=option_scores.__getitem__))
            at += len(q.choices)
        return best

    @torch.inference_mode()
    def generate(self, questions: Sequence[Question], task: str = ANSWER, max_new_tokens: int | None = None
                 ) -> list[str]:
        """Greedy answers (or, with a teacher's name as ``task``, rationales in that teacher's style), decoded
        without the prompt (or decoder marker) tokens."""
        sources = self._sources(questions, task)
        out: list[str] = []
        for start in range(0, len(sources), self.batch_size):
            src = sources[start : start + self.batch_size]
            width = max(len(s) for s in src)
            left = self.enc.layout == "causal"  # batched causal generation pads on the left
            ids = torch.full((len(src), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(src), width), dtype=torch.long)
            for i, s in enumerate(src):
                span = slice(width - len(s), width) if left else slice(0, len(s))
                ids[i, span], mask[i, span] = torch.as_tensor(s, dtype=torch.long), 1
            kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
            skip = width if left else 0
            if self.enc.layout == "one_encoder":
                lead = [self.enc.decoder_start, *self.enc.marker(task).tolist()]
                kwargs["decoder_input_ids"] = torch.tensor([lead] * len(src), device=self.device)
                skip = len(lead)
            with self._amp(), plain_generation(self.model):  # greedy, whatever the model's own defaults say
                generated = self.model.generate(**kwargs, max_new_tokens=max_new_tokens or self.max_answer_tokens,
                                                do_sample=False, pad_token_id=self.pad_id)
            out += [self.enc.tok.decode(g[skip:], skip_special_tokens=True).strip() for g in generated]
        return out

    def correct(self, questions: Sequence[Question], scorer: str, judged_by: str = answers.CHOICE) -> int:
        """How many of ``questions`` ``rank`` or ``generate`` (generate-and-match) answers right; open questions
        (``judged_by`` ``exact`` or ``numeric``) are always generated and judged by ``answers.correct``."""
        if not questions:
            return 0
        if judged_by != answers.CHOICE:
            return sum(answers.correct(text, q.answer, judged_by)
                       for text, q in zip(self.generate(questions), questions))
        if scorer == "rank":
            picked = self.rank(questions)
        else:
            picked = [replies.match_choice(text, q.choices) for text, q in zip(self.generate(questions), questions)]
        return sum(p == q.answer_index for p, q in zip(picked, questions))
