"""Scenario tests: one rule each, with exact balances and events.

BTC_USDT scales (markets.json): 1 tick = 0.01 USDT, 1 lot = 0.00001 BTC, USDT and BTC have 8
decimals, so ``quote_per_tick_lot = 10`` and ``base_per_lot = 1000``: a lot at 100 ticks costs
1 000 USDT minor units and delivers 1 000 BTC minor units.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
from engine_testkit import BTC, BUY, ETH, SELL, T0, Kit, make_markets

from engine import (
    BalanceUpdated,
    CommandKind,
    CommandRejected,
    CompletionReason,
    DepthUpdated,
    Engine,
    EngineOutput,
    LevelUpdated,
    OrderCompleted,
    OrderPlaced,
    OrderStatus,
    OrderType,
    OrderUpdated,
    RejectReason,
    StpMode,
    TimeInForce,
    TradeExecuted,
)
from engine.depth import new_depth, new_level
from engine.engine import (
    _new_balance,
    _new_completed,
    _new_output,
    _new_placed,
    _new_rejected,
    _new_trade,
    _new_updated,
)
from engine.markets import INT64_MAX

S = OrderStatus
R = RejectReason


def statuses(out: EngineOutput) -> dict[int, OrderStatus]:
    return {u.order_id: u.status for u in out.order_updates}


def balances_of(out: EngineOutput) -> list[tuple[int, str, int, int]]:
    return [(b.user_id, b.asset, b.available, b.locked) for b in out.balance_updates]


def assert_rejected(kit: Kit, command: object, reason: RejectReason) -> EngineOutput:
    """Apply a command that must be refused, and check that it changed nothing."""
    before_hash = kit.engine.state_hash()
    before_balances = kit.engine.balances()
    out = kit.apply(command)  # type: ignore[arg-type]
    assert [r.reason for r in out.rejections] == [reason]
    assert out.trades == () and out.balance_updates == () and out.order_placements == ()
    assert kit.engine.state_hash() == before_hash
    assert kit.engine.balances() == before_balances
    return out


# ---------------------------------------------------------------- fills and balances


def test_fill_when_buyer_limit_is_above_maker_price_trades_at_maker_price_and_refunds(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=10_000)
    sell = kit.limit(2, SELL, 100, 5)
    out = kit.apply(sell)
    assert balances_of(out) == [(2, "BTC", 5_000, 5_000)]

    buy = kit.limit(1, BUY, 110, 8)  # 5 lots fill at 100, 3 rest at 110
    out = kit.apply(buy)

    assert out.trades == (
        TradeExecuted(
            trade_id=1,
            symbol=BTC,
            price=100,
            quantity=5,
            quote_quantity=5_000,
            maker_order_id=sell.order_id,
            taker_order_id=buy.order_id,
            maker_user_id=2,
            taker_user_id=1,
            taker_side=BUY,
            maker_fee=0,
            maker_fee_asset="USDT",
            taker_fee=0,
            taker_fee_asset="BTC",
            executed_at=buy.timestamp_ms,
        ),
    )
    # Locked at 110 for the 3 resting lots; paid 100 for the 5 filled ones: 10 000 - 5 000
    # - 3 300 = 1 700 available, the 10 ticks x 5 lots of price improvement included.
    assert kit.engine.balance(1, "USDT") == (1_700, 3_300)
    assert kit.engine.balance(1, "BTC") == (5_000, 0)
    assert kit.engine.balance(2, "BTC") == (5_000, 0)
    assert kit.engine.balance(2, "USDT") == (5_000, 0)
    assert balances_of(out) == [
        (1, "USDT", 1_700, 3_300),
        (1, "BTC", 5_000, 0),
        (2, "BTC", 5_000, 0),
        (2, "USDT", 5_000, 0),
    ]
    maker, taker = out.order_updates  # makers first, then the taker
    assert (maker.order_id, maker.status, maker.filled_quantity, maker.remaining_quantity) == (
        sell.order_id,
        S.FILLED,
        5,
        0,
    )
    assert (taker.order_id, taker.status, taker.filled_quantity, taker.remaining_quantity) == (
        buy.order_id,
        S.PARTIALLY_FILLED,
        5,
        3,
    )
    assert (taker.cumulative_quote, taker.avg_fill_price) == (5_000, 100)
    assert (taker.last_fill_price, taker.last_fill_quantity) == (100, 5)
    assert out.order_completions == (
        OrderCompleted(
            order_id=sell.order_id,
            user_id=2,
            symbol=BTC,
            reason=CompletionReason.FILLED,
            completed_at=buy.timestamp_ms,
        ),
    )
    assert kit.engine.best_bid(BTC) == (110, 3)
    assert kit.engine.best_ask(BTC) is None


def test_fill_when_buyer_limit_fully_fills_releases_the_whole_price_improvement(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=6_000)
    kit.fund(2, BTC=5_000)
    kit.apply(kit.limit(2, SELL, 100, 5))
    out = kit.apply(kit.limit(1, BUY, 120, 5))  # needs 6 000 up front, pays 5 000
    assert statuses(out)[out.order_placements[0].order_id] is S.FILLED
    assert kit.engine.balance(1, "USDT") == (1_000, 0)
    assert kit.engine.balance(1, "BTC") == (5_000, 0)


def test_fill_when_seller_takes_a_bid_receives_quote_at_the_bid_price(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=3_000)
    bid = kit.limit(1, BUY, 105, 4)
    kit.apply(bid)
    assert kit.engine.balance(1, "USDT") == (5_800, 4_200)

    out = kit.apply(kit.limit(2, SELL, 90, 3))  # sells at the bid's 105, not at 90
    assert [(t.price, t.quantity, t.quote_quantity) for t in out.trades] == [(105, 3, 3_150)]
    assert kit.engine.balance(2, "USDT") == (3_150, 0)
    assert kit.engine.balance(2, "BTC") == (0, 0)
    assert kit.engine.balance(1, "USDT") == (5_800, 1_050)  # 1 lot still locked at 105
    assert kit.engine.balance(1, "BTC") == (3_000, 0)
    assert statuses(out)[bid.order_id] is S.PARTIALLY_FILLED


def test_match_when_one_level_has_two_orders_fills_the_older_first(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, BTC=10_000)
    kit.fund(3, USDT=100_000)
    first = kit.limit(1, SELL, 100, 2)
    second = kit.limit(2, SELL, 100, 2)
    better_but_later = kit.limit(2, SELL, 99, 1)
    for order in (first, second, better_but_later):
        kit.apply(order)
    out = kit.apply(kit.limit(3, BUY, 100, 4))
    assert [(t.maker_order_id, t.price, t.quantity) for t in out.trades] == [
        (better_but_later.order_id, 99, 1),  # price first
        (first.order_id, 100, 2),  # then time
        (second.order_id, 100, 1),
    ]
    assert [t.trade_id for t in out.trades] == [1, 2, 3]
    assert [o.order_id for o in kit.engine.book_orders(BTC, SELL)] == [second.order_id]
    taker = out.order_updates[-1]
    assert (taker.cumulative_quote, taker.avg_fill_price) == (3_990, 99)  # floor(399 / 4)
    assert (taker.last_fill_price, taker.last_fill_quantity) == (100, 4)


def test_trade_ids_when_several_commands_trade_are_gap_free_from_one(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, USDT=100_000)
    trade_ids: list[int] = []
    for _ in range(3):
        kit.apply(kit.limit(1, SELL, 100, 1))
        kit.apply(kit.limit(1, SELL, 101, 1))
        trade_ids += [t.trade_id for t in kit.apply(kit.limit(2, BUY, 101, 2)).trades]
        kit.apply(kit.withdraw(2, "USDT", 10**9))  # a rejection in between changes nothing
    assert trade_ids == [1, 2, 3, 4, 5, 6]
    assert kit.engine.next_trade_id == 7


# ---------------------------------------------------------------- cancel


def test_cancel_when_order_is_open_unlocks_exactly_what_remains(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=1_000)
    buy = kit.limit(1, BUY, 100, 5, client_order_id="mine")
    kit.apply(buy)
    kit.apply(kit.limit(2, SELL, 100, 1))  # fills 1 of the 5
    assert kit.engine.balance(1, "USDT") == (5_000, 4_000)

    cancel = kit.cancel(1, buy.order_id)
    out = kit.apply(cancel)

    assert out.command_kind is CommandKind.CANCEL_ORDER
    assert out.rejections == () and out.trades == ()
    (update,) = out.order_updates
    assert (update.status, update.filled_quantity, update.remaining_quantity) == (
        S.CANCELLED,
        1,
        0,
    )
    assert (update.updated_at, update.created_at) == (cancel.timestamp_ms, buy.timestamp_ms)
    assert out.order_completions == (
        OrderCompleted(
            order_id=buy.order_id,
            user_id=1,
            symbol=BTC,
            reason=CompletionReason.CANCELLED,
            completed_at=cancel.timestamp_ms,
        ),
    )
    assert out.balance_updates == (
        BalanceUpdated(user_id=1, asset="USDT", available=9_000, locked=0),
    )
    assert kit.engine.open_order(buy.order_id) is None
    assert kit.engine.best_bid(BTC) is None


def test_cancel_when_named_by_client_order_id_cancels_that_open_order(kit: Kit) -> None:
    kit.fund(1, BTC=5_000)
    sell = kit.limit(1, SELL, 100, 5, client_order_id="abc")
    kit.apply(sell)
    out = kit.apply(kit.cancel(1, client_order_id="abc"))
    assert statuses(out) == {sell.order_id: S.CANCELLED}
    assert kit.engine.balance(1, "BTC") == (5_000, 0)


def test_cancel_when_order_is_unknown_is_rejected_order_not_found(kit: Kit) -> None:
    out = assert_rejected(kit, kit.cancel(1, 999), R.ORDER_NOT_FOUND)
    rejection = out.rejections[0]
    assert (rejection.kind, rejection.order_id, rejection.user_id) == (
        CommandKind.CANCEL_ORDER,
        999,
        1,
    )


def test_cancel_when_order_belongs_to_another_user_is_rejected_as_not_found(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    sell = kit.limit(1, SELL, 100, 1)
    kit.apply(sell)
    out = assert_rejected(kit, kit.cancel(2, sell.order_id), R.ORDER_NOT_FOUND)
    unknown = assert_rejected(kit, kit.cancel(2, 999_999), R.ORDER_NOT_FOUND)
    # Same wording shape as for an id that does not exist: nothing reveals the order.
    assert out.rejections[0].message == f"order {sell.order_id} not found"
    assert unknown.rejections[0].message == "order 999999 not found"
    assert kit.engine.open_order(sell.order_id) is not None


def test_cancel_when_order_is_on_another_symbol_is_rejected_as_not_found(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    sell = kit.limit(1, SELL, 100, 1)
    kit.apply(sell)
    assert_rejected(kit, kit.cancel(1, sell.order_id, symbol=ETH), R.ORDER_NOT_FOUND)


def test_cancel_when_order_already_completed_is_rejected_already_completed(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    kit.fund(2, USDT=1_000)
    sell = kit.limit(1, SELL, 100, 1)
    kit.apply(sell)
    kit.apply(kit.limit(2, BUY, 100, 1))
    assert_rejected(kit, kit.cancel(1, sell.order_id), R.ORDER_ALREADY_COMPLETED)
    # Another user asking about it learns nothing.
    assert_rejected(kit, kit.cancel(2, sell.order_id), R.ORDER_NOT_FOUND)


def test_cancel_when_order_was_cancelled_before_is_rejected_already_completed(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    sell = kit.limit(1, SELL, 100, 1)
    kit.apply(sell)
    kit.apply(kit.cancel(1, sell.order_id))
    assert_rejected(kit, kit.cancel(1, sell.order_id), R.ORDER_ALREADY_COMPLETED)


def test_cancel_when_memory_is_bounded_forgets_the_oldest_completed_order() -> None:
    kit = Kit(Engine(make_markets(), completed_order_memory=2))
    kit.fund(1, BTC=3_000)
    ids = []
    for _ in range(3):
        sell = kit.limit(1, SELL, 100, 1)
        kit.apply(sell)
        kit.apply(kit.cancel(1, sell.order_id))
        ids.append(sell.order_id)
    assert_rejected(kit, kit.cancel(1, ids[0]), R.ORDER_NOT_FOUND)
    assert_rejected(kit, kit.cancel(1, ids[2]), R.ORDER_ALREADY_COMPLETED)


def test_cancel_when_client_order_id_is_unknown_is_rejected_not_found(kit: Kit) -> None:
    out = assert_rejected(kit, kit.cancel(1, client_order_id="nope"), R.ORDER_NOT_FOUND)
    assert (out.rejections[0].order_id, out.rejections[0].client_order_id) == (None, "nope")


def test_cancel_when_both_or_no_ids_are_given_is_rejected_invalid_order(kit: Kit) -> None:
    assert_rejected(kit, kit.cancel(1, 5, client_order_id="x"), R.INVALID_ORDER)
    assert_rejected(kit, kit.cancel(1), R.INVALID_ORDER)


def test_cancel_when_symbol_is_unknown_is_rejected_unknown_symbol(kit: Kit) -> None:
    assert_rejected(kit, kit.cancel(1, 5, symbol="DOGE_USDT"), R.UNKNOWN_SYMBOL)


# ---------------------------------------------------------------- rejections of a place


def test_place_when_funds_are_insufficient_is_rejected_and_changes_nothing(kit: Kit) -> None:
    kit.fund(1, USDT=999)
    order = kit.limit(1, BUY, 100, 1, client_order_id="c1")  # needs 1 000
    out = assert_rejected(kit, order, R.INSUFFICIENT_FUNDS)
    assert out.rejections == (
        CommandRejected(
            command_id=order.command_id,
            kind=CommandKind.PLACE_ORDER,
            user_id=1,
            reason=R.INSUFFICIENT_FUNDS,
            order_id=order.order_id,
            client_order_id="c1",
            message="needs 1000 USDT, 999 available",
        ),
    )
    (report,) = out.order_updates
    assert (report.status, report.reject_reason, report.filled_quantity) == (
        S.REJECTED,
        R.INSUFFICIENT_FUNDS,
        0,
    )
    assert (report.remaining_quantity, report.price, report.quantity) == (0, 100, 1)
    assert out.order_completions == (
        OrderCompleted(
            order_id=order.order_id,
            user_id=1,
            symbol=BTC,
            reason=CompletionReason.REJECTED,
            completed_at=order.timestamp_ms,
        ),
    )
    assert kit.engine.balance(1, "USDT") == (999, 0)


def test_place_when_seller_lacks_base_is_rejected_insufficient_funds(kit: Kit) -> None:
    kit.fund(1, BTC=4_999)
    assert_rejected(kit, kit.limit(1, SELL, 100, 5), R.INSUFFICIENT_FUNDS)
    assert_rejected(kit, kit.market(1, SELL, 5), R.INSUFFICIENT_FUNDS)


def test_place_when_funds_are_locked_by_another_order_is_rejected(kit: Kit) -> None:
    kit.fund(1, USDT=1_500)
    kit.apply(kit.limit(1, BUY, 100, 1))
    assert_rejected(kit, kit.limit(1, BUY, 100, 1), R.INSUFFICIENT_FUNDS)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"symbol": "DOGE_USDT"}, R.UNKNOWN_SYMBOL),
        ({"price": 0}, R.INVALID_PRICE),
        ({"price": -5}, R.INVALID_PRICE),
        ({"price": 1_000_000_001}, R.INVALID_PRICE),  # max_price 10 000 000.00 = 1e9 ticks
        ({"quantity": 0}, R.INVALID_QUANTITY),
        ({"quantity": -1}, R.INVALID_QUANTITY),
        ({"quantity": 100_000_001}, R.INVALID_QUANTITY),  # max 1000 BTC = 1e8 lots
        ({"price": None}, R.INVALID_ORDER),  # LIMIT without a price
        ({"post_only": True, "time_in_force": TimeInForce.IOC}, R.INVALID_ORDER),
        ({"post_only": True, "time_in_force": TimeInForce.FOK}, R.INVALID_ORDER),
        ({"client_order_id": ""}, R.INVALID_ORDER),
        ({"client_order_id": "x" * 65}, R.INVALID_ORDER),
        ({"order_type": OrderType.MARKET}, R.INVALID_ORDER),  # MARKET with a price
        ({"order_type": OrderType.MARKET, "price": None, "post_only": True}, R.INVALID_ORDER),
        (
            {"order_type": OrderType.MARKET, "price": None, "time_in_force": TimeInForce.FOK},
            R.INVALID_ORDER,
        ),
        # Plain strings equal to enum members are refused: the engine tests identity.
        ({"side": "BUY"}, R.INVALID_ORDER),
        ({"order_type": "LIMIT"}, R.INVALID_ORDER),
        ({"time_in_force": "GTC"}, R.INVALID_ORDER),
        ({"stp_mode": "EXPIRE_MAKER"}, R.INVALID_ORDER),
        ({"post_only": 1}, R.INVALID_ORDER),
        ({"price": 100.0}, R.INVALID_PRICE),  # never a float, not even an integral one
        ({"quantity": True}, R.INVALID_QUANTITY),
    ],
)
def test_place_when_a_field_is_invalid_is_rejected_with_its_reason(
    kit: Kit, changes: dict[str, object], reason: RejectReason
) -> None:
    kit.fund(1, USDT=10**12, BTC=10**12)
    order = dataclasses.replace(kit.limit(1, BUY, 100, 1), **changes)  # type: ignore[arg-type]
    out = assert_rejected(kit, order, reason)
    assert out.order_updates[0].reject_reason is reason


def test_place_when_eth_quantity_is_below_its_step_minimum_is_rejected(kit: Kit) -> None:
    kit.fund(1, USDT=10**9)
    spec = kit.engine.markets.symbols[ETH]
    assert spec.min_quantity == 1 and spec.max_quantity == 1_000_000_000
    assert_rejected(kit, kit.limit(1, BUY, 100, 0, symbol=ETH), R.INVALID_QUANTITY)


def test_place_when_client_order_id_is_open_for_same_user_is_rejected_duplicate(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, USDT=10_000)
    first = kit.limit(1, BUY, 100, 1, client_order_id="dup")
    kit.apply(first)
    assert_rejected(
        kit, kit.limit(1, BUY, 99, 1, client_order_id="dup"), R.DUPLICATE_CLIENT_ORDER_ID
    )
    # Another user may use the same client id; so may the same user once the first is closed.
    assert not kit.apply(kit.limit(2, BUY, 99, 1, client_order_id="dup")).rejections
    kit.apply(kit.cancel(1, first.order_id))
    assert not kit.apply(kit.limit(1, BUY, 98, 1, client_order_id="dup")).rejections


def test_place_when_order_id_is_in_use_is_rejected_without_touching_that_order(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    first = kit.limit(1, BUY, 100, 1)
    kit.apply(first)
    again = kit.limit(1, BUY, 100, 1, order_id=first.order_id)
    out = assert_rejected(kit, again, R.DUPLICATE_ORDER_ID)
    # No report or completion: they would overwrite the live order's history downstream.
    assert out.order_updates == () and out.order_completions == ()
    assert kit.engine.open_order(first.order_id) is not None

    kit.apply(kit.cancel(1, first.order_id))
    assert_rejected(kit, kit.limit(1, BUY, 100, 1, order_id=first.order_id), R.DUPLICATE_ORDER_ID)


def test_place_when_post_only_would_take_is_rejected(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    kit.fund(2, USDT=10_000)
    kit.apply(kit.limit(1, SELL, 100, 1))
    out = assert_rejected(kit, kit.limit(2, BUY, 100, 1, post_only=True), R.POST_ONLY_WOULD_TAKE)
    assert out.order_completions[0].reason is CompletionReason.REJECTED


def test_place_when_post_only_would_not_take_rests_as_maker(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    kit.fund(2, USDT=10_000)
    kit.apply(kit.limit(1, SELL, 100, 1))
    order = kit.limit(2, BUY, 99, 1, post_only=True)
    out = kit.apply(order)
    assert statuses(out) == {order.order_id: S.NEW}
    assert out.order_placements[0].post_only is True
    assert kit.engine.best_bid(BTC) == (99, 1)


# ---------------------------------------------------------------- time in force


def test_ioc_when_nothing_crosses_expires_without_fills_or_balance_changes(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 3, tif=TimeInForce.IOC)
    out = kit.apply(order)
    assert len(out.order_placements) == 1
    assert statuses(out) == {order.order_id: S.EXPIRED}
    assert out.order_updates[0].remaining_quantity == 0
    assert out.order_completions[0].reason is CompletionReason.EXPIRED
    assert out.trades == () and out.balance_updates == ()
    assert kit.engine.balance(1, "USDT") == (10_000, 0)


def test_ioc_when_partly_filled_expires_the_remainder(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=2_000)
    kit.apply(kit.limit(2, SELL, 100, 2))
    order = kit.limit(1, BUY, 101, 5, tif=TimeInForce.IOC)
    out = kit.apply(order)
    taker = out.order_updates[-1]
    assert (taker.status, taker.filled_quantity, taker.remaining_quantity) == (S.EXPIRED, 2, 0)
    assert kit.engine.balance(1, "USDT") == (8_000, 0)  # nothing left locked
    assert kit.engine.best_bid(BTC) is None
    assert [c.reason for c in out.order_completions] == [
        CompletionReason.FILLED,
        CompletionReason.EXPIRED,
    ]


def test_fok_when_book_can_fill_everything_fills_completely(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=5_000)
    kit.apply(kit.limit(2, SELL, 100, 2))
    kit.apply(kit.limit(2, SELL, 101, 3))
    order = kit.limit(1, BUY, 101, 5, tif=TimeInForce.FOK)
    out = kit.apply(order)
    assert [(t.price, t.quantity) for t in out.trades] == [(100, 2), (101, 3)]
    assert statuses(out)[order.order_id] is S.FILLED
    assert kit.engine.balance(1, "USDT") == (10_000 - 2_000 - 3_030, 0)


def test_fok_when_book_cannot_fill_everything_expires_and_changes_nothing_else(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=5_000)
    kit.apply(kit.limit(2, SELL, 100, 2))
    kit.apply(kit.limit(2, SELL, 102, 3))  # beyond the FOK's limit
    book_before = kit.engine.book_orders(BTC, SELL)
    balances_before = kit.engine.balances()
    trade_id_before = kit.engine.next_trade_id

    order = kit.limit(1, BUY, 101, 5, tif=TimeInForce.FOK)
    out = kit.apply(order)

    assert len(out.order_placements) == 1
    assert statuses(out) == {order.order_id: S.EXPIRED}
    assert out.order_updates[0].filled_quantity == 0
    assert out.trades == () and out.balance_updates == () and out.rejections == ()
    assert [c.reason for c in out.order_completions] == [CompletionReason.EXPIRED]
    assert kit.engine.book_orders(BTC, SELL) == book_before
    assert kit.engine.balances() == balances_before
    assert kit.engine.next_trade_id == trade_id_before


def test_fok_when_own_order_blocks_under_expire_maker_counts_only_others(kit: Kit) -> None:
    kit.fund(1, USDT=10_000, BTC=1_000)
    kit.fund(2, BTC=3_000)
    own = kit.limit(1, SELL, 100, 1)
    other = kit.limit(2, SELL, 100, 3)
    kit.apply(own)
    kit.apply(other)
    # 4 lots rest at 100 but only 3 are someone else's: a FOK for 4 must expire...
    too_big = kit.limit(1, BUY, 100, 4, tif=TimeInForce.FOK, stp=StpMode.EXPIRE_MAKER)
    out = kit.apply(too_big)
    assert statuses(out) == {too_big.order_id: S.EXPIRED}
    assert kit.engine.open_order(own.order_id) is not None  # not even STP ran
    # ...while one for 3 fills, cancelling the user's own resting order on the way.
    fits = kit.limit(1, BUY, 100, 3, tif=TimeInForce.FOK, stp=StpMode.EXPIRE_MAKER)
    out = kit.apply(fits)
    assert statuses(out) == {
        own.order_id: S.CANCELLED,
        other.order_id: S.FILLED,
        fits.order_id: S.FILLED,
    }


# ---------------------------------------------------------------- market orders


def test_market_buy_when_book_is_thin_fills_what_there_is_and_expires_the_rest(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=100_000)
    kit.fund(2, BTC=5_000)
    kit.apply(kit.limit(2, SELL, 100, 2))
    kit.apply(kit.limit(2, SELL, 101, 3))
    order = kit.market(1, BUY, 10)
    out = kit.apply(order)
    assert [(t.price, t.quantity) for t in out.trades] == [(100, 2), (101, 3)]
    taker = out.order_updates[-1]
    assert (taker.status, taker.filled_quantity, taker.remaining_quantity) == (S.EXPIRED, 5, 0)
    assert (taker.price, taker.time_in_force) == (None, TimeInForce.IOC)
    assert out.order_placements[0].time_in_force is TimeInForce.IOC  # MARKET behaves as IOC
    assert kit.engine.balance(1, "USDT") == (100_000 - 2_000 - 3_030, 0)
    assert kit.engine.balance(1, "BTC") == (5_000, 0)


def test_market_buy_when_book_is_empty_expires_without_fills(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    order = kit.market(1, BUY, 1)
    out = kit.apply(order)
    assert statuses(out) == {order.order_id: S.EXPIRED}
    assert out.trades == () and out.balance_updates == ()


def test_market_buy_when_funds_run_out_stops_before_the_unaffordable_lot(kit: Kit) -> None:
    kit.fund(1, USDT=3_500)
    kit.fund(2, BTC=5_000)
    kit.apply(kit.limit(2, SELL, 100, 2))  # 2 000 for both lots
    second_level = kit.limit(2, SELL, 101, 3)  # 1 010 per lot
    kit.apply(second_level)
    out = kit.apply(kit.market(1, BUY, 10))
    # 3 500 - 2 000 = 1 500 left: one lot at 101, then 490 cannot buy another.
    assert [(t.price, t.quantity) for t in out.trades] == [(100, 2), (101, 1)]
    assert out.order_updates[-1].status is S.EXPIRED
    assert kit.engine.balance(1, "USDT") == (490, 0)
    assert kit.engine.balance(1, "BTC") == (3_000, 0)
    assert kit.engine.open_order(second_level.order_id).remaining_quantity == 2  # type: ignore[union-attr]


def test_market_buy_when_buyer_has_no_quote_expires_without_fills(kit: Kit) -> None:
    kit.fund(2, BTC=1_000)
    kit.apply(kit.limit(2, SELL, 100, 1))
    order = kit.market(1, BUY, 1)
    out = kit.apply(order)
    assert statuses(out) == {order.order_id: S.EXPIRED}
    assert out.trades == () and out.balance_updates == ()


def test_market_sell_when_bids_exist_sells_down_the_book(kit: Kit) -> None:
    kit.fund(1, USDT=100_000)
    kit.fund(2, BTC=4_000)
    kit.apply(kit.limit(1, BUY, 100, 2))
    kit.apply(kit.limit(1, BUY, 98, 5))
    out = kit.apply(kit.market(2, SELL, 4))
    assert [(t.price, t.quantity) for t in out.trades] == [(100, 2), (98, 2)]
    assert out.order_updates[-1].status is S.FILLED
    assert kit.engine.balance(2, "USDT") == (2_000 + 1_960, 0)


def test_market_order_when_given_gtc_is_accepted_and_reported_as_ioc(kit: Kit) -> None:
    kit.fund(1, BTC=1_000)
    out = kit.apply(kit.market(1, SELL, 1, tif=TimeInForce.GTC))
    assert out.order_updates[0].time_in_force is TimeInForce.IOC
    assert out.order_updates[0].status is S.EXPIRED


# ---------------------------------------------------------------- self-trade prevention


def _own_and_other_asks(kit: Kit) -> tuple[int, int]:
    kit.fund(1, USDT=100_000, BTC=2_000)
    kit.fund(2, BTC=2_000)
    own = kit.limit(1, SELL, 100, 2)
    other = kit.limit(2, SELL, 100, 2)
    kit.apply(own)
    kit.apply(other)
    return own.order_id, other.order_id


def test_stp_when_mode_is_default_expires_taker_and_leaves_maker(kit: Kit) -> None:
    own, _ = _own_and_other_asks(kit)
    order = kit.limit(1, BUY, 100, 3)  # stp None = EXPIRE_TAKER; GTC, yet it does not rest
    out = kit.apply(order)
    assert out.trades == ()
    assert statuses(out) == {order.order_id: S.EXPIRED}
    assert kit.engine.open_order(own) is not None
    assert kit.engine.balance(1, "USDT") == (100_000, 0)
    assert kit.engine.best_bid(BTC) is None


def test_stp_when_expire_taker_follows_fills_keeps_the_fills(kit: Kit) -> None:
    kit.fund(1, USDT=100_000, BTC=2_000)
    kit.fund(2, BTC=2_000)
    other = kit.limit(2, SELL, 99, 2)
    own = kit.limit(1, SELL, 100, 2)
    kit.apply(other)
    kit.apply(own)
    order = kit.limit(1, BUY, 100, 3, stp=StpMode.EXPIRE_TAKER)
    out = kit.apply(order)
    assert [(t.maker_order_id, t.quantity) for t in out.trades] == [(other.order_id, 2)]
    taker = out.order_updates[-1]
    assert (taker.status, taker.filled_quantity) == (S.EXPIRED, 2)
    assert kit.engine.open_order(own.order_id) is not None


def test_stp_when_mode_is_expire_maker_cancels_own_order_and_keeps_matching(kit: Kit) -> None:
    own, other = _own_and_other_asks(kit)
    order = kit.limit(1, BUY, 100, 3, stp=StpMode.EXPIRE_MAKER)
    out = kit.apply(order)
    assert [(t.maker_order_id, t.quantity) for t in out.trades] == [(other, 2)]
    assert statuses(out) == {own: S.CANCELLED, other: S.FILLED, order.order_id: S.PARTIALLY_FILLED}
    assert [(c.order_id, c.reason) for c in out.order_completions] == [
        (own, CompletionReason.CANCELLED),
        (other, CompletionReason.FILLED),
    ]
    # The own ask's 2 000 BTC are unlocked; the taker's last lot rests at 100.
    assert kit.engine.balance(1, "BTC") == (4_000, 0)
    assert kit.engine.balance(1, "USDT") == (100_000 - 2_000 - 1_000, 1_000)
    assert kit.engine.best_bid(BTC) == (100, 1)


def test_stp_when_mode_is_expire_both_cancels_maker_and_expires_taker(kit: Kit) -> None:
    own, other = _own_and_other_asks(kit)
    order = kit.limit(1, BUY, 100, 3, stp=StpMode.EXPIRE_BOTH)
    out = kit.apply(order)
    assert out.trades == ()
    assert statuses(out) == {own: S.CANCELLED, order.order_id: S.EXPIRED}
    assert kit.engine.open_order(other) is not None
    assert kit.engine.balance(1, "BTC") == (2_000, 0)
    assert kit.engine.balance(1, "USDT") == (100_000, 0)


# ---------------------------------------------------------------- fees


def test_fees_when_bps_are_set_are_floored_and_paid_to_the_fee_account() -> None:
    kit = Kit(Engine(make_markets(maker_bps=10, taker_bps=20)))
    kit.fund(1, USDT=2_000_000)
    kit.fund(2, BTC=60_000)
    kit.apply(kit.limit(2, SELL, 2_000, 50))  # maker: 50 lots at 20.00 USDT
    out = kit.apply(kit.limit(1, BUY, 2_000, 50))
    (trade,) = out.trades
    # quote 50 x 2000 x 10 = 1 000 000 -> maker fee 10 bps = 1 000 USDT units;
    # base 50 x 1000 = 50 000 -> taker fee 20 bps = 100 BTC units.
    assert (trade.quote_quantity, trade.maker_fee, trade.maker_fee_asset) == (
        1_000_000,
        1_000,
        "USDT",
    )
    assert (trade.taker_fee, trade.taker_fee_asset) == (100, "BTC")
    assert kit.engine.balance(1, "BTC") == (49_900, 0)
    assert kit.engine.balance(2, "USDT") == (999_000, 0)
    assert kit.engine.balance(0, "BTC") == (100, 0)
    assert kit.engine.balance(0, "USDT") == (1_000, 0)
    assert (0, "BTC", 100, 0) in balances_of(out) and (0, "USDT", 1_000, 0) in balances_of(out)

    # Floor: 1 lot at 101 ticks = 1 010 quote units -> 1.01 floors to 1 (maker, a seller
    # taking a bid now pays the taker fee in quote: 1010 x 20 bps = 2.02 -> 2).
    kit.apply(kit.limit(1, BUY, 101, 1))
    out = kit.apply(kit.limit(2, SELL, 101, 1))
    (trade,) = out.trades
    assert (trade.maker_fee, trade.maker_fee_asset, trade.taker_fee, trade.taker_fee_asset) == (
        1,
        "BTC",
        2,
        "USDT",
    )
    assert kit.engine.balance(0, "USDT") == (1_002, 0)
    assert kit.engine.balance(0, "BTC") == (101, 0)


def test_fees_when_fee_account_withdraws_them_money_stays_conserved() -> None:
    kit = Kit(Engine(make_markets(maker_bps=10, taker_bps=10)))
    kit.fund(1, USDT=2_000_000)
    kit.fund(2, BTC=50_000)
    kit.apply(kit.limit(2, SELL, 2_000, 50))
    kit.apply(kit.limit(1, BUY, 2_000, 50))
    assert not kit.apply(kit.withdraw(0, "USDT", 1_000)).rejections
    assert kit.engine.supply("USDT") == 2_000_000 - 1_000


# ---------------------------------------------------------------- deposits and withdrawals


def test_deposit_when_valid_adds_to_available(kit: Kit) -> None:
    out = kit.apply(kit.deposit(7, "ETH", 123))
    assert out.command_kind is CommandKind.DEPOSIT
    assert out.balance_updates == (BalanceUpdated(user_id=7, asset="ETH", available=123, locked=0),)
    assert kit.engine.supply("ETH") == 123


def test_withdraw_when_available_suffices_takes_from_available(kit: Kit) -> None:
    kit.fund(7, ETH=500)
    out = kit.apply(kit.withdraw(7, "ETH", 200))
    assert out.balance_updates == (BalanceUpdated(user_id=7, asset="ETH", available=300, locked=0),)
    assert kit.engine.supply("ETH") == 300


def test_withdraw_when_funds_are_locked_is_rejected_insufficient_funds(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    kit.apply(kit.limit(1, BUY, 100, 1))
    out = assert_rejected(kit, kit.withdraw(1, "USDT", 1), R.INSUFFICIENT_FUNDS)
    assert out.rejections[0].kind is CommandKind.WITHDRAW
    assert_rejected(kit, kit.withdraw(9, "USDT", 1), R.INSUFFICIENT_FUNDS)


@pytest.mark.parametrize(
    ("asset", "amount", "reason"),
    [
        ("DOGE", 1, R.UNKNOWN_ASSET),
        ("BTC", 0, R.INVALID_AMOUNT),
        ("BTC", -1, R.INVALID_AMOUNT),
    ],
)
def test_deposit_or_withdraw_when_invalid_is_rejected_with_its_reason(
    kit: Kit, asset: str, amount: int, reason: RejectReason
) -> None:
    kit.fund(1, BTC=10)
    assert_rejected(kit, kit.deposit(1, asset, amount), reason)
    assert_rejected(kit, kit.withdraw(1, asset, amount), reason)


def test_deposit_when_total_would_exceed_int64_is_rejected_invalid_amount(kit: Kit) -> None:
    kit.fund(1, BTC=INT64_MAX - 10)
    assert_rejected(kit, kit.deposit(2, "BTC", 11), R.INVALID_AMOUNT)
    assert not kit.apply(kit.deposit(2, "BTC", 10)).rejections


# ---------------------------------------------------------------- outputs


def test_sequence_when_commands_are_applied_counts_every_one_from_one() -> None:
    kit = Kit(Engine(make_markets()), users=0)
    outs = [
        kit.apply(kit.create_user("k1", "p1")),
        kit.apply(kit.deposit(1, "USDT", 5)),
        kit.apply(kit.withdraw(1, "USDT", 50)),  # rejected: still numbered
        kit.apply(kit.cancel(1, 77)),
        kit.apply(kit.limit(1, BUY, 100, 1)),
    ]
    assert [o.sequence for o in outs] == [1, 2, 3, 4, 5]
    assert [o.command_id for o in outs] == [1, 2, 3, 4, 5]
    assert [o.timestamp_ms for o in outs] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    assert kit.engine.sequence == 5


def test_place_when_accepted_emits_one_placement_with_the_command_fields(kit: Kit) -> None:
    kit.fund(1, ETH=10_000)
    order = kit.limit(1, SELL, 250_000, 1, symbol=ETH, client_order_id="k")
    out = kit.apply(order)
    assert out.order_placements == (
        OrderPlaced(
            order_id=order.order_id,
            client_order_id="k",
            user_id=1,
            symbol=ETH,
            side=SELL,
            order_type=OrderType.LIMIT,
            time_in_force=TimeInForce.GTC,
            post_only=False,
            price=250_000,
            quantity=1,
            created_at=order.timestamp_ms,
        ),
    )
    assert out.balance_updates == (
        BalanceUpdated(user_id=1, asset="ETH", available=0, locked=10_000),
    )


def test_engine_when_given_something_else_than_a_command_raises_invariant_error(
    engine: Engine,
) -> None:
    from engine import InvariantError

    with pytest.raises(InvariantError):
        engine.apply("not a command")  # type: ignore[arg-type]
    assert engine.sequence == 0


def test_positional_builders_when_used_equal_the_dataclass_constructors() -> None:
    """The engine's fast event constructors produce genuine, equal, frozen instances."""
    pairs = [
        (
            _new_balance(1, "BTC", 2, 3),
            BalanceUpdated(user_id=1, asset="BTC", available=2, locked=3),
        ),
        (
            _new_completed(1, 2, BTC, CompletionReason.FILLED, 9),
            OrderCompleted(
                order_id=1, user_id=2, symbol=BTC, reason=CompletionReason.FILLED, completed_at=9
            ),
        ),
        (
            _new_rejected(1, CommandKind.DEPOSIT, 2, R.INVALID_AMOUNT, None, None, "m"),
            CommandRejected(
                command_id=1,
                kind=CommandKind.DEPOSIT,
                user_id=2,
                reason=R.INVALID_AMOUNT,
                order_id=None,
                client_order_id=None,
                message="m",
            ),
        ),
        (
            _new_placed(1, "c", 2, BTC, BUY, OrderType.LIMIT, TimeInForce.GTC, False, 5, 6, 7),
            OrderPlaced(
                order_id=1,
                client_order_id="c",
                user_id=2,
                symbol=BTC,
                side=BUY,
                order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC,
                post_only=False,
                price=5,
                quantity=6,
                created_at=7,
            ),
        ),
        (
            _new_trade(1, BTC, 2, 3, 4, 5, 6, 7, 8, SELL, 9, "BTC", 10, "USDT", 11),
            TradeExecuted(
                trade_id=1,
                symbol=BTC,
                price=2,
                quantity=3,
                quote_quantity=4,
                maker_order_id=5,
                taker_order_id=6,
                maker_user_id=7,
                taker_user_id=8,
                taker_side=SELL,
                maker_fee=9,
                maker_fee_asset="BTC",
                taker_fee=10,
                taker_fee_asset="USDT",
                executed_at=11,
            ),
        ),
        (
            _new_updated(
                1,
                None,
                2,
                BTC,
                BUY,
                OrderType.LIMIT,
                TimeInForce.IOC,
                3,
                4,
                S.EXPIRED,
                1,
                0,
                30,
                3,
                3,
                1,
                None,
                5,
                6,
            ),
            OrderUpdated(
                order_id=1,
                client_order_id=None,
                user_id=2,
                symbol=BTC,
                side=BUY,
                order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.IOC,
                price=3,
                quantity=4,
                status=S.EXPIRED,
                filled_quantity=1,
                remaining_quantity=0,
                cumulative_quote=30,
                avg_fill_price=3,
                last_fill_price=3,
                last_fill_quantity=1,
                reject_reason=None,
                created_at=5,
                updated_at=6,
            ),
        ),
        (
            _new_output(1, 2, CommandKind.DEPOSIT, 3, (), (), (), (), (), (), ()),
            EngineOutput(
                sequence=1, command_id=2, command_kind=CommandKind.DEPOSIT, timestamp_ms=3
            ),
        ),
        (new_level(SELL, 7, 8, 2), LevelUpdated(side=SELL, price=7, quantity=8, order_count=2)),
        (
            new_depth(BTC, 5, (new_level(BUY, 1, 0, 0),)),
            DepthUpdated(
                symbol=BTC,
                update_id=5,
                levels=(LevelUpdated(side=BUY, price=1, quantity=0, order_count=0),),
            ),
        ),
    ]
    for fast, slow in pairs:
        assert type(fast) is type(slow)
        assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fast, dataclasses.fields(cast(Any, fast))[0].name, 99)
