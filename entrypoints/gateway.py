"""The gateway process: settings -> wired app -> uvicorn.

``exchange gateway`` (the CLI) calls :func:`run_gateway`; tests call :func:`build_gateway`.
The app and its Kafka clients are built by :func:`gateway.server.create_gateway_app`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from entrypoints.bootstrap import (
    build_codec,
    build_markets,
    build_snapshot_store,
    build_store,
    find_bootstrap,
    tune_gc,
)
from exchange.settings import Settings
from exchange.topics import Topics
from gateway.app import GatewayAPI, GatewayConfig
from gateway.auth.ratelimit import RateLimits
from gateway.server import create_gateway_app, uvicorn_config
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
        # Without it, full collections of the heap (the imports, then a thousand sockets'
        # objects) stalled the loop up to 157 ms, 8 times in 30 s of streaming (BENCHMARKS).
        tune_gc()
        try:
            self.server.run()
        finally:
            self.store.close()
        return 0 if self.server.started else 1


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
    bootstrap = bootstrap or find_bootstrap(settings)
    markets = build_markets(settings)
    codec = build_codec()
    store = build_store(settings, readonly=True)
    app = create_gateway_app(
        bootstrap=bootstrap,
        topics=Topics.from_settings(settings),
        markets=markets,
        codec=codec,
        store=store,
        config=config or gateway_config(settings),
        operator_public_key=settings.exchange_operator_public_key,
        snapshots=build_snapshot_store(settings, bootstrap),
    )
    asgi: ASGIApp = wrap(app) if wrap is not None else app
    server = GatewayServer(uvicorn_config(asgi, settings.exchange_host, settings.exchange_port))
    return Gateway(app=app, asgi=asgi, server=server, store=store)


def gateway_config(settings: Settings) -> GatewayConfig:
    """The gateway's tunables from the settings."""
    return GatewayConfig(
        ready_urls=settings.ready_urls,
        auth_window_ms=settings.exchange_auth_window_ms,
        rate_limits=RateLimits(
            orders_per_second=settings.exchange_rate_limit_orders_per_second,
            requests_per_minute=settings.exchange_rate_limit_requests_per_minute,
        ),
    )


def run_gateway(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    wrap: Callable[[GatewayAPI], ASGIApp] | None = None,
) -> int:
    """``exchange gateway``: serve the API on ``EXCHANGE_HOST:EXCHANGE_PORT`` until stopped
    (SIGINT/SIGTERM: graceful stop, then 0)."""
    return build_gateway(settings, bootstrap=bootstrap, wrap=wrap).run()
