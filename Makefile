# Two commands on a fresh machine: `make run` and `make test`. Each one creates .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit test-integration lint bench e2e fuzz clean

setup: $(STAMP)

# Re-install only when pyproject.toml changes, so `make setup` is quick when already done.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/exchange up

# The e2e tier (the real Apache Kafka + Cassandra) is deselected, never skipped: `make e2e`.
test: setup
	$(PY) -m pytest -q -m "not e2e"

test-unit: setup
	$(PY) -m pytest -q -m "not kafka and not e2e"

test-integration: setup
	$(PY) -m pytest -q -m "kafka and not e2e"

# Style, types, and the layers (import-linter contracts in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) bench/engine_core.py
	$(PY) bench/codec.py
	$(PY) bench/engine_service.py
	$(PY) bench/settlement_store.py
	$(PY) bench/gateway.py
	$(PY) bench/end_to_end.py
	$(PY) bench/broker_growth.py

# A longer schemathesis run over the gateway's OpenAPI spec (about 9,000 cases).
fuzz: setup
	GATEWAY_FUZZ_EXAMPLES=500 $(PY) -m pytest -q tests/gateway/test_gateway_fuzz.py -o timeout=1800

# The e2e tier on the real stack: the compose stack when a Docker engine answers, else
# `exchange infra` (Apache Kafka + Cassandra from Maven Central jars); says which; stops it.
e2e: setup
	./.ci/e2e

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
