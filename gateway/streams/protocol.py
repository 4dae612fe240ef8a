"""The WebSocket protocol of ``GET /ws``: client requests, parsed and checked (no I/O).

Client -> server, one JSON object per text message:

* ``{"op": "subscribe", "streams": ["depth@BTC_USDT", "trades@BTC_USDT", "ticker@BTC_USDT"]}``
  -> ``{"op": "subscribed", "streams": [...]}``; ``unsubscribe`` -> ``unsubscribed``.
* ``{"op": "login", "api_key", "timestamp": <int ms>, "signature"}`` -> ``{"op": "login",
  "success": true, "user_id"}``, or an error then close code 4401.
* ``{"op": "ping"}`` -> ``{"op": "pong"}``; ``{"op": "pong"}`` answers the server's
  ``{"op": "ping", "ts"}`` (any message counts as a sign of life).

Anything else -> ``{"op": "error", "code", "message"}`` (the connection stays open).
Server -> client data: ``{"stream": "<name>", "data": {...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STREAM_KINDS = ("depth", "trades", "ticker")
MAX_STREAMS = 64  # per request and per connection
MAX_MESSAGE_CHARS = 4096

INVALID_REQUEST = "INVALID_REQUEST"
UNKNOWN_STREAM = "UNKNOWN_STREAM"
TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
UNAUTHORIZED = "UNAUTHORIZED"

LOGIN_FAILED_CODE = 4401  # the close code after a failed login
HEARTBEAT_CLOSE_CODE = 4408  # no sign of life after a ping


class ProtocolError(Exception):
    """A request the server answers with an error message (the connection stays open)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> dict[str, Any]:
        return {"op": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    streams: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe:
    streams: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    api_key: str
    timestamp_ms: int
    signature: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    pass


Request = Subscribe | Unsubscribe | Login | Ping | Pong


def parse(text: str, symbols: frozenset[str]) -> Request:
    """The request in ``text``; ProtocolError with the reason if it is not a valid one."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(INVALID_REQUEST, f"a message is at most {MAX_MESSAGE_CHARS} chars")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(INVALID_REQUEST, "a message must be a JSON object") from None
    if not isinstance(body, dict):
        raise ProtocolError(INVALID_REQUEST, "a message must be a JSON object")
    op = body.get("op")
    if op in ("subscribe", "unsubscribe"):
        streams = body.get("streams")
        if not isinstance(streams, list) or not streams:
            raise ProtocolError(INVALID_REQUEST, "streams must be a non-empty list")
        if len(streams) > MAX_STREAMS:
            raise ProtocolError(TOO_MANY_STREAMS, f"at most {MAX_STREAMS} streams")
        names = [_stream(s, symbols) for s in streams]
        names = list(dict.fromkeys(names))  # once each, in the order asked
        return Subscribe(streams=names) if op == "subscribe" else Unsubscribe(streams=names)
    if op == "login":
        api_key = body.get("api_key")
        timestamp = body.get("timestamp")
        signature = body.get("signature")
        if not isinstance(api_key, str) or not api_key or len(api_key) > 128:
            raise ProtocolError(INVALID_REQUEST, "api_key must be a non-empty string")
        if type(timestamp) is not int or timestamp < 0:
            raise ProtocolError(INVALID_REQUEST, "timestamp must be an integer (epoch ms)")
        if not isinstance(signature, str) or not signature or len(signature) > 256:
            raise ProtocolError(INVALID_REQUEST, "signature must be a non-empty string")
        return Login(api_key=api_key, timestamp_ms=timestamp, signature=signature)
    if op == "ping":
        return Ping()
    if op == "pong":
        return Pong()
    raise ProtocolError(INVALID_REQUEST, "op must be subscribe, unsubscribe, login, ping or pong")


def _stream(value: object, symbols: frozenset[str]) -> str:
    if not isinstance(value, str) or len(value) > 80:
        raise ProtocolError(INVALID_REQUEST, "a stream is a string such as depth@BTC_USDT")
    kind, at, symbol = value.partition("@")
    if not at or kind not in STREAM_KINDS:
        raise ProtocolError(
            UNKNOWN_STREAM, f"unknown stream {value!r}: depth@, trades@ or ticker@ a symbol"
        )
    if symbol not in symbols:
        raise ProtocolError(UNKNOWN_STREAM, f"unknown symbol in stream {value!r}")
    return value
