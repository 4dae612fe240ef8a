"""Amend (reduce keeping priority) and depth updates (per-book update ids), one rule each.

BTC_USDT scales as in test_engine_scenarios: a lot at 100 ticks costs 1 000 USDT minor units
and a lot is 1 000 BTC minor units. Every ``kit.apply`` also rebuilds each book from the depth
updates alone and checks it against the engine (``Kit.follow_depth``).
"""

from __future__ import annotations

import pytest
from engine_testkit import BTC, BUY, ETH, SELL, Kit, make_markets

from engine import (
    BalanceUpdated,
    CommandKind,
    DepthUpdated,
    Engine,
    EngineOutput,
    LevelUpdated,
    OrderStatus,
    RejectReason,
    StpMode,
    TimeInForce,
)

S = OrderStatus
R = RejectReason


def assert_refused(kit: Kit, command: object, reason: RejectReason) -> EngineOutput:
    """Apply a command that must be refused and change nothing, not even an update id."""
    before_hash = kit.engine.state_hash()
    before_ids = {symbol: kit.engine.update_id(symbol) for symbol in (BTC, ETH)}
    out = kit.apply(command)  # type: ignore[arg-type]
    assert [r.reason for r in out.rejections] == [reason]
    # (A refused place still reports its own REJECTED order; nothing else is reported.)
    assert all(u.status is S.REJECTED for u in out.order_updates)
    assert out.balance_updates == () and out.depth_updates == () and out.trades == ()
    assert kit.engine.state_hash() == before_hash
    assert {symbol: kit.engine.update_id(symbol) for symbol in (BTC, ETH)} == before_ids
    return out


def level(side: object, price: int, quantity: int, orders: int) -> LevelUpdated:
    return LevelUpdated(side=side, price=price, quantity=quantity, order_count=orders)  # type: ignore[arg-type]


# ---------------------------------------------------------------- amend


def test_amend_when_strict_reduction_reduces_in_place_and_unlocks_the_released_funds(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    buy = kit.limit(1, BUY, 100, 8, client_order_id="b1")
    kit.apply(buy)
    assert kit.engine.balance(1, "USDT") == (2_000, 8_000)

    amend = kit.amend(1, buy.order_id, 5)
    out = kit.apply(amend)

    assert out.command_kind is CommandKind.AMEND_ORDER
    assert out.rejections == () and out.trades == () and out.order_completions == ()
    (update,) = out.order_updates
    assert (update.order_id, update.client_order_id, update.status) == (buy.order_id, "b1", S.NEW)
    assert (update.quantity, update.filled_quantity, update.remaining_quantity) == (5, 0, 5)
    assert (update.created_at, update.updated_at) == (buy.timestamp_ms, amend.timestamp_ms)
    assert out.balance_updates == (
        BalanceUpdated(user_id=1, asset="USDT", available=5_000, locked=5_000),
    )
    assert out.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=2, levels=(level(BUY, 100, 5, 1),)),
    )
    view = kit.engine.open_order(buy.order_id)
    assert view is not None and (view.quantity, view.remaining_quantity) == (5, 5)


def test_amend_when_order_is_first_in_its_level_keeps_its_place_in_the_queue(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, BTC=10_000)
    kit.fund(3, USDT=100_000)
    first = kit.limit(1, SELL, 100, 6)
    second = kit.limit(2, SELL, 100, 4)
    kit.apply(first)
    kit.apply(second)

    kit.apply(kit.amend(1, first.order_id, 2))
    assert [o.order_id for o in kit.engine.book_orders(BTC, SELL)] == [
        first.order_id,
        second.order_id,
    ]
    out = kit.apply(kit.limit(3, BUY, 100, 3))

    # The amended order is still first: it fills its 2 lots before the later order's 1.
    assert [(t.maker_order_id, t.quantity) for t in out.trades] == [
        (first.order_id, 2),
        (second.order_id, 1),
    ]
    assert out.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=4, levels=(level(SELL, 100, 3, 1),)),
    )


def test_amend_when_partially_filled_keeps_the_filled_part_and_status(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, USDT=10_000)
    sell = kit.limit(1, SELL, 100, 8)
    kit.apply(sell)
    kit.apply(kit.limit(2, BUY, 100, 3))  # 3 of the 8 fill
    assert kit.engine.balance(1, "BTC") == (2_000, 5_000)

    out = kit.apply(kit.amend(1, sell.order_id, 4))  # 3 filled + 1 still resting

    (update,) = out.order_updates
    assert (update.status, update.quantity, update.filled_quantity) == (S.PARTIALLY_FILLED, 4, 3)
    assert (update.remaining_quantity, update.cumulative_quote) == (1, 3_000)
    assert kit.engine.balance(1, "BTC") == (6_000, 1_000)
    assert out.depth_updates[0].levels == (level(SELL, 100, 1, 1),)


def test_amend_when_named_by_client_order_id_amends_that_open_order(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    sell = kit.limit(1, SELL, 101, 5, client_order_id="mine", symbol=BTC)
    kit.apply(sell)
    out = kit.apply(kit.amend(1, client_order_id="mine", quantity=2))
    assert [(u.order_id, u.quantity) for u in out.order_updates] == [(sell.order_id, 2)]


@pytest.mark.parametrize(
    ("quantity", "why"),
    [(5, "the same quantity"), (6, "more"), (3, "the filled quantity"), (2, "below filled")],
)
def test_amend_when_not_a_strict_reduction_above_filled_is_rejected_invalid_amend(
    kit: Kit, quantity: int, why: str
) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, USDT=10_000)
    sell = kit.limit(1, SELL, 100, 5)
    kit.apply(sell)
    kit.apply(kit.limit(2, BUY, 100, 3))  # filled 3 of 5
    out = assert_refused(kit, kit.amend(1, sell.order_id, quantity), R.INVALID_AMEND)
    rejection = out.rejections[0]
    assert (rejection.kind, rejection.order_id, rejection.user_id) == (
        CommandKind.AMEND_ORDER,
        sell.order_id,
        1,
    )
    assert rejection.message == (
        f"amend quantity {quantity} must be below the order's quantity 5 and above its "
        "filled quantity 3"
    ), why


def test_amend_when_order_is_unknown_completed_foreign_or_on_another_market_is_not_found(
    kit: Kit,
) -> None:
    kit.fund(1, BTC=10_000)
    kit.fund(2, USDT=10_000)
    resting = kit.limit(1, SELL, 105, 5, client_order_id="r")
    kit.apply(resting)
    filled = kit.limit(1, SELL, 100, 1)
    kit.apply(filled)
    kit.apply(kit.limit(2, BUY, 100, 1))  # fills `filled` completely
    cancelled = kit.limit(1, SELL, 106, 2)
    kit.apply(cancelled)
    kit.apply(kit.cancel(1, cancelled.order_id))

    outs = [
        assert_refused(kit, kit.amend(1, 999_999, 1), R.ORDER_NOT_FOUND),
        assert_refused(kit, kit.amend(1, filled.order_id, 1), R.ORDER_NOT_FOUND),
        assert_refused(kit, kit.amend(1, cancelled.order_id, 1), R.ORDER_NOT_FOUND),
        assert_refused(kit, kit.amend(2, resting.order_id, 1), R.ORDER_NOT_FOUND),
        assert_refused(kit, kit.amend(1, resting.order_id, 1, symbol=ETH), R.ORDER_NOT_FOUND),
        assert_refused(kit, kit.amend(2, client_order_id="r", quantity=1), R.ORDER_NOT_FOUND),
    ]
    # The same wording whoever asks: nothing reveals another user's order.
    assert outs[3].rejections[0].message == f"no open order {resting.order_id!r}"
    assert outs[0].rejections[0].message == "no open order 999999"


def test_amend_when_symbol_unknown_is_rejected_unknown_symbol(kit: Kit) -> None:
    assert_refused(kit, kit.amend(1, 1, 1, symbol="DOGE_USDT"), R.UNKNOWN_SYMBOL)


@pytest.mark.parametrize("both", [True, False])
def test_amend_when_not_exactly_one_id_is_rejected_invalid_order(kit: Kit, both: bool) -> None:
    kit.fund(1, BTC=10_000)
    sell = kit.limit(1, SELL, 100, 5, client_order_id="c")
    kit.apply(sell)
    amend = kit.amend(1, sell.order_id, 2, client_order_id="c") if both else kit.amend(1, None, 2)
    assert_refused(kit, amend, R.INVALID_ORDER)


def test_amend_when_quantity_is_not_an_int_is_rejected_invalid_quantity(kit: Kit) -> None:
    kit.fund(1, BTC=10_000)
    sell = kit.limit(1, SELL, 100, 5)
    kit.apply(sell)
    assert_refused(kit, kit.amend(1, sell.order_id, True), R.INVALID_QUANTITY)  # a bool
    assert_refused(kit, kit.amend(1, sell.order_id, 2.0), R.INVALID_QUANTITY)  # type: ignore[arg-type]


# ---------------------------------------------------------------- depth updates


def test_place_when_order_rests_reports_its_level_with_the_next_update_id(kit: Kit) -> None:
    kit.fund(1, USDT=100_000)
    first = kit.apply(kit.limit(1, BUY, 100, 2))
    second = kit.apply(kit.limit(1, BUY, 100, 3))
    other_market = kit.apply(kit.limit(1, BUY, 100, 1, symbol=ETH))
    assert first.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=1, levels=(level(BUY, 100, 2, 1),)),
    )
    assert second.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=2, levels=(level(BUY, 100, 5, 2),)),
    )
    # Each market counts its own updates.
    assert other_market.depth_updates[0].update_id == 1
    assert (kit.engine.update_id(BTC), kit.engine.update_id(ETH)) == (2, 1)


def test_place_when_taker_sweeps_levels_and_rests_reports_bids_then_asks_best_first(
    kit: Kit,
) -> None:
    kit.fund(1, BTC=100_000)
    kit.fund(2, USDT=100_000)
    for price, quantity in ((101, 2), (102, 2), (102, 1), (103, 4)):
        kit.apply(kit.limit(1, SELL, price, quantity))
    out = kit.apply(kit.limit(2, BUY, 102, 7))  # takes 101 and 102, rests 2 at 102

    (update,) = out.depth_updates
    assert update.update_id == 5
    assert update.levels == (
        level(BUY, 102, 2, 1),
        level(SELL, 101, 0, 0),
        level(SELL, 102, 0, 0),
    )


def test_place_when_sell_taker_partly_takes_a_level_reports_its_new_total(kit: Kit) -> None:
    kit.fund(1, USDT=100_000)
    kit.fund(2, BTC=100_000)
    kit.apply(kit.limit(1, BUY, 100, 2))
    kit.apply(kit.limit(1, BUY, 99, 5))
    kit.apply(kit.limit(1, BUY, 99, 5))
    out = kit.apply(kit.limit(2, SELL, 99, 4, tif=TimeInForce.IOC))
    assert out.depth_updates[0].levels == (level(BUY, 100, 0, 0), level(BUY, 99, 8, 2))


def test_place_when_nothing_in_the_book_changes_reports_no_depth_and_keeps_the_update_id(
    kit: Kit,
) -> None:
    kit.fund(1, BTC=100_000, USDT=100_000)
    kit.fund(2, USDT=100_000)
    kit.apply(kit.limit(1, SELL, 100, 2))
    before = kit.engine.update_id(BTC)
    # Self-trade prevention stops the taker at its own order: nothing moved.
    stp = kit.apply(kit.limit(1, BUY, 100, 1, stp=StpMode.EXPIRE_TAKER))
    # An IOC that cannot reach the book, a FOK that cannot fill.
    ioc = kit.apply(kit.limit(2, BUY, 99, 1, tif=TimeInForce.IOC))
    fok = kit.apply(kit.limit(2, BUY, 100, 5, tif=TimeInForce.FOK))
    for out in (stp, ioc, fok):
        assert out.rejections == () and out.depth_updates == ()
    assert kit.engine.update_id(BTC) == before


def test_place_when_stp_cancels_the_makers_order_reports_that_level(kit: Kit) -> None:
    kit.fund(1, BTC=100_000, USDT=100_000)
    kit.apply(kit.limit(1, SELL, 100, 2))
    out = kit.apply(kit.limit(1, BUY, 100, 1, stp=StpMode.EXPIRE_BOTH))
    assert out.depth_updates[0].levels == (level(SELL, 100, 0, 0),)


def test_cancel_when_order_rests_reports_the_level_after_it(kit: Kit) -> None:
    kit.fund(1, BTC=100_000)
    a = kit.limit(1, SELL, 100, 2)
    b = kit.limit(1, SELL, 100, 3)
    kit.apply(a)
    kit.apply(b)
    out = kit.apply(kit.cancel(1, a.order_id))
    assert out.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=3, levels=(level(SELL, 100, 3, 1),)),
    )
    out = kit.apply(kit.cancel(1, b.order_id))
    assert out.depth_updates == (
        DepthUpdated(symbol=BTC, update_id=4, levels=(level(SELL, 100, 0, 0),)),
    )


def test_refusals_and_fund_moves_when_applied_report_no_depth(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    assert kit.apply(kit.withdraw(1, "USDT", 1)).depth_updates == ()
    assert_refused(kit, kit.limit(1, BUY, 100, 50), R.INSUFFICIENT_FUNDS)
    assert_refused(kit, kit.cancel(1, 12_345), R.ORDER_NOT_FOUND)
    assert kit.engine.update_id(BTC) == 0


def test_restore_when_snapshot_taken_continues_the_update_ids(kit: Kit) -> None:
    kit.fund(1, USDT=100_000)
    kit.apply(kit.limit(1, BUY, 100, 2))
    kit.apply(kit.limit(1, BUY, 101, 2, symbol=ETH))
    restored = Engine.restore(kit.engine.snapshot(), make_markets())
    assert (restored.update_id(BTC), restored.update_id(ETH)) == (1, 1)
    twin = Kit(restored, first_id=kit.next_id)
    out = twin.apply(twin.limit(1, BUY, 99, 1))
    assert out.depth_updates[0].update_id == 2
    assert restored.state_hash() != kit.engine.state_hash()  # the update id is business state
