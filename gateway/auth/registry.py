"""The keys this gateway accepts, learnt from the store at start and then from the engine's
output stream (never from a local file), plus the configured first operator.

Theory of operation
-------------------
Keys are event-sourced engine state: ``CreateUser``, ``AddApiKey`` and ``RevokeApiKey`` are
commands on the log, and each output that changes a key carries an ``ApiKeyUpdated`` with
the key's absolute post-state (user, role, public key, revoked). The registry keeps, per key
id, the newest state by engine sequence: :meth:`KeyRegistry.apply` ignores a state older
than the one it holds, so the store's rows (each with the sequence that wrote it) and the
stream's events may arrive in any order and overlap (see :mod:`gateway.auth.keyfeed` for why
they overlap and never leave a gap). A revoked key stays known (its version) but
:meth:`KeyRegistry.lookup` no longer returns it.

The first operator is configuration (``EXCHANGE_OPERATOR_PUBLIC_KEY``, key id ``operator``),
never on the log.

Threads: the follower thread writes (apply), the event loop reads (lookup). A lookup is one
dict read; writes replace whole immutable entries under a lock, so a reader sees the old
entry or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.auth.principal import Principal, Role
from gateway.auth.signing import OPERATOR_KEY_ID, public_key

_ROLES = frozenset(r.value for r in Role)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """An accepted key: who it is, and its public key, parsed once."""

    principal: Principal
    key: Ed25519PublicKey


class KeyRegistry:
    """Key id -> accepted key, versioned by engine sequence."""

    def __init__(self) -> None:
        self._entries: dict[str, KeyEntry] = {}
        self._versions: dict[str, int] = {}  # every key ever seen, revoked too
        self._lock = threading.Lock()
        self.applied = 0  # key states applied (observability, tests)

    # ---- reads (any thread) -----------------------------------------------------------

    def lookup(self, api_key: str) -> Principal | None:
        """The principal of an accepted key; None when unknown or revoked."""
        entry = self._entries.get(api_key)
        return None if entry is None else entry.principal

    def entry(self, api_key: str) -> KeyEntry | None:
        return self._entries.get(api_key)

    def __len__(self) -> int:
        return len(self._entries)

    async def wait_until(self, api_key: str, accepted: bool, timeout_s: float) -> bool:
        """Wait (polling every 5 ms) until the key is accepted (or refused); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while (api_key in self._entries) != accepted:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # ---- writes ----------------------------------------------------------------------

    def set_operator(self, public_key_b64: str) -> None:
        """Accept the configured first operator's key (id ``operator``)."""
        key = public_key(public_key_b64)
        if key is None:
            raise ValueError("the operator's public key is not base64 of 32 raw bytes")
        principal = Principal(api_key=OPERATOR_KEY_ID, user_id=None, role=Role.OPERATOR)
        with self._lock:
            self._entries[OPERATOR_KEY_ID] = KeyEntry(principal, key)

    def apply(
        self, *, api_key: str, user_id: int, role: str, public_key_b64: str, revoked: bool,
        sequence: int,
    ) -> bool:  # fmt: skip
        """Take a key's state as of engine ``sequence``; False if an equal or newer one is held."""
        if api_key == OPERATOR_KEY_ID:
            return False  # configuration, never from the log
        with self._lock:
            if self._versions.get(api_key, -1) >= sequence:
                return False
            self._versions[api_key] = sequence
            key = None if revoked else public_key(public_key_b64)
            known_role = str(role) in _ROLES
            if key is None or not known_role:  # revoked, no key one can sign for, or no role
                self._entries.pop(api_key, None)
            else:
                principal = Principal(api_key=api_key, user_id=user_id, role=Role(str(role)))
                self._entries[api_key] = KeyEntry(principal, key)
            self.applied += 1
        return True
