# `make run` and `make test` work on a fresh machine with Python 3.11+ and make:
# each creates .venv on first use and installs what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run demo test test-slow audit lint typecheck check bench bench-http screenshots clean

run: $(VENV)/.run-deps  ## Start the service on http://$(HOST):$(PORT) (SQLite in ./data)
	$(BIN)/python -m serve --host $(HOST) --port $(PORT)

# The demo's own data folder, so that it never mixes with ./data.
DEMO_DIR ?= data-demo

demo: $(VENV)/.run-deps  ## Like run, on $(DEMO_DIR) filled with demo users and messages (docs/deploy.md, "Demo mode")
	DEMO_DATA=1 DATA_DIR=$(DEMO_DIR) $(BIN)/python -m serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev-deps  ## Run the test suite
	$(BIN)/pytest

test-slow: $(VENV)/.dev-deps  ## Fuzzing, crash and overload tests (a few minutes; CI runs them)
	$(BIN)/pytest -m slow

# Known vulnerabilities in the pinned runtime packages. requirements.txt pins
# every package, so no resolving (--no-deps); --strict fails when a package
# could not be checked, rather than passing without checking it.
audit: $(VENV)/.dev-deps  ## pip-audit over requirements.txt (needs the vulnerability service)
	$(BIN)/pip-audit --requirement requirements.txt --no-deps --disable-pip --strict \
		--progress-spinner off

lint: $(VENV)/.dev-deps  ## Lint with ruff, and the Dockerfile with hadolint
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

typecheck: $(VENV)/.dev-deps  ## Type-check with mypy (strict)
	$(BIN)/mypy .

check: lint typecheck test  ## Lint, type check, tests (CI also runs test-slow, PostgreSQL, audit)

bench: $(VENV)/.dev-deps  ## Benchmark against a bare hello on uvloop + httptools (needs wrk; about 10 min here); writes bench/results.md
	$(BIN)/python bench/run.py $(BENCH_ARGS)

screenshots: $(VENV)/.dev-deps  ## Retake the web client's screenshots in docs/ (needs /usr/bin/chromium)
	mkdir -p docs
	SCREENSHOTS_DIR=$(CURDIR)/docs $(BIN)/pytest -q tests/test_web.py -k screenshots

bench-http: $(VENV)/.dev-deps  ## HTTP req/s, p50, p99 on PostgreSQL with 1 and 2 workers (needs wrk)
	$(BIN)/python bench/http_throughput.py $(BENCH_ARGS)

clean:  ## Remove the virtualenv and caches (keeps ./data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "MessageApp needs Python 3.11 or newer (try: make PYTHON=python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp files make pip run again only when a requirements file changes.
$(VENV)/.run-deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.run-deps
