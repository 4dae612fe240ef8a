"""The closed vocabularies shared by commands, events and the wire contracts.

Each member's value equals its name, so the Avro enum symbols, the REST strings and the
Python members are one and the same spelling.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class StpMode(StrEnum):
    """Self-trade prevention: what happens when a taker would match its own user's order."""

    EXPIRE_TAKER = "EXPIRE_TAKER"  # default: the taker's remainder expires, the maker stays
    # "cancel maker": the resting order is cancelled and matching goes on
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"  # both the resting order and the taker's remainder end


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class CompletionReason(StrEnum):
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


class CommandKind(StrEnum):
    PLACE_ORDER = "PLACE_ORDER"
    CANCEL_ORDER = "CANCEL_ORDER"
    DEPOSIT = "DEPOSIT"
    WITHDRAW = "WITHDRAW"
    CREATE_USER = "CREATE_USER"
    ADD_API_KEY = "ADD_API_KEY"
    REVOKE_API_KEY = "REVOKE_API_KEY"
    CANCEL_ALL_ORDERS = "CANCEL_ALL_ORDERS"
    AMEND_ORDER = "AMEND_ORDER"


class RejectReason(StrEnum):
    """Why a command was refused. A business outcome, reported as an event, never raised."""

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_ORDER = "INVALID_ORDER"  # inconsistent fields, e.g. MARKET with a price or MARKET FOK
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"  # unknown id, or an order of another user
    ORDER_ALREADY_COMPLETED = "ORDER_ALREADY_COMPLETED"
    UNKNOWN_USER = "UNKNOWN_USER"  # a user-scoped command for a user the engine never created
    DUPLICATE_API_KEY = "DUPLICATE_API_KEY"  # the key id is already known (revoked or not)
    UNKNOWN_API_KEY = "UNKNOWN_API_KEY"  # a revoke of a key id the engine never knew
    INVALID_AMEND = "INVALID_AMEND"  # an amend that is not a strict reduction above the filled


class Role(StrEnum):
    """What a user may do: traders trade their own account, operators manage users and funds.

    The engine records a user's role and reports it with every key; the gateway enforces it.
    """

    TRADER = "TRADER"
    OPERATOR = "OPERATOR"
