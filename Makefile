# The two commands a new machine needs:
#   make run    the embedded demo: http://127.0.0.1:8000 (SQLite, no Redis)
#   make test   ruff, mypy and the whole test suite, installing what it needs first
#
# Both create .venv and install the pinned requirements on first use. `make test`
# also installs Debian's Chromium (browser tests) and redis-server when missing,
# then runs `python -m tests.run` (tests/run.py): it uses the Redis and the
# PostgreSQL that answer (TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/tracker), else starts private ones for the
# run, installing Debian's postgresql first when its binaries are missing, and
# stops and deletes them at the end. CI sets TRACKER_TEST_REQUIRE_SERVICES=1:
# a test that would skip for want of a service fails instead.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
PORT ?= 8000
TRACKERS ?= 200
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format check-system-packages bench bench-full clean help

help:
	@echo "make run    - the live map with a simulated fleet at http://127.0.0.1:$(PORT)"
	@echo "make test   - lint, type-check and run every test"
	@echo "make format - format the code with ruff"
	@echo "make bench  - the benchmarks, quick (under 6 minutes); make bench-full: under 20"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) manage.py demo --port $(PORT) --trackers $(TRACKERS)

# Debian packages the tests use: Chromium for the map page, redis-server when
# no Redis answers (the tests then start a private one on a free port).
check-system-packages:
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi
	@if ! command -v redis-server >/dev/null 2>&1 && ! $(PY) -c 'from tests.support import redis_answers as a; import os, sys; sys.exit(not a(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"))' 2>/dev/null; then \
		echo "Installing Debian's redis-server for the channel-layer tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; \
	fi

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# TEST_POSTGRES_URL reaches tests.run from the environment or make's command line.
test: $(STAMP) check-system-packages lint
	$(PY) -m tests.run $(PYTEST_ARGS)

# Benchmarks use the same services as the tests (Redis, PostgreSQL, Chromium)
# and write bench/results/latest.json; BENCHMARKS.md explains the figures.
bench: $(STAMP) check-system-packages
	$(PY) -m bench.run

bench-full: $(STAMP) check-system-packages
	$(PY) -m bench.run --full

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts staticfiles
