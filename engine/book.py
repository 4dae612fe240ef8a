"""The order book of one symbol: two price-sorted sides of FIFO levels.

Layout (the style guide's): each side is a ``SortedDict`` from price in ticks to a
:class:`Level`; a level is an insertion-ordered ``dict`` order_id -> order (insertion order *is*
time priority) with a cached total of the remaining lots. The best ask is ``asks.peekitem(0)``,
the best bid ``bids.peekitem(-1)``; both are the fast paths of a SortedDict. The engine keeps
the order_id -> order index that makes a cancel O(1) plus one O(log n) level removal.

Matching itself lives in :mod:`engine.engine`, next to the balances and events it moves; this
module owns the shape of the book and the operations that keep it consistent.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from engine.errors import InvariantError
from engine.orders import Order


class Level:
    __slots__ = ("orders", "price", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: dict[int, Order] = {}
        self.total = 0  # sum of the orders' remaining lots

    def __repr__(self) -> str:
        return f"Level(price={self.price}, orders={len(self.orders)}, total={self.total})"


class OrderBook:
    __slots__ = ("asks", "bids", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        # SortedDict[int, Level]; sortedcontainers ships no type hints.
        self.bids = SortedDict()
        self.asks = SortedDict()

    def add(self, order: Order) -> Level:
        """Rest ``order`` at the back of its price level; returns that level."""
        side = self.bids if order.is_buy else self.asks
        price = order.price
        if price is None:
            raise InvariantError(f"order {order.order_id} has no price and cannot rest")
        level = side.get(price)
        if level is None:
            level = side[price] = Level(price)
        level.orders[order.order_id] = order
        level.total += order.remaining
        return level

    def remove(self, order: Order) -> None:
        """Take a resting order out of its level, dropping the level once it is empty."""
        side = self.bids if order.is_buy else self.asks
        level = side.get(order.price)
        if level is None or level.orders.pop(order.order_id, None) is None:
            raise InvariantError(f"order {order.order_id} is not in the {self.symbol} book")
        level.total -= order.remaining
        if not level.orders:
            del side[order.price]

    def best_bid(self) -> Level | None:
        bids = self.bids
        return bids.peekitem(-1)[1] if bids else None

    def best_ask(self) -> Level | None:
        asks = self.asks
        return asks.peekitem(0)[1] if asks else None

    def would_take(self, is_buy: bool, price: int) -> bool:
        """Would a limit order at ``price`` cross the opposite side (ignoring who rests there)?"""
        if is_buy:
            asks = self.asks
            return bool(asks) and asks.peekitem(0)[0] <= price
        bids = self.bids
        return bool(bids) and bids.peekitem(-1)[0] >= price

    def levels(self, is_buy: bool) -> list[Level]:
        """One side's levels, best first."""
        if is_buy:
            return list(reversed(self.bids.values()))
        return list(self.asks.values())
