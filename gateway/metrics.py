"""The gateway's Prometheus metrics: a request-metrics middleware and a ``/metrics`` route.

Wiring (the gateway's composition root)::

    registry = new_registry()
    metrics = GatewayMetrics(registry)
    app.include_router(metrics_router(registry))
    asgi = MetricsMiddleware(app, metrics)   # serve `asgi` (uvicorn), not `app`

Why wrap the whole app rather than ``app.add_middleware``: :class:`gateway.app.GatewayAPI`
answers the command routes on a framework-free fast path *before* FastAPI's middleware
stack, so a middleware added inside would never see the hot path. Wrapping outside sees
every request. (``app.add_middleware(MetricsMiddleware, metrics=metrics)`` also works, for
an app without a fast path.)

The ``route`` label is the route *template* (``/api/v1/order/{order_id}``), never the raw
path, so ids cannot blow up the number of series; a request no route matched is counted
as ``<unmatched>``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.metrics import UNMATCHED_ROUTE, GatewayMetrics, new_registry
from gateway.auth.gate import AuthFailureCollector

__all__ = ["GatewayMetrics", "MetricsMiddleware", "instrument", "metrics_router", "new_registry"]


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self._metrics = metrics
        self._static: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._metrics.observe(
                self._route(scope), scope["method"], status, time.perf_counter() - started
            )

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")  # set by FastAPI's router on the (shared) scope
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        # Not routed by FastAPI: the fast path of a static command route, or no route at all.
        static = self._static
        if static is None:
            routes = getattr(self.app, "routes", None) or getattr(scope.get("app"), "routes", None)
            static = self._static = _static_paths(routes or ())
        path = scope["path"]
        return path if path in static else UNMATCHED_ROUTE


def _static_paths(routes: Iterable[object]) -> frozenset[str]:
    return frozenset(p for p in _route_paths(routes) if "{" not in p)


def _route_paths(routes: Iterable[object]) -> Iterator[str]:
    """Every route path, also those of included routers: FastAPI keeps an included router as
    one entry holding its ``original_router`` (the gateway's routers have no prefix, so their
    routes' paths are the app's)."""
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            yield path
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _route_paths(getattr(included, "routes", ()))


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """``GET /metrics``: the registry in the Prometheus text format."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def instrument(
    app: ASGIApp, registry: CollectorRegistry | None = None
) -> tuple[ASGIApp, GatewayMetrics, CollectorRegistry]:
    """Add ``GET /metrics`` to a FastAPI ``app`` and wrap it in :class:`MetricsMiddleware`.

    Returns ``(asgi_app_to_serve, metrics, registry)``.
    """
    registry = registry if registry is not None else new_registry()
    metrics = GatewayMetrics(registry)
    include = getattr(app, "include_router", None)
    if include is None:
        raise TypeError("instrument() needs a FastAPI app (it adds the /metrics route)")
    include(metrics_router(registry))
    gate = getattr(getattr(app, "state", None), "auth", None)
    if gate is not None:  # the access gate's refusals by code (gateway.auth.gate)
        registry.register(AuthFailureCollector(gate))
    return MetricsMiddleware(app, metrics), metrics, registry
