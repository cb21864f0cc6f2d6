#!/usr/bin/env bash
# One prepared GPU check (issue 18, part 7; see docs/reliability.md, "GPU check"). On one CUDA device,
# in well under 5 minutes, it prints one Markdown table with a row per check: dense vs compressed
# lookup timed with CUDA events (svd 10x/40x, pq 40x, quant-int4 7x on the MiniLM token table), peak
# allocated and reserved CUDA memory, one posthoc cell (svd 10x, STS-B) and 20 train steps (hashing
# 10x, TREC), each with --device cuda. Exit 0 when every check passes, 1 when any fails, 2 on a usage
# error, 3 without a CUDA device (one line: "gpu-check: no CUDA device ...").
#
#   scripts/gpu-check.sh [--setup] [--dry-run | --device cuda|cuda:N|cpu] [--out DIR]
#
#   --setup     run scripts/setup.sh first (creates .venv; needs PyPI, and a CUDA build of torch)
#   --dry-run   the same checks on CPU with tiny sizes (about a minute; what CI runs without a GPU)
#   --out DIR   keep the records, the cell logs and the table (DIR/gpu-check.md)
#
# Environment: PYTHON (interpreter with compbench installed; default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
setup=0
args=()
for a in "$@"; do
  if [ "$a" = "--setup" ]; then setup=1; else args+=("$a"); fi
done
if [ "$setup" = 1 ]; then
  echo "gpu-check: bash scripts/setup.sh" >&2
  bash scripts/setup.sh >&2
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py ${args[@]+"${args[@]}"}
