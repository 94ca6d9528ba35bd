# The two commands a new machine needs:
#   make run    the embedded demo: http://127.0.0.1:8000 (SQLite, no Redis)
#   make test   ruff, mypy and the whole test suite, installing what it needs first
#
# Both create .venv and install the pinned requirements on first use. `make test`
# also installs Debian's Chromium (browser tests) and redis-server when missing,
# uses PostgreSQL when one answers at TEST_POSTGRES_URL, and otherwise runs on
# SQLite with the PostgreSQL tests skipped (and failed under CI, which sets
# TRACKER_TEST_REQUIRE_SERVICES=1).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/tracker
PYTEST_ARGS ?=
PORT ?= 8000
TRACKERS ?= 200
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format check-system-packages bench bench-full clean help

help:
	@echo "make run    - the live map with a simulated fleet at http://127.0.0.1:$(PORT)"
	@echo "make test   - lint, type-check and run every test"
	@echo "make format - format the code with ruff"
	@echo "make bench  - the benchmarks, quick (under 5 minutes); make bench-full: under 20"

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

test: $(STAMP) check-system-packages lint
	@mkdir -p test-artifacts
	@if $(PY) -c 'import sys; from tests.support import postgres_answers; sys.exit(not postgres_answers("$(TEST_POSTGRES_URL)"))'; then \
		echo "== tests on PostgreSQL ($(TEST_POSTGRES_URL), test database created by pytest-django)"; \
		DATABASE_URL=$(TEST_POSTGRES_URL) DATABASE_CONN_MAX_AGE=0 $(PY) -m pytest $(PYTEST_ARGS) && \
		echo "== database tests again on SQLite" && \
		DATABASE_URL= $(PY) -m pytest -q -m "django_db and not slow" $(PYTEST_ARGS); \
	else \
		echo "== PostgreSQL does not answer at $(TEST_POSTGRES_URL): tests on SQLite, PostgreSQL tests skip"; \
		DATABASE_URL= $(PY) -m pytest $(PYTEST_ARGS); \
	fi

# Benchmarks use the same services as the tests (Redis, PostgreSQL, Chromium)
# and write bench/results/latest.json; BENCHMARKS.md explains the figures.
bench: $(STAMP) check-system-packages
	$(PY) -m bench.run

bench-full: $(STAMP) check-system-packages
	$(PY) -m bench.run --full

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts staticfiles
