"""The HTTP envelope: every answer of the API, success or error, and how errors become one.

``{"success": true, "data": ...}`` or ``{"success": false, "error": {"code", "message"}}``
(the codes and their statuses are in :mod:`gateway.errors`). Handlers raise; the exception
handlers installed by :func:`install_error_handlers` and the fast path of
:mod:`gateway.fastpath` both answer through :func:`render_error`, and a last-resort middleware
(:class:`CatchAllMiddleware`) turns any bug into a 500 envelope. No route answers 422.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError, BrokerUnavailable, ErrorCode, clip
from settlement.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"
_encode = json.JSONEncoder(separators=(",", ":")).encode


def ok_body(data: Any) -> bytes:
    """A success envelope; ``data`` holds only JSON types (StrEnum members are str)."""
    return b'{"success":true,"data":' + _encode(data).encode() + b"}"


def error_body(code: str, message: str) -> bytes:
    return _encode({"success": False, "error": {"code": code, "message": message}}).encode()


def ok(data: Any, status: int = 200) -> Response:
    return Response(ok_body(data), status, media_type=JSON_MEDIA_TYPE)


def error_response(
    code: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(error_body(code, message), status, headers=headers, media_type=JSON_MEDIA_TYPE)


def render_error(exc: Exception) -> tuple[int, bytes]:
    """The envelope of an exception raised while serving a request: (status, body)."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.code, exc.message)
    if isinstance(exc, BrokerUnavailable):
        log.warning("broker unavailable: %s", exc)
        return 503, error_body(ErrorCode.BROKER_UNAVAILABLE, f"broker unavailable: {exc}")
    if isinstance(exc, StoreError):
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc)
        else:  # not transient (e.g. no schema yet): still not the client's fault
            log.error("store error: %s", exc)
        return 503, error_body(ErrorCode.STORE_UNAVAILABLE, "the store is unavailable")
    return 500, error_body(ErrorCode.INTERNAL_ERROR, "internal error")


class CatchAllMiddleware:
    """Last resort: any exception that escaped the handlers becomes a 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(ErrorCode.INTERNAL_ERROR, "internal error", 500)
            await response(scope, receive, send)


async def _gateway_error(_: Request, exc: Exception) -> Response:
    status, body = render_error(exc)
    return Response(body, status, media_type=JSON_MEDIA_TYPE)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response(ErrorCode.INVALID_REQUEST, "invalid request", 400)
    err = errors[0]
    loc = [str(part) for part in err.get("loc", ())]
    where = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
    return error_response(
        ErrorCode.INVALID_REQUEST, f"{clip(where, 60).strip(chr(39))}: {err.get('msg')}", 400
    )


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        code, message = ErrorCode.NOT_FOUND, "no such route"
    elif status == 405:
        code, message = ErrorCode.METHOD_NOT_ALLOWED, "method not allowed on this route"
    elif status == 413:
        code, message = ErrorCode.REQUEST_TOO_LARGE, str(exc.detail)
    elif status < 500:
        code, message = ErrorCode.INVALID_REQUEST, str(exc.detail)
    else:
        code, message = ErrorCode.INTERNAL_ERROR, str(exc.detail)
    return error_response(code, message, status, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or a handler raises leaves as an envelope (400 instead of 422)."""
    for exc_type in (ApiError, BrokerUnavailable, StoreError):
        app.add_exception_handler(exc_type, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
