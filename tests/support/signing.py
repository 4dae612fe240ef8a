"""Signed requests for tests and benchmarks: an ``httpx.Auth`` that signs with a key file's key.

``httpx.Client(base_url=url, auth=Signer(private_key, api_key))`` signs every request exactly
as a client must (gateway.auth.signing): the raw target as httpx sends it (path and query,
percent-encoding kept) and the body bytes as sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import httpx

from gateway.auth.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    KeyLike,
    key_id,
    new_key_pair,
    private_key,
    public_key_b64,
    sign,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Signer(httpx.Auth):
    """Sign each request with one key. ``clock`` gives X-TIMESTAMP (tests move it)."""

    requires_request_body = True

    def __init__(
        self, key: KeyLike, api_key: str | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        self.key = private_key(key)
        self.public_key = public_key_b64(self.key)
        self.api_key = api_key if api_key is not None else key_id(self.public_key)
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sign_request(request, self.key, self.api_key, self.clock())
        yield request


def sign_request(request: httpx.Request, key: KeyLike, api_key: str, timestamp_ms: int) -> None:
    """Add the three headers to a built request (its body must be read)."""
    target = request.url.raw_path  # path + "?" + query, as sent on the wire
    request.headers[HEADER_KEY] = api_key
    request.headers[HEADER_TIMESTAMP] = str(timestamp_ms)
    request.headers[HEADER_SIGNATURE] = sign(
        key, timestamp_ms, request.method, target, request.content
    )


def new_signer() -> Signer:
    """A signer with a fresh key pair (its key id derived from its public key)."""
    return Signer(new_key_pair()[0])
