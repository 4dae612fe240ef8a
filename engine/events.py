"""Events: what the engine did. Named in the past tense; every event carries absolute post-state.

For each command the engine returns exactly one :class:`EngineOutput`, with a gap-free
``sequence`` (+1 per command, rejected commands included). Downstream writers version every
upsert by that sequence, so re-applying or reordering outputs changes nothing.

Lists inside an output are in the order things happened, which is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    TimeInForce,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeExecuted:
    trade_id: int  # gap-free engine-wide counter, starting at 1
    symbol: str
    price: int  # ticks; always the maker's price
    quantity: int  # lots
    quote_quantity: int  # quote asset minor units (price x quantity, exact)
    maker_order_id: int
    taker_order_id: int
    maker_user_id: int
    taker_user_id: int
    taker_side: Side
    maker_fee: int  # minor units of maker_fee_asset (the asset the maker receives)
    maker_fee_asset: str
    taker_fee: int  # minor units of taker_fee_asset (the asset the taker receives)
    taker_fee_asset: str
    executed_at: int  # epoch ms, the command's timestamp


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlaced:
    """An order passed validation and entered the engine (it may still fill at once)."""

    order_id: int
    client_order_id: str | None
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    price: int | None  # ticks; None for MARKET
    quantity: int  # lots
    created_at: int  # epoch ms


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderUpdated:
    """Execution report: the order's full absolute state after the command.

    One per order touched by a command (the final state after that command), including a
    rejected order, so a reader can build a history row from this event alone.
    """

    order_id: int
    client_order_id: str | None
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None  # ticks; None for MARKET
    quantity: int  # lots
    status: OrderStatus
    filled_quantity: int  # lots
    remaining_quantity: int  # lots; 0 once the order is complete
    cumulative_quote: int  # quote minor units traded so far (exact average = this / filled)
    avg_fill_price: int  # ticks, floor of the exact average; 0 with no fill
    last_fill_price: int  # ticks of this command's last fill of the order; 0 if none
    last_fill_quantity: int  # lots filled by this command; 0 if none
    reject_reason: RejectReason | None
    created_at: int  # epoch ms
    updated_at: int  # epoch ms


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCompleted:
    """The order reached a terminal status. Exactly one per order, ever."""

    order_id: int
    user_id: int
    symbol: str
    reason: CompletionReason
    completed_at: int  # epoch ms


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceUpdated:
    user_id: int
    asset: str
    available: int  # minor units, after the change
    locked: int  # minor units, after the change


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected:
    """A command was refused. Exactly one per rejected command; nothing else changed
    except, for a refused PlaceOrder, the order's own REJECTED report and completion."""

    command_id: int
    kind: CommandKind
    user_id: int  # 0 for a command that names no user (CreateUser, RevokeApiKey)
    reason: RejectReason
    order_id: int | None  # the new order's id, or the order a cancel named (if any)
    client_order_id: str | None
    message: str  # human text; deterministic (built only from the command and state)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserCreated:
    """A user was registered with the next user id."""

    user_id: int
    role: Role
    label: str | None
    created_at: int  # epoch ms


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyUpdated:
    """An API key's absolute state after the command: added (revoked False) or revoked."""

    api_key: str
    user_id: int
    role: Role  # the role of the key's user
    public_key: str  # base64 of the raw Ed25519 public key, as the command carried it
    revoked: bool
    updated_at: int  # epoch ms


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelUpdated:
    """One price level of a book after the command (absolute); 0 and 0 once it is empty."""

    side: Side
    price: int  # ticks
    quantity: int  # lots: the sum of the resting orders' remaining quantities
    order_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthUpdated:
    """The levels of one book that a command changed, and the book's new update id.

    ``update_id`` counts, per symbol, the commands that changed that book (1, 2, 3, ...), so
    consecutive updates of one market are contiguous. Levels: bids then asks, each best first.
    """

    symbol: str
    update_id: int
    levels: tuple[LevelUpdated, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOutput:
    sequence: int  # 1, 2, 3, ... one per command applied
    command_id: int
    command_kind: CommandKind
    timestamp_ms: int
    trades: tuple[TradeExecuted, ...] = ()
    order_placements: tuple[OrderPlaced, ...] = ()
    order_updates: tuple[OrderUpdated, ...] = ()
    order_completions: tuple[OrderCompleted, ...] = ()
    balance_updates: tuple[BalanceUpdated, ...] = ()
    rejections: tuple[CommandRejected, ...] = ()
    depth_updates: tuple[DepthUpdated, ...] = ()
    user_creations: tuple[UserCreated, ...] = ()
    api_key_updates: tuple[ApiKeyUpdated, ...] = ()
