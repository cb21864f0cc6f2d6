# compbench: `make demo` sets up .venv and runs one benchmark cell; `make test` lints (ruff, mypy on bench/ and
# methods/method_base.py, lint-imports: the one-way layers of .importlinter) and runs the fast test suite (everything not marked slow); `make test-slow` runs the end-to-end
# checks marked slow; CI (.ci/run) runs both, and `make test-all` is the two in one.
SHELL := /bin/bash
VENV := .venv
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo lint test test-slow test-all bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/compbench run --method svd --budget 10x

lint: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/mypy src/compbench/bench src/compbench/methods/method_base.py src/compbench/methods/options.py
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow tests

test-all: test test-slow

clean:
	rm -rf $(VENV) .pytest_cache
