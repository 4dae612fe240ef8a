"""One market's aggregated book as the gateway keeps it: price levels, not orders.

Theory of operation
-------------------
The engine reports, for every command that changes a market's book, a ``DepthUpdated``: the
market's next update id (contiguous per symbol) and the absolute post-state of each level it
changed (side, price, total quantity, order count; an emptied level with quantity 0). So a
book that starts from a consistent state (an engine snapshot, or nothing at update id 0)
and applies those updates in update-id order equals the engine's book after the same update
id, level by level. :meth:`LevelBook.apply` refuses an update that does not follow the one
before (a gap, or one already applied) and changes nothing then: a gap means the follower
lost its place, and only a restart from a snapshot repairs that.

Levels are ``SortedDict``s from price (ticks) to ``(quantity, order_count)``; the best bid is
the last key, the best ask the first, as in the engine's book.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sortedcontainers import SortedDict

from engine.enums import Side
from engine.errors import ExchangeError

_BUY = Side.BUY


class BookGapError(ExchangeError):
    """An update does not follow the book's last update id (a lost or repeated update)."""


class LevelLike(Protocol):
    """What the book reads of an ``engine.events.LevelUpdated``."""

    @property
    def side(self) -> Side: ...
    @property
    def price(self) -> int: ...
    @property
    def quantity(self) -> int: ...
    @property
    def order_count(self) -> int: ...


class DepthLike(Protocol):
    """What the book reads of an ``engine.events.DepthUpdated``."""

    @property
    def symbol(self) -> str: ...
    @property
    def update_id(self) -> int: ...
    @property
    def levels(self) -> tuple[LevelLike, ...]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthSnapshot:
    """The book after exactly one update id, best first on each side (ticks, lots)."""

    symbol: str
    last_update_id: int
    sequence: int  # the engine sequence of that update (0: no update yet)
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class LevelBook:
    """The aggregated book of one market (see the module docstring)."""

    __slots__ = ("asks", "bids", "sequence", "symbol", "update_id")

    def __init__(self, symbol: str, update_id: int = 0, sequence: int = 0) -> None:
        self.symbol = symbol
        self.update_id = update_id
        self.sequence = sequence
        # SortedDict[int, tuple[int, int]]: price -> (quantity, order_count).
        self.bids = SortedDict()
        self.asks = SortedDict()

    @classmethod
    def from_levels(
        cls,
        symbol: str,
        update_id: int,
        sequence: int,
        levels: Iterable[tuple[Side, int, int, int]],
    ) -> LevelBook:
        """A book at ``update_id`` from (side, price, quantity, order_count) rows."""
        book = cls(symbol, update_id, sequence)
        for side, price, quantity, count in levels:
            if quantity > 0:
                (book.bids if side is _BUY else book.asks)[price] = (quantity, count)
        return book

    def apply(self, update: DepthLike, sequence: int) -> None:
        """Apply the next update of this market; BookGapError (nothing changed) otherwise."""
        if update.update_id != self.update_id + 1:
            raise BookGapError(
                f"{self.symbol}: update id {update.update_id} after {self.update_id}"
            )
        bids = self.bids
        asks = self.asks
        for level in update.levels:
            side = bids if level.side is _BUY else asks
            if level.quantity > 0:
                side[level.price] = (level.quantity, level.order_count)
            else:
                side.pop(level.price, None)
        self.update_id = update.update_id
        self.sequence = sequence

    def snapshot(self, limit: int) -> DepthSnapshot:
        """The top ``limit`` levels of each side, best first."""
        bids = self.bids
        asks = self.asks
        n_bids = min(limit, len(bids))
        n_asks = min(limit, len(asks))
        bid_prices = bids.keys()[len(bids) - n_bids :] if n_bids else []
        ask_prices = asks.keys()[:n_asks] if n_asks else []
        return DepthSnapshot(
            symbol=self.symbol,
            last_update_id=self.update_id,
            sequence=self.sequence,
            bids=[(p, bids[p][0]) for p in reversed(bid_prices)],
            asks=[(p, asks[p][0]) for p in ask_prices],
        )

    def best_bid(self) -> int | None:
        return self.bids.keys()[-1] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.keys()[0] if self.asks else None

    def levels(self, side: Side) -> list[tuple[int, int, int]]:
        """Every level of one side as (price, quantity, order_count), best first."""
        book = self.bids if side is _BUY else self.asks
        prices = reversed(book.keys()) if side is _BUY else book.keys()
        return [(p, *book[p]) for p in prices]
