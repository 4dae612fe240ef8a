"""Order rules shared by the engine and the gateway: the one copy of each.

The engine applies them to every command (a failure is a ``CommandRejected`` with
INVALID_ORDER); the gateway applies the same functions at its boundary so a client hears the
same rule, with the same words, before the command reaches the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, cast

from engine.balances import Ledger
from engine.commands import PlaceOrder
from engine.enums import OrderType, RejectReason, Side, StpMode, TimeInForce
from engine.market_state import MarketState

# The engine's rule, and so the gateway's: the command log is the truth, and logs written
# under this rule must replay unchanged.
MAX_CLIENT_ORDER_ID_LENGTH: Final = 64

_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_BUY = Side.BUY
_SELL = Side.SELL
_R = RejectReason


def order_shape_error(
    order_type: OrderType, time_in_force: TimeInForce, post_only: bool, has_price: bool
) -> str | None:
    """Why a LIMIT or MARKET order of this shape is INVALID_ORDER, or None when it is fine.

    LIMIT needs a price, and post-only only with GTC; MARKET takes no price and cannot be
    FOK or post-only. ``order_type`` must be an :class:`OrderType` member (callers check).
    """
    if order_type is _LIMIT:
        if not has_price:
            return "a LIMIT order needs a price"
        if post_only and time_in_force is not _GTC:
            return f"a post-only order must be GTC, not {time_in_force}"
        return None
    if has_price:
        return "a MARKET order takes no price"
    if time_in_force is _FOK:
        return "a MARKET order cannot be FOK"
    if post_only:
        return "a MARKET order cannot be post-only"
    return None


def shown(value: object) -> str:
    """A value for a rejection message. Only plain values are shown: the repr of an arbitrary
    object may hold its memory address, and messages must be identical on every replay."""
    if value is None or type(value) in (str, int, bool) or isinstance(value, StrEnum):
        return repr(str(value) if isinstance(value, StrEnum) else value)
    return f"a {type(value).__name__}"


def typed(value: object) -> str:
    return f"{shown(value)} of type {type(value).__name__}"


def check_place(
    cmd: PlaceOrder,
    market: MarketState,
    client_ids: Mapping[tuple[int, str], object],
    ledger: Ledger,
) -> tuple[RejectReason, str] | None:
    """Every validation of a place, in the documented order; None when acceptable."""
    side = cmd.side
    if side is not _BUY and side is not _SELL:
        return _R.INVALID_ORDER, f"side must be a Side member, got {typed(side)}"
    tif = cmd.time_in_force
    if tif is not _GTC and tif is not _IOC and tif is not _FOK:
        return _R.INVALID_ORDER, f"time_in_force must be a TimeInForce, got {typed(tif)}"
    stp = cmd.stp_mode
    # Identity, not equality: a plain "EXPIRE_MAKER" string would compare equal to the
    # member yet fail every ``is`` test in the matching loop.
    if stp is not None and type(stp) is not StpMode:
        return _R.INVALID_ORDER, f"stp_mode must be a StpMode or None, got {typed(stp)}"
    post_only = cmd.post_only
    if post_only is not True and post_only is not False:
        return _R.INVALID_ORDER, "post_only must be a bool"
    client_order_id = cmd.client_order_id
    if client_order_id is not None and (
        type(client_order_id) is not str
        or not client_order_id
        or len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH
    ):
        return _R.INVALID_ORDER, (
            f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LENGTH} characters"
        )
    order_type = cmd.order_type
    price = cmd.price
    if order_type is not _LIMIT and order_type is not _MARKET:
        return _R.INVALID_ORDER, f"order_type must be an OrderType, got {typed(order_type)}"
    shape_error = order_shape_error(order_type, tif, post_only, price is not None)
    if shape_error is not None:
        return _R.INVALID_ORDER, shape_error
    if price is not None and (type(price) is not int or not 0 < price <= market.max_price):
        return _R.INVALID_PRICE, (
            f"price {price} ticks is outside 1..{market.max_price} for {market.name}"
        )
    quantity = cmd.quantity
    if type(quantity) is not int or not (market.min_quantity <= quantity <= market.max_quantity):
        return _R.INVALID_QUANTITY, (
            f"quantity {quantity} lots is outside "
            f"{market.min_quantity}..{market.max_quantity} for {market.name}"
        )
    user_id = cmd.user_id
    if client_order_id is not None and (user_id, client_order_id) in client_ids:
        return _R.DUPLICATE_CLIENT_ORDER_ID, (
            f"client_order_id {client_order_id!r} is already used by an open order"
        )
    if side is _BUY:
        if order_type is _LIMIT:
            needed = quantity * cast(int, price) * market.qptl
            available = ledger.available(user_id, market.quote)
            if available < needed:
                return _R.INSUFFICIENT_FUNDS, (
                    f"needs {needed} {market.quote}, {available} available"
                )
    else:
        needed = quantity * market.bpl
        available = ledger.available(user_id, market.base)
        if available < needed:
            return _R.INSUFFICIENT_FUNDS, f"needs {needed} {market.base}, {available} available"
    if post_only and market.book.would_take(side is _BUY, cast(int, price)):
        return _R.POST_ONLY_WOULD_TAKE, "a post-only order would take liquidity"
    return None


def check_amount(
    asset: str, amount: int, assets: Mapping[str, object]
) -> tuple[RejectReason, str] | None:
    """Why a deposit or withdrawal of ``amount`` of ``asset`` is refused, or None."""
    if asset not in assets:
        return _R.UNKNOWN_ASSET, f"unknown asset {shown(asset)}"
    if type(amount) is not int or amount <= 0:
        return _R.INVALID_AMOUNT, f"amount must be a positive integer, got {shown(amount)}"
    return None
