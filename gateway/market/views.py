"""Market data -> the JSON objects of the public API (decimal strings, best first).

One :class:`MarketViews` per app: each symbol's formatters come from
:mod:`gateway.convert` (the only place the gateway scales). A symbol no longer configured is
shown with its integers unscaled rather than failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.enums import Side
from engine.markets import Markets
from gateway.convert import format_lots, format_minor, format_ticks
from gateway.market.book import DepthSnapshot

Json = dict[str, Any]
_BUY = Side.BUY


def _raw(value: int) -> str:
    return str(value)


class _Format:
    __slots__ = ("price", "quantity", "quote")

    def __init__(
        self,
        price: Callable[[int], str],
        quantity: Callable[[int], str],
        quote: Callable[[int], str],
    ) -> None:
        self.price = price
        self.quantity = quantity
        self.quote = quote


_RAW = _Format(_raw, _raw, _raw)


class MarketViews:
    """Formatters of depth, trades, tickers and klines."""

    def __init__(self, markets: Markets) -> None:
        self._formats: dict[str, _Format] = {}
        for name, spec in markets.symbols.items():
            quote = markets.assets.get(spec.quote)
            self._formats[name] = _Format(
                (lambda s: lambda t: format_ticks(s, t))(spec),
                (lambda s: lambda n: format_lots(s, n))(spec),
                (lambda a: lambda m: format_minor(a, m))(quote) if quote is not None else _raw,
            )

    def fmt(self, symbol: str) -> _Format:
        return self._formats.get(symbol, _RAW)

    def depth(self, snap: DepthSnapshot) -> Json:
        f = self.fmt(snap.symbol)
        price = f.price
        qty = f.quantity
        return {
            "symbol": snap.symbol,
            "last_update_id": snap.last_update_id,
            "sequence": snap.sequence,
            "bids": [[price(p), qty(q)] for p, q in snap.bids],
            "asks": [[price(p), qty(q)] for p, q in snap.asks],
        }

    def depth_delta(
        self,
        symbol: str,
        first_update_id: int,
        last_update_id: int,
        sequence: int,
        levels: Iterable[tuple[tuple[Side, int], int]],
    ) -> Json:
        """A depth-stream event: the changed levels only, best first; ``"0"`` removes."""
        f = self.fmt(symbol)
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        for (side, p), q in levels:
            (bids if side is _BUY else asks).append((p, q))
        bids.sort(reverse=True)
        asks.sort()
        price = f.price
        qty = f.quantity
        return {
            "symbol": symbol,
            "first_update_id": first_update_id,
            "last_update_id": last_update_id,
            "sequence": sequence,
            "bids": [[price(p), qty(q)] for p, q in bids],
            "asks": [[price(p), qty(q)] for p, q in asks],
        }

    def public_trade(
        self,
        symbol: str,
        trade_id: int,
        price: int,
        quantity: int,
        quote_quantity: int,
        taker_side: str,
        executed_at: int,
    ) -> Json:
        """A trade without user or order ids (the REST and the stream shape)."""
        f = self.fmt(symbol)
        return {
            "trade_id": str(trade_id),
            "price": f.price(price),
            "quantity": f.quantity(quantity),
            "quote_quantity": f.quote(quote_quantity),
            "taker_side": str(taker_side),
            "executed_at": executed_at,
        }
