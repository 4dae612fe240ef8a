"""Which role each route needs: one table, read by the gate (:mod:`gateway.auth.gate`).

Rules (issue #14): every ``/api/v1/...`` route is signed except market data; traders place,
cancel, amend and read their own data; operators manage users and keys, fund accounts and
read anyone's data, and never trade. Everything outside ``/api/`` (health, readiness,
metrics, docs, the dashboard) is public; signature headers sent to a public route are
ignored.

A ``/api/`` route missing from :data:`ACCESS` is refused to everyone but operators (fail
closed), and the table-driven test (tests/gateway/test_gateway_auth_table.py) fails until
the route has a row here and there.
"""

from __future__ import annotations

from enum import Enum

from gateway.auth.principal import Role


class Access(Enum):
    PUBLIC = "public"  # no signature; headers ignored
    TRADE = "trade"  # traders only; an order command (its own rate limit)
    READ = "read"  # traders (their own data) and operators (anyone's)
    OPERATOR = "operator"  # operators only

    def allows(self, role: Role) -> bool:
        if self is Access.TRADE:
            return role is Role.TRADER
        if self is Access.OPERATOR:
            return role is Role.OPERATOR
        return True


CREATE_PATH = "/api/v1/order/create"
CANCEL_PATH = "/api/v1/order/cancel"
CANCEL_ALL_PATH = "/api/v1/order/cancel-all"
AMEND_PATH = "/api/v1/order/amend"
DEPOSIT_PATH = "/api/v1/deposit"
WITHDRAW_PATH = "/api/v1/withdraw"
ADMIN_USERS_PATH = "/api/v1/admin/users"
ADMIN_USER_KEYS_PATH = "/api/v1/admin/users/{user_id}/keys"
ADMIN_KEY_PATH = "/api/v1/admin/keys/{api_key}"

# (method, route path template) -> access. Templates as FastAPI declares them.
ACCESS: dict[tuple[str, str], Access] = {
    ("POST", CREATE_PATH): Access.TRADE,
    ("POST", CANCEL_PATH): Access.TRADE,
    ("POST", CANCEL_ALL_PATH): Access.TRADE,
    ("POST", AMEND_PATH): Access.TRADE,
    ("POST", DEPOSIT_PATH): Access.OPERATOR,
    ("POST", WITHDRAW_PATH): Access.OPERATOR,
    ("GET", "/api/v1/order/active"): Access.READ,
    ("GET", "/api/v1/order/history"): Access.READ,
    ("GET", "/api/v1/order/{order_id:digits}"): Access.READ,
    ("GET", "/api/v1/trades"): Access.READ,
    ("GET", "/api/v1/balances"): Access.READ,
    ("POST", ADMIN_USERS_PATH): Access.OPERATOR,
    ("POST", ADMIN_USER_KEYS_PATH): Access.OPERATOR,
    ("DELETE", ADMIN_KEY_PATH): Access.OPERATOR,
    # Market data (issue #15): public.
    ("GET", "/api/v1/depth"): Access.PUBLIC,
    ("GET", "/api/v1/trades/recent"): Access.PUBLIC,
    ("GET", "/api/v1/ticker"): Access.PUBLIC,
    ("GET", "/api/v1/klines"): Access.PUBLIC,
}

# Order commands: the per-key order rate limit applies to them.
ORDER_COMMANDS = frozenset(p for (_, p), a in ACCESS.items() if a is Access.TRADE)

SIGNED_PREFIX = "/api/"


def access_of(method: str, template: str) -> Access:
    """The access of a route (by its template): the table's, PUBLIC outside ``/api/``, and
    OPERATOR (fail closed) for an ``/api/`` route the table does not list."""
    access = ACCESS.get((method, template))
    if access is not None:
        return access
    return Access.OPERATOR if template.startswith(SIGNED_PREFIX) else Access.PUBLIC
