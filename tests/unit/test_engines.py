"""Unit tests for tinyllm_ray.teachers.engines (HF engine on the tiny models) and stage.fit_prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm_ray import prompts
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.teachers import engines
from tinyllm_ray.teachers.stage import fit_prompts

MAX_NEW = 3
QUESTIONS = generate(8, 1, 1, seed=2)["train"]
TEMPLATE = ("{% for m in messages %}[[{{ m['role'] }}]] {{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %} [[assistant]]{% endif %}")


@pytest.fixture(scope="module")
def teacher(tiny_models: Path) -> engines.HFEngine:
    # chat_template auto, as make_engine passes by default; the tiny tokenizer has no template
    return engines.HFEngine(str(tiny_models / "teacher-a"), engines.Settings(max_new_tokens=MAX_NEW), batch_size=2)


@pytest.fixture(scope="module")
def t5(tiny_models: Path) -> engines.HFEngine:
    return engines.HFEngine(str(tiny_models / "student-t5"), engines.Settings(max_new_tokens=MAX_NEW), batch_size=2)


def test_causal_max_prompt_tokens_leaves_room_for_new_tokens(teacher: engines.HFEngine) -> None:
    assert not teacher.encoder_decoder
    assert teacher.max_prompt_tokens == 1024 - MAX_NEW  # the tiny teachers' max_position_embeddings


def test_t5_prompt_has_the_whole_context(t5: engines.HFEngine) -> None:
    from transformers import AutoConfig

    assert t5.encoder_decoder
    limit = engines.context_limit(AutoConfig.from_pretrained(t5.model.name_or_path), t5.tokenizer)
    assert limit in (None, 1024)  # T5 declares no context in its config; the tokenizer says 1024
    assert t5.max_prompt_tokens == limit  # the rationale is decoded separately: not reduced by max_new_tokens


def test_context_limit_sources() -> None:
    class Cfg:
        pass

    class Tok:
        model_max_length = 512

    cfg = Cfg()
    assert engines.context_limit(cfg, Tok()) == 512
    cfg.n_positions = 300  # type: ignore[attr-defined]
    assert engines.context_limit(cfg, Tok()) == 300
    Tok.model_max_length = int(1e30)  # transformers' "no limit"
    assert engines.context_limit(Cfg(), Tok()) is None


def test_encode_is_plain_text_without_a_template(teacher: engines.HFEngine) -> None:
    texts = ["Tom has 3 apples.", prompts.teacher_prompt(QUESTIONS[0], QUESTIONS[1:3])]
    ids = teacher.encode(texts)
    assert ids == [teacher.tokenizer(t)["input_ids"] for t in texts]
    assert len(ids[1]) > 50 > len(ids[0])


def _pairs(engine: engines.HFEngine) -> list[list[int]]:
    """Two long prompts of one length, then two short ones of another: sorting by length moves the
    short pair to the front, yet both orders put the same prompts in each batch of 2 (no padding)."""
    long_ = engine.encode([prompts.teacher_prompt(QUESTIONS[0], QUESTIONS[1:3])])[0]
    short = engine.encode(["Tom has 3 apples and buys 2 more."])[0]
    return [long_, long_[:-1] + [long_[-2]], short, short[:-1] + [short[1]]]


def test_generate_in_input_order_despite_length_sorting(teacher: engines.HFEngine) -> None:
    ids = _pairs(teacher)
    assert teacher.sort_by_length and teacher.batch_size == 2
    by_length = teacher.generate_ids(ids)
    teacher.sort_by_length = False
    try:
        as_given = teacher.generate_ids(ids)
    finally:
        teacher.sort_by_length = True
    assert [g.text for g in by_length] == [g.text for g in as_given]
    assert [g.prompt_tokens for g in by_length] == [len(x) for x in ids]
    assert [g.new_tokens for g in by_length] == [g.new_tokens for g in as_given]
    assert by_length[0].text != by_length[2].text  # long and short prompts differ: a swap would show
    for g in by_length:
        assert 0 < g.new_tokens <= MAX_NEW
        assert len(g.text.split()) <= MAX_NEW  # only the new tokens are decoded, not the prompt


def test_causal_models_decode_into_a_static_cache_sized_to_the_batch_bucketed(teacher, monkeypatch) -> None:
    from transformers import StaticCache

    ids = _pairs(teacher)
    seen = []
    generate = teacher.model.generate

    def spy(**kwargs):
        seen.append((kwargs["input_ids"].shape[1], kwargs.get("past_key_values")))
        return generate(**kwargs)

    monkeypatch.setattr(teacher.model, "generate", spy)
    static = teacher.generate_ids(ids)
    assert teacher.static_cache and seen
    for width, cache in seen:
        assert isinstance(cache, StaticCache)
        assert cache.max_cache_len == engines.cache_width(width, MAX_NEW) >= width + MAX_NEW  # rounded up
        assert cache.max_cache_len % engines.CACHE_BUCKET == 0
    teacher.static_cache = False
    try:
        dynamic = teacher.generate_ids(ids)
    finally:
        teacher.static_cache = True
    assert [g.text for g in static] == [g.text for g in dynamic]  # greedy: the cache changes nothing


def test_a_model_without_static_cache_support_falls_back(teacher, monkeypatch, caplog) -> None:
    generate = teacher.model.generate

    def no_static(**kwargs):
        if kwargs.get("past_key_values") is not None:
            raise ValueError("this model does not support StaticCache")
        return generate(**kwargs)

    monkeypatch.setattr(teacher.model, "generate", no_static)
    try:
        out = teacher.generate_ids(_pairs(teacher))
        assert not teacher.static_cache and all(g.new_tokens > 0 for g in out)
        assert "no static key/value cache" in caplog.text
    finally:
        teacher.static_cache = True


def test_t5_keeps_the_dynamic_cache(t5: engines.HFEngine) -> None:
    assert not t5.static_cache  # its decoder cache spans only the new tokens


def test_t5_generates_in_input_order(t5: engines.HFEngine) -> None:
    ids = _pairs(t5)[1:]  # lengths long, short, short: sorted into other batches
    out = t5.generate_ids(ids)
    assert [g.prompt_tokens for g in out] == [len(x) for x in ids]
    assert all(0 <= g.new_tokens <= MAX_NEW for g in out)  # random T5 weights may write only padding


def test_chat_template_applied_when_tokenizer_has_one(teacher: engines.HFEngine) -> None:
    plain = teacher.encode(["Tom has 3 apples."])[0]
    teacher.tokenizer.chat_template = TEMPLATE
    try:
        chat = teacher.encode(["Tom has 3 apples."])[0]
        teacher.chat = False  # chat_template: off ignores the tokenizer's template
        off = teacher.encode(["Tom has 3 apples."])[0]
    finally:
        teacher.tokenizer.chat_template = None
        teacher.chat = True
    assert chat != plain and off == plain
    text = teacher.tokenizer.decode(chat).replace(" ", "")
    assert text.startswith("[[user]]") and text.endswith("[[assistant]]")
    assert "Tomhas3apples." in text
    assert len(chat) > len(plain)


def test_encode_prompts_truncates() -> None:
    class Tok:
        chat_template = None

        def __call__(self, texts, **kwargs):
            limit = kwargs.get("max_length") if kwargs.get("truncation") else None
            return {"input_ids": [list(range(len(t)))[:limit] for t in texts]}

    assert engines.encode_prompts(Tok(), ["abcdef", "ab"], chat=True, max_tokens=3) == [[0, 1, 2], [0, 1]]
    assert engines.encode_prompts(Tok(), ["abcdef"], chat=False) == [[0, 1, 2, 3, 4, 5]]


def test_fit_prompts_picks_fullest_variant_that_fits(teacher: engines.HFEngine) -> None:
    q = QUESTIONS[0]
    texts = prompts.prompt_variants(q, QUESTIONS[1:4])
    lengths = [len(v) for v in teacher.encode(texts)]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == 4

    def fit(limit):
        chosen, ids, tried = fit_prompts([texts], teacher.encode, limit)
        if chosen[0] is not None:
            assert ids[0] == teacher.encode([texts[chosen[0]]])[0]
        return chosen[0], tried[0]

    assert fit(None) == (0, lengths[0])
    assert fit(lengths[0]) == (0, lengths[0])
    assert fit(lengths[0] - 1) == (1, lengths[1])
    assert fit(lengths[2]) == (2, lengths[2])
    assert fit(lengths[3]) == (3, lengths[3])
    assert fit(lengths[3] - 1) == (None, lengths[3])  # the shortest one tried, none fits


def test_fit_prompts_encodes_only_what_it_needs() -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> list[list[int]]:
        calls.append(texts)
        return [[0] * len(t.split()) for t in texts]

    rows = [["a b c d", "a b", "a"], ["a b", "a"], ["a b c d e f", "a b c d e", "a b c d"]]
    chosen, ids, tried = fit_prompts(rows, encode, limit=3)
    assert chosen == [1, 0, None] and tried == [2, 2, 4] and ids[0] == [0, 0]
    assert calls == [["a b c d", "a b", "a b c d e f"], ["a b", "a b c d e"], ["a b c d"]]
    assert fit_prompts([], encode, 3) == ([], [], [])


def test_make_engine_hf(tiny_models: Path) -> None:
    teacher = TeacherConfig(name="t", model=str(tiny_models / "teacher-b"), engine="hf", batch_size=3,
                            max_new_tokens=7, max_model_len=200, chat_template="off")
    engine = engines.make_engine(teacher)
    assert isinstance(engine, engines.HFEngine)
    assert engine.batch_size == 3 and engine.max_new_tokens == 7
    assert engine.max_prompt_tokens == 193
    assert engine.sampling == {"do_sample": False}
    assert engines.ENGINES["hf"] is engines.HFEngine


def test_chat_template_on_is_refused_for_a_tokenizer_without_one(tiny_models, tmp_path) -> None:
    from tests.helpers import tiny_run_config
    from tinyllm_ray.config import ConfigError, from_dict, validate

    raw = tiny_run_config(tiny_models, tmp_path, "r", teachers=1)
    raw["teachers"][0]["chat_template"] = "on"
    with pytest.raises(ConfigError, match=r"teachers\.0\.chat_template: on, but the tokenizer of .* has no chat"):
        validate(from_dict(raw))
    raw["teachers"][0]["chat_template"] = "auto"
    validate(from_dict(raw))
    with pytest.raises(ValueError, match="has no chat template"):  # the engine's own check, for models from files
        engines.uses_chat_template(type("Tok", (), {"chat_template": None})(), "on", "m")
    assert engines.uses_chat_template(type("Tok", (), {"chat_template": None})(), "auto", "m")
