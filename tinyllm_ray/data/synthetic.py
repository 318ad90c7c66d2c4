"""The built-in synthetic dataset: seeded multiple-choice reasoning questions (the quickstart data).

``generate(n_train, n_valid, n_test, seed)`` draws short questions from four problem families —
multi-step arithmetic word problems, comparison/ordering chains, day-of-week arithmetic and
shopping change — each with plausible distractors and a step-by-step ``reference_rationale`` that
ends by naming the answer. Output is deterministic for a seed, and no question text is repeated
across (or within) splits, so test questions never leak into train. ``family_of`` tells a question's family
from its text; ``generate_families`` draws from chosen families only (the trained tiny teachers' data).

``task="open"`` gives the open-answer variant (``data.task: open``): for a seed, the very questions of the
multiple-choice one (same ids, texts, answers and rationales: the options are still drawn, so the random
stream is the same) with no options. The answers are short: a number (``12``), a name (``Ann``), a weekday
(``Monday``) or a dollar amount (``$3``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Sequence

from tinyllm_ray.data.schema import SPLITS, TASKS, Question

MAX_ATTEMPTS = 1000  # per item, before giving up on finding an unseen question text

_HER = ("Maya", "Ann", "Cara", "Nina", "Lily", "Rosa", "Zoe", "Ivy", "Emma", "Sara", "Tina", "Jade")
_HIM = ("Leo", "Ben", "Sam", "Omar", "Max", "Tom", "Raj", "Eli", "Finn", "Hugo", "Ivan", "Noah")
_NAMES = _HER + _HIM
_OBJECTS = ("apples", "marbles", "stickers", "pencils", "cookies", "cards", "books", "shells", "coins")
_GAINS = ("buys {n} more", "finds {n} more", "gets {n} from {o}")
_LOSSES = ("gives {n} to {o}", "loses {n}", "sells {n}")
_GAIN_GERUND = {"buys": "buying", "finds": "finding", "gets": "getting"}
_LOSS_GERUND = {"gives": "giving", "loses": "losing", "sells": "selling"}
# (comparative, inverse comparative, top superlative, bottom superlative)
_RELATIONS = (
    ("taller", "shorter", "tallest", "shortest"),
    ("older", "younger", "oldest", "youngest"),
    ("faster", "slower", "fastest", "slowest"),
    ("heavier", "lighter", "heaviest", "lightest"),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ITEMS = (("pen", 1, 4), ("notebook", 2, 6), ("ruler", 1, 3), ("sandwich", 3, 8), ("juice box", 1, 4),
          ("toy car", 4, 9), ("book", 5, 12), ("hat", 6, 14), ("kite", 5, 11), ("ball", 2, 7))
_BILLS = (5, 10, 20, 50)


@dataclasses.dataclass(frozen=True)
class _Draft:
    """One generated problem before its choices are laid out."""

    question: str
    answer: str
    distractors: tuple[str, ...]  # exactly k - 1, distinct, none equal to answer
    rationale: str
    terms: tuple[int, ...] = ()  # arithmetic only: start amount then signed changes


def _pronoun(name: str) -> str:
    return "She" if name in _HER else "He"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _numeric_distractors(rng: random.Random, answer: int, plausible: list[int], k: int,
                         fmt: Callable[[int], str] = str, floor: int = 0) -> tuple[str, ...]:
    """k - 1 distinct numbers >= floor: plausible mistakes first (shuffled), then near misses."""
    pool = list(dict.fromkeys(x for x in plausible if x >= floor and x != answer))
    rng.shuffle(pool)
    chosen = pool[: k - 1]
    spread = 3
    while len(chosen) < k - 1:
        x = answer + rng.randint(-spread, spread)
        if x >= floor and x != answer and x not in chosen:
            chosen.append(x)
        spread += 1
    return tuple(fmt(x) for x in chosen)


def _arithmetic(rng: random.Random, k: int) -> _Draft:
    """'Maya has 12 apples. She buys 7 more and gives 5 to Leo. How many ...?'"""
    name, other = rng.sample(_NAMES, 2)
    obj = rng.choice(_OBJECTS)
    total = start = rng.randint(5, 20)
    terms, clauses, lines = [start], [], [f"{name} starts with {start} {obj}."]
    for _ in range(rng.randint(2, 3)):
        gain = total < 2 or rng.random() < 0.5
        n = rng.randint(1, 12) if gain else rng.randint(1, min(total, 12))
        template = rng.choice(_GAINS if gain else _LOSSES)
        clause = template.format(n=n, o=other)
        verb, rest = clause.split(" ", 1)
        gerund = (_GAIN_GERUND if gain else _LOSS_GERUND)[verb]
        new = total + n if gain else total - n
        lines.append(f"After {gerund} {rest}: {total} {'+' if gain else '-'} {n} = {new}.")
        clauses.append(clause)
        terms.append(n if gain else -n)
        total = new
    if len(clauses) == 2:
        steps = " and ".join(clauses)
    else:
        steps = f"{clauses[0]}, {clauses[1]}, and then {clauses[2]}"
    question = f"{name} has {start} {obj}. {_pronoun(name)} {steps}. How many {obj} does {name} have now?"
    rationale = " ".join(lines) + f" The answer is {total}."
    last, prev = terms[-1], total - terms[-1]
    plausible = [total + 1, total - 1, prev - last, prev, sum(abs(t) for t in terms), total + 2]
    distractors = _numeric_distractors(rng, total, plausible, k)
    return _Draft(question, str(total), distractors, rationale, tuple(terms))


def _ordering(rng: random.Random, k: int) -> _Draft:
    """'Ann is taller than Ben. Ben is taller than Cara. Who is the shortest?'"""
    more, less, top, bottom = rng.choice(_RELATIONS)
    people = rng.sample(_NAMES, rng.randint(max(3, k), 5))  # ordered from most to least
    clues = []
    for a, b in zip(people, people[1:]):
        clues.append(f"{a} is {more} than {b}." if rng.random() < 0.6 else f"{b} is {less} than {a}.")
    rng.shuffle(clues)
    rank = rng.choice((0, 0, 1))
    from_top = rng.random() < 0.5
    answer = people[rank] if from_top else people[-1 - rank]
    word = top if from_top else bottom
    label = f"the second {word}" if rank else f"the {word}"
    question = " ".join(clues) + f" Who is {label}?"
    rationale = (f"Chaining the clues, the order from {top} to {bottom} is {', '.join(people)}. "
                 f"So {label} is {answer}. The answer is {answer}.")
    others = [p for p in people if p != answer]
    return _Draft(question, answer, tuple(rng.sample(others, k - 1)), rationale)


def _days(rng: random.Random, k: int) -> _Draft:
    """'If today is Monday, what day will it be in 10 days?'"""
    start = rng.randrange(7)
    n = rng.randint(2, 30)
    forward = rng.random() < 0.6
    target = (start + n) % 7 if forward else (start - n) % 7
    weeks, extra = divmod(n, 7)
    if forward:
        question = f"If today is {DAYS[start]}, what day will it be in {n} days?"
    else:
        question = f"If today is {DAYS[start]}, what day was it {n} days ago?"
    way = "forward" if forward else "back"
    parts = []
    if weeks:
        parts.append(f"{n} days is {_plural(weeks, 'week')} and {_plural(extra, 'day')}; "
                     f"whole weeks keep the same weekday.")
    if extra:
        parts.append(f"Counting {_plural(extra, 'day')} {way} from {DAYS[start]} gives {DAYS[target]}.")
    else:
        parts.append(f"So it is {DAYS[start]} again.")
    rationale = " ".join(parts) + f" The answer is {DAYS[target]}."
    wrong_way = (start - n) % 7 if forward else (start + n) % 7
    plausible = [(target + 1) % 7, (target - 1) % 7, start, wrong_way]
    pool = list(dict.fromkeys(d for d in plausible if d != target))
    rng.shuffle(pool)
    rest = [d for d in range(7) if d != target and d not in pool]
    rng.shuffle(rest)
    return _Draft(question, DAYS[target], tuple(DAYS[d] for d in (pool + rest)[: k - 1]), rationale)


def _change(rng: random.Random, k: int) -> _Draft:
    """'Leo buys a pen for $3 and a kite for $6. He pays with a $10 bill. How much change ...?'"""
    name = rng.choice(_NAMES)
    items = rng.sample(_ITEMS, rng.randint(2, 3))
    prices = [rng.randint(lo, hi) for _, lo, hi in items]
    cost = sum(prices)
    bills = [b for b in _BILLS if b > cost]
    bill = bills[0] if rng.random() < 0.7 else rng.choice(bills)
    bought = [f"a {item} for ${p}" for (item, _, _), p in zip(items, prices)]
    listing = " and ".join(bought) if len(bought) == 2 else f"{bought[0]}, {bought[1]}, and {bought[2]}"
    pron = _pronoun(name)
    question = (f"{name} buys {listing}. {pron} pays with a ${bill} bill. "
                f"How much change does {pron.lower()} get?")
    answer = bill - cost
    rationale = (f"The total cost is {' + '.join(f'${p}' for p in prices)} = ${cost}. "
                 f"The change is ${bill} - ${cost} = ${answer}. The answer is ${answer}.")
    plausible = [answer + 1, answer - 1, bill - prices[0], cost, bill - prices[-1], answer + 2]
    distractors = _numeric_distractors(rng, answer, plausible, k, fmt=lambda x: f"${x}", floor=1)
    return _Draft(question, f"${answer}", distractors, rationale)


FAMILIES: dict[str, Callable[[random.Random, int], _Draft]] = {
    "arithmetic": _arithmetic,
    "ordering": _ordering,
    "days": _days,
    "change": _change,
}


def _check_args(n_train: int, n_valid: int, n_test: int, seed: int,
                min_choices: int, max_choices: int, task: str = "choice") -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    named = {"n_train": n_train, "n_valid": n_valid, "n_test": n_test, "seed": seed,
             "min_choices": min_choices, "max_choices": max_choices}
    for key, value in named.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an int, got {value!r}")
    for key in ("n_train", "n_valid", "n_test"):
        if named[key] < 0:
            raise ValueError(f"{key} must be >= 0, got {named[key]}")
    if min_choices < 2:
        raise ValueError(f"min_choices must be >= 2, got {min_choices}")
    if max_choices > 5:
        raise ValueError(f"max_choices must be <= 5, got {max_choices}")
    if min_choices > max_choices:
        raise ValueError(f"min_choices ({min_choices}) must be <= max_choices ({max_choices})")


def _question(qid: str, draft: _Draft, choices: list[str], task: str) -> Question:
    """The question of ``draft`` with its laid-out ``choices``, or with none for the ``open`` task."""
    return Question(id=qid, question=draft.question, choices=tuple(choices) if task == "choice" else (),
                    answer=draft.answer, reference_rationale=draft.rationale)


def generate(n_train: int, n_valid: int, n_test: int, seed: int = 0,
             min_choices: int = 2, max_choices: int = 5, task: str = "choice") -> dict[str, list[Question]]:
    """Generate the three splits; every question text is unique across all of them. ``task="open"``: the same
    questions without options (the options are drawn all the same, so nothing else changes)."""
    _check_args(n_train, n_valid, n_test, seed, min_choices, max_choices, task)
    rng = random.Random(seed)
    families = list(FAMILIES.values())
    seen: set[str] = set()
    out: dict[str, list[Question]] = {}
    for split, count in zip(SPLITS, (n_train, n_valid, n_test)):
        items = []
        for i in range(count):
            for _ in range(MAX_ATTEMPTS):
                k = rng.randint(min_choices, max_choices)
                draft = rng.choice(families)(rng, k)
                if draft.question not in seen:
                    break
            else:
                raise RuntimeError(f"could not find an unseen question after {MAX_ATTEMPTS} tries; "
                                   f"too many items requested ({n_train + n_valid + n_test})")
            seen.add(draft.question)
            choices = list(draft.distractors)
            rng.shuffle(choices)
            choices.insert(rng.randrange(k), draft.answer)
            items.append(_question(f"synth-{split}-{i:05d}", draft, choices, task))
        out[split] = items
    return out


def family_of(question: Question | str) -> str:
    """The family (a key of ``FAMILIES``) that generated ``question`` (a Question or its text), read from its
    wording; ValueError for a text none of the families writes."""
    text = question if isinstance(question, str) else question.question
    if text.startswith("If today is ") and text.endswith((" days?", " days ago?")):
        return "days"
    if "How much change does" in text and " pays with a $" in text:
        return "change"
    if " than " in text and " Who is " in text:
        return "ordering"
    if text.endswith(" have now?") and " has " in text:
        return "arithmetic"
    raise ValueError(f"not a question of the synthetic families: {text[:80]!r}")


def generate_families(n: int, families: Sequence[str], seed: int = 0, min_choices: int = 2, max_choices: int = 5,
                      exclude: Collection[str] = (), prefix: str = "synth-fam",
                      task: str = "choice") -> list[Question]:
    """``n`` questions drawn from ``families`` only (uniformly per question), laid out as ``generate`` does; no
    question text is repeated or in ``exclude``. Deterministic for a seed; ``generate``'s output is unchanged.
    ``task="open"``: the same questions without options. RuntimeError when the families run out of unseen
    texts (``days`` has about 400 in all)."""
    _check_args(n, 0, 0, seed, min_choices, max_choices, task)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be a non-empty list of {sorted(FAMILIES)}, got {list(families)!r}")
    rng = random.Random(seed)
    makers = [FAMILIES[f] for f in families]
    seen = set(exclude)
    items = []
    for i in range(n):
        for _ in range(MAX_ATTEMPTS):
            k = rng.randint(min_choices, max_choices)
            draft = rng.choice(makers)(rng, k)
            if draft.question not in seen:
                break
        else:
            raise RuntimeError(f"could not find an unseen question of {list(families)} after {MAX_ATTEMPTS} "
                               f"tries; too many items requested ({n})")
        seen.add(draft.question)
        choices = list(draft.distractors)
        rng.shuffle(choices)
        choices.insert(rng.randrange(k), draft.answer)
        items.append(_question(f"{prefix}-{i:05d}", draft, choices, task))
    return items
