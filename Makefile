# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv on first use and installs the package with its pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test test-slow benchmarks benchmarks-quick install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/datasetddpm demo --out runs/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m slow

# Full benchmarks rewrite benchmarks/results/*.json (~30 min on 2 busy cores); the quick ones
# (about a minute) write to a temporary folder and fail if a correctness check fails.
benchmarks: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

benchmarks-quick: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf runs .pytest_cache
