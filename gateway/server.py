"""The gateway wired to Kafka, and how uvicorn serves it.

:func:`create_gateway_app` builds the app with its publisher and follower from a bootstrap
address; :func:`uvicorn_config` is the production uvicorn configuration; tests and benchmarks
serve an app with :class:`ServerThread`. The process itself (settings -> app -> uvicorn) is
wired in :mod:`entrypoints.gateway`.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from types import TracebackType
from typing import cast

import uvicorn
from starlette.types import ASGIApp

from engine.markets import Markets
from engine.service.snapshots import SnapshotStore
from exchange.codec import Codec
from exchange.codec.peek import OutputKindPeek
from exchange.kafka import fetch_wait_ms, make_consumer, make_producer
from exchange.topics import Topics
from gateway.app import GatewayAPI, GatewayConfig, create_app
from gateway.auth.keyfeed import KeyFeed, committed_offsets
from gateway.auth.registry import KeyRegistry
from gateway.market.feed import CONSUMER_OVERRIDES as FEED_OVERRIDES
from gateway.market.feed import MarketFeed
from gateway.market.service import MarketData
from gateway.publisher import PRODUCER_OVERRIDES, CommandPublisher
from gateway.results import CONSUMER_OVERRIDES, OutputFollower
from gateway.streams.frames import FanOutWebSocketProtocol
from gateway.streams.hub import StreamConfig
from settlement.market_data import MarketDataStore
from settlement.store import SettlementStore


def create_gateway_app(
    *,
    bootstrap: str,
    topics: Topics,
    markets: Markets,
    codec: Codec,
    store: SettlementStore,
    config: GatewayConfig | None = None,
    delivery_timeout_ms: int | None = None,
    operator_public_key: str | None = None,
    settlement_group: str = "settlement",
    snapshots: SnapshotStore | None = None,
    streams: StreamConfig | None = None,
) -> GatewayAPI:
    """The app wired to Kafka at ``bootstrap``: the publisher and the follower are built
    here, from the project's client settings plus the gateway's overrides.

    The key registry learns keys from ``store`` and the output stream
    (:mod:`gateway.auth.keyfeed`, using ``settlement_group``'s committed offsets), plus the
    first operator's ``operator_public_key`` when given.


    ``snapshots``: where the engine keeps its snapshots; the market books start from the
    newest one (None: replay ``engine-output`` from offset 0, see gateway.market.feed).
    ``streams``: the WebSocket tunables (queue bound, heartbeat)."""
    overrides = dict(PRODUCER_OVERRIDES)
    if delivery_timeout_ms is not None:
        overrides["message.timeout.ms"] = delivery_timeout_ms
    ack_timeout_s = overrides["message.timeout.ms"] / 1000 + 1.0
    publisher = CommandPublisher(
        lambda: make_producer(bootstrap, **overrides),
        topics.orders.name,
        ack_timeout_s=ack_timeout_s,
    )
    keys = KeyRegistry()
    if operator_public_key is not None:
        keys.set_operator(operator_public_key)
    feed = KeyFeed(
        registry=keys,
        decode=codec.decode_output,
        peek=OutputKindPeek(codec),
        stored_keys=store.api_keys,
        committed=committed_offsets(
            lambda group: make_consumer(bootstrap, group, **{"enable.auto.commit": False}),
            settlement_group,
        ),
    )
    follower = OutputFollower(
        # A fresh group id that never commits: assign() only, nothing shared with settlement.
        lambda **extra: make_consumer(
            bootstrap, f"gateway-follower-{uuid.uuid4().hex}", **CONSUMER_OVERRIDES, **extra
        ),
        topics.engine_output.name,
        codec,
        fetch_wait=lambda: fetch_wait_ms(bootstrap),
        start_positions=feed.start_positions,
    )
    follower.taps.append(feed.on_records)
    market_feed = MarketFeed(
        lambda: make_consumer(bootstrap, f"gateway-market-{uuid.uuid4().hex}", **FEED_OVERRIDES),
        topics.engine_output.name,
        codec,
        markets,
        snapshots,
    )
    # Both store adapters implement the market-data port too (settlement.market_data).
    market_store = cast(MarketDataStore, store)
    market = MarketData(markets=markets, feed=market_feed, store=market_store, config=streams)
    app = create_app(
        markets=markets, codec=codec, publisher=publisher, follower=follower, store=store,
        config=config, keys=keys, market=market,
    )  # fmt: skip
    app.state.key_feed = feed
    return app


def uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """uvicorn settings of the gateway: httptools and uvloop when installed (several times
    faster than the pure-Python h11 and asyncio), no access log (it would cost more than
    the request at thousands per second; put a proxy in front for access logs)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        lifespan="on",
        # uvicorn's sans-I/O WebSocket protocol plus a frame writer for the stream fan-out
        # (gateway.streams.frames).
        ws=FanOutWebSocketProtocol,
        access_log=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting: the API never uses client addresses
        log_config=None,  # the process's logging, configured by the CLI
        server_header=False,
        timeout_graceful_shutdown=5,
    )


class ServerThread:
    """Serve an app with uvicorn on a background thread (tests, benchmarks).

    ``with ServerThread(app, port) as url:`` starts it, waits until it listens (lifespan
    done), and stops it on exit.
    """

    def __init__(self, app: ASGIApp, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self, timeout_s: float = 15.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
