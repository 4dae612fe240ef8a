"""The order status table: allowed moves, terminal states, and illegal moves changing nothing."""

from __future__ import annotations

import pytest
from engine_testkit import BUY, SELL, Kit

from engine import (
    TRANSITIONS,
    ExchangeError,
    IllegalTransition,
    InvariantError,
    OrderStatus,
    Trigger,
    next_status,
    order_state,
)
from engine.invariants import check_invariants

S = OrderStatus
T = Trigger


def test_module_when_read_opens_with_a_theory_of_operation() -> None:
    assert order_state.__doc__ is not None
    assert "Theory of operation" in order_state.__doc__


@pytest.mark.parametrize(
    ("status", "trigger", "expected"),
    [
        (S.NEW, T.PARTIAL_FILL, S.PARTIALLY_FILLED),
        (S.NEW, T.FILL, S.FILLED),
        (S.NEW, T.CANCEL, S.CANCELLED),
        (S.NEW, T.EXPIRE, S.EXPIRED),
        (S.NEW, T.REJECT, S.REJECTED),
        (S.PARTIALLY_FILLED, T.PARTIAL_FILL, S.PARTIALLY_FILLED),
        (S.PARTIALLY_FILLED, T.FILL, S.FILLED),
        (S.PARTIALLY_FILLED, T.CANCEL, S.CANCELLED),
        (S.PARTIALLY_FILLED, T.EXPIRE, S.EXPIRED),
    ],
)
def test_next_status_when_transition_is_in_the_table_returns_it(
    status: OrderStatus, trigger: Trigger, expected: OrderStatus
) -> None:
    assert next_status(status, trigger) is expected


def test_table_when_listed_has_exactly_the_documented_transitions() -> None:
    assert len(TRANSITIONS) == 9


@pytest.mark.parametrize("status", [S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED])
@pytest.mark.parametrize("trigger", list(Trigger))
def test_next_status_when_status_is_terminal_raises_illegal_transition(
    status: OrderStatus, trigger: Trigger
) -> None:
    with pytest.raises(IllegalTransition):
        next_status(status, trigger)


def test_next_status_when_partially_filled_order_is_rejected_raises() -> None:
    with pytest.raises(IllegalTransition) as info:
        next_status(S.PARTIALLY_FILLED, T.REJECT)
    assert isinstance(info.value, InvariantError) and isinstance(info.value, ExchangeError)


def test_transition_when_illegal_on_a_live_order_changes_nothing(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=1_000)
    buy = kit.limit(1, BUY, 100, 3)
    kit.apply(buy)
    kit.apply(kit.limit(2, SELL, 100, 1))
    order = kit.engine._orders[buy.order_id]
    assert order.status is S.PARTIALLY_FILLED
    before = kit.engine.state_hash()

    with pytest.raises(IllegalTransition):
        order.transition(T.REJECT)

    assert order.status is S.PARTIALLY_FILLED
    assert kit.engine.state_hash() == before
    check_invariants(kit.engine)


def test_cancel_when_order_state_is_corrupt_raises_before_mutating_anything(kit: Kit) -> None:
    """A resting order wrongly marked FILLED: the cancel's transition fails first, so the
    book, the indexes and the balances are exactly as they were."""
    kit.fund(1, USDT=10_000)
    buy = kit.limit(1, BUY, 100, 3)
    kit.apply(buy)
    kit.engine._orders[buy.order_id].status = S.FILLED  # simulate a bug
    before = kit.engine.state_hash()
    balances = kit.engine.balances()

    with pytest.raises(IllegalTransition):
        kit.engine.apply(kit.cancel(1, buy.order_id))

    assert kit.engine.state_hash() == before
    assert kit.engine.balances() == balances
    assert kit.engine.best_bid("BTC_USDT") == (100, 3)
