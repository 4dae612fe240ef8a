"""Property-based fuzzing of the whole API from its own OpenAPI spec (schemathesis).

Generates valid and invalid requests for every operation against a gateway on the real
broker (with the real engine service answering ``?wait=true``) over a seeded SQLite store,
and checks that none is answered with a 5xx, every status and body conform to the spec, and
every request that violates the spec is refused (4xx).

A quick run is part of the suite. The long run (thousands of cases):

    GATEWAY_FUZZ_EXAMPLES=300 .venv/bin/pytest tests/gateway/test_gateway_fuzz.py -q

(11 operations x 2 modes x N examples: 300 gives about 6,600 cases.)
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from gateway_testkit import Gateway, Script, run_gateway, signer_for
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from engine.engine import Engine
from engine.enums import Side
from engine.markets import Markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from gateway.app import GatewayConfig
from gateway.auth.signing import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from tests.support.signing import now_ms

pytestmark = pytest.mark.kafka

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_gateway(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    markets: Markets,
    codec: Codec,
) -> Iterator[Gateway]:
    """The gateway, the real engine service answering its commands (so ``?wait=true`` is
    fuzzed for real), and a store seeded with a little of everything for small user ids."""
    topics = Topics.with_prefix(f"f{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    engine = EngineService(
        bootstrap=kafka_bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"engine-{topics.orders.name}",
            snapshot_every_commands=10**9,
            snapshot_every_s=3600.0,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(tmp / "snapshots"),
    )
    stop = threading.Event()
    engine_thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    engine_thread.start()
    try:
        with run_gateway(
            bootstrap=kafka_bootstrap,
            topics=topics,
            store_path=tmp / "exchange.sqlite3",
            markets=markets,
            codec=codec,
            config=GatewayConfig(rate_limits=None),
        ) as gw:
            for _ in (1, 2, 3):  # users 1, 2, 3 on the engine, each with a key
                gw.create_user()
            s = Script(markets)
            for user in (1, 2, 3):
                s.deposit(user, "USDT", 10**13)
                s.deposit(user, "BTC", 10**9)
            s.place(1, Side.BUY, 5_000_000, 1000, client_order_id="a")
            s.place(2, Side.SELL, 4_900_000, 500)
            s.place(3, Side.SELL, 5_100_000, 700)
            s.flush_to(gw.store)
            yield gw
    finally:
        stop.set()
        engine_thread.join(30)


OPERATIONS = [
    ("POST", "/api/v1/order/create"),
    ("POST", "/api/v1/order/cancel"),
    ("POST", "/api/v1/order/cancel-all"),
    ("POST", "/api/v1/admin/users"),
    ("POST", "/api/v1/admin/users/{user_id}/keys"),
    ("DELETE", "/api/v1/admin/keys/{api_key}"),
    ("POST", "/api/v1/deposit"),
    ("POST", "/api/v1/withdraw"),
    ("GET", "/api/v1/order/active"),
    ("GET", "/api/v1/order/history"),
    ("GET", "/api/v1/order/{order_id}"),
    ("GET", "/api/v1/trades"),
    ("GET", "/api/v1/balances"),
    ("GET", "/health"),
    ("GET", "/ready"),
    # issue #15 (market data, amend)
    ("POST", "/api/v1/order/amend"),
    ("GET", "/api/v1/depth"),
    ("GET", "/api/v1/trades/recent"),
    ("GET", "/api/v1/ticker"),
    ("GET", "/api/v1/klines"),
]


class _Signed(requests.auth.AuthBase):
    """Signs each fuzzed request as the user it names (as the gateway tests' client does),
    over the bytes requests sends: the fuzzer reaches the routes, not just the gate."""

    def __init__(self, gw: Gateway) -> None:
        self.keys = gw.keys

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(r.path_url)
        body = r.body.encode() if isinstance(r.body, str) else (r.body or b"")
        signer = signer_for(self.keys, unquote(url.path), url.query, body)
        ts = now_ms()
        r.headers[HEADER_KEY] = signer.api_key
        r.headers[HEADER_TIMESTAMP] = str(ts)
        r.headers[HEADER_SIGNATURE] = sign(signer.key, ts, r.method or "GET", r.path_url, body)
        return r


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway: Gateway) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")
    # The spec declares the signature headers as security schemes; schemathesis would then
    # generate them as parameters (and, in negative mode, drop them and expect a refusal),
    # but _Signed signs every request itself, over the bytes sent. The gate's refusals of
    # unsigned or badly signed requests are test_gateway_auth's.
    schema.config.generation.update(with_security_parameters=False)
    schema.fuzz_gateway = fuzz_gateway  # the signer's keys
    return schema


def test_spec_when_served_lists_exactly_the_fuzzed_operations(api_schema: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Driven through hypothesis directly rather than schemathesis' pytest plugin, whose lazy
# fixture loader does not support this pytest version; one test per operation and mode.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        (method, path, mode)
        for method, path in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        # /health and /ready take no parameters, and a key id is any string: there is
        # nothing to make invalid
        if mode is GenerationMode.POSITIVE
        or path not in ("/health", "/ready", "/api/v1/admin/keys/{api_key}")
    ],
)
def test_api_when_fuzzed_from_its_spec_never_answers_5xx_and_conforms(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_path(method, path)
    assert operation is not None

    @given(case=operation.as_strategy(generation_mode=mode))
    # No shrinking: each example is a network round trip, and schemathesis already prints
    # the failing request as a curl command.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        calls.append(case.method)
        case.call_and_validate(checks=CHECKS, timeout=45, auth=auth)

    auth = _Signed(api_schema.fuzz_gateway)

    calls: list[str] = []
    gate_failures = api_schema.fuzz_gateway.app.gate.failures
    fuzz()
    # Every case was signed right: the fuzzer reached the routes, not only the gate.
    assert not {c: n for c, n in gate_failures.items() if c != "FORBIDDEN"}, gate_failures
    print(f"{method} {path} {mode}: {len(calls)} cases")  # shown with -s
    assert calls
