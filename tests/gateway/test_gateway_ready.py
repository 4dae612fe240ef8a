"""The gateway's /ready requires the services of the pipeline (EXCHANGE_READY_URLS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testkit import run_gateway

from engine.markets import Markets
from exchange.codec import Codec
from exchange.metrics import new_registry, serve_metrics
from exchange.topics import Topics
from gateway.app import GatewayConfig
from ops.broker import free_port
from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka


def test_ready_when_a_required_service_is_not_ready_answers_503_naming_it(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
    markets: Markets,
    codec: Codec,
) -> None:
    peer_ready = [False]
    peer = serve_metrics(
        0, new_registry(), readiness=lambda: (peer_ready[0], "orders consumer stalled")
    )
    ready_url = peer.url.removesuffix("/metrics") + "/ready"
    dead_url = f"http://127.0.0.1:{free_port()}/ready"
    try:
        with run_gateway(
            bootstrap=kafka_bootstrap,
            topics=fresh_topics,
            store_path=tmp_path / "a.sqlite3",
            markets=markets,
            codec=codec,
            config=GatewayConfig(ready_urls=(ready_url,)),
        ) as gw:

            def names_the_peer() -> Any:  # the follower first has to follow
                answer = httpx.get(f"{gw.url}/ready", timeout=10).json()
                assert ready_url in answer.get("error", {}).get("message", ""), answer
                return answer

            answer = eventually(names_the_peer, what="/ready to name the peer")
            assert answer["error"]["code"] == "NOT_READY"
            assert "orders consumer stalled" in answer["error"]["message"]

            peer_ready[0] = True
            assert httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200
        with run_gateway(
            bootstrap=kafka_bootstrap,
            topics=fresh_topics,
            store_path=tmp_path / "b.sqlite3",
            markets=markets,
            codec=codec,
            config=GatewayConfig(ready_urls=(ready_url, dead_url)),
        ) as gw:
            answer = httpx.get(f"{gw.url}/ready", timeout=10)
            assert answer.status_code == 503
            assert f"{dead_url}: unreachable" in answer.json()["error"]["message"]
    finally:
        peer.close()
