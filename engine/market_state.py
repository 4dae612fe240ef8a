"""One symbol's spec and book, with the integers the hot path reads flattened for speed."""

from __future__ import annotations

from engine.book import OrderBook
from engine.markets import SymbolSpec


class MarketState:
    """One symbol's spec, book and the integers the hot path reads, flattened for speed."""

    __slots__ = (
        "base",
        "book",
        "bpl",
        "maker_fee_bps",
        "max_price",
        "max_quantity",
        "min_quantity",
        "name",
        "qptl",
        "quote",
        "spec",
        "taker_fee_bps",
        "update_id",
    )

    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.base = spec.base
        self.quote = spec.quote
        self.qptl = spec.quote_per_tick_lot
        self.bpl = spec.base_per_lot
        self.maker_fee_bps = spec.maker_fee_bps
        self.taker_fee_bps = spec.taker_fee_bps
        self.min_quantity = spec.min_quantity
        self.max_quantity = spec.max_quantity
        self.max_price = spec.max_price
        self.book = OrderBook(spec.name)
        # The book's update id: +1 for every command that changes this book (engine.depth).
        self.update_id = 0
