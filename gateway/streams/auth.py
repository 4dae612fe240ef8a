"""WebSocket login: the REST signature scheme over ``timestamp + "GET" + "/ws"``.

The stream endpoint needs one thing of the access layer (issue #14): given a login's
``api_key``, ``timestamp`` and ``signature``, the user it proves, or nothing.
:class:`SignedLogin` does that with two functions the access layer provides: the key
registry's lookup (key id -> the key's user and base64 public key, None for an unknown or
revoked key) and the scheme's ``verify(public_key_b64, timestamp_ms, method, target, body,
signature_b64) -> bool``. A timestamp further than ``window_ms`` from the gateway's clock is
refused, as for a REST request, so a captured login cannot be replayed later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

LOGIN_METHOD = "GET"
LOGIN_TARGET = "/ws"
DEFAULT_WINDOW_MS = 30_000

KeyLookup = Callable[[str], "tuple[int, str] | None"]
Verify = Callable[[str, int, str, str, bytes, str], bool]


class Authenticator(Protocol):
    def authenticate(self, api_key: str, timestamp_ms: int, signature: str) -> int | None:
        """The user id the login proves, or None."""
        ...


class SignedLogin:
    """:class:`Authenticator` over a key lookup and the signature check (module docstring)."""

    def __init__(
        self,
        lookup: KeyLookup,
        verify: Verify,
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._lookup = lookup
        self._verify = verify
        self._window_ms = window_ms
        self._clock_ms = clock_ms

    def authenticate(self, api_key: str, timestamp_ms: int, signature: str) -> int | None:
        if abs(self._clock_ms() - timestamp_ms) > self._window_ms:
            return None
        key = self._lookup(api_key)
        if key is None:
            return None
        user_id, public_key = key
        if not self._verify(public_key, timestamp_ms, LOGIN_METHOD, LOGIN_TARGET, b"", signature):
            return None
        return user_id
