"""WebSocket login: the REST signature scheme over ``timestamp + "GET" + "/ws"``.

Wiring, once the access layer is in (``gateway.auth``, issue #14), in ``create_app`` after the
registry and the market data exist::

    app.state.stream_auth = SignedLogin(
        registry_lookup(app.state.keys), gateway.auth.signing.verify, window_ms=cfg.auth_window_ms
    )

Without it (``app.state.stream_auth`` None) every login is refused with 4401.

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
from typing import Any, Protocol

LOGIN_METHOD = "GET"
LOGIN_TARGET = "/ws"
DEFAULT_WINDOW_MS = 30_000

# The public key is whatever ``Verify`` takes: the base64 string of the contract, or the
# parsed key object the access layer's registry holds.
KeyLookup = Callable[[str], "tuple[int, Any] | None"]
Verify = Callable[[Any, int, str, str, bytes, str], bool]


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


class _Principal(Protocol):
    @property
    def user_id(self) -> int | None: ...


class _KeyEntry(Protocol):
    @property
    def principal(self) -> _Principal: ...
    @property
    def key(self) -> Any: ...


class KeyRegistryLike(Protocol):
    """What login needs of the access layer's key registry (``gateway.auth.registry``)."""

    def entry(self, api_key: str) -> _KeyEntry | None: ...


def registry_lookup(registry: KeyRegistryLike) -> KeyLookup:
    """A :data:`KeyLookup` over the access layer's registry: accepted keys of users only
    (the operator's key has no user, so it has no user stream)."""

    def lookup(api_key: str) -> tuple[int, Any] | None:
        entry = registry.entry(api_key)
        if entry is None or entry.principal.user_id is None:
            return None
        return entry.principal.user_id, entry.key

    return lookup
