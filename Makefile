# The verbs. `make dev` and `make test` install first when needed (Python 3.11+ and make; `make test`
# and `make check` also need Node.js 20+ and npm, for the TypeScript client).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export XDG_RUNTIME_DIR ?= $(CURDIR)/.data/run

CLIENT := clients/typescript
CLIENT_STAMP := $(CLIENT)/node_modules/.installed-stamp
COMPOSE_TOOLS := tools/compose
COMPOSE_STAMP := $(COMPOSE_TOOLS)/node_modules/.installed-stamp

.PHONY: help install dev test gen client check-generated check-client check-compose drills lint format typecheck imports check bench profile clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,local]'
	@touch $@

install: $(STAMP) ## create .venv with the dev and local extras

# The TypeScript client's tools, pinned by its package-lock.json (Node.js 20+ and npm).
$(CLIENT_STAMP): $(CLIENT)/package.json $(CLIENT)/package-lock.json
	cd $(CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The Compose specification's JSON schema, as dclint bundles it (pinned by its lock).
$(COMPOSE_STAMP): $(COMPOSE_TOOLS)/package.json $(COMPOSE_TOOLS)/package-lock.json
	cd $(COMPOSE_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(XDG_RUNTIME_DIR):
	@mkdir -p -m 700 $@

dev: install | $(XDG_RUNTIME_DIR) ## embedded PostgreSQL + Redis, migrate, serve core on :9000
	$(BIN)/carebase dev

test: install $(CLIENT_STAMP) | $(XDG_RUNTIME_DIR) ## unit, integration (real engines) and contract tests
	$(BIN)/pytest --durations=15

gen: install ## bundle + lint the specs, regenerate models
	VENV_BIN=$(BIN) scripts/codegen.sh

client: $(CLIENT_STAMP) ## regenerate clients/typescript from the committed bundles, type-check it
	cd $(CLIENT) && npm run --silent gen && npm run --silent check

check-client: $(CLIENT_STAMP) ## fail when the TypeScript client is stale or does not type-check
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cd $(CLIENT); \
	npx --no-install openapi-typescript ../../generated/openapi/core.yaml -o "$$tmp/core.ts" --silent; \
	npx --no-install openapi-typescript ../../generated/openapi/telemetry.yaml -o "$$tmp/telemetry.ts" --silent; \
	if ! diff -r src/generated "$$tmp"; then \
	  echo "clients/typescript is stale: run 'make client' and commit the result" >&2; exit 1; fi; \
	npm run --silent check; echo "clients/typescript is fresh and type-checks"

check-generated: install ## fail when generated/ is stale
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	VENV_BIN=$(BIN) scripts/codegen.sh "$$tmp" >/dev/null; \
	if ! diff -r -x __pycache__ generated "$$tmp"; then \
	  echo "generated/ is stale: run 'make gen' and commit the result" >&2; exit 1; fi; \
	echo "generated/ is fresh"

format: install ## apply ruff format and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: install ## ruff format check + lint (includes the SQL-injection rule S608)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# mypy cannot follow setuptools' editable finder from src/ to `carebase`, so it reads a link tree.
typecheck: install ## mypy --strict on src/
	@rm -rf $(VENV)/mypy-path && mkdir -p $(VENV)/mypy-path/carebase
	@for f in src/*; do ln -s "$(CURDIR)/$$f" $(VENV)/mypy-path/carebase/; done
	@ln -s "$(CURDIR)/generated" $(VENV)/mypy-path/carebase/generated
	MYPYPATH=$(VENV)/mypy-path $(BIN)/mypy -p carebase

imports: install ## layer contract: handlers → services → persistence
	$(BIN)/lint-imports

check-compose: install $(COMPOSE_STAMP) ## compose.yaml against the Compose schema and the settings; Dockerfile pinned
	$(BIN)/python scripts/check_compose.py

check: lint typecheck imports check-generated check-client check-compose ## everything CI checks besides the tests

bench: install | $(XDG_RUNTIME_DIR) ## load-test a live server (and a FastAPI reference), write docs/benchmarks.md
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[bench]'
	$(BIN)/python bench/run.py

drills: install | $(XDG_RUNTIME_DIR) ## fault drills under load (PostgreSQL, Redis, telemetry, pool); docs/reliability.md
	$(BIN)/python bench/drills.py

profile: install | $(XDG_RUNTIME_DIR) ## py-spy profile of GET /v1/patients/{id} under load
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[bench]'
	$(BIN)/python bench/pyspy.py

clean: ## remove the virtualenv, caches and the embedded data
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache $(CLIENT)/node_modules $(CLIENT)/dist \
	  $(COMPOSE_TOOLS)/node_modules
