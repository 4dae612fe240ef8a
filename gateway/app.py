"""The REST API: the FastAPI app over the command service (commands) and the store (reads).

Theory of operation
-------------------
:func:`create_app` wires the parts and nothing else; each concern lives in its own module:

* :mod:`gateway.commands`: the command service (validate, scale, publish, wait for the
  engine's result). Its *core* methods ``(body, wait, timeout_ms) -> (status, payload)`` are
  called by the FastAPI routes and by the framework-free path of :mod:`gateway.fastpath`,
  which :class:`GatewayAPI` takes for plain command requests (the hot path), so both answer
  the same by construction.
* :mod:`gateway.reads`: the read side, over the settlement store (a read model that lags the
  engine slightly), rendered by :mod:`gateway.views`.
* :mod:`gateway.routes`: the module-level routers (commands, reads, health).
* :mod:`gateway.bodies`: request bodies, parsed here rather than by FastAPI so every JSON
  number stays exact; :mod:`gateway.schemas` holds the pydantic models.
* :mod:`gateway.envelope`: every answer uses the envelope of :mod:`gateway.errors`; no route
  answers 422 (validation errors are 400) and a last-resort middleware turns any bug into a
  500 envelope.
* :mod:`gateway.openapi`: the spec, with the request models as the documented bodies.
* :mod:`gateway.auth`: the access gate runs before everything else (fast path included);
  the key registry is ``app.state.keys``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from engine.markets import Markets
from gateway import amend
from gateway.admin import AdminService
from gateway.auth.gate import DEFAULT_WINDOW_MS, AuthGate
from gateway.auth.ratelimit import RateLimiter, RateLimits
from gateway.auth.registry import KeyRegistry
from gateway.auth.signing import verify
from gateway.commands import CommandEncoder, CommandService
from gateway.envelope import CatchAllMiddleware, install_error_handlers, render_error
from gateway.fastpath import CommandCore, is_command, parse_command_query, serve_command
from gateway.market.service import MarketData
from gateway.openapi import API_DESCRIPTION, API_VERSION, openapi_builder
from gateway.publisher import CommandPublisher
from gateway.reads import ReadService
from gateway.results import OutputFollower
from gateway.routes import access, commands, health, reads
from gateway.routes.commands import DEFAULT_WAIT_MS, MAX_WAIT_MS
from gateway.streams.auth import SignedLogin, registry_lookup
from gateway.views import Views
from settlement.store import SettlementStore

MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Tunables of the API (the defaults are the production values)."""

    max_body_bytes: int = MAX_BODY_BYTES
    ready_timeout_s: float = 2.0
    # The /ready URLs of the services the pipeline needs (engine, settlement workers): the
    # gateway is ready only when each of them is (see exchange.settings, EXCHANGE_READY_URLS).
    ready_urls: tuple[str, ...] = ()
    title: str = "Exchange gateway"
    # Access (gateway.auth): the signature's timestamp window and the per-key rate limits
    # (None: no limits).
    auth_window_ms: int = DEFAULT_WINDOW_MS
    rate_limits: RateLimits | None = RateLimits()  # noqa: RUF009 (frozen: one shared default is fine)


class GatewayAPI(FastAPI):
    """FastAPI, plus the framework-free path for the command routes (gateway.fastpath).

    A ``POST`` to a command route with a plain query string goes straight to the route's
    core function; everything else (and every other route) goes through FastAPI.
    ``fast_path = False`` sends everything through FastAPI (the tests compare the two).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands: dict[str, CommandCore] = {}
        self.max_body = MAX_BODY_BYTES
        self.fast_path = True
        self.gate: AuthGate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if gate is not None and scope["type"] == "http":
            if not gate.bound:
                gate.bind(self.routes)  # once serving: every route has been added by then
            await gate(scope, receive, send, self._dispatch)
            return
        await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path and is_command(scope, self.commands):
            query = parse_command_query(scope["query_string"], DEFAULT_WAIT_MS, MAX_WAIT_MS)
            if query is not None:
                await serve_command(
                    self.commands[scope["path"]], query[0], query[1], self.max_body,
                    render_error, receive, send,
                )  # fmt: skip
                return
        await super().__call__(scope, receive, send)


def create_app(
    *,
    markets: Markets,
    codec: CommandEncoder,
    publisher: CommandPublisher,
    follower: OutputFollower,
    store: SettlementStore,
    config: GatewayConfig | None = None,
    keys: KeyRegistry | None = None,
    market: MarketData | None = None,
) -> GatewayAPI:
    """Build the API over its dependencies.

    The app's lifespan starts the publisher's poll thread and the follower, and stops them;
    it does not close the store (the composition root owns it).
    """
    cfg = config or GatewayConfig()
    views = Views(markets)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        publisher.start(loop)
        follower.start(loop)
        if market is not None:
            market.start(loop)
        try:
            yield
        finally:
            if market is not None:
                await market.stop()
            await run_in_threadpool(follower.stop)
            await run_in_threadpool(publisher.close)

    app = GatewayAPI(
        title=cfg.title,
        version=API_VERSION,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(CatchAllMiddleware)
    install_error_handlers(app)
    service = CommandService(
        markets=markets, codec=codec, publisher=publisher, follower=follower, store=store,
        views=views,
    )  # fmt: skip
    # The adapters and services, for the routes, the composition root and the tests
    # (readiness, follower state).
    app.state.publisher = publisher
    app.state.follower = follower
    app.state.store = store
    app.state.config = cfg
    app.state.command_service = service
    app.state.reads = ReadService(markets=markets, store=store, views=views)
    for router in (commands.router, reads.router, health.router, access.router):
        app.include_router(router)
    # Amend (issue #15): its own module, a core like the other commands'.
    app.state.amend = amend.AmendService(
        markets=markets, codec=codec, publish_and_wait=service.publish_and_wait, views=views
    )
    app.include_router(amend.router)
    if market is not None:
        market.install(app)  # public market data and GET /ws
    app.openapi = openapi_builder(app)  # type: ignore[method-assign]
    app.commands = {**service.cores, amend.AMEND_PATH: app.state.amend.amend}
    app.max_body = cfg.max_body_bytes
    app.state.keys = keys if keys is not None else KeyRegistry()
    app.state.admin = AdminService(commands=service, registry=app.state.keys)
    app.gate = app.state.auth = AuthGate(
        registry=app.state.keys,
        limiter=RateLimiter(cfg.rate_limits) if cfg.rate_limits is not None else None,
        window_ms=cfg.auth_window_ms,
        max_body=cfg.max_body_bytes,
    )
    if market is not None and getattr(app.state, "stream_auth", None) is None:
        # WebSocket login (issue #15's user stream) over the same keys and scheme.
        app.state.stream_auth = SignedLogin(
            registry_lookup(app.state.keys), verify, window_ms=cfg.auth_window_ms
        )
    return app


__all__ = [
    "DEFAULT_WAIT_MS",
    "MAX_WAIT_MS",
    "GatewayAPI",
    "GatewayConfig",
    "create_app",
]
