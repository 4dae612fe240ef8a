"""The engine's state as plain data and back: what a snapshot holds and the state hash covers.

:mod:`engine.snapshot` frames and checks the bytes; this module decides what goes in them.
Only LIMIT GTC orders rest, so the books are rows of resting orders per symbol and side, in
priority order (ascending price, FIFO within a level), which is also the order that rebuilds
every level's time priority on import.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from operator import attrgetter
from typing import Any, Final

from engine import snapshot as _snapshot
from engine.balances import Balance, Ledger
from engine.book import Level
from engine.enums import OrderType, Side, StpMode, TimeInForce
from engine.errors import ConfigError
from engine.market_state import MarketState
from engine.markets import AssetSpec
from engine.order_state import Trigger, next_status
from engine.orders import Order

_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_GTC = TimeInForce.GTC
_PARTIAL_FILL = Trigger.PARTIAL_FILL


def scales(
    fee_account: int, assets: Mapping[str, AssetSpec], markets: Mapping[str, MarketState]
) -> tuple[Any, ...]:
    """What a snapshot must agree on with the markets config to be restored."""
    return (
        fee_account,
        [(code, spec.decimals) for code, spec in assets.items()],
        [(m.name, m.base, m.quote, m.qptl, m.bpl, str(m.spec.tick_size)) for m in markets.values()],
    )


# One row per resting order. Only LIMIT GTC orders rest (an invariant the checker
# enforces) and their status follows from ``filled``, so neither is stored; stp_mode is
# stored by its value, the same name the wire uses. (Columns load faster but cost a
# transpose on the way out; rows keep both directions under 3 s for a million orders.)
_ORDER_ROW: Final = (
    "order_id",
    "client_order_id",
    "user_id",
    "post_only",
    "price",
    "quantity",
    "filled",
    "cumulative_quote",
    "created_at",
    "updated_at",
    "stp_mode._value_",
)


def export_business(
    markets: Mapping[str, MarketState],
    ledger: Ledger,
    completed: OrderedDict[int, tuple[int, str]],
    next_trade_id: int,
    completed_capacity: int,
) -> tuple[Any, ...]:
    """The business state as plain data (what the snapshot stores and the state hash covers)."""
    side_code = _snapshot.SIDE_CODE
    # One C-level getter per order: with a million orders scattered in memory, touching
    # each order only once is what matters.
    row_of = attrgetter(*_ORDER_ROW)
    books = []
    for market in markets.values():
        for side, side_book in ((_BUY, market.book.bids), (_SELL, market.book.asks)):
            # Ascending price, FIFO within a level: rebuilding in this order restores
            # every level's time priority.
            orders = (o for level in side_book.values() for o in level.orders.values())
            books.append((market.name, side_code[side], list(map(row_of, orders))))
    return (
        next_trade_id,
        completed_capacity,
        sorted(ledger.supply.items()),
        [(b.user_id, b.asset, b.available, b.locked) for b in ledger if b.available or b.locked],
        books,
        [(oid, user, symbol) for oid, (user, symbol) in completed.items()],
        # Each book's update id (engine.depth): replays and restores must continue the count.
        [(market.name, market.update_id) for market in markets.values()],
    )


def import_business(
    business: tuple[Any, ...],
    markets: Mapping[str, MarketState],
    ledger: Ledger,
    orders: dict[int, Order],
    client_ids: dict[tuple[int, str], Order],
) -> tuple[int, int, OrderedDict[int, tuple[int, str]]]:
    """Load :func:`export_business`'s data into a fresh engine's books, ledger and indexes.

    Returns (next trade id, completed-order capacity, completed-order memory). A resting
    order's status follows from what it has filled, through the order state table. Each
    book's update id is set on its market.
    """
    try:
        next_trade_id, capacity, supply, balances, books, completed, update_ids = business
    except ValueError as e:
        raise _snapshot.SnapshotFormatError("snapshot business state has the wrong shape") from e
    for symbol, update_id in update_ids:
        market = markets.get(symbol)
        if market is None:
            raise ConfigError(f"the snapshot has an update id for unknown symbol {symbol!r}")
        market.update_id = update_id
    for asset, amount in supply:
        ledger.supply[asset] = amount
    for user_id, asset, available, locked in balances:
        balance = ledger.get_or_create(user_id, asset)
        balance.available = available
        balance.locked = locked
    stp_of = {mode.value: mode for mode in StpMode}
    get_or_create = ledger.get_or_create
    for symbol, side_code, rows in books:
        market = markets.get(symbol)
        if market is None:
            raise ConfigError(f"the snapshot has orders for unknown symbol {symbol!r}")
        side = _snapshot.SIDE_FROM_CODE[side_code]
        is_buy = side is _BUY
        qptl = market.qptl
        bpl = market.bpl
        base_asset = market.base
        quote_asset = market.quote
        user_balances: dict[int, tuple[Balance, Balance]] = {}
        levels: dict[int, Level] = {}
        level = Level(0)
        for (
            order_id,
            client_order_id,
            user_id,
            post_only,
            price,
            quantity,
            filled,
            cumulative_quote,
            created_at,
            updated_at,
            stp,
        ) in rows:
            pair = user_balances.get(user_id)
            if pair is None:
                pair = user_balances[user_id] = (
                    get_or_create(user_id, base_asset),
                    get_or_create(user_id, quote_asset),
                )
            order = Order(
                order_id,
                client_order_id,
                user_id,
                symbol,
                side,
                _LIMIT,
                _GTC,
                post_only,
                price,
                quantity,
                stp_of[stp],
                created_at,
                pair[0],
                pair[1],
                price * qptl if is_buy else bpl,
            )
            if filled:
                order.filled = filled
                order.remaining = quantity - filled
                order.cumulative_quote = cumulative_quote
                order.status = next_status(order.status, _PARTIAL_FILL)
            order.updated_at = updated_at
            if price != level.price:  # rows come sorted by price
                level = levels[price] = Level(price)
            level.orders[order_id] = order
            level.total += order.remaining
            orders[order_id] = order
            if client_order_id is not None:
                client_ids[(user_id, client_order_id)] = order
        if levels:
            (market.book.bids if is_buy else market.book.asks).update(levels)
    memory = OrderedDict((order_id, (user_id, symbol)) for order_id, user_id, symbol in completed)
    return next_trade_id, capacity, memory
