# compbench: `make demo` sets up .venv and runs one benchmark cell; `make test` lints (ruff, mypy on bench/ and
# methods/base.py) and runs the test suite.
SHELL := /bin/bash
VENV := .venv
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo lint test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/compbench run --method svd --budget 10x

lint: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/mypy src/compbench/bench src/compbench/methods/base.py

test: lint
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
