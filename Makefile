# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8888

.PHONY: run test lint readinglist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/nuages migrate
	$(BIN)/nuages serve --host $(HOST) --port $(PORT)

# The Reading List example (docs/tutorial.md) on its own SQLite file.
readinglist: export NUAGES_STORAGE_URL ?= sqlite:///./readinglist.db
readinglist: $(VENV)/.installed
	$(BIN)/nuages migrate
	$(BIN)/nuages serve --host $(HOST) --port $(PORT) --app examples.readinglist:app

# Test processes: one per core, at most 4 (each has its own PostgreSQL database and
# connections; tests/services.py). TEST_WORKERS=0 runs the tests in one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
