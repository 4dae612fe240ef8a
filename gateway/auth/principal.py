"""Who a request acts as: the :class:`Principal` of its key, and the user it may name.

The gate (:mod:`gateway.auth.gate`) sets the principal of an authenticated request in a
context variable for the duration of the request; the command and read services ask
:func:`acting_user` which user a request acts on (traders: themselves; operators: the user
they name). A context variable rather than a parameter, so the command cores keep the fast
path's ``(body, wait, timeout_ms)`` signature and the sync read handlers (run in the
threadpool, which copies the context) see it too.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from engine.enums import Role
from gateway.errors import ApiError, ErrorCode


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An accepted key: its id, its user (None for the configured operator), its role."""

    api_key: str
    user_id: int | None
    role: Role


CURRENT: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current() -> Principal:
    """The principal of the request being served; a bug if the gate did not set one."""
    principal = CURRENT.get()
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHENTICATED, "this route needs a signed request")
    return principal


def acting_user(user_id: int | None) -> int:
    """The user a request acts on, given the ``user_id`` it names (None when it names none).

    A trader acts as its key's user: naming no user or that user is the same, another is
    403 FORBIDDEN. An operator must name the user.
    """
    principal = current()
    if principal.role is Role.OPERATOR:
        if user_id is None:
            raise ApiError(ErrorCode.INVALID_REQUEST, "user_id: an operator names the user")
        return user_id
    own = principal.user_id
    if own is None:  # a trader key always has a user; refuse rather than guess
        raise ApiError(ErrorCode.FORBIDDEN, "this key has no user")
    if user_id is not None and user_id != own:
        raise ApiError(ErrorCode.FORBIDDEN, "user_id is not the key's user")
    return own


__all__ = ["CURRENT", "Principal", "Role", "acting_user", "current", "is_operator"]


def is_operator() -> bool:
    principal = CURRENT.get()
    return principal is not None and principal.role is Role.OPERATOR
