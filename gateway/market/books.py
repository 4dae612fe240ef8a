"""The gateway's books of every market, changed only on the event loop, batch by batch.

:class:`MarketBooks` receives the feed's start and its ordered batches
(:mod:`gateway.market.feed`) on the event loop thread. It applies each output's
``depth_updates`` to the market's :class:`~gateway.market.book.LevelBook` and, per batch,
merges each market's updates into one :class:`DepthDelta` (first and last update id, the
last post-state of each changed level), which the caller hands to the stream hub with the
batch. The REST depth route reads the same books on the same thread, so a depth answer
and the deltas sent after it fit together exactly: the delta following an answer at update
id ``u`` starts at ``u + 1`` or earlier and ends after ``u``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.enums import Side
from gateway.market.book import BookGapError, DepthSnapshot, LevelBook
from gateway.market.feed import Published, Start

log = logging.getLogger(__name__)


class DepthDelta:
    """One market's merged depth changes of one batch.

    Mutable (unlike the project's events) because it is built up on the hot path, one
    level at a time; it is handed over only once complete and never changed after.
    """

    __slots__ = (
        "first_update_id", "last_update_id", "levels", "published_ms", "sequence", "symbol",
    )  # fmt: skip

    def __init__(self, symbol: str, first_update_id: int, published_ms: int) -> None:
        self.symbol = symbol
        self.first_update_id = first_update_id
        self.last_update_id = first_update_id
        self.sequence = 0
        self.published_ms = published_ms  # of the earliest output merged in
        # (side, price) -> quantity after the last update; 0 removes the level.
        self.levels: dict[tuple[Side, int], int] = {}


class MarketBooks:
    """Every market's book (loop thread only)."""

    def __init__(self, symbols: list[str], on_broken: Callable[[], None] | None = None) -> None:
        self.books: dict[str, LevelBook] = {s: LevelBook(s) for s in symbols}
        self.sequence = 0  # the last output applied
        self.installed = False
        self._on_broken = on_broken
        self.broken = False

    def on_start(self, start: Start) -> None:
        self.books = dict(start.books)
        self.sequence = start.sequence
        self.installed = True
        self.broken = False

    def apply(self, batch: list[Published]) -> dict[str, DepthDelta] | None:
        """Apply a batch; each changed market's merged delta (None: the books are broken)."""
        if self.broken:
            return None
        books = self.books
        deltas: dict[str, DepthDelta] = {}
        try:
            for item in batch:
                output = item.output
                sequence = output.sequence
                for update in output.depth_updates:
                    book = books.get(update.symbol)
                    if book is None:  # a market the gateway's config does not know
                        book = books[update.symbol] = LevelBook(update.symbol)
                    book.apply(update, sequence)
                    delta = deltas.get(update.symbol)
                    if delta is None:
                        delta = deltas[update.symbol] = DepthDelta(
                            update.symbol, update.update_id, item.published_ms
                        )
                    delta.last_update_id = update.update_id
                    delta.sequence = sequence
                    levels = delta.levels
                    for level in update.levels:
                        levels[(level.side, level.price)] = level.quantity
                self.sequence = sequence
        except BookGapError:
            # Cannot happen with a sound feed; if it does, the books are unusable until the
            # feed restarts from a snapshot (a depth client sees the gap and resyncs).
            log.exception("market books out of step; restarting the feed")
            self.broken = True
            if self._on_broken is not None:
                self._on_broken()
            return None
        return deltas

    def depth(self, symbol: str, limit: int) -> DepthSnapshot | None:
        book = self.books.get(symbol)
        return None if book is None else book.snapshot(limit)

    def best(self, symbol: str) -> tuple[int | None, int | None]:
        """(best bid, best ask) in ticks."""
        book = self.books.get(symbol)
        return (None, None) if book is None else (book.best_bid(), book.best_ask())
