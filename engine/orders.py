"""Orders: the engine's mutable record of a live order, and the frozen view it hands out.

An :class:`Order` lives in the engine only while it is open (resting in a book) or while the
command that created it is being applied. Its status moves only through the table in
:mod:`engine.order_state`.

Every open order holds exactly ``remaining * lock_per_lot`` minor units locked in
``lock_balance``: for a BUY that is ``price * quote_per_tick_lot`` of quote per lot, for a SELL
``base_per_lot`` of base per lot. Keeping both on the order makes a cancel or a fill a couple of
integer operations, with no lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.balances import Balance
from engine.enums import OrderStatus, OrderType, Side, StpMode, TimeInForce
from engine.order_state import Trigger, next_status

# Module constants: reading an enum member off its class costs far more than a global, and
# every new order pays these.
_BUY = Side.BUY
_NEW = OrderStatus.NEW


class Order:
    __slots__ = (
        "base_balance",
        "client_order_id",
        "created_at",
        "cumulative_quote",
        "filled",
        "is_buy",
        "lock_balance",
        "lock_per_lot",
        "order_id",
        "order_type",
        "post_only",
        "price",
        "quantity",
        "quote_balance",
        "remaining",
        "side",
        "status",
        "stp_mode",
        "symbol",
        "time_in_force",
        "updated_at",
        "user_id",
    )

    def __init__(
        self,
        order_id: int,
        client_order_id: str | None,
        user_id: int,
        symbol: str,
        side: Side,
        order_type: OrderType,
        time_in_force: TimeInForce,
        post_only: bool,
        price: int | None,
        quantity: int,
        stp_mode: StpMode,
        created_at: int,
        base_balance: Balance,
        quote_balance: Balance,
        lock_per_lot: int,
    ) -> None:
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.user_id = user_id
        self.symbol = symbol
        self.side = side
        self.is_buy = side is _BUY
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.post_only = post_only
        self.price = price
        self.quantity = quantity
        self.remaining = quantity
        self.filled = 0
        self.cumulative_quote = 0
        self.status = _NEW
        self.stp_mode = stp_mode
        self.created_at = created_at
        self.updated_at = created_at
        self.base_balance = base_balance
        self.quote_balance = quote_balance
        self.lock_balance = quote_balance if self.is_buy else base_balance
        self.lock_per_lot = lock_per_lot

    def transition(self, trigger: Trigger) -> OrderStatus:
        """Move the status through the table; IllegalTransition leaves the order untouched."""
        self.status = next_status(self.status, trigger)
        return self.status

    def view(self) -> OrderView:
        return OrderView(
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            user_id=self.user_id,
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            time_in_force=self.time_in_force,
            post_only=self.post_only,
            price=self.price,
            quantity=self.quantity,
            filled_quantity=self.filled,
            remaining_quantity=self.remaining,
            cumulative_quote=self.cumulative_quote,
            status=self.status,
            stp_mode=self.stp_mode,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def __repr__(self) -> str:
        return (
            f"Order(order_id={self.order_id}, user_id={self.user_id}, symbol={self.symbol!r}, "
            f"side={self.side}, price={self.price}, remaining={self.remaining}/{self.quantity}, "
            f"status={self.status})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderView:
    """A read-only copy of an order's state, for tests and services."""

    order_id: int
    client_order_id: str | None
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    price: int | None
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    cumulative_quote: int
    status: OrderStatus
    stp_mode: StpMode
    created_at: int
    updated_at: int
