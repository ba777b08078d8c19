# The two commands README promises: `make demo` and `make test`. Both install first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash

.PHONY: install lock demo test lint bench model-archive clean

install:
	@scripts/install.sh

# Regenerate requirements.lock and requirements-dev.lock (hashed) after editing requirements.txt or the dev extra.
lock:
	@VENV=$(VENV) scripts/lock.sh

demo: install model-archive
	$(PY) -m scripts.demo $(DEMO_ARGS)

# Two pytest-xdist workers, one test file at a time each (--dist loadfile keeps a module's servers and fixtures
# on one worker). About half of a serial run is spent waiting on servers, so two workers fit two cores;
# TEST_WORKERS=0 runs serially (plain output, e.g. the corpus table).
TEST_WORKERS ?= 2
test: install model-archive lint
	$(PY) -m pytest -q tests $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# ruff on everything; mypy strict on ahi_connector/ and container/, basic elsewhere (pyproject [tool.mypy]).
lint: install
	$(VENV)/bin/ruff check ahi_connector app container model scripts trigger tests devstack
	$(VENV)/bin/mypy

model-archive: install
	$(PY) -m model.package --output build/model.tar.gz

bench: install
	$(PY) scripts/bench_app.py

.PHONY: bench-connector
bench-connector: install
	$(PY) scripts/bench_connector.py

clean:
	rm -rf build .pytest_cache

.PHONY: bench-container
bench-container: install model-archive
	$(PY) scripts/bench_container.py
