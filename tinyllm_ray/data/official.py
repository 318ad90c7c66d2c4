"""The TinyLLM authors' dataset layout, questions and precomputed rationales.

    <dir>/<name>_{train,valid,test}.json      questions: a JSON array or JSON Lines of
                                              {"id", "question", "choices": [...], "answer": <choice text>}
    <dir>/llm/<split>_CoT_<k>.json            JSON arrays of strings, 500 per file, in question order

Each rationale string holds a FLAN-T5-xl rationale, then ``Thus, the answer is (x) ...``, the echoed
question after ``Q:``, and a LLaMA-2-chat rationale after ``llama rationale:`` (some are truncated or
lack the second one). ``read_official`` returns the question rows and, per split that has rationale
files, both teachers' rationales aligned with those rows.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from pathlib import Path

from tinyllm_ray import answers
from tinyllm_ray.config import PRECOMPUTED_TEACHERS
from tinyllm_ray.data.records import (
    DIRECTORY,
    DataError,
    Row,
    RowError,
    list_dir,
    non_finite,
    parse_json,
    path_kind,
    read_records,
    read_text,
    require,
    text_field,
)
from tinyllm_ray.data.schema import SPLITS, Question, problems

PER_FILE = 500
FLAN, LLAMA = PRECOMPUTED_TEACHERS

_THUS = "Thus, the answer is"
_LLAMA = "llama rationale:"
_LEAD = "Let's think step by step."  # boilerplate some rationales start with


@dataclasses.dataclass
class OfficialData:
    rows: dict[str, list[Row]]
    rationales: dict[str, dict[str, list[tuple[str, str]]]]
    """teacher -> split -> (rationale, reject reason) aligned with ``rows[split]``."""
    files: list[str]
    """Every file read, for cache keys."""


def looks_official(path: Path) -> bool:
    """A directory with ``<name>_<split>.json`` files whose records are in the authors' schema
    (hub-schema exports may use the same file names). One of those names on something that cannot be read
    (a directory, a FIFO, a broken file) counts as the authors' layout: reading it reports what is wrong."""
    try:
        if path_kind(path) != DIRECTORY:
            return False
    except DataError:
        return False
    for split in SPLITS:
        for file in _matching(path, f"*_{split}.json"):
            try:
                _, record = next(read_records(file))
            except StopIteration:
                continue
            except DataError:
                return True  # the authors' file names; reading it reports what is wrong with it
            return isinstance(record, dict) and isinstance(record.get("choices"), list) and "answer" in record
    return False


def _matching(directory: Path, pattern: str) -> list[Path]:
    """Entries of ``directory`` whose name matches the glob ``pattern``, sorted (``DataError`` when the
    directory cannot be listed, where ``Path.glob`` would find nothing)."""
    return [entry for entry in list_dir(directory) if fnmatch.fnmatchcase(entry.name, pattern)]


def question_file(path: Path, split: str) -> Path | None:
    """The one ``*_<split>.json`` entry of ``path``, if any; ``read_records`` checks that it is a regular file."""
    found = _matching(path, f"*_{split}.json")
    if len(found) > 1:
        raise DataError(f"{path}: several {split} question files: {', '.join(f.name for f in found)}")
    return found[0] if found else None


def to_question(record: dict) -> Question:
    if not isinstance(record, dict):
        raise RowError(f"a {type(record).__name__}, not a record")
    choices = record.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise RowError("'choices' is not a list of strings")
    q = Question(id=text_field(record, "id"), question=text_field(record, "question"),
                 choices=tuple(c.strip() for c in choices), answer=text_field(record, "answer"),
                 context=_context(record))
    why = problems(q)
    if why:
        raise RowError("; ".join(why))
    return q


def _context(record: dict) -> str:
    """The optional ``context`` as text: a string, or a number (not NaN or an infinity), else ``RowError``."""
    context = record.get("context") or ""
    if not isinstance(context, (str, int, float)) or isinstance(context, bool):
        raise RowError(f"'context' is a {type(context).__name__}, not text")
    if special := non_finite(context):
        raise RowError(f"'context' is {special}, not text")
    return str(context)


def read_official(path: Path) -> OfficialData:
    try:
        require(path, DIRECTORY)
    except DataError as err:
        raise DataError(f"data.path: {err}") from None
    rows: dict[str, list[Row]] = {}
    files: list[str] = []
    for split in SPLITS:
        file = question_file(path, split)
        if file is None:
            continue
        files.append(str(file))
        rows[split] = []
        for where, record in read_records(file):
            try:
                rows[split].append(Row(where, to_question(record)))
            except RowError as err:
                rows[split].append(Row(where, None, str(err)))
    if not rows:
        raise DataError(f"{path}: no question files (looked for *_train.json, *_valid.json, *_test.json)")
    rationales: dict[str, dict[str, list[tuple[str, str]]]] = {FLAN: {}, LLAMA: {}}
    for split, split_rows in rows.items():
        cot = rationale_files(path / "llm", split)
        if not cot:
            continue
        files += [str(f) for f in cot]
        texts = read_rationale_strings(cot, expected=len(split_rows))
        parsed = [split_rationale(text, row) for text, row in zip(texts, split_rows)]
        rationales[FLAN][split] = [p[0] for p in parsed]
        rationales[LLAMA][split] = [p[1] for p in parsed]
    return OfficialData(rows, rationales, files)


def rationale_files(llm_dir: Path, split: str) -> list[Path]:
    """``<split>_CoT_<k>.json`` in k order; the numbering must have no gap. None without an ``llm`` directory;
    ``read_text`` checks that each is a regular file."""
    found = {}
    for f in list_dir(llm_dir, optional=True):
        m = re.fullmatch(rf"{split}_CoT_(\d+)\.json", f.name)
        if m:
            k = int(m.group(1))
            if k in found:
                raise DataError(f"{llm_dir}: {found[k].name} and {f.name} are both file k = {k}")
            found[k] = f
    if found and sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise DataError(f"{llm_dir}: {split}_CoT files are missing k = {missing}")
    return [found[k] for k in sorted(found)]


def read_rationale_strings(files: list[Path], expected: int) -> list[str]:
    """All strings of a split's rationale files, checked against the question count."""
    texts: list[str] = []
    for k, f in enumerate(files):
        items = parse_json(read_text(f), f)
        if not isinstance(items, list):
            raise DataError(f"{f}: expected a JSON array of strings, got {type(items).__name__}")
        bad = next((i for i, x in enumerate(items) if not isinstance(x, str)), None)
        if bad is not None:
            raise DataError(f"{f}: item {bad} is a {type(items[bad]).__name__}, not a string")
        if (k < len(files) - 1 and len(items) != PER_FILE) or len(items) > PER_FILE:
            raise DataError(f"{f}: {len(items)} rationales; every file holds {PER_FILE}, the last one at most")
        texts += items
    if len(texts) != expected:
        raise DataError(f"{files[-1].parent}: {len(texts)} rationales in {files[0].name}..{files[-1].name} "
                        f"for {expected} questions; the counts must match (file {files[-1].name} "
                        f"{'ends early' if len(texts) < expected else 'has extra items'})")
    return texts


def _without_lead(text: str) -> str:
    text = text.strip()
    return text[len(_LEAD):].strip() if text.startswith(_LEAD) else text


def split_rationale(text: str, row: Row) -> tuple[tuple[str, str], tuple[str, str]]:
    """((flan rationale, reason), (llama rationale, reason)) from one authors' string."""
    if row.question is None:
        return ("", "question rejected"), ("", "question rejected")
    head, has_llama, llama = text.partition(_LLAMA)
    echo = re.search(r"\n\s*Q:\s*(.+)", head)
    if echo:  # case and spacing aside, the echo starts as the question does
        asked, said = (answers.normalize(t, punctuation="keep", articles=False)
                       for t in (row.question.question, echo.group(1)))
        if not asked.startswith(said[:40]):
            return ("", "echoed question does not match"), ("", "echoed question does not match")
    flan = _without_lead(re.split(rf"\s*{re.escape(_THUS)}|\n\s*Q:", head, maxsplit=1)[0])
    llama = _without_lead(llama)
    return (flan, "" if flan else "empty"), (llama, "" if llama else ("missing" if not has_llama else "empty"))
