"""Signed requests for tests and benchmarks (the client of :mod:`ops.apiclient`), plus a
signer with a fresh key pair."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from urllib.parse import parse_qs

import httpx

from gateway.auth.signing import new_key_pair
from ops.apiclient import Signer, now_ms, sign_request

__all__ = ["ByUser", "Signer", "new_signer", "now_ms", "sign_request"]


def new_signer() -> Signer:
    """A signer with a fresh key pair (its key id derived from its public key)."""
    return Signer(new_key_pair()[0])


def is_operator_route(path: str) -> bool:
    """Routes only operators may use (gateway.auth.policy)."""
    from gateway.auth.policy import ACCESS, Access

    operator_paths = {p for (_, p), a in ACCESS.items() if a is Access.OPERATOR}
    return path in operator_paths or path.startswith("/api/v1/admin/")


def user_named(query: str, content: bytes) -> int | None:
    """The ``user_id`` a request's JSON body or query names, when it is a plain id."""
    try:
        body = json.loads(content) if content else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and type(body.get("user_id")) is int:
        user: int = body["user_id"]
        return user if 0 < user < 2**63 else None
    values = parse_qs(query).get("user_id", [])
    if values and values[0].isdigit() and len(values[0]) <= 19:
        return int(values[0]) or None
    return None


class ByUser(httpx.Auth):
    """Signs each request as whoever it is for, so tests read as before keys existed: the
    operator on operator routes, else the trader whose ``user_id`` the request names
    (``default_user`` when none). ``trader(user_id)`` gives that user's signer."""

    requires_request_body = True

    def __init__(
        self, operator: Signer, trader: Callable[[int], Signer], default_user: int = 1
    ) -> None:
        self.operator = operator
        self.trader = trader
        self.default_user = default_user

    def signer_for(self, path: str, query: str, content: bytes) -> Signer:
        if is_operator_route(path):
            return self.operator
        user = user_named(query, content)
        return self.trader(self.default_user if user is None else user)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not request.url.path.startswith("/api/"):
            # /health, /ready, /metrics, docs: public, and a stack may have no user to sign as.
            yield request
            return
        signer = self.signer_for(request.url.path, request.url.query.decode(), request.content)
        sign_request(request, signer.key, signer.api_key, signer.clock())
        yield request
