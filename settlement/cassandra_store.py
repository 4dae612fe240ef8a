"""Cassandra adapter of the settlement store port. Tables: ``cql/schema.cql``.

Theory of operation
-------------------
``apply`` turns the projection's :class:`~settlement.projection.WriteSet` into writes in three
pure steps, then executes them:

1. :func:`plan_writes` maps every row to the statements of the tables that hold it, each with
   ``USING TIMESTAMP = version`` (the EngineOutput sequence) so Cassandra's last-write-wins
   *is* the version guard, and with the partition it lands in. An order that left the book
   becomes a ``DELETE ... USING TIMESTAMP`` of its ``active_orders`` row (see the schema for
   why a late replayed insert stays shadowed).
2. :func:`plan_batches` groups the writes by partition and cuts each group into UNLOGGED
   batches capped by statement count and estimated size, below Cassandra's
   ``batch_size_warn_threshold`` (5 KiB). A single-partition unlogged batch is one mutation
   on one replica set: cheaper than separate writes, and no batch log.
3. The batches (and single statements) run concurrently with a bounded window
   (``execute_concurrent``). Ordering does not matter: every write is idempotent and
   versioned. Then the klines of every bucket the batch's trades fall in are recomputed from
   what is stored, shortest interval first (:func:`settlement.market_data.rebuild_klines`;
   each level is written before the next one reads it). The progress row goes last, after
   every data write succeeded.

``apply`` returns only when every write was acknowledged at the configured consistency
(LOCAL_QUORUM by default), so the settlement service may then commit its offsets. Any
driver error meaning "not now" (no host, timeout, unavailable, overloaded) is raised as
:class:`StoreUnavailable`; the batch is safe to retry as a whole.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cassandra import (
    ConsistencyLevel,
    FunctionFailure,
    OperationTimedOut,
    RequestExecutionException,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import ServerError
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, tuple_factory

from engine.enums import OrderStatus
from engine.events import EngineOutput
from settlement.market_data import (
    DEFAULT_KLINE_LIMIT,
    INTERVAL_MS,
    PART_BITS,
    BookLevelRow,
    KlineRow,
    MarketDataStore,
    MarketTradeRow,
    TickerInputs,
    book_level_row_from_db,
    check_kline_query,
    kline_row_from_db,
    market_trade_row_from_db,
    rebuild_klines,
    sorted_levels,
    ticker_from_klines,
)
from settlement.projection import WriteSet, order_bucket, project, stream_partition, trade_bucket
from settlement.store import (
    DEFAULT_PAGE_LIMIT,
    FINAL_STATUSES,
    ApiKeyRow,
    BalanceRow,
    OrderRow,
    OrderUpdateRow,
    SettlementStore,
    StoreError,
    StoreUnavailable,
    TradeRow,
    UserRow,
    api_key_row_from_db,
    balance_row_from_db,
    canonical_digest,
    check_page_limit,
    order_row_from_db,
    order_update_row_from_db,
    trade_row_from_db,
    user_row_from_db,
)

__all__ = [
    "SCHEMA_PATH",
    "TABLES",
    "CassandraStore",
    "PlannedWrite",
    "plan_batches",
    "plan_writes",
    "schema_statements",
    "translate_error",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "cql" / "schema.cql"
TABLES = (
    "active_orders",
    "order_lookup",
    "order_history",
    "order_history_buckets",
    "order_final_status",
    "order_trail",
    "order_updates_stream",
    "trades_by_user",
    "trade_buckets",
    "balances",
    "users",
    "api_keys",
    "settlement_progress",
    "book_levels",
    "market_trades",
    "market_trade_hours",
    "kline_parts",
    "klines",
    "kline_periods",
)
_PROGRESS_NAME = "engine-output"
_NO_CURSOR = (1 << 63) - 1
_KEYSPACE_RE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_FINAL = frozenset(FINAL_STATUSES)
_OPEN = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})

# Batch caps. Cassandra warns above 5 KiB of mutation data per batch and fails at 50 KiB;
# the estimate below over-counts a little, and 4,000 leaves room for per-cell overhead.
DEFAULT_MAX_BATCH_STATEMENTS = 20
DEFAULT_MAX_BATCH_BYTES = 4_000

# ---------------------------------------------------------------------------------------
# Statements. {ks} is the keyspace (validated). Column lists are in row-field order so a
# selected row converts with the shared *_row_from_db functions.
# ---------------------------------------------------------------------------------------

_ORDER_COLS = (
    "order_id, client_order_id, user_id, symbol, side, order_type, time_in_force, price, "
    "quantity, filled_quantity, remaining_quantity, cumulative_quote, avg_fill_price, status, "
    "reject_reason, created_at, updated_at, version"
)
_UPDATE_COLS = (
    "order_id, version, command_id, user_id, symbol, status, filled_quantity, "
    "remaining_quantity, cumulative_quote, avg_fill_price, last_fill_price, "
    "last_fill_quantity, reject_reason, updated_at"
)
_TRADE_COLS = (
    "user_id, trade_id, is_maker, order_id, symbol, side, price, quantity, quote_quantity, "
    "fee, fee_asset, executed_at, version"
)
_BALANCE_COLS = "user_id, asset, available, locked, version"
_USER_COLS = "user_id, role, label, created_at, version"
_KEY_COLS = "api_key, user_id, role, public_key, revoked, version"
_LEVEL_COLS = "symbol, side, price, quantity, order_count, update_id, version"
_MARKET_TRADE_COLS = (
    "symbol, trade_id, price, quantity, quote_quantity, taker_side, executed_at, version"
)
_KLINE_COLS = (
    "symbol, interval, open_time, close_time, open, high, low, close, volume, quote_volume, "
    "trade_count, first_trade_id, last_trade_id, version"
)
_HOUR_MS = 3_600_000
_MAX_LIMIT = (1 << 31) - 1  # CQL LIMIT is an int
_KLINES_PER_PERIOD = 1_000  # a klines partition holds at most this many rows


def kline_period(open_time: int, interval_ms: int) -> int:
    """The klines partition an open time falls in (see cql/schema.cql)."""
    return open_time // (interval_ms * _KLINES_PER_PERIOD)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# Writes: every one ends with "USING TIMESTAMP ?" bound last, except DELETE/UPDATE where the
# timestamp marker comes first (CQL grammar); plan_writes binds accordingly.
_WRITES: dict[str, str] = {
    "history": f"INSERT INTO {{ks}}.order_history (bucket, {_ORDER_COLS}) "
    f"VALUES ({_marks(19)}) USING TIMESTAMP ?",
    "active": f"INSERT INTO {{ks}}.active_orders ({_ORDER_COLS}) "
    f"VALUES ({_marks(18)}) USING TIMESTAMP ?",
    "active_delete": "DELETE FROM {ks}.active_orders USING TIMESTAMP ? "
    "WHERE user_id = ? AND order_id = ?",
    "lookup": "INSERT INTO {ks}.order_lookup (order_id, user_id, symbol, created_at) "
    "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    "order_bucket": "INSERT INTO {ks}.order_history_buckets (user_id, bucket) "
    "VALUES (?, ?) USING TIMESTAMP ?",
    "final_status": "INSERT INTO {ks}.order_final_status (user_id, bucket, final_status, "
    "order_id) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    "trail": f"INSERT INTO {{ks}}.order_trail ({_UPDATE_COLS}) "
    f"VALUES ({_marks(14)}) USING TIMESTAMP ?",
    "stream": f"INSERT INTO {{ks}}.order_updates_stream (day, bucket, {_UPDATE_COLS}) "
    f"VALUES ({_marks(16)}) USING TIMESTAMP ?",
    "trade": f"INSERT INTO {{ks}}.trades_by_user (bucket, {_TRADE_COLS}) "
    f"VALUES ({_marks(14)}) USING TIMESTAMP ?",
    "trade_bucket": "INSERT INTO {ks}.trade_buckets (user_id, bucket) "
    "VALUES (?, ?) USING TIMESTAMP ?",
    "balance": f"INSERT INTO {{ks}}.balances ({_BALANCE_COLS}) "
    "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "user": f"INSERT INTO {{ks}}.users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "api_key": f"INSERT INTO {{ks}}.api_keys ({_KEY_COLS}) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "progress": "UPDATE {ks}.settlement_progress USING TIMESTAMP ? SET max_sequence = ? "
    "WHERE name = ?",
    "level": f"INSERT INTO {{ks}}.book_levels ({_LEVEL_COLS}) "
    f"VALUES ({_marks(7)}) USING TIMESTAMP ?",
    "level_delete": "DELETE FROM {ks}.book_levels USING TIMESTAMP ? "
    "WHERE symbol = ? AND side = ? AND price = ?",
    "market_trade": "INSERT INTO {ks}.market_trades (hour, "
    f"{_MARKET_TRADE_COLS}) VALUES ({_marks(9)}) USING TIMESTAMP ?",
    "market_trade_hour": "INSERT INTO {ks}.market_trade_hours (symbol, hour) "
    "VALUES (?, ?) USING TIMESTAMP ?",
    # USING TIMESTAMP trade_count: the most complete recomputation wins (market_data).
    "kline": f"INSERT INTO {{ks}}.klines (period, {_KLINE_COLS}) "
    f"VALUES ({_marks(15)}) USING TIMESTAMP ?",
    "kline_period": "INSERT INTO {ks}.kline_periods (symbol, interval, period) "
    "VALUES (?, ?, ?) USING TIMESTAMP ?",
    "kline_part": f"INSERT INTO {{ks}}.kline_parts (block, {_KLINE_COLS}) "
    f"VALUES ({_marks(15)}) USING TIMESTAMP ?",
}
_READS: dict[str, str] = {
    "q_active": f"SELECT {_ORDER_COLS} FROM {{ks}}.active_orders WHERE user_id = ?",
    "q_order_buckets": "SELECT bucket FROM {ks}.order_history_buckets WHERE user_id = ?",
    "q_history": f"SELECT {_ORDER_COLS} FROM {{ks}}.order_history "
    "WHERE user_id = ? AND bucket = ? AND order_id < ? LIMIT ?",
    # ALLOW FILTERING within one partition slice: no cluster-wide scan (see schema).
    "q_history_symbol": f"SELECT {_ORDER_COLS} FROM {{ks}}.order_history "
    "WHERE user_id = ? AND bucket = ? AND order_id < ? AND symbol = ? LIMIT ? ALLOW FILTERING",
    "q_lookup": "SELECT user_id FROM {ks}.order_lookup WHERE order_id = ?",
    "q_order": f"SELECT {_ORDER_COLS} FROM {{ks}}.order_history "
    "WHERE user_id = ? AND bucket = ? AND order_id = ?",
    "q_trail": f"SELECT {_UPDATE_COLS} FROM {{ks}}.order_trail WHERE order_id = ?",
    "q_trade_buckets": "SELECT bucket FROM {ks}.trade_buckets WHERE user_id = ?",
    "q_trades": f"SELECT {_TRADE_COLS} FROM {{ks}}.trades_by_user "
    "WHERE user_id = ? AND bucket = ? LIMIT ?",
    "q_trades_symbol": f"SELECT {_TRADE_COLS} FROM {{ks}}.trades_by_user "
    "WHERE user_id = ? AND bucket = ? AND symbol = ? LIMIT ? ALLOW FILTERING",
    "q_balances": f"SELECT {_BALANCE_COLS} FROM {{ks}}.balances WHERE user_id = ?",
    "q_stats": "SELECT final_status, COUNT(*) FROM {ks}.order_final_status "
    "WHERE user_id = ? AND bucket = ? GROUP BY final_status",
    "q_progress": "SELECT max_sequence FROM {ks}.settlement_progress WHERE name = ?",
    "q_levels": f"SELECT {_LEVEL_COLS} FROM {{ks}}.book_levels WHERE symbol = ?",
    "q_trade_hours": "SELECT hour FROM {ks}.market_trade_hours WHERE symbol = ?",
    "q_market_trades": f"SELECT {_MARKET_TRADE_COLS} FROM {{ks}}.market_trades "
    "WHERE symbol = ? AND hour = ? LIMIT ?",
    "q_part_trades": "SELECT trade_id, price, quantity, quote_quantity, version, executed_at "
    "FROM {ks}.market_trades WHERE symbol = ? AND hour = ? AND trade_id >= ? AND trade_id < ?",
    "q_parts": f"SELECT {_KLINE_COLS} FROM {{ks}}.kline_parts WHERE symbol = ? AND open_time = ?",
    "q_kline_periods": "SELECT period FROM {ks}.kline_periods WHERE symbol = ? AND interval = ?",
    "q_klines_range": f"SELECT {_KLINE_COLS} FROM {{ks}}.klines WHERE symbol = ? "
    "AND interval = ? AND period = ? AND open_time >= ? AND open_time < ? LIMIT ?",
    "q_klines_desc": f"SELECT {_KLINE_COLS} FROM {{ks}}.klines WHERE symbol = ? "
    "AND interval = ? AND period = ? AND open_time < ? ORDER BY open_time DESC LIMIT ?",
    "q_user": f"SELECT {_USER_COLS} FROM {{ks}}.users WHERE user_id = ?",
}


def _opt(v: object) -> object:
    """None -> UNSET: the column is left alone instead of writing a null cell (a tombstone).

    Used only for columns that never change once an order exists (client_order_id, price,
    reject_reason), so leaving the cell unset gives the same row as writing the null.
    """
    return UNSET_VALUE if v is None else v


def _size(params: Sequence[object]) -> int:
    """Rough serialized size of a write: values plus ~8 bytes of cell overhead each."""
    n = 24  # row/statement overhead
    for v in params:
        n += 8 + (len(v) if isinstance(v, str) else 8)
    return n


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """One statement to run: which prepared statement, its bind values, where it lands."""

    statement: str  # key of _WRITES
    partition: tuple[object, ...]  # (table, *partition key values)
    params: tuple[object, ...]
    size: int  # estimated bytes, for the batch cap


def plan_writes(ws: WriteSet) -> list[PlannedWrite]:
    """Every data write of a write set (the progress row excepted). Pure."""
    out: list[PlannedWrite] = []
    add = out.append
    p: tuple[object, ...]
    cols: tuple[object, ...]
    order_buckets: dict[tuple[int, int], int] = {}
    trade_buckets: dict[tuple[int, int], int] = {}
    for o in ws.orders:
        v = o.version
        b = order_bucket(o.order_id)
        cols = (
            o.order_id, _opt(o.client_order_id), o.user_id, o.symbol, o.side, o.order_type,
            o.time_in_force, _opt(o.price), o.quantity, o.filled_quantity,
            o.remaining_quantity, o.cumulative_quote, o.avg_fill_price, o.status,
            _opt(o.reject_reason), o.created_at, o.updated_at, v,
        )  # fmt: skip
        p = (b, *cols, v)
        add(PlannedWrite("history", ("order_history", o.user_id, b), p, _size(p)))
        if o.status in _OPEN:
            p = (*cols, v)
            add(PlannedWrite("active", ("active_orders", o.user_id), p, _size(p)))
        else:
            p = (v, o.user_id, o.order_id)
            add(PlannedWrite("active_delete", ("active_orders", o.user_id), p, _size(p)))
        if o.status in _FINAL:
            p = (o.user_id, b, o.status, o.order_id, v)
            add(PlannedWrite("final_status", ("order_final_status", o.user_id, b), p, _size(p)))
        p = (o.order_id, o.user_id, o.symbol, o.created_at, v)
        add(PlannedWrite("lookup", ("order_lookup", o.order_id), p, _size(p)))
        key = (o.user_id, b)
        if order_buckets.get(key, -1) < v:
            order_buckets[key] = v
    for (user_id, b), v in order_buckets.items():
        p = (user_id, b, v)
        add(PlannedWrite("order_bucket", ("order_history_buckets", user_id), p, _size(p)))
    for u in ws.order_updates:
        cols = (
            u.order_id, u.version, u.command_id, u.user_id, u.symbol, u.status,
            u.filled_quantity, u.remaining_quantity, u.cumulative_quote, u.avg_fill_price,
            u.last_fill_price, u.last_fill_quantity, _opt(u.reject_reason), u.updated_at,
        )  # fmt: skip
        p = (*cols, u.version)
        add(PlannedWrite("trail", ("order_trail", u.order_id), p, _size(p)))
        day, sb = stream_partition(u)
        p = (day, sb, *cols, u.version)
        add(PlannedWrite("stream", ("order_updates_stream", day, sb), p, _size(p)))
    for t in ws.trades:
        b = trade_bucket(t.trade_id)
        p = (b, *t, t.version)
        add(PlannedWrite("trade", ("trades_by_user", t.user_id, b), p, _size(p)))
        key = (t.user_id, b)
        if trade_buckets.get(key, -1) < t.version:
            trade_buckets[key] = t.version
    for (user_id, b), v in trade_buckets.items():
        p = (user_id, b, v)
        add(PlannedWrite("trade_bucket", ("trade_buckets", user_id), p, _size(p)))
    for bal in ws.balances:
        p = (*bal, bal.version)
        add(PlannedWrite("balance", ("balances", bal.user_id), p, _size(p)))
    for lv in ws.book_levels:
        if lv.quantity:
            p = (*lv, lv.version)
            add(PlannedWrite("level", ("book_levels", lv.symbol), p, _size(p)))
        else:  # emptied: a versioned delete whose tombstone shadows older writes
            p = (lv.version, lv.symbol, lv.side, lv.price)
            add(PlannedWrite("level_delete", ("book_levels", lv.symbol), p, _size(p)))
    hours: dict[tuple[str, int], int] = {}
    for mt in ws.market_trades:
        hour = mt.executed_at // _HOUR_MS
        p = (hour, *mt, mt.version)
        add(PlannedWrite("market_trade", ("market_trades", mt.symbol, hour), p, _size(p)))
        if hours.get((mt.symbol, hour), -1) < mt.version:
            hours[(mt.symbol, hour)] = mt.version
    for (symbol, hour), v in hours.items():
        p = (symbol, hour, v)
        add(PlannedWrite("market_trade_hour", ("market_trade_hours", symbol), p, _size(p)))
    for user in ws.users:
        p = (user.user_id, user.role, _opt(user.label), user.created_at, user.version, user.version)
        add(PlannedWrite("user", ("users", user.user_id), p, _size(p)))
    for api_key in ws.api_keys:
        p = (*api_key, api_key.sequence)
        add(PlannedWrite("api_key", ("api_keys", api_key.api_key), p, _size(p)))
    return out


def plan_part_writes(parts: Iterable[tuple[int, KlineRow]]) -> list[PlannedWrite]:
    """The writes of recomputed kline parts: USING TIMESTAMP their trade_count. Pure."""
    out: list[PlannedWrite] = []
    for block, k in parts:
        p = (block, *k, k.trade_count)
        out.append(PlannedWrite("kline_part", ("kline_parts", k.symbol, k.open_time), p, _size(p)))
    return out


def plan_kline_writes(rows: Iterable[KlineRow]) -> list[PlannedWrite]:
    """The writes of recomputed klines: each row USING TIMESTAMP its trade_count. Pure."""
    out: list[PlannedWrite] = []
    p: tuple[object, ...]
    for k in rows:
        period = kline_period(k.open_time, INTERVAL_MS[k.interval])
        p = (period, *k, k.trade_count)
        out.append(PlannedWrite("kline", ("klines", k.symbol, k.interval, period), p, _size(p)))
        p = (k.symbol, k.interval, period, k.trade_count)
        out.append(
            PlannedWrite("kline_period", ("kline_periods", k.symbol, k.interval), p, _size(p))
        )
    return out


def plan_batches(
    writes: Iterable[PlannedWrite],
    *,
    max_statements: int = DEFAULT_MAX_BATCH_STATEMENTS,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> list[list[PlannedWrite]]:
    """Group writes by partition, then cut each group into chunks under both caps. Pure.

    Every chunk holds writes of exactly one partition (so it may run as an UNLOGGED batch);
    a single write larger than ``max_bytes`` still gets a chunk of its own.
    """
    if max_statements < 1 or max_bytes < 1:
        raise StoreError("batch caps must be positive")
    groups: dict[tuple[object, ...], list[PlannedWrite]] = {}
    for w in writes:
        groups.setdefault(w.partition, []).append(w)
    chunks: list[list[PlannedWrite]] = []
    for group in groups.values():
        chunk: list[PlannedWrite] = []
        size = 0
        for w in group:
            if chunk and (len(chunk) >= max_statements or size + w.size > max_bytes):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(w)
            size += w.size
        chunks.append(chunk)
    return chunks


def schema_statements(
    text: str, keyspace: str = "exchange", replication: str | None = None
) -> list[str]:
    """Split a .cql file into statements, dropping comments; swap the keyspace name.

    ``replication`` (a CQL map literal) replaces the keyspace's replication setting.
    """
    if not _KEYSPACE_RE.fullmatch(keyspace):
        raise StoreError(f"invalid keyspace name {keyspace!r}")
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    out = []
    for raw in "\n".join(lines).split(";"):
        stmt = " ".join(raw.split())
        if not stmt:
            continue
        stmt = re.sub(r"\bexchange\.", f"{keyspace}.", stmt)
        stmt = re.sub(
            r"^CREATE KEYSPACE IF NOT EXISTS exchange\b",
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace}",
            stmt,
        )
        if replication is not None and stmt.startswith("CREATE KEYSPACE"):
            stmt = re.sub(r"replication = \{[^}]*\}", f"replication = {replication}", stmt)
        out.append(stmt)
    return out


def translate_error(e: BaseException) -> StoreError:
    """Map a driver error to the port's error types (raise the result ``from e``)."""
    if isinstance(e, StoreError):
        return e
    if isinstance(e, FunctionFailure):  # a user-defined function failed: not transient
        return StoreError(f"cassandra: {e!r}")
    transient = (
        NoHostAvailable,
        OperationTimedOut,
        ConnectionException,
        RequestExecutionException,  # Unavailable, Read/WriteTimeout, Read/WriteFailure, ...
        ServerError,
    )
    if isinstance(e, transient):
        return StoreUnavailable(f"cassandra: {e!r}")
    return StoreError(f"cassandra: {e!r}")


class _CassandraKlineIO:
    """rebuild_klines' reads and writes. The reads of one step run concurrently (one round
    trip per step, not per key); each write is acknowledged before it returns."""

    def __init__(self, store: CassandraStore, session: Any, prepared: dict[str, Any]) -> None:
        self._store = store
        self._session = session
        self._prepared = prepared

    def _read_all(self, statements: Sequence[tuple[Any, Sequence[object]]]) -> list[list[Any]]:
        if not statements:
            return []
        results = execute_concurrent(
            self._session,
            statements,
            concurrency=self._store._concurrency,
            raise_on_first_error=True,
            results_generator=False,
        )
        return [list(result) for _, result in results]

    def part_trades(self, keys: list[tuple[str, int, int]]) -> list[list[Any]]:
        ps = self._prepared["q_part_trades"]
        span = 1 << PART_BITS
        statements = [
            (ps, (s, m // _HOUR_MS, b << PART_BITS, (b << PART_BITS) + span)) for s, m, b in keys
        ]
        # A minute never crosses an hour: a part's trades are in that hour's partition.
        return [
            [r[:5] for r in rows if m <= r[5] < m + 60_000]
            for (_, m, _), rows in zip(keys, self._read_all(statements), strict=True)
        ]

    def write_parts(self, parts: list[tuple[int, KlineRow]]) -> None:
        self._write(plan_part_writes(parts))

    def parts(self, keys: list[tuple[str, int]]) -> list[list[KlineRow]]:
        ps = self._prepared["q_parts"]
        found = self._read_all([(ps, key) for key in keys])
        return [[kline_row_from_db(r) for r in rows] for rows in found]

    def children(self, interval: str, keys: list[tuple[str, int, int]]) -> list[list[KlineRow]]:
        ps = self._prepared["q_klines_range"]
        ms = INTERVAL_MS[interval]
        statements: list[tuple[Any, tuple[object, ...]]] = []
        owners: list[int] = []  # which key each statement reads for (a range may span periods)
        for k, (symbol, start, end) in enumerate(keys):
            for period in range(kline_period(start, ms), kline_period(end - 1, ms) + 1):
                statements.append((ps, (symbol, interval, period, start, end, _MAX_LIMIT)))
                owners.append(k)
        out: list[list[KlineRow]] = [[] for _ in keys]
        for k, rows in zip(owners, self._read_all(statements), strict=True):
            out[k] += [kline_row_from_db(r) for r in rows]
        return out

    def write(self, rows: list[KlineRow]) -> None:
        self._write(plan_kline_writes(rows))

    def _write(self, writes: list[PlannedWrite]) -> None:
        store = self._store
        chunks = plan_batches(
            writes, max_statements=store._max_statements, max_bytes=store._max_bytes
        )
        store._execute_chunks(self._session, self._prepared, chunks)


class CassandraStore(SettlementStore, MarketDataStore):
    """The read model in a Cassandra keyspace.

    Connects lazily (building the object does no I/O); statements are prepared once, on the
    first call after the schema exists, and marked idempotent.
    """

    def __init__(
        self,
        contact_points: Sequence[str],
        *,
        port: int = 9042,
        keyspace: str = "exchange",
        local_dc: str | None = None,
        consistency: str = "LOCAL_QUORUM",
        request_timeout_s: float = 10.0,
        concurrency: int = 64,
        max_batch_statements: int = DEFAULT_MAX_BATCH_STATEMENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        replication: str | None = None,
        schema_path: Path = SCHEMA_PATH,
    ) -> None:
        if not _KEYSPACE_RE.fullmatch(keyspace):
            raise StoreError(f"invalid keyspace name {keyspace!r}")
        if consistency not in ConsistencyLevel.name_to_value:
            raise StoreError(f"unknown consistency level {consistency!r}")
        if concurrency < 1:
            raise StoreError("concurrency must be positive")
        self._contact_points = list(contact_points)
        self._port = port
        self._ks = keyspace
        self._local_dc = local_dc
        self._consistency = ConsistencyLevel.name_to_value[consistency]
        self._timeout = request_timeout_s
        self._concurrency = concurrency
        self._max_statements = max_batch_statements
        self._max_bytes = max_batch_bytes
        self._replication = replication
        self._schema_path = schema_path
        self._lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Any = None
        self._prepared: dict[str, Any] | None = None

    @property
    def keyspace(self) -> str:
        return self._ks

    # ---- connection ----------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._session is None:
                profile = ExecutionProfile(
                    load_balancing_policy=TokenAwarePolicy(
                        DCAwareRoundRobinPolicy(local_dc=self._local_dc)
                    ),
                    consistency_level=self._consistency,
                    request_timeout=self._timeout,
                    row_factory=tuple_factory,
                )
                cluster = Cluster(
                    contact_points=self._contact_points,
                    port=self._port,
                    execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                )
                try:
                    self._session = cluster.connect()
                except BaseException:
                    cluster.shutdown()
                    raise
                self._cluster = cluster
            return self._session

    def _ready(self) -> tuple[Any, dict[str, Any]]:
        """Session and prepared statements (prepared once; needs the schema)."""
        session = self._connect()
        prepared = self._prepared
        if prepared is None:
            with self._lock:
                if self._prepared is None:
                    built = {}
                    for name, cql in (*_WRITES.items(), *_READS.items()):
                        ps = session.prepare(cql.format(ks=self._ks))
                        ps.is_idempotent = True  # versioned upserts and reads: safe to retry
                        built[name] = ps
                    self._prepared = built
                prepared = self._prepared
        return session, prepared

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as e:
            raise translate_error(e) from e

    def _rows(self, name: str, params: Sequence[object]) -> list[Any]:
        def run() -> list[Any]:
            session, prepared = self._ready()
            return list(session.execute(prepared[name], params))

        result: list[Any] = self._call(run)
        return result

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = None
            self._session = None
            self._prepared = None

    # ---- schema --------------------------------------------------------------------

    def init_schema(self) -> None:
        text = self._schema_path.read_text(encoding="utf-8")
        statements = schema_statements(text, self._ks, self._replication)

        def run() -> None:
            session = self._connect()
            for stmt in statements:
                session.execute(stmt, timeout=max(self._timeout, 60.0))

        self._call(run)

    def truncate_all(self) -> None:
        """Empty every table of the keyspace. For tests and rebuilds, never for serving."""

        def run() -> None:
            session = self._connect()
            for table in TABLES:
                session.execute(f"TRUNCATE {self._ks}.{table}", timeout=max(self._timeout, 60.0))

        self._call(run)

    def drop_keyspace(self) -> None:
        """Drop the whole keyspace. For tests (a keyspace per run), never for serving."""

        def run() -> None:
            self._connect().execute(
                f"DROP KEYSPACE IF EXISTS {self._ks}", timeout=max(self._timeout, 60.0)
            )

        self._call(run)
        with self._lock:
            self._prepared = None

    # ---- writes --------------------------------------------------------------------

    def apply(self, outputs: Sequence[EngineOutput]) -> None:
        if not outputs:
            return
        ws = project(outputs)
        chunks = plan_batches(
            plan_writes(ws), max_statements=self._max_statements, max_bytes=self._max_bytes
        )

        def run() -> None:
            session, prepared = self._ready()
            self._execute_chunks(session, prepared, chunks)
            if ws.market_trades:
                self._rebuild_klines(session, prepared, ws.market_trades)
            # Last, so max_sequence never runs ahead of rows that are not written yet.
            seq = ws.max_sequence
            session.execute(prepared["progress"], (seq, seq, _PROGRESS_NAME))

        self._call(run)

    def _execute_chunks(
        self, session: Any, prepared: dict[str, Any], chunks: list[list[PlannedWrite]]
    ) -> None:
        statements: list[tuple[Any, None]] = []
        for chunk in chunks:
            if len(chunk) == 1:
                w = chunk[0]
                statements.append((prepared[w.statement].bind(w.params), None))
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for w in chunk:
                batch.add(prepared[w.statement], w.params)
            batch.is_idempotent = True
            statements.append((batch, None))
        if statements:
            execute_concurrent(
                session, statements, concurrency=self._concurrency, raise_on_first_error=True
            )

    def _rebuild_klines(
        self, session: Any, prepared: dict[str, Any], trades: list[MarketTradeRow]
    ) -> None:
        """After the batch's trades are acknowledged: recompute every kline they touch."""
        rebuild_klines(trades, _CassandraKlineIO(self, session, prepared))

    @staticmethod
    def _kline_range(
        session: Any,
        prepared: dict[str, Any],
        symbol: str,
        interval: str,
        start: int,
        end: int,
        limit: int | None,
    ) -> list[KlineRow]:
        """Klines with start <= open_time < end, oldest first (at most ``limit``)."""
        ms = INTERVAL_MS[interval]
        rows: list[KlineRow] = []
        want = (1 << 31) - 1 if limit is None else limit
        for period in range(kline_period(start, ms), kline_period(end - 1, ms) + 1):
            params = (symbol, interval, period, start, end, want - len(rows))
            rows += [
                kline_row_from_db(r) for r in session.execute(prepared["q_klines_range"], params)
            ]
            if len(rows) >= want:
                break
        return rows

    # ---- health and verification ---------------------------------------------------

    def ping(self) -> None:
        try:
            self._rows("q_progress", (_PROGRESS_NAME,))
        except StoreError as e:
            raise StoreUnavailable(str(e)) from e

    def max_sequence(self) -> int:
        rows = self._rows("q_progress", (_PROGRESS_NAME,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _scan(self, table: str, cols: str) -> list[Any]:
        def run() -> list[Any]:
            session = self._connect()
            return list(session.execute(f"SELECT {cols} FROM {self._ks}.{table}"))

        rows: list[Any] = self._call(run)
        return rows

    def digest(self) -> str:
        """Full scans of every table, sorted in memory: a verification tool, not a hot path."""
        return canonical_digest(self._digest_sections())

    def _digest_sections(self) -> Iterator[tuple[str, list[Any]]]:
        def orders(table: str) -> list[OrderRow]:
            return sorted(
                (order_row_from_db(r) for r in self._scan(table, _ORDER_COLS)),
                key=lambda o: o.order_id,
            )

        yield "orders", orders("order_history")
        yield "active_orders", orders("active_orders")
        yield (
            "order_lookup",
            sorted(self._scan("order_lookup", "order_id, user_id, symbol, created_at")),
        )
        yield (
            "order_history_buckets",
            sorted(self._scan("order_history_buckets", "user_id, bucket")),
        )
        yield (
            "order_final_status",
            sorted(self._scan("order_final_status", "user_id, bucket, final_status, order_id")),
        )
        yield (
            "order_updates",
            sorted(
                (order_update_row_from_db(r) for r in self._scan("order_trail", _UPDATE_COLS)),
                key=lambda u: (u.order_id, u.version),
            ),
        )
        stream = [
            (r[0], r[1], *order_update_row_from_db(r[2:]))
            for r in self._scan("order_updates_stream", f"day, bucket, {_UPDATE_COLS}")
        ]
        yield "order_updates_stream", sorted(stream, key=lambda r: (r[0], r[1], r[3], r[2]))
        yield (
            "trades",
            sorted(
                (trade_row_from_db(r) for r in self._scan("trades_by_user", _TRADE_COLS)),
                key=lambda t: (t.user_id, t.trade_id, t.is_maker),
            ),
        )
        yield "trade_buckets", sorted(self._scan("trade_buckets", "user_id, bucket"))
        yield (
            "balances",
            sorted(
                (balance_row_from_db(r) for r in self._scan("balances", _BALANCE_COLS)),
                key=lambda b: (b.user_id, b.asset),
            ),
        )
        yield (
            "book_levels",
            sorted(tuple(r) for r in self._scan("book_levels", _LEVEL_COLS) if r[3] > 0),
        )
        yield (
            "market_trades",
            sorted(tuple(r) for r in self._scan("market_trades", _MARKET_TRADE_COLS)),
        )
        yield "klines", sorted(tuple(r) for r in self._scan("klines", _KLINE_COLS))
        yield (
            "users",
            sorted(
                (user_row_from_db(r) for r in self._scan("users", _USER_COLS)),
                key=lambda u: u.user_id,
            ),
        )
        yield "api_keys", self.api_keys()
        yield "settlement_progress", [(self.max_sequence(),)]

    # ---- queries -------------------------------------------------------------------

    def active_orders(self, user_id: int, symbol: str | None = None) -> list[OrderRow]:
        rows = self._rows("q_active", (user_id,))
        # The partition holds only the user's open orders: filtering here is cheap.
        return [order_row_from_db(r) for r in rows if symbol is None or r[3] == symbol]

    def order_history(
        self,
        user_id: int,
        symbol: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        before: int | None = None,
    ) -> tuple[list[OrderRow], int | None]:
        check_page_limit(limit)
        cursor = _NO_CURSOR if before is None else before
        top = order_bucket(cursor - 1)  # bucket of the highest id the page may return
        want = limit + 1  # one extra row tells whether a next page exists
        rows: list[Any] = []
        for (bucket,) in self._rows("q_order_buckets", (user_id,)):  # newest bucket first
            if bucket > top:
                continue
            need = want - len(rows)
            if symbol is None:
                rows += self._rows("q_history", (user_id, bucket, cursor, need))
            else:
                rows += self._rows("q_history_symbol", (user_id, bucket, cursor, symbol, need))
            if len(rows) >= want:
                break
        page = [order_row_from_db(r) for r in rows[:limit]]
        return page, (page[-1].order_id if len(rows) > limit else None)

    def get_order(self, order_id: int) -> OrderRow | None:
        found = self._rows("q_lookup", (order_id,))
        if not found:
            return None
        rows = self._rows("q_order", (found[0][0], order_bucket(order_id), order_id))
        return order_row_from_db(rows[0]) if rows else None

    def order_trail(self, order_id: int) -> list[OrderUpdateRow]:
        return [order_update_row_from_db(r) for r in self._rows("q_trail", (order_id,))]

    def trades(
        self, user_id: int, symbol: str | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[TradeRow]:
        check_page_limit(limit)
        rows: list[Any] = []
        for (bucket,) in self._rows("q_trade_buckets", (user_id,)):
            need = limit - len(rows)
            if symbol is None:
                rows += self._rows("q_trades", (user_id, bucket, need))
            else:
                rows += self._rows("q_trades_symbol", (user_id, bucket, symbol, need))
            if len(rows) >= limit:
                break
        return [trade_row_from_db(r) for r in rows]

    def balances(self, user_id: int) -> list[BalanceRow]:
        return [balance_row_from_db(r) for r in self._rows("q_balances", (user_id,))]

    def order_statistics(self, user_id: int) -> dict[OrderStatus, int]:
        # O(closed orders of the user): COUNT reads every row of each bucket. Correct under
        # any replay; a versioned per-user snapshot row is the next step if it gets slow.
        counts = dict.fromkeys(FINAL_STATUSES, 0)
        for (bucket,) in self._rows("q_order_buckets", (user_id,)):
            for status, n in self._rows("q_stats", (user_id, bucket)):
                counts[OrderStatus(status)] += n
        return counts

    # ---- market data -----------------------------------------------------------------

    def book_levels(self, symbol: str) -> list[BookLevelRow]:
        return sorted_levels(book_level_row_from_db(r) for r in self._rows("q_levels", (symbol,)))

    def recent_trades(self, symbol: str, limit: int = DEFAULT_PAGE_LIMIT) -> list[MarketTradeRow]:
        check_page_limit(limit)
        rows: list[Any] = []
        for (hour,) in self._rows("q_trade_hours", (symbol,)):  # newest hour first
            rows += self._rows("q_market_trades", (symbol, hour, limit - len(rows)))
            if len(rows) >= limit:
                break
        return [market_trade_row_from_db(r) for r in rows]

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int = DEFAULT_KLINE_LIMIT,
    ) -> list[KlineRow]:
        ms = check_kline_query(interval, start, end, limit)
        top = _NO_CURSOR - 1 if end is None else end  # inclusive
        periods = [p for (p,) in self._rows("q_kline_periods", (symbol, interval))]  # newest first

        def run() -> list[KlineRow]:
            session, prepared = self._ready()
            if start is not None:
                rows: list[KlineRow] = []
                for period in sorted(p for p in periods if kline_period(start, ms) <= p):
                    if period > kline_period(top, ms):
                        break
                    params = (symbol, interval, period, start, top + 1, limit - len(rows))
                    rows += [
                        kline_row_from_db(r)
                        for r in session.execute(prepared["q_klines_range"], params)
                    ]
                    if len(rows) >= limit:
                        break
                return rows
            newest: list[KlineRow] = []
            for period in periods:
                if period > kline_period(top, ms):
                    continue
                desc = (symbol, interval, period, top + 1, limit - len(newest))
                newest += [
                    kline_row_from_db(r) for r in session.execute(prepared["q_klines_desc"], desc)
                ]
                if len(newest) >= limit:
                    break
            return newest[::-1]

        result: list[KlineRow] = self._call(run)
        return result

    def ticker_inputs(self, symbol: str, start: int, end: int) -> TickerInputs:
        def run() -> list[KlineRow]:
            session, prepared = self._ready()
            return self._kline_range(session, prepared, symbol, "1m", start, end, None)

        minutes: list[KlineRow] = self._call(run)
        newest = self.recent_trades(symbol, 1)
        return ticker_from_klines(symbol, minutes, newest[0].price if newest else None)

    # ---- users and keys ----------------------------------------------------------------

    def get_user(self, user_id: int) -> UserRow | None:
        rows = self._rows("q_user", (user_id,))
        return user_row_from_db(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKeyRow]:
        # A scan of the whole table, the one read that is not single-partition: it holds one
        # small row per key ever added, and gateways read it once at start (see the schema).
        rows = self._scan("api_keys", _KEY_COLS)
        return sorted((api_key_row_from_db(r) for r in rows), key=lambda k: k.api_key)

    def api_keys_since(self, sequence: int) -> list[ApiKeyRow]:
        return [k for k in self.api_keys() if k.sequence > sequence]
