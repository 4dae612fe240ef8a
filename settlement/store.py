"""The settlement store port: what the settlement service writes and the REST gateway reads.

Theory of operation
-------------------
The store is a *read model* of the engine's output log. Every write is derived by the pure
:func:`settlement.projection.project` from ``EngineOutput`` records and is versioned by
``EngineOutput.sequence``: a row keeps the state of the highest sequence that touched it, and
facts that never change (an order's update trail, a trade) are keyed by their identity. So
``apply`` is an idempotent, order-insensitive upsert: applying a batch twice, applying
duplicates, or applying batches from several Kafka partitions in any interleaving gives the
same store, which :meth:`SettlementStore.digest` proves.

Adapters (SQLite, Cassandra) only translate the projected rows into their own statements and
their driver errors into :class:`StoreUnavailable` (retry later, do not commit offsets) or
:class:`StoreError` (a bug or bad configuration: crash, fix, replay).

Rows are ``NamedTuple``s rather than the frozen dataclasses used for events: a row *is* the
tuple of its columns, so it binds into ``executemany`` or a prepared statement with no copy,
and rows are what the hot write path allocates per event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from engine.enums import OrderStatus, OrderType, RejectReason, Role, Side, TimeInForce
from engine.errors import ExchangeError
from engine.events import EngineOutput

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "DIGEST_SECTIONS",
    "FINAL_STATUSES",
    "MAX_PAGE_LIMIT",
    "OPEN_STATUSES",
    "ApiKeyRow",
    "BalanceRow",
    "InvalidQuery",
    "OrderRow",
    "OrderUpdateRow",
    "SettlementStore",
    "StoreError",
    "StoreUnavailable",
    "TradeRow",
    "UserRow",
    "api_key_row_from_db",
    "balance_row_from_db",
    "canonical_digest",
    "check_page_limit",
    "order_row_from_db",
    "order_update_row_from_db",
    "trade_row_from_db",
    "user_row_from_db",
]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class StoreError(ExchangeError):
    """A store driver error that retrying will not fix (bad schema, bad query): a bug."""


class StoreUnavailable(StoreError):
    """The store is unreachable, locked, overloaded or read-only right now.

    The settlement service backs off and retries the same batch without committing its
    consumer offsets; the gateway answers 503. Always raised ``from`` the driver error.
    """


class InvalidQuery(StoreError):
    """A query argument is out of range (e.g. a page limit of 0). A caller bug."""


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------

OPEN_STATUSES: frozenset[OrderStatus] = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})
# The statuses an order ends in; ``order_statistics`` counts orders by these.
FINAL_STATUSES: tuple[OrderStatus, ...] = (
    OrderStatus.FILLED,
    OrderStatus.CANCELLED,
    OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
)

DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000


class OrderRow(NamedTuple):
    """An order's current state, as the REST API returns it (integers; the gateway scales)."""

    order_id: int
    client_order_id: str | None
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None  # ticks; None for MARKET
    quantity: int  # lots
    filled_quantity: int  # lots
    remaining_quantity: int  # lots; 0 once complete
    cumulative_quote: int  # quote minor units
    avg_fill_price: int  # ticks (floor); 0 with no fill
    status: OrderStatus
    reject_reason: RejectReason | None
    created_at: int  # epoch ms
    updated_at: int  # epoch ms
    version: int  # EngineOutput.sequence of the last write

    @property
    def is_open(self) -> bool:
        """True while the order rests in the book (it belongs in ``active_orders``)."""
        return self.status in OPEN_STATUSES


class OrderUpdateRow(NamedTuple):
    """One ``OrderUpdated`` event: an entry of an order's trail and of the update stream."""

    order_id: int
    version: int  # EngineOutput.sequence that produced this update
    command_id: int
    user_id: int
    symbol: str
    status: OrderStatus
    filled_quantity: int
    remaining_quantity: int
    cumulative_quote: int
    avg_fill_price: int
    last_fill_price: int
    last_fill_quantity: int
    reject_reason: RejectReason | None
    updated_at: int


class TradeRow(NamedTuple):
    """One side of a trade, seen by one user (each trade gives a maker and a taker row)."""

    user_id: int
    trade_id: int
    is_maker: bool
    order_id: int  # this user's order
    symbol: str
    side: Side  # this user's side
    price: int  # ticks
    quantity: int  # lots
    quote_quantity: int  # quote minor units
    fee: int  # minor units of fee_asset
    fee_asset: str
    executed_at: int  # epoch ms
    version: int


class BalanceRow(NamedTuple):
    user_id: int
    asset: str
    available: int  # minor units
    locked: int  # minor units
    version: int


class UserRow(NamedTuple):
    """A user the engine created (``UserCreated``)."""

    user_id: int
    role: Role
    label: str | None
    created_at: int  # epoch ms
    version: int  # EngineOutput.sequence of the last write


class ApiKeyRow(NamedTuple):
    """An API key's latest state (``ApiKeyUpdated``): what a gateway verifies requests with.

    ``sequence`` is the EngineOutput.sequence of the last change (the row's version), so a
    gateway that loaded the keys can follow the output stream from there.
    """

    api_key: str
    user_id: int
    role: Role
    public_key: str  # base64 of the raw Ed25519 public key
    revoked: bool
    sequence: int


# Converters from a driver's raw row (columns selected in field order) to typed rows. Shared
# by the adapters so both return identical values, which keeps their digests comparable.


def order_row_from_db(r: Sequence[Any]) -> OrderRow:
    return OrderRow(
        r[0], r[1], r[2], r[3], Side(r[4]), OrderType(r[5]), TimeInForce(r[6]), r[7], r[8],
        r[9], r[10], r[11], r[12], OrderStatus(r[13]),
        None if r[14] is None else RejectReason(r[14]), r[15], r[16], r[17],
    )  # fmt: skip


def order_update_row_from_db(r: Sequence[Any]) -> OrderUpdateRow:
    return OrderUpdateRow(
        r[0], r[1], r[2], r[3], r[4], OrderStatus(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],
        None if r[12] is None else RejectReason(r[12]), r[13],
    )  # fmt: skip


def trade_row_from_db(r: Sequence[Any]) -> TradeRow:
    return TradeRow(
        r[0], r[1], bool(r[2]), r[3], r[4], Side(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],
        r[12],
    )  # fmt: skip


def balance_row_from_db(r: Sequence[Any]) -> BalanceRow:
    return BalanceRow(r[0], r[1], r[2], r[3], r[4])


def user_row_from_db(r: Sequence[Any]) -> UserRow:
    return UserRow(r[0], Role(r[1]), r[2], r[3], r[4])


def api_key_row_from_db(r: Sequence[Any]) -> ApiKeyRow:
    return ApiKeyRow(r[0], r[1], Role(r[2]), r[3], bool(r[4]), r[5])


def check_page_limit(limit: int) -> None:
    """Cheap guard at the query entry: a page holds 1..MAX_PAGE_LIMIT rows."""
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_PAGE_LIMIT}, got {limit}")


# --------------------------------------------------------------------------------------
# Digest
# --------------------------------------------------------------------------------------

# The logical read model, section by section, in the order the digest hashes it. Each
# adapter yields the rows of every section sorted by the section's key (given in brackets),
# so a SQLite store and a Cassandra store holding the same outputs have the same digest.
DIGEST_SECTIONS: tuple[str, ...] = (
    "orders",  # OrderRow [order_id]
    "active_orders",  # OrderRow of open orders [order_id]
    "order_lookup",  # (order_id, user_id, symbol, created_at) [order_id]
    "order_history_buckets",  # (user_id, bucket) [user_id, bucket]
    "order_final_status",  # (user_id, bucket, final_status, order_id) [all]
    "order_updates",  # OrderUpdateRow [order_id, version]
    "order_updates_stream",  # (day, bucket, *OrderUpdateRow) [day, bucket, version, order_id]
    "trades",  # TradeRow [user_id, trade_id, is_maker]
    "trade_buckets",  # (user_id, bucket) [user_id, bucket]
    "balances",  # BalanceRow [user_id, asset]
    "book_levels",  # BookLevelRow with quantity > 0 [symbol, side, price]
    "market_trades",  # MarketTradeRow [symbol, trade_id]
    "klines",  # KlineRow [symbol, interval, open_time]
    "users",  # UserRow [user_id]
    "api_keys",  # ApiKeyRow [api_key]
    "settlement_progress",  # (max_sequence,)
)


def canonical_digest(sections: Iterable[tuple[str, Iterable[Sequence[Any]]]]) -> str:
    """SHA-256 over every section's rows, each row as compact JSON on its own line.

    ``sections`` must come in :data:`DIGEST_SECTIONS` order with rows already sorted by the
    section key. Enum members hash as their string values, booleans as ``true``/``false``.
    """
    h = hashlib.sha256()
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    seen: list[str] = []
    for name, rows in sections:
        seen.append(name)
        h.update(f"#{name}\n".encode())
        for row in rows:
            h.update(dumps(list(row)).encode())
            h.update(b"\n")
    if tuple(seen) != DIGEST_SECTIONS:
        raise StoreError(f"digest sections out of order: {seen}")
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# The port
# --------------------------------------------------------------------------------------


class SettlementStore(Protocol):
    """The read-model store. Adapters: ``SqliteStore``, ``CassandraStore``.

    Every method may raise :class:`StoreUnavailable` (transient: retry) or
    :class:`StoreError` (permanent). Query methods are pure reads and thread-safe.
    """

    def init_schema(self) -> None:
        """Create every table and index if missing. Idempotent."""
        ...

    def apply(self, outputs: Sequence[EngineOutput]) -> None:
        """Write the whole batch durably, or raise. Idempotent and order-insensitive."""
        ...

    def ping(self) -> None:
        """Readiness: return if the store answers a read, else raise StoreUnavailable."""
        ...

    def max_sequence(self) -> int:
        """Highest ``EngineOutput.sequence`` applied so far (0 for an empty store)."""
        ...

    def digest(self) -> str:
        """Deterministic hash of the whole read model (see :data:`DIGEST_SECTIONS`)."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    def active_orders(self, user_id: int, symbol: str | None = None) -> list[OrderRow]:
        """The user's open orders, newest (highest order_id) first."""
        ...

    def order_history(
        self,
        user_id: int,
        symbol: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        before: int | None = None,
    ) -> tuple[list[OrderRow], int | None]:
        """One page of the user's orders with order_id < ``before``, newest first.

        Returns ``(rows, next_cursor)``; ``next_cursor`` is the ``before`` of the next page,
        or None when this page is the last.
        """
        ...

    def get_order(self, order_id: int) -> OrderRow | None:
        """The order's current state, or None. The caller checks the user_id."""
        ...

    def order_trail(self, order_id: int) -> list[OrderUpdateRow]:
        """Every update of the order, oldest first."""
        ...

    def trades(
        self, user_id: int, symbol: str | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[TradeRow]:
        """The user's trades, newest first."""
        ...

    def balances(self, user_id: int) -> list[BalanceRow]:
        """The user's balances, sorted by asset."""
        ...

    def order_statistics(self, user_id: int) -> dict[OrderStatus, int]:
        """How many of the user's orders ended in each final status (zeros included)."""
        ...

    def get_user(self, user_id: int) -> UserRow | None:
        """The user the engine created with this id, or None."""
        ...

    def api_keys(self) -> list[ApiKeyRow]:
        """Every API key ever added, revoked ones included, sorted by key id."""
        ...

    def api_keys_since(self, sequence: int) -> list[ApiKeyRow]:
        """The keys whose latest change has a sequence above ``sequence``, by key id."""
        ...
