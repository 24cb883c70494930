# Landmarks: `make run` serves the app with a worker on embedded defaults; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
DATA ?=
PYTEST_ARGS ?=

.PHONY: run test worker web lint format bench chromium

# The venv is rebuilt when pyproject.toml changes; the stamp files remember what was installed.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

run: $(VENV)/.installed
	PORT=$(PORT) $(BIN)/python manage.py run_app $(if $(DATA),--data "$(DATA)")

# A worker on every queue, with the beat that runs the watchdog (run -B on one worker per installation).
worker: $(VENV)/.installed
	$(BIN)/python -m celery -A worker.celery worker -Q cpu,gpu,interactive --pool solo --loglevel INFO -B

web: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python -m gunicorn webapp.wsgi --bind 127.0.0.1:$(PORT) --workers $${WEB_CONCURRENCY:-2} --threads $${WEB_THREADS:-1}

# Browser tests use Debian's chromium (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

test: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check webapp ml worker tests bench manage.py

format: $(VENV)/.installed-test
	$(BIN)/ruff format webapp ml worker tests bench manage.py

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $@

# Each benchmark prints its table and rewrites its own section of docs/benchmarks.md, moving the run it
# replaces to docs/benchmarks-archive.md (minutes each on 2 cores; the whole set takes about an hour).
# Run one with `$(BIN)/python bench/<name>.py --help`.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/bench_import.py
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_finetune.py
	$(BIN)/python bench/bench_retrieval.py
	$(BIN)/python bench/bench_index.py
	$(BIN)/python bench/bench_clean.py
