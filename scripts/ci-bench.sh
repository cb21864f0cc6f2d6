#!/usr/bin/env bash
# CI regression gate: run the `smoke` suite into a fresh folder and compare it with the committed
# baseline (results/baselines/smoke-cpu). Exit 0 when clean, 1 on a regression (or a failed cell),
# 2 on a usage error. The Markdown summary (ready for a PR comment) is printed and kept next to the
# results.
#
#   scripts/ci-bench.sh [OUT_DIR]        OUT_DIR defaults to a new temp folder
#
# Environment: COMPBENCH_BASELINE (baseline folder), CI_BENCH_MARKDOWN (where to write the summary),
# PYTHON (interpreter with compbench installed; default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BASELINE=${COMPBENCH_BASELINE:-results/baselines/smoke-cpu}
OUT=${1:-$(mktemp -d -t compbench-bench.XXXXXX)}
MD=${CI_BENCH_MARKDOWN:-$OUT/compare.md}
mkdir -p "$OUT"
if [ ! -d "$BASELINE" ]; then
  echo "error: baseline folder $BASELINE not found (see docs/sweeps.md, 'Updating the baseline')" >&2
  exit 2
fi

echo "== compbench sweep --suite smoke -> $OUT/results"
start=$(date +%s)
sweep_rc=0
"$PYTHON" -m compbench sweep --suite smoke --results "$OUT/results" --no-progress || sweep_rc=$?
echo "== sweep finished in $(( $(date +%s) - start )) s (exit $sweep_rc)"
if [ "$sweep_rc" -ne 0 ] && [ "$sweep_rc" -ne 1 ]; then
  exit "$sweep_rc"  # usage error or interrupted: nothing to compare
fi

echo "== compbench compare $BASELINE $OUT/results"
compare_rc=0
"$PYTHON" -m compbench compare "$BASELINE" "$OUT/results" --markdown "$MD" || compare_rc=$?
echo
cat "$MD"
if [ "$compare_rc" -ne 0 ]; then
  exit "$compare_rc"
fi
exit "$sweep_rc"
