"""The access gate: every request to a signed route is authenticated before anything else.

Theory of operation
-------------------
:class:`gateway.app.GatewayAPI` calls the gate first for every HTTP request (before its
fast path and before FastAPI), so no route, fast or not, runs unauthenticated. The gate
finds the route's access in :mod:`gateway.auth.policy` (a dict lookup for static paths, a
regex per templated route otherwise); public routes and paths no route serves (404/405,
which carry no data) pass through untouched. For a signed route the checks run in this
order and the first failure answers (issue #14):

1. ``X-API-KEY`` missing, unknown or revoked -> 401 ``UNAUTHENTICATED``;
2. ``X-TIMESTAMP`` missing, not digits, or more than the window (default 5,000 ms) from the
   server's clock -> 401 ``TIMESTAMP_OUT_OF_WINDOW``;
3. the body is read (bounded: 413 beyond the limit), then ``X-SIGNATURE`` missing or not
   the key's signature of ``timestamp + METHOD + raw target + body`` -> 401
   ``INVALID_SIGNATURE`` (:mod:`gateway.auth.signing`; the raw target is ASGI ``raw_path``
   and ``query_string`` byte for byte, never a decoded path);
4. a key without the route's role -> 403 ``FORBIDDEN``;
5. over the key's rate limit -> 429 ``RATE_LIMITED`` with ``Retry-After`` (traders only).

Then the request goes on with its principal set (:mod:`gateway.auth.principal`) and its
body replayed to the app. Failures are counted by code (:attr:`AuthGate.failures`, exported
as ``exchange_gateway_auth_failures_total{code}`` by :class:`AuthFailureCollector`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.policy import ORDER_COMMANDS, Access, access_of
from gateway.auth.principal import CURRENT, Role
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.registry import KeyRegistry
from gateway.auth.signing import verify
from gateway.envelope import error_body
from gateway.errors import ErrorCode

DEFAULT_WINDOW_MS = 5_000
_MAX_TIMESTAMP_DIGITS = 15  # epoch ms has 13 digits until the year 2286

_UNAUTHENTICATED = (401, ErrorCode.UNAUTHENTICATED, "a valid X-API-KEY is required")
_STALE = (
    401,
    ErrorCode.TIMESTAMP_OUT_OF_WINDOW,
    "X-TIMESTAMP must be epoch milliseconds within the window of the server's clock",
)
_BAD_SIGNATURE = (401, ErrorCode.INVALID_SIGNATURE, "X-SIGNATURE does not match the request")
_FORBIDDEN = (403, ErrorCode.FORBIDDEN, "this key's role may not use this route")

Methods = dict[str, Access]


class AuthGate:
    """Authenticates, authorizes and rate-limits requests, then calls the app."""

    def __init__(
        self,
        *,
        registry: KeyRegistry,
        limiter: RateLimiter | None,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_body: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.registry = registry
        self.limiter = limiter
        self.window_ms = window_ms
        self.max_body = max_body
        self._clock_ms = clock_ms
        self.failures: dict[str, int] = {}
        self._static: dict[str, Methods] | None = None
        self._templated: list[tuple[re.Pattern[str], Methods]] = []

    def bind(self, routes: Iterable[Any]) -> None:
        """Build the route -> access tables from the app's routes (again after routes change)."""
        static: dict[str, Methods] = {}
        templated: dict[str, tuple[re.Pattern[str], Methods]] = {}
        for route in iter_routes(routes):
            path = getattr(route, "path", None)
            methods = getattr(route, "methods", None)
            regex = getattr(route, "path_regex", None)
            if not isinstance(path, str) or not methods or regex is None:
                continue
            if "{" in path:
                table = templated.setdefault(path, (regex, {}))[1]
            else:
                table = static.setdefault(path, {})
            for method in methods:
                table[method] = access_of("GET" if method == "HEAD" else method, path)
        self._templated = list(templated.values())
        self._static = static

    def access(self, path: str, method: str) -> Access | None:
        """The access of a request; None when no route serves it (404/405 pass through)."""
        if self._static is None:
            return None
        methods = self._static.get(path)
        if methods is None:
            for regex, table in self._templated:
                if regex.match(path):
                    methods = table
                    break
            else:
                return None
        return methods.get(method)

    @property
    def bound(self) -> bool:
        return self._static is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        access = self.access(scope["path"], scope["method"])
        if access is None or access is Access.PUBLIC:
            await app(scope, receive, send)
            return
        api_key = timestamp = signature = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value
            elif name == b"x-timestamp":
                timestamp = value
            elif name == b"x-signature":
                signature = value
        entry = None
        if api_key is not None:
            try:
                entry = self.registry.entry(api_key.decode("ascii"))
            except UnicodeDecodeError:
                entry = None
        if entry is None:
            await self._refuse(send, *_UNAUTHENTICATED)
            return
        if (
            timestamp is None
            or not timestamp.isdigit()
            or len(timestamp) > _MAX_TIMESTAMP_DIGITS
            or abs(int(timestamp) - self._clock_ms()) > self.window_ms
        ):
            await self._refuse(send, *_STALE)
            return
        body = await self._read_body(receive)
        if body is None:
            too_large = f"the body exceeds {self.max_body} bytes"
            await _answer(send, 413, error_body(ErrorCode.REQUEST_TOO_LARGE, too_large))
            return
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string")
        if query:
            target = target + b"?" + query
        method = scope["method"]
        if signature is None or not verify(
            entry.key, timestamp, method.encode(), target, body, signature
        ):
            await self._refuse(send, *_BAD_SIGNATURE)
            return
        principal = entry.principal
        if not access.allows(principal.role):
            await self._refuse(send, *_FORBIDDEN)
            return
        if self.limiter is not None and principal.role is Role.TRADER:
            retry_after = self.limiter.check(principal.api_key, scope["path"] in ORDER_COMMANDS)
            if retry_after is not None:
                self._count(ErrorCode.RATE_LIMITED)
                await _answer(
                    send, 429,
                    error_body(ErrorCode.RATE_LIMITED, f"over this key's rate limit; retry in "
                               f"{retry_after} s"),
                    [(b"retry-after", str(retry_after).encode())],
                )  # fmt: skip
                return
        token = CURRENT.set(principal)
        try:
            await app(scope, _replay(body, receive), send)
        finally:
            CURRENT.reset(token)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: the app sees an empty body and its disconnect
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _refuse(self, send: Send, status: int, code: ErrorCode, message: str) -> None:
        self._count(code)
        await _answer(send, status, error_body(code, message))

    def _count(self, code: str) -> None:
        self.failures[code] = self.failures.get(code, 0) + 1


def iter_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route, also those of included routers: FastAPI keeps an included router as one
    entry holding its ``original_router`` (the gateway's routers have no prefix, so their
    routes' paths are the app's)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from iter_routes(getattr(included, "routes", ()))
        else:
            yield route


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the body read by the gate once, then the client's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(
    send: Send, status: int, payload: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class AuthFailureCollector(Collector):
    """``exchange_gateway_auth_failures_total{code}``: refused requests by error code."""

    def __init__(self, gate: AuthGate) -> None:
        self._gate = gate

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "exchange_gateway_auth_failures",
            "Requests refused by the access gate, by error code.",
            labels=["code"],
        )
        for code in (*(c.value for c in _GATE_CODES),):
            family.add_metric([code], self._gate.failures.get(code, 0))
        yield family


_GATE_CODES = (
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.TIMESTAMP_OUT_OF_WINDOW,
    ErrorCode.INVALID_SIGNATURE,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMITED,
)
