"""Market data in the read model: book levels, public trades and klines. Pure; no I/O.

Theory of operation
-------------------
Three tables, written by settlement with the rest of a batch (same transaction in SQLite,
before the progress row in Cassandra), and read by anyone who does not follow the engine's
output stream itself (the gateway serves depth from its own book, see issue 15):

* ``book_levels`` (symbol, side, price) -> quantity, order_count, update_id, version: the
  absolute post-state of every level a ``DepthUpdated`` names, upserted versioned by the
  output's sequence like every other row. An emptied level is a row with quantity 0 in SQLite
  (kept so an older replayed write cannot bring the level back) and a versioned ``DELETE
  USING TIMESTAMP`` in Cassandra (the tombstone shadows older writes, as for active_orders);
  readers only ever see levels with quantity > 0. Settlement workers write partitions in
  parallel, so this table is *eventually* the book, not a snapshot of one update id.
* ``market_trades`` (symbol, trade_id) -> price, quantity, quote_quantity, taker_side,
  executed_at: one immutable public fact per trade (no user or order ids).
* ``klines`` (symbol, interval, open_time) for 1m 5m 15m 1h 1d.

Why klines are recomputed, not incremented
------------------------------------------
A kline aggregates many trades, and the trades of one minute can arrive in any order, in
several batches, from several settlement workers (the engine output's partitions), and again
on replay. Adding each trade to a stored row would need a per-trade "already counted" record
and a read-modify-write that races between workers. Instead every kline is a pure function
of the trades the store holds, recomputed for each bucket a batch touches, after the batch's
trades are written:

* a *part* (``kline_parts``: one minute's trades whose ids share ``trade_id >> 8``, so at
  most 256 trades) from ``market_trades`` (:func:`kline_from_trades`);
* a 1m kline from its parts, and each longer interval from the rows of the next shorter one
  it contains (1m -> 5m -> 15m -> 1h -> 1d, each a whole multiple of the one before:
  :func:`merge_klines`). So no batch ever re-reads more than 256 trades per part it touched,
  however busy the minute, and a 1d kline reads 24 rows, never a day of trades.

Replaying or reordering batches recomputes the same function of the same (or a larger) set
of trades, so the result converges and is idempotent. The version of a kline row is its
``trade_count``: a recomputation over more trades always has a strictly higher count, and
two with equal counts saw the same trades (each bucket's set only grows), hence are equal.
(Parts are versioned the same way.) SQLite upserts
``WHERE excluded.trade_count > klines.trade_count`` inside the batch's
transaction; Cassandra writes ``USING TIMESTAMP trade_count``, so last-write-wins keeps the
most complete row whatever order racing workers finish in. (Racing workers: each writes its
trades, then reads; whichever reads last sees both, so the most complete row is always
written by someone.) ``version`` (the column) is the highest engine sequence among the
trades, for information.

``open`` is the price of the bucket's lowest trade id and ``close`` of its highest, which is
the engine's execution order whatever the timestamps say; ``open_time`` is the trade's
``executed_at`` (the command's timestamp) floored to the interval, in UTC epoch ms, and
``close_time`` is ``open_time + interval - 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

from engine.enums import Side
from settlement.store import InvalidQuery, check_page_limit

__all__ = [
    "DEFAULT_KLINE_LIMIT",
    "INTERVALS",
    "INTERVAL_MS",
    "PART_BITS",
    "BookLevelRow",
    "KlineIO",
    "KlineRow",
    "MarketDataStore",
    "MarketTradeRow",
    "TickerInputs",
    "book_level_row_from_db",
    "check_interval",
    "check_kline_query",
    "children_range",
    "kline_from_trades",
    "kline_row_from_db",
    "market_trade_row_from_db",
    "merge_klines",
    "parent_buckets",
    "rebuild_klines",
    "sorted_levels",
    "ticker_from_klines",
]

# Each interval is a whole multiple of the one before it (the merge chain).
INTERVALS: Final[tuple[tuple[str, int], ...]] = (
    ("1m", 60_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("1d", 86_400_000),
)
INTERVAL_MS: Final[dict[str, int]] = dict(INTERVALS)
DEFAULT_KLINE_LIMIT: Final = 500
PART_BITS: Final = 8  # a kline part holds the trades of 256 consecutive trade ids at most


class BookLevelRow(NamedTuple):
    symbol: str
    side: Side
    price: int  # ticks
    quantity: int  # lots; 0 = the level is empty (never returned by a read)
    order_count: int
    update_id: int  # the book's update id that wrote this level
    version: int  # EngineOutput.sequence


class MarketTradeRow(NamedTuple):
    """A public trade: no user or order ids."""

    symbol: str
    trade_id: int
    price: int  # ticks
    quantity: int  # lots
    quote_quantity: int  # quote minor units
    taker_side: Side
    executed_at: int  # epoch ms
    version: int  # EngineOutput.sequence


class KlineRow(NamedTuple):
    symbol: str
    interval: str  # "1m", "5m", "15m", "1h", "1d"
    open_time: int  # epoch ms, a multiple of the interval
    close_time: int  # open_time + interval - 1
    open: int  # ticks: price of the lowest trade id
    high: int
    low: int
    close: int  # ticks: price of the highest trade id
    volume: int  # lots
    quote_volume: int  # quote minor units
    trade_count: int  # also the row's write version (see the module docstring)
    first_trade_id: int
    last_trade_id: int
    version: int  # highest EngineOutput.sequence among its trades


class TickerInputs(NamedTuple):
    """What a 24 h ticker needs from the store, over [start, end) by 1m klines."""

    symbol: str
    last_price: int | None  # ticks of the newest trade ever (None: no trade yet)
    open: int | None  # None when no trade in the window
    high: int | None
    low: int | None
    volume: int
    quote_volume: int
    trade_count: int


def book_level_row_from_db(r: Sequence[Any]) -> BookLevelRow:
    return BookLevelRow(r[0], Side(r[1]), r[2], r[3], r[4], r[5], r[6])


def market_trade_row_from_db(r: Sequence[Any]) -> MarketTradeRow:
    return MarketTradeRow(r[0], r[1], r[2], r[3], r[4], Side(r[5]), r[6], r[7])


def kline_row_from_db(r: Sequence[Any]) -> KlineRow:
    return KlineRow(*r)


def check_interval(interval: str) -> int:
    """The interval's length in ms; InvalidQuery for anything but 1m 5m 15m 1h 1d."""
    ms = INTERVAL_MS.get(interval)
    if ms is None:
        raise InvalidQuery(f"interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}")
    return ms


def sorted_levels(rows: Iterable[BookLevelRow]) -> list[BookLevelRow]:
    """Non-empty levels, bids (best = highest first) then asks (best = lowest first)."""
    live = [r for r in rows if r.quantity > 0]
    bids = sorted((r for r in live if r.side is Side.BUY), key=lambda r: -r.price)
    asks = sorted((r for r in live if r.side is Side.SELL), key=lambda r: r.price)
    return bids + asks


# ---- klines ---------------------------------------------------------------------------


def parent_buckets(keys: Iterable[tuple[str, int]], interval_ms: int) -> set[tuple[str, int]]:
    """The buckets of ``interval_ms`` that contain the given (symbol, open_time) buckets."""
    return {(symbol, t - t % interval_ms) for symbol, t in keys}


def children_range(open_time: int, interval_ms: int) -> tuple[int, int]:
    """[start, end) of the child buckets' open times inside one bucket."""
    return open_time, open_time + interval_ms


def kline_from_trades(
    symbol: str, open_time: int, trades: Iterable[Sequence[int]]
) -> KlineRow | None:
    """The 1m kline of ``trades`` as (trade_id, price, quantity, quote_quantity, version)
    tuples, any order; None without trades."""
    ordered = sorted(tuple(t) for t in trades)
    if not ordered:
        return None
    prices = [t[1] for t in ordered]
    return KlineRow(
        symbol, "1m", open_time, open_time + 59_999, prices[0], max(prices), min(prices),
        prices[-1], sum(t[2] for t in ordered), sum(t[3] for t in ordered), len(ordered),
        ordered[0][0], ordered[-1][0], max(t[4] for t in ordered),
    )  # fmt: skip


def merge_klines(
    symbol: str, interval: str, open_time: int, children: Iterable[KlineRow]
) -> KlineRow | None:
    """The kline of ``interval`` made of the shorter-interval rows inside it; None if none."""
    rows = sorted(children, key=lambda k: k.first_trade_id)
    if not rows:
        return None
    last = max(rows, key=lambda k: k.last_trade_id)
    return KlineRow(
        symbol, interval, open_time, open_time + INTERVAL_MS[interval] - 1, rows[0].open,
        max(k.high for k in rows), min(k.low for k in rows), last.close,
        sum(k.volume for k in rows), sum(k.quote_volume for k in rows),
        sum(k.trade_count for k in rows), rows[0].first_trade_id, last.last_trade_id,
        max(k.version for k in rows),
    )  # fmt: skip


def ticker_from_klines(
    symbol: str, klines: Iterable[KlineRow], last_price: int | None
) -> TickerInputs:
    rows = sorted(klines, key=lambda k: k.first_trade_id)
    if not rows:
        return TickerInputs(symbol, last_price, None, None, None, 0, 0, 0)
    return TickerInputs(
        symbol, last_price, rows[0].open, max(k.high for k in rows), min(k.low for k in rows),
        sum(k.volume for k in rows), sum(k.quote_volume for k in rows),
        sum(k.trade_count for k in rows),
    )  # fmt: skip


def check_kline_query(interval: str, start: int | None, end: int | None, limit: int) -> int:
    ms = check_interval(interval)
    check_page_limit(limit)
    if start is not None and end is not None and end < start:
        raise InvalidQuery(f"end {end} is before start {start}")
    return ms


# ---- the port -------------------------------------------------------------------------


class MarketDataStore(Protocol):
    """Market-data reads of the settlement store (both adapters implement them)."""

    def book_levels(self, symbol: str) -> list[BookLevelRow]:
        """The book's non-empty levels: bids best (highest) first, then asks best first."""
        ...

    def recent_trades(self, symbol: str, limit: int = 100) -> list[MarketTradeRow]:
        """The symbol's public trades, newest (highest trade id) first."""
        ...

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int = DEFAULT_KLINE_LIMIT,
    ) -> list[KlineRow]:
        """Klines with start <= open_time <= end, oldest first; without ``start``, the
        newest ``limit`` ones up to ``end`` (still oldest first)."""
        ...

    def ticker_inputs(self, symbol: str, start: int, end: int) -> TickerInputs:
        """Open, high, low, volumes and count of the 1m klines with start <= open_time <
        end (a rolling 24 h: start = end - 86 400 000), and the newest trade's price."""
        ...


class KlineIO(Protocol):
    """What :func:`rebuild_klines` needs from an adapter. Each read takes every key of one
    step at once (an adapter may run them concurrently) and answers in the keys' order. Every
    write is durable, and visible to the reads that follow, when it returns."""

    def part_trades(self, keys: list[tuple[str, int, int]]) -> list[list[Sequence[int]]]:
        """Per (symbol, minute, block): the stored trades of ``symbol`` with
        ``trade_id >> PART_BITS == block`` and executed_at in the minute starting at
        ``minute``, as (trade_id, price, quantity, quote_quantity, version)."""
        ...

    def write_parts(self, parts: list[tuple[int, KlineRow]]) -> None:
        """Store (block, part) rows: the piece of a 1m kline made of one block's trades."""
        ...

    def parts(self, keys: list[tuple[str, int]]) -> list[list[KlineRow]]:
        """Per (symbol, minute): every stored part of that minute."""
        ...

    def children(self, interval: str, keys: list[tuple[str, int, int]]) -> list[list[KlineRow]]:
        """Per (symbol, start, end): the stored klines of ``interval`` with start <=
        open_time < end."""
        ...

    def write(self, rows: list[KlineRow]) -> None:
        """Store klines."""
        ...


def rebuild_klines(trades: Iterable[MarketTradeRow], io: KlineIO) -> int:
    """Recompute every kline the ``trades`` (already stored) fall in; returns rows written.

    Bottom up, each step written before the next one reads it: the *parts* the trades touch
    (a part is the trades of one minute whose ids share ``trade_id >> PART_BITS``, so at most
    256 trades are read per part), then each touched minute from its parts (a busy minute has
    a few hundred parts, not tens of thousands of trades to re-read on every batch), then
    5m 15m 1h 1d from the next shorter interval. Parts use the kline's row shape, with
    ``trade_count`` as their version too. Six read rounds and six write rounds per batch.
    """
    part_keys = sorted(
        {
            (t.symbol, t.executed_at - t.executed_at % 60_000, t.trade_id >> PART_BITS)
            for t in trades
        }
    )
    parts: list[tuple[int, KlineRow]] = []
    for (symbol, minute, block), found in zip(part_keys, io.part_trades(part_keys), strict=True):
        part = kline_from_trades(symbol, minute, found)
        if part is not None:
            parts.append((block, part))
    if parts:
        io.write_parts(parts)
    keys = sorted({(symbol, minute) for symbol, minute, _ in part_keys})
    total = len(parts)
    child: str | None = None
    for interval, ms in INTERVALS:
        if child is None:  # 1m, from its parts
            sources = io.parts(keys)
        else:
            keys = sorted(parent_buckets(keys, ms))
            sources = io.children(child, [(symbol, t, t + ms) for symbol, t in keys])
        rows = [
            merge_klines(symbol, interval, t, found)
            for (symbol, t), found in zip(keys, sources, strict=True)
        ]
        written = [r for r in rows if r is not None]
        if written:
            io.write(written)
        total += len(written)
        child = interval
    return total
