"""A framework-free ASGI path for the command routes (create, cancel, deposit, withdraw).

Why: on one uvicorn worker the Starlette/FastAPI machinery around a request (middleware
stack, routing, dependency solving, Request/Response objects) costs about twice what the
create-order work itself does (parse, validate, scale, encode, produce). Commands are the
hot path, so :class:`gateway.app.GatewayAPI` hands a ``POST`` to one of these paths straight
to the same core function the FastAPI route calls, and writes the answer as two raw ASGI
messages.

Same behaviour by construction: the core function (validation, errors, results) is shared
with the FastAPI route; only the transport differs. Anything this path does not handle
trivially (a query string other than ``wait``/``timeout_ms`` with plain valid values, a
non-POST method) falls through to FastAPI, which produces the canonical answer, including
its validation errors. A test runs the table of requests through both paths and compares.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.errors import ApiError, BrokerUnavailable, ErrorCode
from settlement.store import StoreError

log = logging.getLogger(__name__)

# (raw request body, wait, timeout_ms) -> (HTTP status, response body)
CommandCore = Callable[[bytes, bool, int], Awaitable[tuple[int, bytes]]]
ErrorRenderer = Callable[[Exception], tuple[int, bytes]]

_WAIT_VALUES = {b"true": True, b"false": False, b"1": True, b"0": False}
_JSON_HEADERS = [(b"content-type", b"application/json")]


def parse_command_query(
    query: bytes, default_timeout_ms: int, max_timeout_ms: int
) -> tuple[bool, int] | None:
    """``(wait, timeout_ms)`` from a plain query string, or None to let FastAPI decide."""
    if not query:
        return False, default_timeout_ms
    wait: bool | None = None
    timeout: int | None = None
    for part in query.split(b"&"):
        key, sep, value = part.partition(b"=")
        if not sep:
            return None
        if key == b"wait" and wait is None:
            wait = _WAIT_VALUES.get(value)
            if wait is None:
                return None
        elif key == b"timeout_ms" and timeout is None:
            if not (value.isdigit() and len(value) <= 6 and 1 <= int(value) <= max_timeout_ms):
                return None
            timeout = int(value)
        else:
            return None
    return bool(wait), default_timeout_ms if timeout is None else timeout


async def serve_command(
    core: CommandCore,
    wait: bool,
    timeout_ms: int,
    max_body: int,
    render_error: ErrorRenderer,
    receive: Receive,
    send: Send,
) -> None:
    """Read the body, run ``core``, answer; every failure becomes an error envelope."""
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client left
                return
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > max_body:
                    raise ApiError(
                        ErrorCode.REQUEST_TOO_LARGE, f"the body exceeds {max_body} bytes"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status, payload = await core(body, wait, timeout_ms)
    except (ApiError, BrokerUnavailable, StoreError) as e:
        status, payload = render_error(e)
    except Exception as e:
        log.exception("unhandled error in a command")
        status, payload = render_error(e)
    await _send(send, status, payload)


async def _send(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def is_command(scope: Scope, paths: dict[str, Any]) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in paths
