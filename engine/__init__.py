"""Deterministic matching-engine core: commands in, events out, no I/O.

Public API::

    from engine import Engine, load_markets, PlaceOrder, ...
    engine = Engine(load_markets())
    output = engine.apply(PlaceOrder(...))

Only the standard library and sortedcontainers are imported here (a test enforces it).
"""

from engine.book import Level, OrderBook
from engine.commands import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
    Withdraw,
)
from engine.engine import DEFAULT_COMPLETED_ORDER_MEMORY, Engine
from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    StpMode,
    TimeInForce,
)
from engine.errors import ConfigError, ExchangeError, IllegalTransition, InvariantError
from engine.events import (
    ApiKeyUpdated,
    BalanceUpdated,
    CommandRejected,
    DepthUpdated,
    EngineOutput,
    LevelUpdated,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
    UserCreated,
)
from engine.markets import AssetSpec, Markets, SymbolSpec, load_markets, parse_markets
from engine.order_state import TRANSITIONS, Trigger, next_status
from engine.orders import Order, OrderView
from engine.snapshot import SnapshotFormatError

__all__ = [
    "DEFAULT_COMPLETED_ORDER_MEMORY",
    "TRANSITIONS",
    "AddApiKey",
    "AmendOrder",
    "ApiKeyUpdated",
    "AssetSpec",
    "BalanceUpdated",
    "CancelAllOrders",
    "CancelOrder",
    "Command",
    "CommandKind",
    "CommandRejected",
    "CompletionReason",
    "ConfigError",
    "CreateUser",
    "Deposit",
    "DepthUpdated",
    "Engine",
    "EngineOutput",
    "ExchangeError",
    "IllegalTransition",
    "InvariantError",
    "Level",
    "LevelUpdated",
    "Markets",
    "Order",
    "OrderBook",
    "OrderCompleted",
    "OrderPlaced",
    "OrderStatus",
    "OrderType",
    "OrderUpdated",
    "OrderView",
    "PlaceOrder",
    "RejectReason",
    "RevokeApiKey",
    "Role",
    "Side",
    "SnapshotFormatError",
    "StpMode",
    "SymbolSpec",
    "TimeInForce",
    "TradeExecuted",
    "Trigger",
    "UserCreated",
    "Withdraw",
    "load_markets",
    "next_status",
    "parse_markets",
]
