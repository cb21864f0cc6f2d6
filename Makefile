# compbench: `make demo` sets up .venv and runs one benchmark cell; `make test` runs the test suite.
SHELL := /bin/bash
VENV := .venv
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/compbench run --method svd --budget 10x

test: setup
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
