"""The gateway's composition root: settings -> wired app -> uvicorn.

``exchange gateway`` (the CLI) calls :func:`run_gateway`; tests and the benchmark call
:func:`build_gateway` (or :func:`create_gateway_app` with explicit parts) and serve the app
with :class:`ServerThread`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from engine.errors import ConfigError
from engine.markets import Markets
from exchange.bootstrap import build_codec, build_markets, build_store
from exchange.codec import Codec
from exchange.kafka import make_consumer, make_producer
from exchange.settings import Settings
from exchange.supervisor import discover_bootstrap
from exchange.topics import Topics
from gateway.app import GatewayAPI, GatewayConfig, create_app
from gateway.publisher import PRODUCER_OVERRIDES, CommandPublisher
from gateway.results import CONSUMER_OVERRIDES, OutputFollower
from settlement.store import SettlementStore


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM/SIGINT ends with a normal return.

    uvicorn re-raises the signal it caught once it has shut down gracefully, so the process
    would die *by* the signal (exit status -15) and skip everything after ``run()``. Here a
    graceful stop is a normal end: :meth:`Gateway.run` closes the store and returns 0.
    This clears uvicorn's private list of captured signals; if that attribute ever goes
    away, the only effect is uvicorn's default behaviour.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


@dataclass(slots=True)
class Gateway:
    """A wired gateway: the app, what uvicorn serves (the app, or a wrapper of it such as
    a metrics middleware), the server, and the store it owns."""

    app: GatewayAPI
    asgi: ASGIApp
    server: uvicorn.Server
    store: SettlementStore

    def run(self) -> int:
        """Serve in the foreground until SIGINT/SIGTERM; 0 on a clean stop."""
        try:
            self.server.run()
        finally:
            self.store.close()
        return 0 if self.server.started else 1


def create_gateway_app(
    *,
    bootstrap: str,
    topics: Topics,
    markets: Markets,
    codec: Codec,
    store: SettlementStore,
    config: GatewayConfig | None = None,
    delivery_timeout_ms: int | None = None,
) -> GatewayAPI:
    """The app wired to Kafka at ``bootstrap``: the publisher and the follower are built
    here, from the project's client settings plus the gateway's overrides."""
    overrides = dict(PRODUCER_OVERRIDES)
    if delivery_timeout_ms is not None:
        overrides["message.timeout.ms"] = delivery_timeout_ms
    ack_timeout_s = overrides["message.timeout.ms"] / 1000 + 1.0
    publisher = CommandPublisher(
        lambda: make_producer(bootstrap, **overrides),
        topics.orders.name,
        ack_timeout_s=ack_timeout_s,
    )
    follower = OutputFollower(
        # A fresh group id that never commits: assign() only, nothing shared with settlement.
        lambda: make_consumer(bootstrap, f"gateway-follower-{uuid.uuid4().hex}",
                              **CONSUMER_OVERRIDES),
        topics.engine_output.name,
        codec,
    )
    return create_app(
        markets=markets, codec=codec, publisher=publisher, follower=follower, store=store,
        config=config,
    )  # fmt: skip


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
        access_log=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting: the API never uses client addresses
        log_config=None,  # the process's logging, configured by the CLI
        server_header=False,
        timeout_graceful_shutdown=5,
    )


def build_gateway(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    config: GatewayConfig | None = None,
    wrap: Callable[[GatewayAPI], ASGIApp] | None = None,
) -> Gateway:
    """Wire the gateway from the settings. Does no network I/O (clients connect lazily).

    ``bootstrap`` defaults to ``KAFKA_BOOTSTRAP_SERVERS``, else the broker of a running
    ``exchange up``/``exchange broker``; ConfigError if there is none. ``wrap`` may add
    routes to the app and return what to serve instead of it, e.g. the metrics middleware:
    ``wrap=lambda app: gateway.metrics.instrument(app)[0]``.
    """
    bootstrap = bootstrap or discover_bootstrap(settings)
    if not bootstrap:
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no `exchange up`/`exchange broker` is "
            "running (start one, or set KAFKA_BOOTSTRAP_SERVERS)"
        )
    markets = build_markets(settings)
    codec = build_codec()
    store = build_store(settings, readonly=True)
    app = create_gateway_app(
        bootstrap=bootstrap,
        topics=Topics.from_settings(settings),
        markets=markets,
        codec=codec,
        store=store,
        config=config,
    )
    asgi: ASGIApp = wrap(app) if wrap is not None else app
    server = GatewayServer(uvicorn_config(asgi, settings.exchange_host, settings.exchange_port))
    return Gateway(app=app, asgi=asgi, server=server, store=store)


def run_gateway(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    wrap: Callable[[GatewayAPI], ASGIApp] | None = None,
) -> int:
    """``exchange gateway``: serve the API on ``EXCHANGE_HOST:EXCHANGE_PORT`` until stopped
    (SIGINT/SIGTERM: graceful stop, then 0)."""
    return build_gateway(settings, bootstrap=bootstrap, wrap=wrap).run()


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
