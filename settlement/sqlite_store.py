"""SQLite adapter of the settlement store port (single node, WAL mode).

Writes: one ``BEGIN IMMEDIATE`` transaction per ``apply`` batch, ``executemany`` per table,
every mutable row upserted with ``ON CONFLICT ... DO UPDATE ... WHERE excluded.version >
version`` and immutable facts inserted with ``DO NOTHING``; the progress row is written in the
same transaction. ``synchronous=FULL`` (default) makes a committed batch survive power loss,
so the settlement service may commit its Kafka offsets as soon as ``apply`` returns.

Reads: a separate read-only connection per thread (``mode=ro``), so the gateway's threadpool
and other processes read concurrently with the single writer (WAL readers never block it).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.enums import OrderStatus
from engine.events import EngineOutput
from settlement.market_data import (
    DEFAULT_KLINE_LIMIT,
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
from settlement.projection import order_bucket, project, stream_partition, trade_bucket
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

__all__ = ["SCHEMA_PATH", "SqliteStore", "translate_error"]

SCHEMA_PATH = Path(__file__).with_name("schema_sqlite.sql")
_PROGRESS_NAME = "engine-output"

# Primary result codes that mean "the store cannot take this right now": back off and retry.
# SQLITE_PERM 3, BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14,
# PROTOCOL 15. Anything else (no such table, constraint, corrupt) is a StoreError: a bug.
_UNAVAILABLE_CODES = frozenset({3, 5, 6, 7, 8, 10, 13, 14, 15})

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

_UPSERT_ORDER = f"""
INSERT INTO orders ({_ORDER_COLS}, is_open)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, order_id) DO UPDATE SET
    quantity = excluded.quantity,
    filled_quantity = excluded.filled_quantity,
    remaining_quantity = excluded.remaining_quantity,
    cumulative_quote = excluded.cumulative_quote,
    avg_fill_price = excluded.avg_fill_price,
    status = excluded.status,
    reject_reason = excluded.reject_reason,
    updated_at = excluded.updated_at,
    version = excluded.version,
    is_open = excluded.is_open
WHERE excluded.version > orders.version
"""
# Immutable facts: the same key always carries the same values, so the first write stands.
_INSERT_UPDATE = f"""
INSERT INTO order_updates ({_UPDATE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (order_id, version) DO NOTHING
"""
_INSERT_TRADE = f"""
INSERT INTO trades ({_TRADE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, trade_id, is_maker) DO NOTHING
"""
_UPSERT_BALANCE = f"""
INSERT INTO balances ({_BALANCE_COLS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id, asset) DO UPDATE SET
    available = excluded.available,
    locked = excluded.locked,
    version = excluded.version
WHERE excluded.version > balances.version
"""
# Market data (settlement/market_data.py).
_LEVEL_COLS = "symbol, side, price, quantity, order_count, update_id, version"
_MARKET_TRADE_COLS = (
    "symbol, trade_id, price, quantity, quote_quantity, taker_side, executed_at, version"
)
_KLINE_COLS = (
    "symbol, interval, open_time, close_time, open, high, low, close, volume, quote_volume, "
    "trade_count, first_trade_id, last_trade_id, version"
)
_UPSERT_LEVEL = f"""
INSERT INTO book_levels ({_LEVEL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, side, price) DO UPDATE SET
    quantity = excluded.quantity,
    order_count = excluded.order_count,
    update_id = excluded.update_id,
    version = excluded.version
WHERE excluded.version > book_levels.version
"""
_INSERT_MARKET_TRADE = f"""
INSERT INTO market_trades ({_MARKET_TRADE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, trade_id) DO NOTHING
"""
# A recomputation over the same trades writes the same row; over more, a higher count.
_UPSERT_KLINE = f"""
INSERT INTO klines ({_KLINE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
    close_time = excluded.close_time, open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume,
    quote_volume = excluded.quote_volume, trade_count = excluded.trade_count,
    first_trade_id = excluded.first_trade_id, last_trade_id = excluded.last_trade_id,
    version = excluded.version
WHERE excluded.trade_count > klines.trade_count
"""
_Q_PART_TRADES = (
    "SELECT trade_id, price, quantity, quote_quantity, version FROM market_trades "
    "WHERE symbol = ? AND trade_id >= ? AND trade_id < ? AND executed_at >= ? AND executed_at < ?"
)
_UPSERT_PART = f"""
INSERT INTO kline_parts (block, {_KLINE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, open_time, block) DO UPDATE SET
    close_time = excluded.close_time, open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume,
    quote_volume = excluded.quote_volume, trade_count = excluded.trade_count,
    first_trade_id = excluded.first_trade_id, last_trade_id = excluded.last_trade_id,
    version = excluded.version
WHERE excluded.trade_count > kline_parts.trade_count
"""
_Q_PARTS = f"SELECT {_KLINE_COLS} FROM kline_parts WHERE symbol = ? AND open_time = ?"
_Q_KLINE_RANGE = (
    f"SELECT {_KLINE_COLS} FROM klines "
    "WHERE symbol = ? AND interval = ? AND open_time >= ? AND open_time < ? ORDER BY open_time"
)
_Q_KLINES_FROM = (
    f"SELECT {_KLINE_COLS} FROM klines WHERE symbol = ? AND interval = ? "
    "AND open_time >= ? AND open_time <= ? ORDER BY open_time LIMIT ?"
)
_Q_KLINES_LATEST = (
    f"SELECT {_KLINE_COLS} FROM klines WHERE symbol = ? AND interval = ? "
    "AND open_time <= ? ORDER BY open_time DESC LIMIT ?"
)
_Q_LEVELS = f"SELECT {_LEVEL_COLS} FROM book_levels WHERE symbol = ? AND quantity > 0"
_Q_RECENT_TRADES = (
    f"SELECT {_MARKET_TRADE_COLS} FROM market_trades WHERE symbol = ? "
    "ORDER BY trade_id DESC LIMIT ?"
)

_UPSERT_USER = f"""
INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    role = excluded.role,
    label = excluded.label,
    created_at = excluded.created_at,
    version = excluded.version
WHERE excluded.version > users.version
"""
_UPSERT_KEY = f"""
INSERT INTO api_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (api_key) DO UPDATE SET
    user_id = excluded.user_id,
    role = excluded.role,
    public_key = excluded.public_key,
    revoked = excluded.revoked,
    version = excluded.version
WHERE excluded.version > api_keys.version
"""
_UPSERT_PROGRESS = """
INSERT INTO settlement_progress (name, max_sequence) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET max_sequence = excluded.max_sequence
WHERE excluded.max_sequence > settlement_progress.max_sequence
"""

# Queries. INDEXED BY pins the partial index: the planner could otherwise pick the symbol
# index and walk every order the user ever placed to find the few open ones.
_Q_ACTIVE = (
    f"SELECT {_ORDER_COLS} FROM orders INDEXED BY orders_active "
    "WHERE user_id = ? AND is_open = 1 ORDER BY order_id DESC"
)
_Q_ACTIVE_SYMBOL = (
    f"SELECT {_ORDER_COLS} FROM orders INDEXED BY orders_active "
    "WHERE user_id = ? AND is_open = 1 AND symbol = ? ORDER BY order_id DESC"
)
_Q_HISTORY = (
    f"SELECT {_ORDER_COLS} FROM orders "
    "WHERE user_id = ? AND order_id < ? ORDER BY order_id DESC LIMIT ?"
)
_Q_HISTORY_SYMBOL = (
    f"SELECT {_ORDER_COLS} FROM orders INDEXED BY orders_history_symbol "
    "WHERE user_id = ? AND symbol = ? AND order_id < ? ORDER BY order_id DESC LIMIT ?"
)
_Q_ORDER = f"SELECT {_ORDER_COLS} FROM orders INDEXED BY orders_by_id WHERE order_id = ?"
_Q_TRAIL = f"SELECT {_UPDATE_COLS} FROM order_updates WHERE order_id = ? ORDER BY version"
_Q_TRADES = (
    f"SELECT {_TRADE_COLS} FROM trades WHERE user_id = ? "
    "ORDER BY trade_id DESC, is_maker DESC LIMIT ?"
)
_Q_TRADES_SYMBOL = (
    f"SELECT {_TRADE_COLS} FROM trades WHERE user_id = ? "
    "AND symbol = ? ORDER BY trade_id DESC, is_maker DESC LIMIT ?"
)
_Q_BALANCES = f"SELECT {_BALANCE_COLS} FROM balances WHERE user_id = ? ORDER BY asset"
_Q_STATS = "SELECT status, COUNT(*) FROM orders WHERE user_id = ? AND is_open = 0 GROUP BY status"
_Q_PROGRESS = "SELECT max_sequence FROM settlement_progress WHERE name = ?"
_Q_USER = f"SELECT {_USER_COLS} FROM users WHERE user_id = ?"
_Q_KEYS = f"SELECT {_KEY_COLS} FROM api_keys ORDER BY api_key"
_Q_KEYS_SINCE = f"SELECT {_KEY_COLS} FROM api_keys WHERE version > ? ORDER BY api_key"

_NO_CURSOR = (1 << 63) - 1  # "before" when none is given: above every order id


def translate_error(e: sqlite3.Error) -> StoreError:
    """Map a sqlite3 error to the port's error types (raise the result ``from e``)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"sqlite: {e}")
    if code is None and isinstance(e, sqlite3.OperationalError):
        # Errors raised by the sqlite3 module itself carry no code (e.g. a closed file);
        # treat them as environmental.
        return StoreUnavailable(f"sqlite: {e}")
    return StoreError(f"sqlite: {e}")


class _SqliteKlineIO:
    """rebuild_klines' reads and writes, on the writer connection inside its transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def part_trades(self, keys: list[tuple[str, int, int]]) -> list[list[Any]]:
        run = self._conn.execute
        span = 1 << PART_BITS
        return [
            run(
                _Q_PART_TRADES, (s, b << PART_BITS, (b << PART_BITS) + span, m, m + 60_000)
            ).fetchall()
            for s, m, b in keys
        ]

    def write_parts(self, parts: list[tuple[int, KlineRow]]) -> None:
        self._conn.executemany(_UPSERT_PART, [(block, *row) for block, row in parts])

    def parts(self, keys: list[tuple[str, int]]) -> list[list[KlineRow]]:
        run = self._conn.execute
        return [[kline_row_from_db(r) for r in run(_Q_PARTS, key)] for key in keys]

    def children(self, interval: str, keys: list[tuple[str, int, int]]) -> list[list[KlineRow]]:
        run = self._conn.execute
        return [
            [kline_row_from_db(r) for r in run(_Q_KLINE_RANGE, (s, interval, start, end))]
            for s, start, end in keys
        ]

    def write(self, rows: list[KlineRow]) -> None:
        self._conn.executemany(_UPSERT_KLINE, rows)


class SqliteStore(SettlementStore, MarketDataStore):
    """The read model in one SQLite file. One writer (``apply``), many readers.

    ``readonly=True`` opens the writer read-only too: for a reader process such as the
    gateway (``apply`` then raises StoreUnavailable). Connections open lazily, so building
    the object does no I/O and a gateway may start before the settlement service created the
    file (its queries raise StoreUnavailable until then).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        busy_timeout_ms: int = 5_000,
        synchronous: str = "FULL",
        cache_mib: int = 64,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise StoreError(f"synchronous must be FULL, NORMAL or OFF, got {synchronous!r}")
        self._path = Path(path)
        self._readonly = readonly
        self._timeout_s = busy_timeout_ms / 1000.0
        self._synchronous = synchronous
        self._cache_kib = max(1, cache_mib) * 1024
        self._wlock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # ---- connections ---------------------------------------------------------------

    def _uri(self, mode: str) -> str:
        return f"{self._path.resolve().as_uri()}?mode={mode}"

    def _write_conn(self) -> sqlite3.Connection:
        # Caller holds self._wlock.
        if self._closed:
            raise StoreUnavailable("sqlite store is closed")
        conn = self._writer
        if conn is None:
            conn = sqlite3.connect(
                self._uri("ro" if self._readonly else "rwc"),
                uri=True,
                timeout=self._timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._wlock
            )
            try:
                if not self._readonly:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    # Measured with bench/settlement_store.py: a big page cache keeps the
                    # per-user pages hot, and checkpointing every 64 MiB of WAL (instead of
                    # 4 MiB) writes each hot page back once per many commits; the WAL file
                    # is truncated back to 128 MiB after a checkpoint.
                    conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
                    conn.execute("PRAGMA wal_autocheckpoint=16384")
                    conn.execute("PRAGMA journal_size_limit=134217728")
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return conn

    def _read_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("sqlite store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._uri("ro"),
                uri=True,
                timeout=self._timeout_s,
                isolation_level=None,
                check_same_thread=False,  # only this thread uses it; close() may run elsewhere
            )
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._read_conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise translate_error(e) from e

    def close(self) -> None:
        with self._wlock:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # ---- writes --------------------------------------------------------------------

    def init_schema(self) -> None:
        script = SCHEMA_PATH.read_text(encoding="utf-8")
        with self._wlock:
            try:
                self._write_conn().executescript(script)
            except sqlite3.Error as e:
                raise translate_error(e) from e

    def apply(self, outputs: Sequence[EngineOutput]) -> None:
        if not outputs:
            return
        ws = project(outputs)
        # Bind-ready parameter lists, built before taking the lock.
        open_statuses = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
        order_params = [(*o, o.status in open_statuses) for o in ws.orders]
        with self._wlock:
            try:
                conn = self._write_conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if order_params:
                        conn.executemany(_UPSERT_ORDER, order_params)
                    if ws.order_updates:
                        conn.executemany(_INSERT_UPDATE, ws.order_updates)
                    if ws.trades:
                        conn.executemany(_INSERT_TRADE, ws.trades)
                    if ws.balances:
                        conn.executemany(_UPSERT_BALANCE, ws.balances)
                    if ws.book_levels:
                        conn.executemany(_UPSERT_LEVEL, ws.book_levels)
                    if ws.market_trades:
                        conn.executemany(_INSERT_MARKET_TRADE, ws.market_trades)
                        self._rebuild_klines(conn, ws.market_trades)
                    if ws.users:
                        conn.executemany(_UPSERT_USER, ws.users)
                    if ws.api_keys:
                        conn.executemany(_UPSERT_KEY, ws.api_keys)
                    conn.execute(_UPSERT_PROGRESS, (_PROGRESS_NAME, ws.max_sequence))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise translate_error(e) from e

    @staticmethod
    def _rebuild_klines(conn: sqlite3.Connection, trades: list[MarketTradeRow]) -> None:
        """Inside the batch's transaction: reads see the batch's own trades and klines."""
        rebuild_klines(trades, _SqliteKlineIO(conn))

    # ---- health and verification ---------------------------------------------------

    def ping(self) -> None:
        try:
            self._read_conn().execute(_Q_PROGRESS, (_PROGRESS_NAME,)).fetchall()
        except sqlite3.Error as e:
            # Not ready, whatever the cause (no file yet, no schema yet, locked, ...).
            raise StoreUnavailable(f"sqlite: {e}") from e

    def max_sequence(self) -> int:
        rows = self._query(_Q_PROGRESS, (_PROGRESS_NAME,))
        return int(rows[0][0]) if rows else 0

    def digest(self) -> str:
        try:
            conn = self._read_conn()
            conn.execute("BEGIN")  # one snapshot for every section
            try:
                return canonical_digest(self._digest_sections(conn))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise translate_error(e) from e

    @staticmethod
    def _digest_sections(
        conn: sqlite3.Connection,
    ) -> Iterator[tuple[str, Iterator[Any] | list[Any]]]:
        # Derived sections (those Cassandra keeps as separate tables) are computed with the
        # projection's own bucket functions, so there is one definition of every key.
        def orders(where: str = "") -> Iterator[OrderRow]:
            cur = conn.execute(f"SELECT {_ORDER_COLS} FROM orders {where} ORDER BY order_id")
            return map(order_row_from_db, cur)

        yield "orders", orders()
        yield "active_orders", orders("WHERE is_open = 1")
        yield (
            "order_lookup",
            conn.execute(
                "SELECT order_id, user_id, symbol, created_at FROM orders ORDER BY order_id"
            ),
        )
        buckets = sorted(
            {(u, order_bucket(o)) for u, o in conn.execute("SELECT user_id, order_id FROM orders")}
        )
        yield "order_history_buckets", buckets
        final = sorted(
            (u, order_bucket(o), s, o)
            for u, s, o in conn.execute(
                "SELECT user_id, status, order_id FROM orders WHERE is_open = 0"
            )
        )
        yield "order_final_status", final
        updates = [
            order_update_row_from_db(r)
            for r in conn.execute(
                f"SELECT {_UPDATE_COLS} FROM order_updates ORDER BY order_id, version"
            )
        ]
        yield "order_updates", updates
        stream = sorted(
            ((*stream_partition(u), *u) for u in updates),
            key=lambda r: (r[0], r[1], r[3], r[2]),  # day, bucket, version, order_id
        )
        yield "order_updates_stream", stream
        yield (
            "trades",
            map(
                trade_row_from_db,
                conn.execute(
                    f"SELECT {_TRADE_COLS} FROM trades ORDER BY user_id, trade_id, is_maker"
                ),
            ),
        )
        trade_buckets = sorted(
            {(u, trade_bucket(t)) for u, t in conn.execute("SELECT user_id, trade_id FROM trades")}
        )
        yield "trade_buckets", trade_buckets
        yield (
            "balances",
            map(
                balance_row_from_db,
                conn.execute(f"SELECT {_BALANCE_COLS} FROM balances ORDER BY user_id, asset"),
            ),
        )
        yield (
            "book_levels",
            conn.execute(
                f"SELECT {_LEVEL_COLS} FROM book_levels WHERE quantity > 0 "
                "ORDER BY symbol, side, price"
            ),
        )
        yield (
            "market_trades",
            conn.execute(
                f"SELECT {_MARKET_TRADE_COLS} FROM market_trades ORDER BY symbol, trade_id"
            ),
        )
        yield (
            "klines",
            conn.execute(f"SELECT {_KLINE_COLS} FROM klines ORDER BY symbol, interval, open_time"),
        )
        yield (
            "users",
            map(user_row_from_db, conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY user_id")),
        )
        yield "api_keys", map(api_key_row_from_db, conn.execute(_Q_KEYS))
        progress = conn.execute(_Q_PROGRESS, (_PROGRESS_NAME,)).fetchall()
        yield "settlement_progress", [(progress[0][0] if progress else 0,)]

    # ---- queries -------------------------------------------------------------------

    def active_orders(self, user_id: int, symbol: str | None = None) -> list[OrderRow]:
        if symbol is None:
            rows = self._query(_Q_ACTIVE, (user_id,))
        else:
            rows = self._query(_Q_ACTIVE_SYMBOL, (user_id, symbol))
        return [order_row_from_db(r) for r in rows]

    def order_history(
        self,
        user_id: int,
        symbol: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        before: int | None = None,
    ) -> tuple[list[OrderRow], int | None]:
        check_page_limit(limit)
        cursor = _NO_CURSOR if before is None else before
        # One extra row tells whether a next page exists, so the last page has no cursor.
        if symbol is None:
            rows = self._query(_Q_HISTORY, (user_id, cursor, limit + 1))
        else:
            rows = self._query(_Q_HISTORY_SYMBOL, (user_id, symbol, cursor, limit + 1))
        page = [order_row_from_db(r) for r in rows[:limit]]
        return page, (page[-1].order_id if len(rows) > limit else None)

    def get_order(self, order_id: int) -> OrderRow | None:
        rows = self._query(_Q_ORDER, (order_id,))
        return order_row_from_db(rows[0]) if rows else None

    def order_trail(self, order_id: int) -> list[OrderUpdateRow]:
        return [order_update_row_from_db(r) for r in self._query(_Q_TRAIL, (order_id,))]

    def trades(
        self, user_id: int, symbol: str | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[TradeRow]:
        check_page_limit(limit)
        if symbol is None:
            rows = self._query(_Q_TRADES, (user_id, limit))
        else:
            rows = self._query(_Q_TRADES_SYMBOL, (user_id, symbol, limit))
        return [trade_row_from_db(r) for r in rows]

    def balances(self, user_id: int) -> list[BalanceRow]:
        return [balance_row_from_db(r) for r in self._query(_Q_BALANCES, (user_id,))]

    def order_statistics(self, user_id: int) -> dict[OrderStatus, int]:
        counts = dict.fromkeys(FINAL_STATUSES, 0)
        for status, n in self._query(_Q_STATS, (user_id,)):
            counts[OrderStatus(status)] = n
        return counts

    # ---- market data -----------------------------------------------------------------

    def book_levels(self, symbol: str) -> list[BookLevelRow]:
        return sorted_levels(book_level_row_from_db(r) for r in self._query(_Q_LEVELS, (symbol,)))

    def recent_trades(self, symbol: str, limit: int = DEFAULT_PAGE_LIMIT) -> list[MarketTradeRow]:
        check_page_limit(limit)
        return [market_trade_row_from_db(r) for r in self._query(_Q_RECENT_TRADES, (symbol, limit))]

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int = DEFAULT_KLINE_LIMIT,
    ) -> list[KlineRow]:
        check_kline_query(interval, start, end, limit)
        top = _NO_CURSOR if end is None else end
        if start is None:
            rows = self._query(_Q_KLINES_LATEST, (symbol, interval, top, limit))[::-1]
        else:
            rows = self._query(_Q_KLINES_FROM, (symbol, interval, start, top, limit))
        return [kline_row_from_db(r) for r in rows]

    def ticker_inputs(self, symbol: str, start: int, end: int) -> TickerInputs:
        minutes = [
            kline_row_from_db(r) for r in self._query(_Q_KLINE_RANGE, (symbol, "1m", start, end))
        ]
        newest = self.recent_trades(symbol, 1)
        return ticker_from_klines(symbol, minutes, newest[0].price if newest else None)

    # ---- users and keys ----------------------------------------------------------------

    def get_user(self, user_id: int) -> UserRow | None:
        rows = self._query(_Q_USER, (user_id,))
        return user_row_from_db(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [api_key_row_from_db(r) for r in self._query(_Q_KEYS, ())]

    def api_keys_since(self, sequence: int) -> list[ApiKeyRow]:
        return [api_key_row_from_db(r) for r in self._query(_Q_KEYS_SINCE, (sequence,))]
