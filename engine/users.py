"""The user registry: which users exist, their roles, and the API keys they hold.

Theory of operation
-------------------
Users and keys are event-sourced state like balances: ``CreateUser``, ``AddApiKey`` and
``RevokeApiKey`` are commands on the log, so a replay (or a snapshot) rebuilds the registry
exactly. The engine assigns user ids itself, from a counter: 1, 2, 3, ... in creation order
(it never reads a clock or draws a random id, so a replay assigns the same ids). The fee account
(``Markets.fee_account``, configuration, not a command) is always known and the counter skips
its id, so no created user ever receives the fees.

A key id is carried on the command (the gateway derives it from the public key); the engine
only checks that it is new. Key ids are never reused: a revoked key stays in the registry,
revoked, so adding it again is DUPLICATE_API_KEY and revoking it again changes nothing. The
public key is opaque here: the gateway checks its format and verifies signatures with it.

The registry only answers questions and applies changes the engine has already validated
(validate, then mutate); refusals are the engine's ``CommandRejected`` events.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from engine.enums import Role
from engine.errors import InvariantError
from engine.snapshot import SnapshotFormatError


class ApiKey(NamedTuple):
    """One registered key: whose it is, its public key, and whether it is revoked."""

    user_id: int
    public_key: str
    revoked: bool


class Users:
    """Users (id -> role) and API keys (key id -> :class:`ApiKey`)."""

    __slots__ = ("_fee_account", "_keys", "_next_user_id", "_roles", "known")

    def __init__(self, fee_account: int) -> None:
        self._fee_account = fee_account
        self._roles: dict[int, Role] = {}
        self._keys: dict[str, ApiKey] = {}
        self._next_user_id = self._skip_fee_account(1)
        # Every user id a user-scoped command may name: the created users and the fee account.
        # Only ever tested for membership (never iterated), so a set cannot reach the output.
        self.known: set[int] = {fee_account}

    def _skip_fee_account(self, user_id: int) -> int:
        return user_id + 1 if user_id == self._fee_account else user_id

    # ------------------------------------------------------------------ reads

    @property
    def next_user_id(self) -> int:
        """The id the next ``CreateUser`` gets."""
        return self._next_user_id

    def is_known(self, user_id: object) -> bool:
        """Whether ``user_id`` is a created user or the fee account (an exact int only)."""
        return type(user_id) is int and user_id in self.known

    def role(self, user_id: int) -> Role | None:
        """The created user's role; None for an unknown user and for the fee account."""
        return self._roles.get(user_id)

    def key(self, api_key: str) -> ApiKey | None:
        return self._keys.get(api_key)

    def users(self) -> list[tuple[int, Role]]:
        """Every created user as (user_id, role), by id."""
        return sorted(self._roles.items())

    def api_keys(self) -> list[tuple[str, ApiKey]]:
        """Every key ever added, revoked ones included, by key id."""
        return sorted(self._keys.items())

    # ------------------------------------------------------------------ changes (validated)

    def create(self, role: Role, api_key: str, public_key: str) -> int:
        """Register a new user holding ``api_key``; returns its id. The caller checked the key
        is new."""
        if api_key in self._keys:
            raise InvariantError(f"api key {api_key!r} passed the duplicate check but exists")
        user_id = self._next_user_id
        self._roles[user_id] = role
        self.known.add(user_id)
        self._keys[api_key] = ApiKey(user_id, public_key, False)
        self._next_user_id = self._skip_fee_account(user_id + 1)
        return user_id

    def add_key(self, user_id: int, api_key: str, public_key: str) -> None:
        if user_id not in self._roles or api_key in self._keys:
            raise InvariantError(f"add of key {api_key!r} for user {user_id} was not validated")
        self._keys[api_key] = ApiKey(user_id, public_key, False)

    def revoke(self, api_key: str) -> ApiKey:
        """Mark a known, unrevoked key revoked; returns its new state."""
        key = self._keys.get(api_key)
        if key is None or key.revoked:
            raise InvariantError(f"revoke of key {api_key!r} was not validated")
        revoked = self._keys[api_key] = key._replace(revoked=True)
        return revoked

    # ------------------------------------------------------------------ state as plain data

    def export(self) -> tuple[Any, ...]:
        """(next user id, [(user_id, role value)], [(api_key, user_id, public_key, revoked)]),
        sorted, for the snapshot and the state hash. Roles by value, never by position."""
        return (
            self._next_user_id,
            [(user_id, role.value) for user_id, role in sorted(self._roles.items())],
            [(api_key, *key) for api_key, key in sorted(self._keys.items())],
        )

    def load(self, data: Any) -> None:
        """Fill an empty registry from :meth:`export`'s data."""
        if self._roles or self._keys:
            raise InvariantError("load into a registry that already holds users")
        try:
            next_user_id, users, keys = data
            roles = {role.value: role for role in Role}
            for user_id, role in users:
                self._roles[user_id] = roles[role]
                self.known.add(user_id)
            for api_key, user_id, public_key, revoked in keys:
                self._keys[api_key] = ApiKey(user_id, public_key, revoked)
        except (TypeError, ValueError, KeyError) as e:
            raise SnapshotFormatError(f"snapshot user registry is unreadable: {e!r}") from e
        self._next_user_id = next_user_id
