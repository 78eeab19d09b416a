# reach: every target is a thin wrapper over `python -m reach ...` (CBS Remote Access may have no make).
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/stub.yaml
ONLY   ?=
SET    ?=
JOBS   ?= 1
BENCH_SIZES ?= 10000,100000

.PHONY: help venv all stub panel reach matching effects summary render test test-all bench clean

help: ## list the targets (default goal)
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'
	@echo "  variables: PARAMS=$(PARAMS) SET='key=value ...' JOBS=$(JOBS) BENCH_SIZES=$(BENCH_SIZES)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(VENV)/.installed ## create .venv and install the package with its test extras

all: $(VENV)/.installed ## run the whole suite on PARAMS (default: the embedded stub) into output/<run>/
	$(PY) -m reach run --params $(PARAMS) --jobs $(JOBS) $(if $(SET),--set $(SET))

stub: $(VENV)/.installed ## regenerate the embedded synthetic microdata in data_stub/
	$(PY) -m reach stub --out data_stub

panel: $(VENV)/.installed ## build the firm-year panel only (notebook 01)
	$(PY) -m reach run --params $(PARAMS) --only panel --jobs $(JOBS) $(if $(SET),--set $(SET))

reach: $(VENV)/.installed ## reach indicators (notebook 02; builds the panel first if missing)
	$(PY) -m reach run --params $(PARAMS) --only reach --jobs $(JOBS) $(if $(SET),--set $(SET))

matching: $(VENV)/.installed ## matched control groups (notebook 03)
	$(PY) -m reach run --params $(PARAMS) --only matching --jobs $(JOBS) $(if $(SET),--set $(SET))

effects: $(VENV)/.installed ## difference-in-differences effects (notebook 04)
	$(PY) -m reach run --params $(PARAMS) --only effects --jobs $(JOBS) $(if $(SET),--set $(SET))

summary: $(VENV)/.installed ## the one-page summary (notebook 05)
	$(PY) -m reach run --params $(PARAMS) --only summary --jobs $(JOBS) $(if $(SET),--set $(SET))

render: $(VENV)/.installed ## re-render the executed notebooks of PARAMS' run to HTML
	$(PY) -m reach render --params $(PARAMS)

test: $(VENV)/.installed ## run the tests CI runs (fast tier + notebook suite on the stub)
	$(PY) -m pytest -m "not slow" --durations=25  # the slowest tests listed: where CI time goes

test-all: $(VENV)/.installed ## run every test tier, slow included
	$(PY) -m pytest

BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(BENCH_VENV)/.installed ## benchmarks at BENCH_SIZES firms, side by side with peer packages (own venv: .venv-bench)
	$(BENCH_VENV)/bin/python -m reach bench --sizes $(BENCH_SIZES)

clean: ## remove output/ and work/ (keeps .venv)
	$(PY) -m reach clean 2>/dev/null || rm -rf output work
