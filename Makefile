# Developer and CI entry points. `make test` is what .ci/run calls.
#   make demo   the package alone (no development extras), then the bundled demo
#   make check  ruff and mypy --strict (the static gates)
#   make test   development extras, missing Debian packages (scripts/provision),
#               `make check`, a throwaway PostgreSQL (scripts/run-tests), the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKG    := $(VENV)/.installed-package
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: .venv venv provision check test demo bench bench-full soak clean

.venv venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "cannot create $(VENV): install python3-venv (scripts/provision does)" >&2; exit 1; }

# The package alone: what `make demo` needs.
$(PKG): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# (Re)install whenever pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	touch $(PKG) $@

# Debian packages first (python3-venv among them), then the virtualenv, then the suite.
provision:
	scripts/provision

# Static gates: ruff, and mypy --strict over the package and the public API's typing test
# (tests/typing/api.py). `ruff format` is not enforced: the code base is laid out by hand
# (aligned argument tables, SQL), and `ruff format --check` would rewrite 63 files.
check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: provision $(STAMP) check
	scripts/run-tests $(BIN)/python $(PYTEST_ARGS)

demo: $(PKG)
	$(BIN)/actiontrace --url sqlite:///actiontrace.db demo

# One table of every benchmark (docs/performance.md, docs/img/scaling.png); a few minutes.
# `benchmarks/run_all.py --quick --no-write` is the < 1 minute smoke run.
# The PostgreSQL rows use ACTIONTRACE_TEST_PG_URL's server, else a throwaway one.
bench: provision $(STAMP)
	scripts/with-pg $(BIN)/python benchmarks/run_all.py

# Fault matrix row 8 and row 3 at full size (docs/reliability.md): a 10-minute soak with
# PostgreSQL restarted every 2 minutes, then 1,000,000 actions against a dead database.
# Starts PostgreSQL clusters of its own (scripts/pg-test-server).
soak: $(STAMP)
	$(BIN)/python tests/soak.py --duration 600 --restart-every 120
	ACTIONTRACE_RELIABILITY_ACTIONS=1000000 $(BIN)/python -m pytest -s -p no:cacheprovider \
		tests/test_reliability_journal.py -k test_many_actions_against_a_dead_database

# The same with the store grown to 10 million actions (takes much longer).
bench-full: provision $(STAMP)
	scripts/with-pg $(BIN)/python benchmarks/run_all.py --store-sizes 10000,1000000,10000000

clean:
	rm -rf $(VENV) build dist site .pytest_cache .hypothesis src/*.egg-info
	rm -f actiontrace.db actiontrace.db-wal actiontrace.db-shm
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
