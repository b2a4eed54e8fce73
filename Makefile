# Developer and CI entry points. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.flowcraft-installed
NODE_STAMP := node_modules/.package-lock.json

.PHONY: help install unit test lint differential demo services-up services-down clean test-throttling bench-throttle \
	suites suites-kombu suites-celery suites-celery-baseline bench-scale

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(PY_STAMP) $(NODE_STAMP) ## Create .venv, install the package and the emulators (fast when done).

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(PY_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# npm writes node_modules/.package-lock.json on every install; older than the lock file = stale.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The service addresses point at closed loopback ports, so a unit test that reached for a service
# would fail at once instead of quietly using the dev services.
CLOSED = http://127.0.0.1:1/devstoreaccount1
unit: install ## Unit tests only (tests/unit): no service needed, seconds not minutes.
	REDIS_URL=redis://127.0.0.1:1/0 \
	AZURE_STORAGE_CONNECTION_STRING='AccountName=devstoreaccount1;AccountKey=a2V5;QueueEndpoint=$(CLOSED);BlobEndpoint=$(CLOSED)' \
	AZURE_COSMOS_CONNECTION_STRING='AccountEndpoint=https://127.0.0.1:1/;AccountKey=a2V5;' \
		$(BIN)/pytest -q tests/unit

# Runs all three checks even when one fails, then fails with the first failure's exit code
# (pytest's 5, "no tests collected", included).
test: install ## Unit and integration tests (services come up on demand), then ruff and mypy.
	status=0; \
	for check in "$(BIN)/pytest tests" "$(BIN)/ruff check ." "$(BIN)/mypy"; do \
		$$check || { rc=$$?; echo "FAILED ($$rc): $$check" >&2; [ $$status -ne 0 ] || status=$$rc; }; \
	done; \
	exit $$status

lint: install ## ruff and mypy.
	$(BIN)/ruff check .
	$(BIN)/mypy

# SEEDS random blueprints (drawn by hypothesis from SEED, default: a new seed each time) on the local
# runner and on 2 Celery workers; failures (seed, blueprints, both traces) go to .artifacts/differential/.
# REPLAY=<failures file> runs exactly the cases of an earlier run (or of `python -m tests.differential.examples F`).
SEEDS ?= 200
SEED ?= $(shell date +%s)
REPLAY ?=
differential: install ## Differential test: SEEDS=N random blueprints, local runner vs Celery workers (SEED=, REPLAY=file).
	FLOWCRAFT_DIFF_EXAMPLES=$(SEEDS) FLOWCRAFT_DIFF_SEED=$(SEED) FLOWCRAFT_DIFF_REPLAY=$(REPLAY) \
		$(BIN)/pytest tests/integration/distributed/test_differential.py -s -q --timeout=$$(( $(SEEDS) * 10 + 600 ))

# kombu's and Celery's own integration suites, from the sdists of the installed versions unpacked
# into a temp folder (never copied here), with our plug-ins (suites/): docs/upstream-suites.md.
SERVICES_ENV = eval "$$($(BIN)/flowcraft-celery services up --env | grep '^export ')"

suites: suites-kombu suites-celery ## kombu's and Celery's integration suites against azurequeue:// and cosmos://.

suites-kombu: install ## kombu's t/integration suite against azurequeue://, Azure only and with redis_url.
	$(SERVICES_ENV); status=0; \
	$(BIN)/python suites/run.py kombu || status=$$?; \
	$(BIN)/python suites/run.py kombu --redis || status=$$?; \
	exit $$status

suites-celery: install ## Celery's t/integration (tasks, canvas, inspect) on azurequeue:// + cosmos://.
	$(SERVICES_ENV); $(BIN)/python suites/run.py celery -- --timeout 300

suites-celery-baseline: install ## The same Celery suites on Redis as broker and backend, to compare with.
	$(SERVICES_ENV); $(BIN)/python suites/run.py celery --baseline -- --timeout 300

demo: install ## Run the example order workflow on real Celery workers and beat over the dev services.
	$(BIN)/flowcraft-celery demo

test-throttling: install ## Throttling, TLS Redis and Entra ID tests (private emulators behind the fault proxy; ~1.5 min).
	$(BIN)/pytest -q tests/integration/faults/test_throttling.py tests/integration/stores/test_redis_tls_and_entra.py \
		tests/integration/stores/test_cosmos_identity.py tests/unit/transports/test_throttling.py \
		tests/unit/devtools/test_faultproxy.py

bench-throttle: install ## What 0/5/20 % throttling costs (nodes/s, requests per node, retries), via the fault proxy.
	$(BIN)/flowcraft-celery services up >/dev/null
	$(BIN)/python bench/throttle_bench.py --sdk-default

bench-scale: install ## What 1,000 and 10,000 idle live runs cost: reconcile per pass, bytes per run, latencies (~40 min).
	$(BIN)/flowcraft-celery services up >/dev/null
	$(SERVICES_ENV); $(BIN)/python -W ignore bench/scale_bench.py

services-up: install ## Start (or reuse) Azurite, the Cosmos emulator and Redis on loopback.
	$(BIN)/flowcraft-celery services up

services-down: ## Stop the services that `make services-up` started.
	if [ -x $(BIN)/flowcraft-celery ]; then $(BIN)/flowcraft-celery services down; fi

clean: services-down ## Stop our services, remove .venv, node_modules and caches.
	rm -rf $(VENV) node_modules .services .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
