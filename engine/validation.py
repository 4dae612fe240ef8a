"""Order rules shared by the engine and the gateway: the one copy of each.

The engine applies them to every command (a failure is a ``CommandRejected`` with
INVALID_ORDER); the gateway applies the same functions at its boundary so a client hears the
same rule, with the same words, before the command reaches the log.
"""

from __future__ import annotations

from typing import Final

from engine.enums import OrderType, TimeInForce

# The engine's rule, and so the gateway's: the command log is the truth, and logs written
# under this rule must replay unchanged.
MAX_CLIENT_ORDER_ID_LENGTH: Final = 64

_LIMIT = OrderType.LIMIT
_GTC = TimeInForce.GTC
_FOK = TimeInForce.FOK


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
