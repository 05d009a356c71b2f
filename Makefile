# PartnerNet developer commands. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SECRET_FILE := instance/dev-secret-key

.PHONY: install demo test services test-only bench clean

$(BIN)/flask: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(BIN)/flask

install: $(BIN)/flask

$(SECRET_FILE):
	@mkdir -p instance
	@$(PY) -c "import secrets; print(secrets.token_urlsafe(48))" > $(SECRET_FILE)

# Embedded default: SQLite under instance/, jobs in-process (no REDIS_URL).
demo: install $(SECRET_FILE)
	SECRET_KEY=$$(cat $(SECRET_FILE)) $(BIN)/flask --app wsgi db upgrade
	SECRET_KEY=$$(cat $(SECRET_FILE)) $(BIN)/flask --app wsgi demo

# Starts PostgreSQL and Redis when they are down, then runs the whole suite.
services:
	bash scripts/services.sh

test: install services
	$(BIN)/python -m pytest -q --durations=15

test-only:
	$(BIN)/python -m pytest -q --durations=15

bench: install services
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
