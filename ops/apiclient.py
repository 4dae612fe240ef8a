"""A signing HTTP client of the API: what ``exchange call``, ``exchange users|keys``, the load
generator and the benchmarks use to talk to a gateway (issue #14's scheme, see
:mod:`gateway.auth.signing`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx

from gateway.auth.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    OPERATOR_KEY_ID,
    KeyLike,
    key_id,
    private_key,
    public_key_b64,
    read_key_file,
    sign,
)

OPERATOR_KEY_FILE = "operator.key"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Signer(httpx.Auth):
    """Signs every request with one key: ``httpx.Client(auth=Signer(key))``.

    The key id defaults to the one derived from the public key; ``clock`` gives
    ``X-TIMESTAMP``. The signed target is the raw path and query as httpx sends them.
    """

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
    """Add the three headers to a built request (its body read)."""
    request.headers[HEADER_KEY] = api_key
    request.headers[HEADER_TIMESTAMP] = str(timestamp_ms)
    request.headers[HEADER_SIGNATURE] = sign(
        key, timestamp_ms, request.method, request.url.raw_path, request.content
    )


def signer_from_file(
    path: Path, api_key: str | None = None, operator_public_key: str | None = None
) -> Signer:
    """The signer of a key file. Its key id: ``api_key`` when given; ``operator`` for the
    configured operator's key (or a file named operator.key); else derived from the key."""
    key = read_key_file(path)
    if api_key is None:
        public = public_key_b64(key)
        if public == operator_public_key or path.name == OPERATOR_KEY_FILE:
            api_key = OPERATOR_KEY_ID
    return Signer(key, api_key)
