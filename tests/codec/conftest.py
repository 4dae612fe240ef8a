"""Shared fixtures for the codec tests: one codec per session, fixed ids and timestamps."""

from __future__ import annotations

import pytest

from engine.commands import PlaceOrder
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
from exchange.codec import Codec

TS = 1_700_000_000_000


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()


@pytest.fixture(scope="session")
def place_order() -> PlaceOrder:
    return PlaceOrder(
        command_id=42,
        timestamp_ms=TS,
        order_id=42,
        user_id=7,
        symbol="BTC-USDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.IOC,
        post_only=False,
        price=30_000_00,
        quantity=5,
        client_order_id="client-1",
        stp_mode=StpMode.EXPIRE_MAKER,
    )


@pytest.fixture(scope="session")
def full_output() -> EngineOutput:
    """An output with every list non-empty, optional fields both set and None."""
    return EngineOutput(
        sequence=9,
        command_id=42,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=TS,
        trades=(
            TradeExecuted(
                trade_id=1,
                symbol="BTC-USDT",
                price=30_000_00,
                quantity=5,
                quote_quantity=150_000_00,
                maker_order_id=17,
                taker_order_id=42,
                maker_user_id=3,
                taker_user_id=7,
                taker_side=Side.BUY,
                maker_fee=15_000,
                maker_fee_asset="USDT",
                taker_fee=5,
                taker_fee_asset="BTC",
                executed_at=TS,
            ),
        ),
        order_placements=(
            OrderPlaced(
                order_id=42,
                client_order_id="client-1",
                user_id=7,
                symbol="BTC-USDT",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC,
                post_only=True,
                price=30_000_00,
                quantity=5,
                created_at=TS,
            ),
            OrderPlaced(
                order_id=43,
                client_order_id=None,
                user_id=8,
                symbol="ETH-USDT",
                side=Side.SELL,
                order_type=OrderType.MARKET,
                time_in_force=TimeInForce.IOC,
                post_only=False,
                price=None,
                quantity=1,
                created_at=TS,
            ),
        ),
        order_updates=(
            OrderUpdated(
                order_id=17,
                client_order_id=None,
                user_id=3,
                symbol="BTC-USDT",
                side=Side.SELL,
                order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC,
                price=30_000_00,
                quantity=10,
                status=OrderStatus.PARTIALLY_FILLED,
                filled_quantity=5,
                remaining_quantity=5,
                cumulative_quote=150_000_00,
                avg_fill_price=30_000_00,
                last_fill_price=30_000_00,
                last_fill_quantity=5,
                reject_reason=None,
                created_at=TS - 1_000,
                updated_at=TS,
            ),
            OrderUpdated(
                order_id=44,
                client_order_id="client-2",
                user_id=7,
                symbol="BTC-USDT",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                time_in_force=TimeInForce.FOK,
                price=None,
                quantity=3,
                status=OrderStatus.REJECTED,
                filled_quantity=0,
                remaining_quantity=0,
                cumulative_quote=0,
                avg_fill_price=0,
                last_fill_price=0,
                last_fill_quantity=0,
                reject_reason=RejectReason.INVALID_ORDER,
                created_at=TS,
                updated_at=TS,
            ),
        ),
        order_completions=(
            OrderCompleted(
                order_id=44,
                user_id=7,
                symbol="BTC-USDT",
                reason=CompletionReason.REJECTED,
                completed_at=TS,
            ),
        ),
        balance_updates=(
            BalanceUpdated(user_id=7, asset="USDT", available=-1, locked=2**63 - 1),
            BalanceUpdated(user_id=3, asset="BTC", available=0, locked=-(2**63)),
        ),
        rejections=(
            CommandRejected(
                command_id=42,
                kind=CommandKind.PLACE_ORDER,
                user_id=7,
                reason=RejectReason.INVALID_ORDER,
                order_id=44,
                client_order_id="client-2",
                message="MARKET orders cannot be FOK — ünïcödé survives",
            ),
            CommandRejected(
                command_id=42,
                kind=CommandKind.DEPOSIT,
                user_id=7,
                reason=RejectReason.UNKNOWN_ASSET,
                order_id=None,
                client_order_id=None,
                message="",
            ),
        ),
        user_creations=(
            UserCreated(user_id=5, role=Role.OPERATOR, label="desk ünï", created_at=TS),
            UserCreated(user_id=6, role=Role.TRADER, label=None, created_at=TS),
        ),
        api_key_updates=(
            ApiKeyUpdated(
                api_key="k0123456789abcdef01234567",
                user_id=5,
                role=Role.OPERATOR,
                public_key="MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
                revoked=False,
                updated_at=TS,
            ),
            ApiKeyUpdated(
                api_key="kfedcba9876543210fedcba98",
                user_id=6,
                role=Role.TRADER,
                public_key="",
                revoked=True,
                updated_at=TS + 1,
            ),
        ),
        depth_updates=(
            DepthUpdated(
                symbol="BTC-USDT",
                update_id=2**40 + 7,
                levels=(
                    LevelUpdated(side=Side.BUY, price=30_000_00, quantity=5, order_count=1),
                    LevelUpdated(side=Side.SELL, price=30_000_00, quantity=0, order_count=0),
                    LevelUpdated(side=Side.SELL, price=2**62, quantity=2**63 - 1, order_count=300),
                ),
            ),
            DepthUpdated(symbol="ETH-USDT", update_id=1, levels=()),
        ),
    )
