"""Public trades, klines and the rolling 24 h ticker, from the store (and the books).

Recent trades and klines are the settlement store's (``recent_trades``, ``klines``: built
from trades by settlement, idempotent under replay). The ticker combines both with the
gateway's own books for the best bid and ask:

* ``last_price``: the newest trade's price;
* ``open_24h`` .. ``trade_count_24h``: the store's ``ticker_inputs`` over the 1-minute
  klines that opened in [now - 24 h, now) (so the window rolls by the minute): the open of
  the oldest, the extremes, the sums;
* ``best_bid``, ``best_ask``: the top of the in-memory book (read on the event loop).

Store queries block, so they run in the threadpool; the book is read back on the loop.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.market.books import MarketBooks
from gateway.market.views import Json, MarketViews
from settlement.market_data import INTERVAL_MS, MarketDataStore

DAY_MS = 24 * 60 * 60 * 1000
INTERVALS: tuple[str, ...] = tuple(INTERVAL_MS)  # 1m 5m 15m 1h 1d, the store's


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TickerService:
    """Queries of the public market routes and the ticker stream."""

    def __init__(self, *, store: MarketDataStore, books: MarketBooks, views: MarketViews) -> None:
        self._store = store
        self._books = books
        self._views = views

    # ---- blocking (threadpool) ------------------------------------------------------

    def recent_trades(self, symbol: str, limit: int) -> list[Json]:
        views = self._views
        return [
            views.public_trade(
                symbol,
                r.trade_id,
                r.price,
                r.quantity,
                r.quote_quantity,
                r.taker_side,
                r.executed_at,
            )
            for r in self._store.recent_trades(symbol, limit)
        ]

    def klines(
        self, symbol: str, interval: str, start: int | None, end: int | None, limit: int
    ) -> list[Json]:
        f = self._views.fmt(symbol)
        return [
            {
                "open_time": k.open_time,
                "close_time": k.close_time,
                "open": f.price(k.open),
                "high": f.price(k.high),
                "low": f.price(k.low),
                "close": f.price(k.close),
                "volume": f.quantity(k.volume),
                "quote_volume": f.quote(k.quote_volume),
                "trade_count": k.trade_count,
            }
            for k in self._store.klines(symbol, interval, start, end, limit)
        ]

    def _day(self, symbol: str, at_ms: int) -> dict[str, Any]:
        """The 24 h aggregates of ``symbol`` from the store (the book is added on the loop)."""
        f = self._views.fmt(symbol)
        t = self._store.ticker_inputs(symbol, at_ms - DAY_MS, at_ms)
        return {
            "symbol": symbol,
            "last_price": None if t.last_price is None else f.price(t.last_price),
            "best_bid": None,
            "best_ask": None,
            "open_24h": None if t.open is None else f.price(t.open),
            "high_24h": None if t.high is None else f.price(t.high),
            "low_24h": None if t.low is None else f.price(t.low),
            "volume_24h": f.quantity(t.volume),
            "quote_volume_24h": f.quote(t.quote_volume),
            "trade_count_24h": t.trade_count,
        }

    # ---- on the loop ------------------------------------------------------------------

    async def ticker(self, symbol: str) -> Json:
        data = await run_in_threadpool(self._day, symbol, now_ms())
        self._add_book(data)
        return data

    async def tickers(self, symbols: list[str]) -> list[Json]:
        at = now_ms()
        rows = await run_in_threadpool(lambda: [self._day(s, at) for s in symbols])
        for data in rows:
            self._add_book(data)
        return rows

    def _add_book(self, data: dict[str, Any]) -> None:
        symbol = data["symbol"]
        bid, ask = self._books.best(symbol)
        f = self._views.fmt(symbol)
        data["best_bid"] = None if bid is None else f.price(bid)
        data["best_ask"] = None if ask is None else f.price(ask)
