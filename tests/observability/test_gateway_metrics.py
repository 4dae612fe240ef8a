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
from gateway.metrics import instrument
from gateway.server import ServerThread, create_gateway_app
from ops.broker import free_port
from settlement.sqlite_store import SqliteStore

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
    with ServerThread(cast(FastAPI, asgi), free_port()) as url:
        deposit = {"user_id": 1, "asset": "USDT", "amount": "100.5"}
        assert httpx.post(f"{url}/api/v1/deposit", json=deposit, timeout=30).status_code == 202
        assert httpx.post(f"{url}/api/v1/deposit", json=deposit, timeout=30).status_code == 202
        assert (
            httpx.post(f"{url}/api/v1/order/create", json={"user_id": 1}, timeout=30).status_code
            == 400
        )
        assert (
            httpx.get(f"{url}/api/v1/order/42", params={"user_id": 1}, timeout=30).status_code
            == 404
        )
        assert (
            httpx.get(f"{url}/api/v1/order/43", params={"user_id": 1}, timeout=30).status_code
            == 404
        )
        assert httpx.get(f"{url}/no/such/route/1", timeout=30).status_code == 404
        assert httpx.get(f"{url}/no/such/route/2", timeout=30).status_code == 404
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
