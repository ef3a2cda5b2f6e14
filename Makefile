PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench chaos clean

$(BIN)/loom-installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## make demo: install, then run a real workflow end to end on the embedded SQLite store
demo: $(BIN)/loom-installed
	cd examples && rm -f demo.db demo.db-wal demo.db-shm && LOOM_DATABASE_URL=sqlite:///demo.db ../$(BIN)/python demo.py

## make test: install with dev extras, lint, type-check, check the import layers, run the suite
test: $(BIN)/loom-installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

## make test-fast: the inner loop, without the slow tests (processes, browser, load)
test-fast: $(BIN)/loom-installed
	$(BIN)/pytest -m "not slow" -n 3

lint: $(BIN)/loom-installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

$(BIN)/bench-installed: $(BIN)/loom-installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

## make bench: Loom beside DBOS on the same machine, in one run
bench: $(BIN)/bench-installed
	$(BIN)/python -m bench
	$(BIN)/python -m bench.timers
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.history
	$(BIN)/python -m bench.bulk_start
	$(BIN)/python -m bench.dbos_more
	$(BIN)/python -m bench.summary

## make chaos: 2,000 workflows per backend under SIGKILLed workers and PostgreSQL restarts, checked
chaos: $(BIN)/loom-installed
	$(BIN)/python -m tests.chaos --backend both --workflows 2000 --seed 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
