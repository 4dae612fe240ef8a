"""A bug is still answered with the envelope: 500 INTERNAL_ERROR, on both transports.

The faults are injected by subclassing the real adapters (a store whose query raises, a
codec whose encoder raises); everything else is real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testkit import AutoSigner, Keyring, envelope_error

from engine.markets import Markets
from exchange.codec import Codec
from exchange.topics import Topics
from gateway.server import ServerThread, create_gateway_app
from ops.broker import free_port
from settlement.sqlite_store import SqliteStore

pytestmark = pytest.mark.kafka


class _BuggyStore(SqliteStore):
    def balances(self, user_id: int) -> Any:
        raise RuntimeError("a bug in a query")


class _BuggyCodec(Codec):
    def encode_command(self, command: Any) -> bytes:
        raise RuntimeError("a bug in the encoder")


def test_unexpected_error_when_raised_by_a_route_returns_500_internal_error_envelope(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets
) -> None:
    store = _BuggyStore(tmp_path / "s.sqlite3")
    store.init_schema()
    app = create_gateway_app(
        bootstrap=kafka_bootstrap,
        topics=fresh_topics,
        markets=markets,
        codec=_BuggyCodec(),
        store=store,
    )
    order = {
        "user_id": 1,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "price": "1.00",
        "quantity": "1",
    }
    try:
        signer = AutoSigner(Keyring(app.state.keys))
        with (
            ServerThread(app, free_port()) as url,
            httpx.Client(base_url=url, auth=signer) as client,
        ):
            assert envelope_error(client.get("/api/v1/balances?user_id=1")) == (
                500,
                "INTERNAL_ERROR",
            )
            for fast in (True, False):
                app.fast_path = fast
                assert envelope_error(client.post("/api/v1/order/create", json=order)) == (
                    500,
                    "INTERNAL_ERROR",
                )
            # and the server is still serving
            assert client.get("/health").status_code == 200
    finally:
        store.close()
