# Two commands on a fresh machine: `make run` and `make test`. Each one creates .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit test-integration lint schemas bench soak e2e e2e-compose e2e-local compose-check fuzz clean

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

# Style, formatting, types, and the layers (import-linter contracts in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Regenerate avro/resolved/ (self-contained top-level schemas) after editing a part in avro/.
schemas: setup
	$(PY) -m exchange.codec.resolved

bench: setup
	$(PY) bench/engine_core.py
	$(PY) bench/codec.py
	$(PY) bench/engine_service.py
	$(PY) bench/settlement_store.py
	$(PY) bench/gateway.py
	$(PY) bench/end_to_end.py
	$(PY) bench/broker_growth.py

# The issue-17 soak: embedded stack, 500 orders/s plus the LOBSTER replay, for SOAK_MINUTES
# (30); samples and plot under data/soak/. Not in `make bench`: its meaningful run is long.
SOAK_MINUTES ?= 30
soak: setup
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

# A longer schemathesis run over the gateway's OpenAPI spec (about 9,000 cases).
fuzz: setup
	GATEWAY_FUZZ_EXAMPLES=500 $(PY) -m pytest -q tests/gateway/test_gateway_fuzz.py -o timeout=1800

# The real stack: the compose stack when a Docker engine answers, else e2e-local.
e2e: setup
	@if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory e2e-compose; \
	else \
	  $(MAKE) --no-print-directory e2e-local; \
	fi

E2E_COMPOSE := docker compose -f compose/docker-compose.yml -f compose/docker-compose.e2e.yml
e2e-compose: compose-check
	$(E2E_COMPOSE) up -d --build --wait
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 CASSANDRA_CONTACT_POINTS=127.0.0.1 \
	  CASSANDRA_PORT=9042 $(PY) -m pytest -q -m e2e; \
	  rc=$$?; $(E2E_COMPOSE) down -v; exit $$rc

# Without Docker: against KAFKA_BOOTSTRAP_SERVERS / CASSANDRA_* when set.
e2e-local: compose-check
	$(PY) -m pytest -q -m e2e

# The compose file validated by Compose itself (`config --quiet` needs no engine). Without a
# docker compose plugin, the real Compose v2 is built once from the Go module proxy into
# COMPOSE_BIN (outside the repo).
COMPOSE_VERSION := v2.40.3
COMPOSE_BIN ?= $(HOME)/.cache/kafka-exchange-pipeline/docker-compose-$(COMPOSE_VERSION)
compose-check:
	@if docker compose version >/dev/null 2>&1; then \
	  docker compose -f compose/docker-compose.yml config --quiet; \
	  $(E2E_COMPOSE) config --quiet; \
	else \
	  COMPOSE_VERSION=$(COMPOSE_VERSION) COMPOSE_BIN=$(COMPOSE_BIN) sh compose/build-compose.sh && \
	  $(COMPOSE_BIN) -f compose/docker-compose.yml config --quiet && \
	  $(COMPOSE_BIN) -f compose/docker-compose.yml -f compose/docker-compose.e2e.yml config --quiet; \
	fi
	@echo "compose: docker-compose.yml is valid"

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
