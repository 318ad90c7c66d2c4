"""Hugging Face hub datasets by name: where each lives on the hub, and how one of its records, as published on
its dataset card, becomes a ``Question`` (multiple choice: OBQA, ARC, PIQA, RiddleSense, CommonsenseQA,
PubMedQA, BioASQ; open answer: GSM8K, SVAMP).

``HUB_SCHEMAS`` maps a dataset name to its hub copy and to the normalizer of its schema family, which turns
one record into a ``Question`` (or raises ``RowError`` with the reject reason). The open-answer schemas give
questions without choices whose answer is the gold number as text: GSM8K's from the final ``#### <number>``
line of its worked solution (thousands separators removed), SVAMP's from its ``Answer`` float (``5.0`` ->
``"5"``). ``read_hub`` reads a dataset either from local split files (``split_files.py``) or, without a path,
with ``datasets.load_dataset``, and returns ``{"train"|"valid"|"test": [Row, ...]}`` with only the splits that
exist; ``load.py`` decides what to do with the rejected rows. The field readers here (``strings``,
``passages``, ``number_text``...) serve the column-mapped files (``mapped.py``) too.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray.answers import plain_number
from tinyllm_ray.data.records import NO_LABEL, DataError, Row, RowError, non_finite, text_field
from tinyllm_ray.data.schema import Question
from tinyllm_ray.data.split_files import SPLIT_NAMES, Normalizer, find_split_files, read_split_files, to_row
from tinyllm_ray.input_checks import clip, shorten

log = logging.getLogger("tinyllm_ray.data")


@dataclasses.dataclass(frozen=True)
class HubSchema:
    """A dataset known by name: where it lives on the hub and how one of its records becomes a question."""

    name: str
    hub_id: str | None
    """Hugging Face dataset id; None when there is no canonical copy (a local path is then required)."""
    hub_config: str | None
    normalize: Normalizer
    """``normalize(record, where)`` -> ``Question``, or ``RowError(reason)`` for a malformed record."""
    hub_revision: str | None = None
    """Hub revision to load; ``refs/convert/parquet`` for datasets whose main branch is a loading script."""
    split_files: tuple[tuple[str, str], ...] = ()
    """(file name pattern, split) of the dataset's own distribution, beside the generic names: BioASQ's
    ``trainingNNb.json`` and ``NNBk_golden.json`` batches (several files may make one split)."""


# -- field readers (the column-mapped files use them too) --------------------------------------------------------

def derived_id(prefix: str, where: str) -> str:
    """A stable id for a record without one, from its position: ``piqa``, ``train.jsonl:line 3`` ->
    ``piqa-train.jsonl-line-3``."""
    return "-".join(part for part in (prefix, re.sub(r"[^A-Za-z0-9._]+", "-", where).strip("-")) if part)


def choice_for_label(choices: Sequence[str], labels: Sequence[str], key: str) -> str:
    """The text of the choice labelled ``key`` (``"B"`` with labels ``A..E`` -> the second choice)."""
    if key not in labels:
        raise RowError(f"answer key {clip(key)} is not among the labels {shorten(', '.join(labels))}")
    return choices[list(labels).index(key)]


def _answer_key(record: dict[str, Any], key: str) -> str:
    """A required answer field that may be empty in unlabeled splits (then ``no answer label``)."""
    if key not in record:
        raise RowError(f"missing {key!r}")
    value = record[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(NO_LABEL)
    return text_field(record, key)


def record_id(record: dict[str, Any], key: str | None, prefix: str, where: str) -> str:
    """The record's own id when it has one, else one derived from ``where``."""
    if key is None or record.get(key) in (None, ""):
        return derived_id(prefix, where)
    return text_field(record, key)


def strings(value: Any, what: str) -> list[str]:
    """A list of strings (numbers accepted, not NaN or the infinities), stripped, else ``RowError``."""
    if value is None:
        raise RowError(f"missing {what}")
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{what} is a {type(value).__name__}, not a list")
    if any(not isinstance(v, (str, int, float)) or isinstance(v, bool) for v in value):
        raise RowError(f"{what} holds a value that is not text")
    if special := next(filter(None, map(non_finite, value)), ""):
        raise RowError(f"{what} holds {special}, not text")
    return [str(v).strip() for v in value]


def _drop_zero_decimals(text: str) -> str:
    """``"5.0"`` -> ``"5"``, ``"2.50"`` -> ``"2.5"``; ``text`` is a plain number without separators."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def number_text(value: Any, what: str) -> str:
    """A gold number as answer text: an int as is, a float without a trailing ``.0`` (``5.0`` -> ``"5"``,
    ``2.5`` -> ``"2.5"``), a numeric string likewise (``"1,234.0"`` -> ``"1234"``); ``RowError`` naming ``what``
    for a bool, NaN, an infinity or anything that is not a number."""
    if isinstance(value, bool):
        raise RowError(f"{what} is {clip(value)}, not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if special := non_finite(value):
            raise RowError(f"{what} is {special}, not a number")
        if value.is_integer():
            return str(int(value))
        text = repr(value)
        return _drop_zero_decimals(f"{value:.20f}") if "e" in text else text  # 1e-05 -> 0.00001
    if isinstance(value, str):
        if (number := plain_number(value)) is None:
            raise RowError(f"{what} is {clip(value.strip())}, not a number")
        return _drop_zero_decimals(number)
    raise RowError(f"{what} is a {type(value).__name__}, not a number")


def _first_key(record: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` that ``record`` holds with a value (not None)."""
    return next((key for key in keys if record.get(key) is not None), None)


def passages(value: Any, what: str) -> str:
    """Context text from a string, or a list of strings / ``{"text": ...}`` dicts joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        value = [v.get("text") if isinstance(v, dict) else v for v in value]
    return " ".join(p for p in strings(value, what) if p)


# -- one normalizer per schema family ------------------------------------------------------------------------

def _labeled_choices(record: dict[str, Any], where: str, *, name: str, question_key: str,
                     id_required: bool) -> Question:
    """OBQA, ARC, CommonsenseQA, RiddleSense: ``choices: {text: [...], label: [...]}`` + ``answerKey``."""
    question = text_field(record, question_key)
    raw = record.get("choices")
    if raw is None:
        raise RowError("missing 'choices'")
    if not isinstance(raw, dict):
        raise RowError(f"'choices' is a {type(raw).__name__}, not a dict of 'text' and 'label' lists")
    texts = strings(raw.get("text"), "'choices.text'")
    labels = strings(raw.get("label"), "'choices.label'")
    if len(texts) != len(labels):
        raise RowError(f"'choices' has {len(texts)} texts but {len(labels)} labels")
    answer = choice_for_label(texts, labels, _answer_key(record, "answerKey"))
    qid = text_field(record, "id") if id_required else record_id(record, "id", name, where)
    return Question(id=qid, question=question, choices=tuple(texts), answer=answer)


def _two_solutions(record: dict[str, Any], where: str, *, name: str) -> Question:
    """PIQA: ``goal``, ``sol1``, ``sol2``, ``label`` 0/1 (-1 in the unlabeled test split)."""
    choices = (text_field(record, "sol1"), text_field(record, "sol2"))
    question = text_field(record, "goal")
    if "label" not in record:
        raise RowError("missing 'label'")
    label = record["label"]
    if isinstance(label, str) and re.fullmatch(r"-?[0-9]{1,9}", label.strip()):
        label = int(label)
    if label is None or label == -1:
        raise RowError(NO_LABEL)
    if not isinstance(label, int) or isinstance(label, bool) or label not in (0, 1):
        raise RowError(f"'label' is {clip(label)}, not 0 or 1")
    return Question(id=record_id(record, "id", name, where), question=question, choices=choices,
                    answer=choices[label])


def _pubmedqa(record: dict[str, Any], where: str, *, name: str) -> Question:
    """PubMedQA: ``pubid``, ``question``, ``context.contexts``, ``final_decision`` yes/no/maybe, ``long_answer``."""
    choices = ("yes", "no", "maybe")
    qid, question = text_field(record, "pubid"), text_field(record, "question")
    context = record.get("context")
    if isinstance(context, dict):
        context = context.get("contexts")
        if context is None:
            raise RowError("missing 'context.contexts'")
    decision = _answer_key(record, "final_decision").lower()
    if decision not in choices:
        raise RowError(f"'final_decision' is {clip(decision)}, not yes, no or maybe")
    rationale = record.get("long_answer")
    return Question(id=qid, question=question, choices=choices, answer=decision,
                    context=passages(context, "'context'"),
                    reference_rationale=rationale.strip() if isinstance(rationale, str) else "")


def _yes_no(record: dict[str, Any], where: str, *, name: str) -> Question:
    """BioASQ yes/no: ``id``, ``body`` or ``question``, ``exact_answer`` or ``answer``, ``snippets``/``context``."""
    kind = record.get("type")
    if kind is not None and kind != "yesno":
        raise RowError(f"type {clip(kind)} is not a yes/no question")
    if "body" not in record and "question" not in record:
        raise RowError("missing 'body' or 'question'")
    question = text_field(record, "body" if "body" in record else "question")
    if "exact_answer" not in record and "answer" not in record:
        raise RowError("missing 'exact_answer' or 'answer'")
    answer_key = "exact_answer" if "exact_answer" in record else "answer"
    raw = record.get(answer_key)
    if isinstance(raw, list) and len(raw) == 1:  # some exports wrap the exact answer in a list
        record = {**record, answer_key: raw[0]}
    answer = _answer_key(record, answer_key).lower()
    if answer not in ("yes", "no"):
        raise RowError(f"{answer_key!r} is {clip(answer)}, not yes or no")
    context = passages(record["snippets"] if "snippets" in record else record.get("context"), "'snippets'")
    ideal = record.get("ideal_answer")
    ideal = ideal[0] if isinstance(ideal, list) and ideal else ideal
    return Question(id=record_id(record, "id", name, where), question=question, choices=("yes", "no"),
                    answer=answer, context=context,
                    reference_rationale=ideal.strip() if isinstance(ideal, str) else "")


_CALCULATOR = re.compile(r"<<[^<>]*>>")
"""GSM8K's calculator annotations in its worked solutions: ``48/2 = <<48/2=24>>24`` -> ``48/2 = 24``."""


def _gsm8k(record: dict[str, Any], where: str, *, name: str) -> Question:
    """GSM8K: ``question``, ``answer`` = the worked solution (with ``<<...>>`` calculator annotations), then a
    last line ``#### <number>``. The gold answer is that number without thousands separators (``#### 1,234``
    -> ``"1234"``; a minus and decimals kept); the solution before it, annotations removed, is the reference
    rationale (its lines kept). The published copy has no ids: they are derived from the row's position (a copy
    with an ``id`` column keeps its own)."""
    question = text_field(record, "question")
    worked, mark, final = text_field(record, "answer").rpartition("####")
    if not mark:
        raise RowError("no '####' answer line")
    answer = plain_number(final)
    if answer is None:
        raise RowError(f"the '####' answer {clip(final.strip())} is not a number")
    lines = (line.strip() for line in _CALCULATOR.sub("", worked).splitlines())
    return Question(id=record_id(record, "id", name, where), question=question, choices=(), answer=answer,
                    reference_rationale="\n".join(line for line in lines if line))


def _svamp(record: dict[str, Any], where: str, *, name: str) -> Question:
    """SVAMP: ``ID``, ``Body``, ``Question``, ``Equation``, ``Answer`` (a float), ``Type`` (lower-case keys as
    some copies have them are accepted too). The question is ``Body`` and ``Question`` joined with a space (else
    ``question_concat``); the gold answer is the number without a trailing ``.0`` (``5.0`` -> ``"5"``); the
    reference rationale is ``"<Equation> = <answer>"`` (empty without an equation)."""
    body, asked = _first_key(record, "Body", "body"), _first_key(record, "Question", "question")
    if body and asked:
        question = f"{text_field(record, body)} {text_field(record, asked)}"
    elif "question_concat" in record:
        question = text_field(record, "question_concat")
    else:
        raise RowError("missing 'Body' and 'Question' (or 'question_concat')")
    key = _first_key(record, "Answer", "answer")
    if key is None:
        raise RowError(NO_LABEL if "Answer" in record or "answer" in record else "missing 'Answer'")
    raw = record[key]
    if isinstance(raw, str) and not raw.strip():
        raise RowError(NO_LABEL)
    answer = number_text(raw, repr(key))
    equation = record.get(_first_key(record, "Equation", "equation") or "Equation")
    rationale = f"{equation.strip()} = {answer}" if isinstance(equation, str) and equation.strip() else ""
    return Question(id=record_id(record, _first_key(record, "ID", "id"), name, where), question=question,
                    choices=(), answer=answer, reference_rationale=rationale)


def _schema(name: str, hub_id: str | None, hub_config: str | None, family: Callable[..., Question],
            revision: str | None = None, split_files: tuple[tuple[str, str], ...] = (),
            **options: Any) -> tuple[str, HubSchema]:
    return name, HubSchema(name, hub_id, hub_config, functools.partial(family, name=name, **options), revision,
                           split_files)


# BioASQ's official Task B files: the training set (``training12b.json``, ``training12b_new.json``) and the
# golden test batches (``12B1_golden.json`` ... ``12B4_golden.json``), each one ``{"questions": [...]}`` object.
BIOASQ_FILES = ((r"training\d+b(?:_[a-z0-9]+)?\.json", "train"), (r"\d+b\d+_golden\.json", "test"))


HUB_SCHEMAS: dict[str, HubSchema] = dict([
    _schema("obqa", "allenai/openbookqa", "main", _labeled_choices, question_key="question_stem", id_required=True),
    _schema("arc_easy", "allenai/ai2_arc", "ARC-Easy", _labeled_choices, question_key="question", id_required=True),
    _schema("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", _labeled_choices, question_key="question",
            id_required=True),
    _schema("commonsenseqa", "tau/commonsense_qa", None, _labeled_choices, question_key="question",
            id_required=True),
    # The main branches of these two are loading scripts, which ``datasets`` >= 4 no longer runs.
    _schema("riddlesense", "INK-USC/riddle_sense", None, _labeled_choices, "refs/convert/parquet",
            question_key="question", id_required=False),
    _schema("piqa", "ybisk/piqa", None, _two_solutions, "refs/convert/parquet"),
    _schema("pubmedqa", "qiaojin/PubMedQA", "pqa_labeled", _pubmedqa),
    _schema("bioasq", None, None, _yes_no, split_files=BIOASQ_FILES),
    # Open answer (no choices). GSM8K's snapshot keeps its configs apart: main/train-00000-of-00001.parquet.
    _schema("gsm8k", "openai/gsm8k", "main", _gsm8k),
    _schema("svamp", "ChilleD/SVAMP", None, _svamp),
])


# -- reading -------------------------------------------------------------------------------------------------

def read_hub(name: str, path: Path | None, revision: str | None = None,
             served: list[str] | None = None) -> dict[str, list[Row]]:
    """Rows of dataset ``name`` by split, from local split files under ``path`` or, without one, from the hub at
    ``revision`` (default: the schema's). ``served`` gets ``hf://datasets/<id>@<commit>`` of what the hub
    served (the revision as given when the commit cannot be asked for)."""
    schema = HUB_SCHEMAS.get(name)
    if schema is None:
        raise DataError(f"unknown hub dataset {name!r} (known: {', '.join(sorted(HUB_SCHEMAS))})")
    if path is not None:
        subdirs = ("data", *((schema.hub_config, f"{schema.hub_config}/data") if schema.hub_config else ()))
        return read_split_files(find_split_files(Path(path), subdirs, schema.split_files), schema.normalize)
    if schema.hub_id is None:
        raise DataError(f"{name}: there is no canonical hub copy of this dataset; pass a local path to a directory "
                        f"of split files")
    import datasets  # lazily: importing it is slow and the local-file path never needs it

    wanted = revision or schema.hub_revision
    commit = _commit(schema.hub_id, wanted)
    options = {"revision": commit or wanted} if commit or wanted else {}
    if commit and commit != wanted:  # followed a branch: say what came, and how to keep it
        log.warning("%s: loading %s at commit %s (%s); --set data.revision=%s pins it, so that an update of "
                    "the dataset cannot change a re-run", name, schema.hub_id, commit, wanted or "main", commit)
    if served is not None:
        served.append(f"hf://datasets/{schema.hub_id}@{commit or wanted or 'main'}")
    try:
        loaded = datasets.load_dataset(schema.hub_id, schema.hub_config, **options)
    except Exception as err:  # noqa: BLE001 -- network, auth, script and format errors all mean "cannot load"
        raise DataError(f"{name}: cannot load {schema.hub_id!r} (config {schema.hub_config!r}) from the hub: "
                        f"{type(err).__name__}: {err}; pass a local path to its split files instead") from err
    rows: dict[str, list[Row]] = {}
    for split_name, dataset in loaded.items():
        split = SPLIT_NAMES.get(split_name.lower())
        if split is not None:
            where = f"{schema.hub_id}:{split_name}:row "
            rows.setdefault(split, []).extend(to_row(schema.normalize, record, f"{where}{i}")
                                              for i, record in enumerate(dataset))
    if not rows:
        raise DataError(f"{name}: {schema.hub_id!r} has no train/validation/test split (found: {', '.join(loaded)})")
    return rows


def _commit(hub_id: str, revision: str | None) -> str | None:
    """The commit the hub serves for ``revision`` (a branch, tag or commit), or ``None`` offline or when the hub
    cannot be asked (``load_dataset`` then reports what is wrong)."""
    try:
        import huggingface_hub

        if huggingface_hub.constants.HF_HUB_OFFLINE:
            return None
        return huggingface_hub.HfApi().dataset_info(hub_id, revision=revision).sha
    except Exception:  # noqa: BLE001 -- network, auth and missing repos: load_dataset says which
        return None
