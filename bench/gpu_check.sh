#!/usr/bin/env bash
# The GPU check in one command, on a CUDA machine with torch and transformers: the tests of tests/gpu, then
# bench/gpu.py's checks and figures (its JSON also to $OUT/gpu.json when OUT is set). About 6 minutes on one
# H100/H200. Neither needs Ray, pyarrow or vLLM; pydantic and pytest are installed from ./.gpu_wheels when the
# machine lacks them and that folder is there (make it where PyPI is reachable: bash bench/gpu_check.sh --wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
if [[ "${1:-}" == "--wheels" ]]; then
  for py in 3.10 3.11 3.12 3.13; do
    "$PY" -m pip download -q -d .gpu_wheels --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
      pydantic pytest
  done
  exit 0
fi
if ! "$PY" -c "import pydantic, pytest" 2>/dev/null; then
  [[ -d .gpu_wheels ]] || { echo "pydantic or pytest missing and no .gpu_wheels/ (see the header)"; exit 2; }
  "$PY" -m pip install -q --no-index --find-links .gpu_wheels pydantic pytest
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
status=0
"$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts="" -rA || status=$?
# The sweep runs its eager variants only (GPU_VARIANTS): a compiled variant compiles for minutes, so they go in a
# call of their own: python bench/gpu.py --checks mfu_sweep --budget-s 300 \
#   --variants "prefix b64 reduce-overhead,peer b64 reduce-overhead"
"$PY" bench/gpu.py --budget-s "${GPU_BUDGET_S:-150}" \
  --variants "${GPU_VARIANTS:-prefix b32,prefix b64,peer b64,one_encoder b64,before b32,prefix b128}" \
  ${OUT:+--json "$OUT/gpu.json"} || status=$?
exit $status
