"""Readers for Hugging Face hub datasets (multiple choice: OBQA, ARC, PIQA, RiddleSense, CommonsenseQA,
PubMedQA, BioASQ; open answer: GSM8K, SVAMP) and for any JSON/JSON Lines/Parquet file with a column mapping.

``HUB_SCHEMAS`` maps a dataset name to its hub copy and to the normalizer of its schema family, which turns
one record as published on the dataset card into a ``Question`` (or raises ``RowError`` with the reject
reason). The open-answer schemas give questions without choices whose answer is the gold number as text:
GSM8K's from the final ``#### <number>`` line of its worked solution (thousands separators removed), SVAMP's
from its ``Answer`` float (``5.0`` -> ``"5"``). ``read_hub`` reads a dataset either from local split files
(``train.jsonl``, ``obqa_valid.json``, ``data/test-00000-of-00001.parquet``, GSM8K's
``main/train-00000-of-00001.parquet``...) or, without a path, with ``datasets.load_dataset``. ``read_mapped``
reads files whose columns are named in a mapping (without a ``choices`` column: open questions). Both return
``{"train"|"valid"|"test": [Row, ...]}`` with only the splits that exist; ``load.py`` decides what to do with
the rejected rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray.data.records import (
    DIRECTORY,
    FILE,
    NO_LABEL,
    SUFFIXES,
    DataError,
    Row,
    RowError,
    list_dir,
    non_finite,
    read_records,
    require,
    text_field,
)
from tinyllm_ray.inputs import clip, shorten
from tinyllm_ray.data.schema import LETTERS, Question, problems

log = logging.getLogger("tinyllm_ray.data")

SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid", "test": "test"}
"""Split names found in files and on the hub -> the pipeline's split names."""

_SPLIT = "|".join(SPLIT_NAMES)
_EXT = "|".join(s.lstrip(".") for s in SUFFIXES)
_NAMED_FILE = re.compile(rf"^(?:.*[_-])?({_SPLIT})\.({_EXT})$", re.IGNORECASE)
_SHARD_FILE = re.compile(rf"^({_SPLIT})-\d+-of-\d+(?:-[0-9a-f]+)?\.parquet$", re.IGNORECASE)
_LOOKED_FOR = (f"<split>.<ext>, <name>_<split>.<ext>, <name>-<split>.<ext>, <split>-00000-of-00001.parquet or "
               f"<split>/0000.parquet (split: {'/'.join(SPLIT_NAMES)}; ext: "
               f"{'/'.join(s.lstrip('.') for s in SUFFIXES)})")

Normalizer = Callable[[dict[str, Any], str], Question]


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


# -- shared helpers ------------------------------------------------------------------------------------------

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


def _record_id(record: dict[str, Any], key: str | None, prefix: str, where: str) -> str:
    """The record's own id when it has one, else one derived from ``where``."""
    if key is None or record.get(key) in (None, ""):
        return derived_id(prefix, where)
    return text_field(record, key)


def _strings(value: Any, what: str) -> list[str]:
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


_PLAIN_NUMBER = re.compile(r"[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")
"""A number as a gold answer is written: optional minus, digits (thousands separators only between groups of
three), optional decimals (ASCII digits). No plus sign, unit or exponent around it."""


def plain_number(text: str) -> str | None:
    """``text`` as a bare number with its thousands separators removed (``"1,234"`` -> ``"1234"``, ``"-3.5"``
    kept), or None when it is not one number written plainly (``"3,4"``, ``"$5"``, ``"5 apples"``, ``""``)."""
    text = text.strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    return text.replace(",", "").replace("\u2212", "-")


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


def _passages(value: Any, what: str) -> str:
    """Context text from a string, or a list of strings / ``{"text": ...}`` dicts joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        value = [v.get("text") if isinstance(v, dict) else v for v in value]
    return " ".join(p for p in _strings(value, what) if p)


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
    texts = _strings(raw.get("text"), "'choices.text'")
    labels = _strings(raw.get("label"), "'choices.label'")
    if len(texts) != len(labels):
        raise RowError(f"'choices' has {len(texts)} texts but {len(labels)} labels")
    answer = choice_for_label(texts, labels, _answer_key(record, "answerKey"))
    qid = text_field(record, "id") if id_required else _record_id(record, "id", name, where)
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
    return Question(id=_record_id(record, "id", name, where), question=question, choices=choices,
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
                    context=_passages(context, "'context'"),
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
    context = _passages(record["snippets"] if "snippets" in record else record.get("context"), "'snippets'")
    ideal = record.get("ideal_answer")
    ideal = ideal[0] if isinstance(ideal, list) and ideal else ideal
    return Question(id=_record_id(record, "id", name, where), question=question, choices=("yes", "no"),
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
    return Question(id=_record_id(record, "id", name, where), question=question, choices=(), answer=answer,
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
    return Question(id=_record_id(record, _first_key(record, "ID", "id"), name, where), question=question,
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

def _to_row(normalize: Normalizer, record: Any, where: str) -> Row:
    if not isinstance(record, dict):
        return Row(where, None, f"record is a {type(record).__name__}, not an object")
    try:
        question = normalize(record, where)
    except RowError as err:
        return Row(where, None, str(err))
    why = problems(question)
    return Row(where, None, "; ".join(why)) if why else Row(where, question)


def find_split_files(directory: Path, subdirs: Iterable[str] = ("data",),
                     extra: Sequence[tuple[str, str]] = ()) -> dict[str, list[Path]]:
    """Split files of ``directory`` (else of the first of its ``subdirs``, else of the first child folder of a
    parquet export, that has any), by split name.

    A split is one file named ``<split>.<ext>``, ``<name>_<split>.<ext>`` or ``<name>-<split>.<ext>``; the
    shards ``<split>-NNNNN-of-NNNNN.parquet`` of a hub export; the ``NNNN.parquet`` files of a ``<split>/``
    folder (the hub's parquet conversion, ``<config>/<split>/0000.parquet``; ``partial-<split>/`` where the
    conversion kept only the start of a large split, used when there is no full one); or the files matching
    ``extra``'s (pattern, split) pairs (a dataset's own names). Raises ``DataError`` when nothing matches, and
    when the directory or a subdirectory cannot be listed; a matching entry that is not a regular file (a
    directory, a FIFO) is reported when it is read.
    """
    folders = [directory, *(directory / sub for sub in subdirs), *_export_configs(directory)]
    patterns = [(re.compile(rf"^{pattern}$", re.IGNORECASE), split) for pattern, split in extra]
    for folder in folders:
        named: dict[str, list[Path]] = {}
        shards: dict[str, list[Path]] = {}
        for file in list_dir(folder, optional=folder is not directory):
            if split := next((split for pattern, split in patterns if pattern.match(file.name)), None):
                shards.setdefault(split, []).append(file)
            elif match := _SHARD_FILE.match(file.name):
                shards.setdefault(SPLIT_NAMES[match[1].lower()], []).append(file)
            elif match := _NAMED_FILE.match(file.name):
                named.setdefault(SPLIT_NAMES[match[1].lower()], []).append(file)
        for split, files in _export_splits(folder).items():
            shards.setdefault(split, files)
        for split in named.keys() & shards.keys():
            named[split] += shards.pop(split)
        for split, files in named.items():
            if len(files) > 1:
                raise DataError(f"{folder}: several files for the {split} split: {', '.join(f.name for f in files)}")
        if named or shards:
            return {**named, **{split: sorted(files) for split, files in shards.items()}}
    raise DataError(f"{directory}: no split files in {', '.join(str(f) for f in folders)}; looked for {_LOOKED_FOR}")


_EXPORT_DIR = re.compile(rf"^(partial-)?({_SPLIT})$", re.IGNORECASE)
_EXPORT_FILE = re.compile(r"^\d+\.parquet$")


def _export_splits(folder: Path) -> dict[str, list[Path]]:
    """The parquet conversion's split folders in ``folder`` (``train/0000.parquet``...), by split; a full
    folder wins over a ``partial-`` one."""
    found: dict[str, tuple[bool, list[Path]]] = {}
    if not folder.is_dir() or folder.is_symlink():
        return {}
    for sub in list_dir(folder):
        match = _EXPORT_DIR.match(sub.name)
        if not match or not sub.is_dir() or sub.is_symlink():
            continue
        files = sorted(f for f in list_dir(sub) if _EXPORT_FILE.match(f.name))
        split, partial = SPLIT_NAMES[match[2].lower()], bool(match[1])
        if files and (split not in found or found[split][0] and not partial):
            found[split] = (partial, files)
    return {split: files for split, (_, files) in found.items()}


def _export_configs(directory: Path) -> list[Path]:
    """The config folders of a parquet conversion's root (``plain_text/``, ``default/``...): child folders that
    hold split folders."""
    if not directory.is_dir() or directory.is_symlink():
        return []
    return [sub for sub in list_dir(directory) if sub.is_dir() and not sub.is_symlink() and _export_splits(sub)]


def _read_files(files: dict[str, list[Path]], normalize: Normalizer) -> dict[str, list[Row]]:
    return {split: [_to_row(normalize, record, where) for file in paths
                    for where, record in read_records(file, _file_label(file))]
            for split, paths in files.items()}


def _file_label(file: Path) -> str:
    """A file's name in row positions (and so in the ids derived from them): with its split folder for the
    parquet conversion's ``train/0000.parquet``, whose bare names repeat in every split."""
    return f"{file.parent.name}/{file.name}" if _EXPORT_FILE.match(file.name) else file.name


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
        return _read_files(find_split_files(Path(path), subdirs, schema.split_files), schema.normalize)
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
            rows.setdefault(split, []).extend(_to_row(schema.normalize, record, f"{where}{i}")
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


# -- generic files with a column mapping ---------------------------------------------------------------------

MAPPED_KEYS = {"question": True, "choices": False, "answer": True, "id": False, "context": False}
"""Column mapping keys of ``read_mapped`` -> whether required; without ``choices`` the rows are open questions."""


def _mapped_answer(raw: Any, choices: Sequence[str], column: str) -> str:
    """The answer as choice text, else as a letter (``B``, ``b``, ``(c)``), else as a 0-based index."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowError(NO_LABEL)
    if special := non_finite(raw):
        raise RowError(f"{column!r} is {special}, not text")
    if isinstance(raw, str):
        text = raw.strip()
        if text in choices:
            return text
        if letter := re.fullmatch(r"\(?([A-Za-z])\)?", text):
            return choice_for_label(choices, [c.upper() for c in LETTERS[:len(choices)]], letter[1].upper())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        if 0 <= raw < len(choices):
            return choices[raw]
        raise RowError(f"answer index {clip(raw)} is out of range for {len(choices)} choices")
    raise RowError(f"{column!r} value {clip(raw)} is neither a choice, a letter nor a 0-based index")


def _open_answer(raw: Any, column: str) -> str:
    """The answer of an open question: text as is (stripped), a number as text (``18`` -> ``"18"``, ``2.5`` ->
    ``"2.5"``, ``18.0`` -> ``"18"``); a bool, NaN, an infinity or a list is rejected."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowError(NO_LABEL)
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return number_text(raw, repr(column))
    raise RowError(f"{column!r} value {clip(raw)} is neither text nor a number")


def _mapped(record: dict[str, Any], where: str, *, columns: dict[str, str]) -> Question:
    question = text_field(record, columns["question"])
    choices: tuple[str, ...] = ()
    if "choices" in columns:
        if columns["choices"] not in record:
            raise RowError(f"missing {columns['choices']!r}")
        choices = tuple(_strings(record[columns["choices"]], repr(columns["choices"])))
    if columns["answer"] not in record:
        raise RowError(f"missing {columns['answer']!r}")
    raw = record[columns["answer"]]
    answer = (_mapped_answer(raw, choices, columns["answer"]) if "choices" in columns
              else _open_answer(raw, columns["answer"]))
    context = _passages(record.get(columns["context"]), repr(columns["context"])) if "context" in columns else ""
    return Question(id=_record_id(record, columns.get("id"), "", where), question=question, choices=choices,
                    answer=answer, context=context)


def read_mapped(path: Path, columns: dict[str, str]) -> dict[str, list[Row]]:
    """Rows by split from a JSON/JSON Lines/Parquet file (the train split) or a directory of split files,
    whose columns are named by ``columns`` (keys ``question``, ``answer``, optional ``choices``, ``id``,
    ``context``). With ``choices`` the answer is an option's text, letter or 0-based index; without it every
    row is an open question whose answer is the text (or number) in the answer column.
    """
    for key in columns:
        if key not in MAPPED_KEYS:
            raise DataError(f"columns: unknown key {key!r} (known: {', '.join(MAPPED_KEYS)})")
    if missing := [key for key, required in MAPPED_KEYS.items() if required and key not in columns]:
        raise DataError(f"columns: {', '.join(map(repr, missing))} must be given")
    path = Path(path)
    if require(path, FILE, DIRECTORY) == FILE:
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: not a {'/'.join(SUFFIXES)} file")
        files = {"train": [path]}
    else:
        files = find_split_files(path)
    return _read_files(files, functools.partial(_mapped, columns=dict(columns)))
