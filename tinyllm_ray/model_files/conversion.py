"""A GGUF file converted once into a cached Hugging Face folder: its header read and checked, the conversion
through transformers, the folder's marker, and finding a conversion already in the cache.

The conversion uses transformers' own GGUF loader (``from_pretrained(..., gguf_file=...)``: it dequantises the
weights), then ``save_pretrained`` in bfloat16 with the tokenizer and its chat template. Folders live under
``cache_root() / "models"``, named by the GGUF file's hash, each with the marker ``MARKER`` (written last, in a
temporary sibling renamed into place): a folder there without it is never replaced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tinyllm_ray.markers import NotOursError, read_marker
from tinyllm_ray.model_files.cache import ModelFileError, cache_root, file_sha256

log = logging.getLogger("tinyllm_ray.models")

MARKER = "tinyllm_model.json"
# Bumped when the conversion writes something else: folders of an older conversion are converted again.
CONVERSION_VERSION = 1


def gguf_in(folder: Path, key: str = "model") -> Path:
    """The one ``.gguf`` file in ``folder``."""
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise ModelFileError(f"{key}: {folder} holds {len(found)} .gguf files ({', '.join(p.name for p in found)}); "
                             f"name the file itself")
    return found[0]


def inspect_gguf(path: Path, key: str = "model") -> dict[str, Any]:
    """What the GGUF header says (architecture, name, tensor types), read without loading the weights; a file
    that is not GGUF or is cut short is refused here with a message naming it. (An architecture or tensor type
    transformers cannot convert is its own error, which ``converted`` passes on with the file's name.)"""
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError, TypeError, BufferError) as err:
        size = path.stat().st_size if path.exists() else 0
        raise ModelFileError(f"{key}: {path} is not a readable GGUF file ({type(err).__name__}: {err}; "
                             f"{size:,} bytes): truncated or not GGUF? Fetch it again") from None
    data_end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if data_end > path.stat().st_size:
        raise ModelFileError(f"{key}: {path} is truncated: its tensors need {data_end:,} bytes, the file has "
                             f"{path.stat().st_size:,}; fetch it again")

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8", "replace") if value.dtype == np.uint8 else value.tolist()[0]

    architecture = field("general.architecture") or "?"
    kinds = sorted({t.tensor_type.name for t in reader.tensors})
    return {"architecture": architecture, "name": field("general.name"), "tensor_types": kinds,
            "tensors": len(reader.tensors)}


def convert(gguf_path: Path, out: Path, tokenizer_dir: Path | None = None) -> None:
    """Fill the empty folder ``out`` with the Hugging Face model of ``gguf_path`` (bfloat16 weights, config,
    generation config, tokenizer and chat template); the tokenizer from ``tokenizer_dir`` when given."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    # float32: the loader's fastest path; the weights are cast once, at save.
    model = auto.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded weights are plain tensors, but transformers still marks the model GGUF-quantised and refuses to
    # save it as such: clear both marks (measured with transformers 5.19).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(out)
    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out)


def models_dir() -> Path:
    return cache_root() / "models"


def _folder_name(sha: str, stem: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', stem)[:60]}-{sha[:16]}"


def _reusable(folder: Path, sha: str) -> bool:
    marker = read_marker(folder, MARKER)
    return bool(marker) and marker.get("gguf_sha256") == sha and marker.get("version") == CONVERSION_VERSION


def converted(gguf_path: Path, source: dict[str, Any], key: str = "model", sha: str | None = None,
              tokenizer_dir: Path | None = None) -> Path:
    """The cached Hugging Face folder of ``gguf_path``, converted now when it is not there yet. ``source`` says
    where the file came from (kept in the marker)."""
    sha = sha or file_sha256(gguf_path)
    final = models_dir() / _folder_name(sha, gguf_path.stem)
    if _reusable(final, sha):
        return final
    if os.path.lexists(final) and read_marker(final, MARKER) is None:
        raise NotOursError(f"{final} was not written by tinyllm (no {MARKER}) and is where the conversion of "
                           f"{gguf_path.name} goes; move it elsewhere and run again")
    header = inspect_gguf(gguf_path, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.info("converting %s (%s) into %s", gguf_path, header["architecture"], final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        try:
            convert(gguf_path, tmp, tokenizer_dir)
        except (ValueError, NotImplementedError, KeyError, OSError, RuntimeError) as err:
            raise ModelFileError(f"{key}: transformers could not convert {gguf_path}, a {header['architecture']!r} "
                                 f"model with {'/'.join(header['tensor_types'])} tensors ({type(err).__name__}: "
                                 f"{(str(err).splitlines() or [''])[0]}); use the model's Hugging Face folder "
                                 f"instead") from None
        seconds = round(time.perf_counter() - start, 1)
        marker = {"version": CONVERSION_VERSION, "gguf_sha256": sha, "gguf_file": gguf_path.name,
                  **header, **source, "converted_s": seconds}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = None
        if os.path.lexists(final):  # ours (checked above), of an older conversion: replaced
            old = final.with_name(f"{tmp.name}.old")
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if not _reusable(final, sha):  # only a concurrent conversion's win is fine
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the conversion failed or another one won
    log.info("converted %s in %.0f s", gguf_path.name, seconds)
    return final


def cached_conversion(sha: str) -> str | None:
    """The cache's converted folder of the GGUF file with this sha256, None when there is none (nothing written)."""
    if not models_dir().is_dir():
        return None
    return next((str(f) for f in models_dir().glob(f"*-{sha[:16]}") if _reusable(f, sha)), None)
