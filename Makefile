# Two commands for a fresh machine:  make run  (service)  and  make test  (tests).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install install-test install-bench run test migrate clean analyst-psql bench

## the service's own dependencies (what `make run` needs)
install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

## plus the test tools (pytest, Playwright, schemathesis, localstripe, hypothesis, ...)
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## web on http://127.0.0.1:$$PORT (default 8000) + render worker (+ embedded Postgres when none is found)
run: install
	$(PY) -m web.local

## the contract's third-party linters and TypeScript check (tests/contract), as locked
CONTRACT_TOOLS := tests/contract/node_modules/.package-lock.json
$(CONTRACT_TOOLS): tests/contract/package.json tests/contract/package-lock.json
	cd tests/contract && npm ci --no-audit --no-fund --loglevel=error

## the whole test suite against a real Postgres
test: install-test $(CONTRACT_TOOLS)
	scripts/prepare-test-postgres
	scripts/prepare-test-browser
	$(PY) -m pytest

migrate: install
	$(VENV)/bin/flask --app web migrate

clean:
	rm -rf $(VENV) .data *.egg-info .pytest_cache

## psql as the read-only analyst role (reporting views only)
analyst-psql: install
	psql "$$($(PY) -c 'from web.config import from_env, role_dsn; print(role_dsn(from_env()["DATABASE_URL"], "sg_analyst"))')"

## the benchmarks' extra Python packages
install-bench: $(VENV)/.installed-bench

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

## every benchmark beside its peer or limit: one summary table, also written to bench/RESULTS.md
bench: install-bench
	scripts/prepare-bench
	$(PY) -m bench
