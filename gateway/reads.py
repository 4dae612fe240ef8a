"""The read side of the API: store rows -> response data, over the settlement read model.

The store lags the engine slightly. Every method blocks on the store, so the routes of
:mod:`gateway.routes.reads` are plain ``def`` handlers, which FastAPI runs in its threadpool.
"""

from __future__ import annotations

from engine.markets import Markets
from gateway.convert import INT64_MAX
from gateway.errors import ApiError, ErrorCode, clip
from gateway.views import Json, Views
from settlement.store import SettlementStore


class ReadService:
    """The queries of the read routes, with their checks (unknown symbol, other user's order)."""

    def __init__(self, *, markets: Markets, store: SettlementStore, views: Views) -> None:
        self._symbols = markets.symbols
        self._store = store
        self._views = views

    def check_symbol(self, symbol: str | None) -> None:
        if symbol is not None and symbol not in self._symbols:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(symbol)}")

    def active_orders(self, user_id: int, symbol: str | None) -> list[Json]:
        self.check_symbol(symbol)
        return [self._views.order(r) for r in self._store.active_orders(user_id, symbol)]

    def order_history(
        self, user_id: int, symbol: str | None, limit: int, before: str | None
    ) -> Json:
        self.check_symbol(symbol)
        cursor = None if before is None else int(before)
        if cursor is not None and cursor > INT64_MAX:
            cursor = INT64_MAX
        rows, next_cursor = self._store.order_history(user_id, symbol, limit, cursor)
        return {
            "orders": [self._views.order(r) for r in rows],
            "next_cursor": None if next_cursor is None else str(next_cursor),
        }

    def order(self, order_id: str, user_id: int | None) -> Json:
        """One order with its update trail; ``order_id`` is a string of digits. Another
        user's order is not found (``user_id`` None: anyone's, for operators)."""
        digits = order_id.lstrip("0") or "0"
        oid = int(digits) if len(digits) <= 19 else INT64_MAX + 1  # no giant ints
        row = self._store.get_order(oid) if oid <= INT64_MAX else None
        if row is None or (user_id is not None and row.user_id != user_id):
            raise ApiError(ErrorCode.ORDER_NOT_FOUND, f"order {clip(order_id)} not found")
        data = self._views.order(row)
        data["updates"] = [self._views.update(u) for u in self._store.order_trail(oid)]
        return data

    def trades(self, user_id: int, symbol: str | None, limit: int) -> list[Json]:
        self.check_symbol(symbol)
        return [self._views.trade(t) for t in self._store.trades(user_id, symbol, limit)]

    def balances(self, user_id: int) -> list[Json]:
        return [self._views.balance(b) for b in self._store.balances(user_id)]
