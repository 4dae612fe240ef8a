"""Projection: engine outputs -> the rows the read model must hold. Pure; no I/O, no clock.

Theory of operation
-------------------
Both store adapters call :func:`project` and only translate its :class:`WriteSet` into their
own statements, so the two backends cannot disagree about *what* is written.

* ``OrderUpdated`` is the one source of order state: it carries the order's full absolute
  state after the command (rejected orders included, which have no ``OrderPlaced``). It gives
  the order's current row (upserted, versioned by the output's sequence) and an entry of the
  order's update trail (an immutable fact keyed by ``(order_id, sequence)``).
  Whether the order is *active* and its *final status* are functions of that row
  (:attr:`OrderRow.is_open`, ``status``), so a backend that keeps them in separate tables
  derives them from the same row and version.
* ``TradeExecuted`` gives two immutable rows, one per user (maker and taker).
* ``BalanceUpdated`` gives the balance's absolute post-state, versioned by sequence.
* ``DepthUpdated`` gives each named level's absolute post-state (``book_levels``), versioned
  by sequence, and each ``TradeExecuted`` also a public ``market_trades`` row (an immutable
  fact); klines are derived from those by the adapters (see :mod:`settlement.market_data`).
* ``UserCreated`` gives the user's row and ``ApiKeyUpdated`` the key's absolute state (added
  or revoked), each versioned by sequence like a balance.
* ``OrderPlaced`` and ``OrderCompleted`` repeat what the same output's ``OrderUpdated`` says
  (the engine emits an update for every order a command touches, with the terminal status
  when it completes); ``CommandRejected`` changes no read-model row. None is projected.

Coalescing: within one output the lists are in the order things happened, so for the same
key the *later* item wins; across the outputs of a batch the *higher* sequence wins. This is
exactly what versioned upserts would do row by row, so writing the coalesced set is
equivalent to writing every item, and it is also required: a backend that versions by
sequence cannot order two writes that carry the same sequence (Cassandra breaks such a
timestamp tie by comparing values, SQLite's ``version >`` guard keeps the first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.enums import Side
from engine.events import EngineOutput
from settlement.market_data import BookLevelRow, MarketTradeRow
from settlement.store import ApiKeyRow, BalanceRow, OrderRow, OrderUpdateRow, TradeRow, UserRow

__all__ = [
    "BUCKET_BITS",
    "MS_PER_DAY",
    "STREAM_BUCKETS",
    "WriteSet",
    "count_events",
    "order_bucket",
    "project",
    "stream_partition",
    "trade_bucket",
]

# Partition bucketing for the backends that need bounded partitions (Cassandra). Defined here,
# next to the rows, so every adapter and the digest derive the same keys.
#
# Order and trade ids are engine-wide and increase with time, so ``id >> BUCKET_BITS`` groups
# a user's rows into id ranges of 2**18 = 262,144: one partition can never hold more than
# that many rows, whatever the user does, and "newest first" walks the buckets downwards.
BUCKET_BITS = 18
# The update stream is partitioned by (UTC day, order_id % STREAM_BUCKETS): a day's writes
# spread over this many partitions and a day never grows one partition without bound.
STREAM_BUCKETS = 16
MS_PER_DAY = 86_400_000

_OPPOSITE = {Side.BUY: Side.SELL, Side.SELL: Side.BUY}


def order_bucket(order_id: int) -> int:
    return order_id >> BUCKET_BITS


def trade_bucket(trade_id: int) -> int:
    return trade_id >> BUCKET_BITS


def stream_partition(update: OrderUpdateRow) -> tuple[int, int]:
    """``(day, bucket)`` of an update in ``order_updates_stream``; day = days since epoch."""
    return update.updated_at // MS_PER_DAY, update.order_id % STREAM_BUCKETS


@dataclass(slots=True)
class WriteSet:
    """Everything one batch of outputs writes, coalesced (see the module docstring).

    Each list is a kind of versioned upsert; a row's ``version`` is the sequence of the
    output it came from. ``max_sequence`` is the highest sequence in the batch (0 if empty).
    """

    orders: list[OrderRow] = field(default_factory=list)
    order_updates: list[OrderUpdateRow] = field(default_factory=list)
    trades: list[TradeRow] = field(default_factory=list)
    balances: list[BalanceRow] = field(default_factory=list)
    users: list[UserRow] = field(default_factory=list)
    api_keys: list[ApiKeyRow] = field(default_factory=list)
    max_sequence: int = 0
    book_levels: list[BookLevelRow] = field(default_factory=list)
    market_trades: list[MarketTradeRow] = field(default_factory=list)


def count_events(output: EngineOutput) -> int:
    """Number of events in an output (items across all its lists); the benchmark's unit."""
    return (
        len(output.trades)
        + len(output.order_placements)
        + len(output.order_updates)
        + len(output.order_completions)
        + len(output.balance_updates)
        + len(output.rejections)
        + len(output.depth_updates)
        + len(output.user_creations)
        + len(output.api_key_updates)
    )


def project(outputs: Iterable[EngineOutput]) -> WriteSet:
    """Project a batch of outputs, in any order and with duplicates, into one write set."""
    orders: dict[int, OrderRow] = {}
    updates: dict[tuple[int, int], OrderUpdateRow] = {}
    trades: dict[tuple[int, int, bool], TradeRow] = {}
    balances: dict[tuple[int, str], BalanceRow] = {}
    levels: dict[tuple[str, Side, int], BookLevelRow] = {}
    market_trades: dict[tuple[str, int], MarketTradeRow] = {}
    users: dict[int, UserRow] = {}
    api_keys: dict[str, ApiKeyRow] = {}
    max_sequence = 0
    # Hot loop: bind the lookups once (house style, rule 19).
    orders_get = orders.get
    balances_get = balances.get
    opposite = _OPPOSITE
    for out in outputs:
        seq = out.sequence
        if seq > max_sequence:
            max_sequence = seq
        for u in out.order_updates:
            prev = orders_get(u.order_id)
            # ">=": a later item of the same output wins; a lower sequence never does.
            if prev is None or seq >= prev.version:
                orders[u.order_id] = OrderRow(
                    u.order_id, u.client_order_id, u.user_id, u.symbol, u.side, u.order_type,
                    u.time_in_force, u.price, u.quantity, u.filled_quantity,
                    u.remaining_quantity, u.cumulative_quote, u.avg_fill_price, u.status,
                    u.reject_reason, u.created_at, u.updated_at, seq,
                )  # fmt: skip
            updates[(u.order_id, seq)] = OrderUpdateRow(
                u.order_id, seq, out.command_id, u.user_id, u.symbol, u.status,
                u.filled_quantity, u.remaining_quantity, u.cumulative_quote, u.avg_fill_price,
                u.last_fill_price, u.last_fill_quantity, u.reject_reason, u.updated_at,
            )  # fmt: skip
        for t in out.trades:
            taker_side = t.taker_side
            trades[(t.maker_user_id, t.trade_id, True)] = TradeRow(
                t.maker_user_id, t.trade_id, True, t.maker_order_id, t.symbol,
                opposite[taker_side], t.price, t.quantity, t.quote_quantity, t.maker_fee,
                t.maker_fee_asset, t.executed_at, seq,
            )  # fmt: skip
            trades[(t.taker_user_id, t.trade_id, False)] = TradeRow(
                t.taker_user_id, t.trade_id, False, t.taker_order_id, t.symbol, taker_side,
                t.price, t.quantity, t.quote_quantity, t.taker_fee, t.taker_fee_asset,
                t.executed_at, seq,
            )  # fmt: skip
            market_trades[(t.symbol, t.trade_id)] = MarketTradeRow(
                t.symbol, t.trade_id, t.price, t.quantity, t.quote_quantity, taker_side,
                t.executed_at, seq,
            )  # fmt: skip
        for b in out.balance_updates:
            key = (b.user_id, b.asset)
            prev_b = balances_get(key)
            if prev_b is None or seq >= prev_b.version:
                balances[key] = BalanceRow(b.user_id, b.asset, b.available, b.locked, seq)
        for d in out.depth_updates:
            symbol = d.symbol
            for lv in d.levels:
                level_key = (symbol, lv.side, lv.price)
                prev_l = levels.get(level_key)
                # ">=" as for orders: a later item of the same output wins.
                if prev_l is None or seq >= prev_l.version:
                    levels[level_key] = BookLevelRow(
                        symbol, lv.side, lv.price, lv.quantity, lv.order_count, d.update_id, seq
                    )
        # Rare (user and key administration): no local bindings needed.
        for c in out.user_creations:
            prev_u = users.get(c.user_id)
            if prev_u is None or seq >= prev_u.version:
                users[c.user_id] = UserRow(c.user_id, c.role, c.label, c.created_at, seq)
        for k in out.api_key_updates:
            prev_k = api_keys.get(k.api_key)
            if prev_k is None or seq >= prev_k.sequence:
                api_keys[k.api_key] = ApiKeyRow(
                    k.api_key, k.user_id, k.role, k.public_key, k.revoked, seq
                )
    return WriteSet(
        orders=list(orders.values()),
        order_updates=list(updates.values()),
        trades=list(trades.values()),
        balances=list(balances.values()),
        users=list(users.values()),
        api_keys=list(api_keys.values()),
        max_sequence=max_sequence,
        book_levels=list(levels.values()),
        market_trades=list(market_trades.values()),
    )
