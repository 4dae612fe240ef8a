"""Commands: what the outside world asks the engine to do. Named in the imperative.

Every command carries ``command_id`` and ``timestamp_ms``, assigned upstream: the gateway
stamps the time, and the engine adapter sets ``command_id`` to the record's offset in the
single-partition ``orders`` topic. A new order's id is its command id, so order ids are unique
without coordination and identical on every replay. All amounts are integers: prices in ticks,
quantities in lots, asset amounts in minor units.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.enums import OrderType, Role, Side, StpMode, TimeInForce


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOrder:
    command_id: int
    timestamp_ms: int
    order_id: int
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    price: int | None = None  # ticks; required for LIMIT, absent for MARKET
    quantity: int  # lots
    client_order_id: str | None = None
    stp_mode: StpMode | None = None  # None means the default, EXPIRE_TAKER


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder:
    command_id: int
    timestamp_ms: int
    user_id: int
    symbol: str
    order_id: int | None = None  # exactly one of order_id and client_order_id is set
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    command_id: int
    timestamp_ms: int
    user_id: int
    asset: str
    amount: int  # minor units


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdraw:
    command_id: int
    timestamp_ms: int
    user_id: int
    asset: str
    amount: int  # minor units


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateUser:
    """Register a user with its first API key; the engine assigns the next user id.

    ``api_key`` (the key id) is computed upstream from the public key and carried here, so the
    engine never generates an id. ``public_key`` is opaque to the engine (the gateway checks
    that it is the base64 of a raw 32-byte Ed25519 public key).
    """

    command_id: int
    timestamp_ms: int
    api_key: str
    public_key: str
    role: Role = Role.TRADER
    label: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AddApiKey:
    """Give an existing user one more API key."""

    command_id: int
    timestamp_ms: int
    user_id: int
    api_key: str
    public_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeApiKey:
    """Revoke an API key for good (a revoked key id is never reused)."""

    command_id: int
    timestamp_ms: int
    api_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAllOrders:
    """Cancel every open order of ``user_id`` in ``symbol``."""

    command_id: int
    timestamp_ms: int
    user_id: int
    symbol: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AmendOrder:
    """Reduce a resting order's quantity, keeping its place in the queue.

    ``quantity`` is the new *total* quantity in lots (the filled part included); the engine
    accepts it only when ``filled < quantity < current quantity``.
    """

    command_id: int
    timestamp_ms: int
    user_id: int
    symbol: str
    order_id: int | None = None  # exactly one of order_id and client_order_id is set
    client_order_id: str | None = None
    quantity: int  # lots


Command = (
    PlaceOrder
    | CancelOrder
    | Deposit
    | Withdraw
    | CreateUser
    | AddApiKey
    | RevokeApiKey
    | CancelAllOrders
    | AmendOrder
)
