"""Depth updates: which price levels a command changed, as absolute post-state.

Theory of operation
-------------------
Every book has an *update id* (``MarketState.update_id``), a per-symbol counter that the
engine raises by one for every command that changes that book, so the updates of one market
are contiguous (unlike the engine-wide sequence). Such a command's ``EngineOutput`` carries one
:class:`~engine.events.DepthUpdated`: the symbol, the new update id, and for every level the
command changed its state *after* the command (side, price, total remaining lots, number of
orders); an emptied level is reported as 0 lots and 0 orders. A reader that applies the
updates of one market in update-id order therefore holds exactly the engine's aggregated book.

Cost: nothing scans the book. The engine notes the prices it touches while it works (the
level a new order rests on, the levels a taker walks, the level of a cancelled or amended
order) and this module reads back only those levels. A level the taker merely looked at
(self-trade prevention stopping it at once, a market buy that cannot afford a lot) is noted
with its total before the command and left out when that total did not move: every real
change of a level changes its total, since each resting order holds at least one lot.

Levels are ordered bids then asks, each best first (bids by descending price, asks by
ascending price), which is the order the engine's walks already produce.
"""

from __future__ import annotations

from typing import Any, Final

from engine.enums import Side
from engine.events import DepthUpdated, LevelUpdated
from engine.fastbuild import positional_constructor
from engine.market_state import MarketState

_BUY: Final = Side.BUY
_SELL: Final = Side.SELL

new_level = positional_constructor(LevelUpdated, ("side", "price", "quantity", "order_count"))
new_depth = positional_constructor(DepthUpdated, ("symbol", "update_id", "levels"))


def level_state(side: Side, side_book: Any, price: int) -> LevelUpdated:
    """The level at ``price`` of one side (a SortedDict) as it is now; 0/0 when it is gone."""
    level = side_book.get(price)
    if level is None:
        return new_level(side, price, 0, 0)
    return new_level(side, price, level.total, len(level.orders))


def one_level(market: MarketState, is_buy: bool, price: int) -> tuple[DepthUpdated, ...]:
    """The depth update of a command that changed one level (a rest, cancel or amend)."""
    update_id = market.update_id + 1
    market.update_id = update_id
    book = market.book
    level = level_state(_BUY, book.bids, price) if is_buy else level_state(_SELL, book.asks, price)
    return (new_depth(market.name, update_id, (level,)),)


def after_match(
    market: MarketState,
    taker_is_buy: bool,
    walked: list[tuple[int, int]],
    rested_price: int | None,
) -> tuple[DepthUpdated, ...]:
    """The depth update of a taker that walked the opposite side and may have rested.

    ``walked`` is (price, total before) of every opposite level the taker reached, best first;
    ``rested_price`` the price its remainder now rests at on its own side, or None. Returns
    ``()`` (and leaves the update id) when no level changed.
    """
    book = market.book
    levels: list[LevelUpdated] = []
    append = levels.append
    if taker_is_buy:
        # Bids: the taker's own rest (one level), then the asks it walked, best first.
        if rested_price is not None:
            append(level_state(_BUY, book.bids, rested_price))
        asks = book.asks
        for price, before in walked:
            level = asks.get(price)
            if level is None:
                append(new_level(_SELL, price, 0, 0))
            elif level.total != before:
                append(new_level(_SELL, price, level.total, len(level.orders)))
    else:
        bids = book.bids
        for price, before in walked:
            level = bids.get(price)
            if level is None:
                append(new_level(_BUY, price, 0, 0))
            elif level.total != before:
                append(new_level(_BUY, price, level.total, len(level.orders)))
        if rested_price is not None:
            append(level_state(_SELL, book.asks, rested_price))
    if not levels:
        return ()
    update_id = market.update_id + 1
    market.update_id = update_id
    return (new_depth(market.name, update_id, tuple(levels)),)


def changed_levels(
    market: MarketState, bid_prices: list[int], ask_prices: list[int]
) -> tuple[DepthUpdated, ...]:
    """The depth update of a command that changed the given levels (any order, repeats
    allowed), e.g. a cancel of several orders; ``()`` when both lists are empty."""
    if not bid_prices and not ask_prices:
        return ()
    book = market.book
    levels = [level_state(_BUY, book.bids, p) for p in sorted(set(bid_prices), reverse=True)]
    levels += [level_state(_SELL, book.asks, p) for p in sorted(set(ask_prices))]
    update_id = market.update_id + 1
    market.update_id = update_id
    return (new_depth(market.name, update_id, tuple(levels)),)


def book_levels(market: MarketState) -> list[LevelUpdated]:
    """Every level of the book now, bids then asks, best first (for snapshots and tests)."""
    book = market.book
    bids = [
        new_level(_BUY, level.price, level.total, len(level.orders))
        for level in reversed(book.bids.values())
    ]
    asks = [
        new_level(_SELL, level.price, level.total, len(level.orders))
        for level in book.asks.values()
    ]
    return bids + asks
