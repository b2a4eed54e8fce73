# Developer and CI entry points. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.flowcraft-installed
NODE_STAMP := node_modules/.package-lock.json

.PHONY: help install test lint demo services-up services-down clean suites suites-kombu suites-celery suites-celery-baseline

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

services-up: install ## Start (or reuse) Azurite, the Cosmos emulator and Redis on loopback.
	$(BIN)/flowcraft-celery services up

services-down: ## Stop the services that `make services-up` started.
	if [ -x $(BIN)/flowcraft-celery ]; then $(BIN)/flowcraft-celery services down; fi

clean: services-down ## Stop our services, remove .venv, node_modules and caches.
	rm -rf $(VENV) node_modules .services .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
