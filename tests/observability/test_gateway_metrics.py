"""The gateway's request metrics count every request, fast path included, by route template."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from engine.markets import Markets
from exchange.codec import Codec
from exchange.topics import Topics
from gateway.auth.signing import OPERATOR_KEY_ID
from gateway.metrics import instrument
from gateway.server import ServerThread, create_gateway_app
from ops.broker import free_port
from settlement.sqlite_store import SqliteStore
from tests.support.signing import ByUser, new_signer

pytestmark = pytest.mark.kafka


def _requests(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "exchange_gateway_requests_total":
                out[(s.labels["route"], s.labels["method"], s.labels["status"])] = s.value
    return out


def _timed(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "exchange_gateway_request_seconds_count":
                out[(s.labels["route"], s.labels["method"], s.labels["status"])] = s.value
    return out


def test_gateway_metrics_when_requests_are_served_count_them_by_route_template_and_status(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "gw.sqlite3")
    store.init_schema()
    app = create_gateway_app(
        bootstrap=kafka_bootstrap, topics=fresh_topics, markets=markets, codec=codec, store=store
    )
    asgi, _, _ = instrument(app)
    # Signed as the operator (deposits) or trader 1 (the rest), as a client must.
    operator, trader = new_signer(), new_signer()
    operator.api_key = OPERATOR_KEY_ID
    app.state.keys.set_operator(operator.public_key)
    app.state.keys.apply(
        api_key=trader.api_key, user_id=1, role="TRADER", public_key_b64=trader.public_key,
        revoked=False, sequence=1,
    )  # fmt: skip
    auth = ByUser(operator, lambda _user: trader)
    with (
        ServerThread(cast(FastAPI, asgi), free_port()) as url,
        httpx.Client(base_url=url, timeout=30, auth=auth) as client,
    ):
        deposit = {"user_id": 1, "asset": "USDT", "amount": "100.5"}
        assert client.post("/api/v1/deposit", json=deposit).status_code == 202
        assert client.post("/api/v1/deposit", json=deposit).status_code == 202
        assert client.post("/api/v1/order/create", json={"user_id": 1}).status_code == 400
        assert client.get("/api/v1/order/42", params={"user_id": 1}).status_code == 404
        assert client.get("/api/v1/order/43", params={"user_id": 1}).status_code == 404
        assert httpx.get(f"{url}/no/such/route/1", timeout=30).status_code == 404
        assert httpx.get(f"{url}/no/such/route/2", timeout=30).status_code == 404
        assert httpx.get(f"{url}/api/v1/balances", timeout=30).status_code == 401  # unsigned
        metrics = httpx.get(f"{url}/metrics", timeout=30)
        assert metrics.status_code == 200
        counted = _requests(metrics.text)
        timed = _timed(metrics.text)
    store.close()

    assert counted[("/api/v1/deposit", "POST", "202")] == 2  # the framework-free fast path
    assert counted[("/api/v1/order/create", "POST", "400")] == 1
    order_route = next(r for r, _, _ in counted if r.startswith("/api/v1/order/{order_id"))
    assert counted[(order_route, "GET", "404")] == 2  # one series for every order id
    assert counted[("<unmatched>", "GET", "404")] == 2
    assert not any("42" in r or "/no/such" in r for r, _, _ in counted)
    assert timed[("/api/v1/deposit", "POST", "202")] == 2
    assert timed[("/api/v1/order/create", "POST", "400")] == 1  # timed by status too
    assert counted[("/api/v1/balances", "GET", "401")] == 1
    refused = {
        s.labels["code"]: s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
        if s.name == "exchange_gateway_auth_failures_total"
    }
    assert refused["UNAUTHENTICATED"] == 1 and refused["INVALID_SIGNATURE"] == 0
