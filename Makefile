# Developer and CI entry points. `make test` is what .ci/run calls.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: .venv venv test demo bench clean

.venv venv: $(STAMP)

# (Re)install whenever pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/actiontrace --url sqlite:///actiontrace.db demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist site .pytest_cache .hypothesis src/*.egg-info
	rm -f actiontrace.db actiontrace.db-wal actiontrace.db-shm
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
