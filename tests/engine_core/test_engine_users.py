"""Scenario tests for users, API keys and cancel-all: one rule each, with exact events.

The kit creates users 1..9 first (``KIT_USERS``); user 0 is the fee account. BTC_USDT scales
as in test_engine_scenarios: a lot at 100 ticks costs 1 000 USDT minor units and delivers 1 000
BTC minor units.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from engine_testkit import (
    BTC,
    BUY,
    ETH,
    KIT_USERS,
    SELL,
    T0,
    Kit,
    key_id,
    make_markets,
    raw_markets,
)

from engine import (
    ApiKeyUpdated,
    BalanceUpdated,
    CommandKind,
    CommandRejected,
    CompletionReason,
    Engine,
    EngineOutput,
    InvariantError,
    OrderCompleted,
    OrderStatus,
    RejectReason,
    Role,
    UserCreated,
    parse_markets,
)
from engine.invariants import check_invariants

R = RejectReason
NOBODY = KIT_USERS + 1  # never created


def assert_refused(kit: Kit, command: object, reason: RejectReason, user_id: int) -> EngineOutput:
    """Apply a command that must be refused with ``reason``, and check it changed nothing."""
    before_hash = kit.engine.state_hash()
    before_users = (kit.engine.users(), kit.engine.api_keys(), kit.engine.next_user_id)
    out = kit.apply(command)  # type: ignore[arg-type]
    assert [(r.reason, r.user_id) for r in out.rejections] == [(reason, user_id)]
    assert out.rejections[0].command_id == out.command_id
    assert out.balance_updates == () and out.trades == () and out.order_placements == ()
    assert out.user_creations == () and out.api_key_updates == ()
    assert kit.engine.state_hash() == before_hash
    assert (kit.engine.users(), kit.engine.api_keys(), kit.engine.next_user_id) == before_users
    return out


def no_events(out: EngineOutput) -> bool:
    return out == EngineOutput(
        sequence=out.sequence,
        command_id=out.command_id,
        command_kind=out.command_kind,
        timestamp_ms=out.timestamp_ms,
    )


@pytest.fixture
def bare() -> Kit:
    """A kit whose engine has no users yet."""
    return Kit(Engine(make_markets()), users=0)


# ---------------------------------------------------------------- create user


def test_create_user_when_key_is_new_reports_the_user_and_its_key(bare: Kit) -> None:
    command = bare.create_user("kabc", "cHVi", label="alice")
    out = bare.apply(command)
    assert out.command_kind is CommandKind.CREATE_USER
    assert out.user_creations == (
        UserCreated(user_id=1, role=Role.TRADER, label="alice", created_at=command.timestamp_ms),
    )
    assert out.api_key_updates == (
        ApiKeyUpdated(
            api_key="kabc",
            user_id=1,
            role=Role.TRADER,
            public_key="cHVi",
            revoked=False,
            updated_at=command.timestamp_ms,
        ),
    )
    assert out.rejections == () and out.balance_updates == ()
    assert bare.engine.users() == [(1, Role.TRADER)]
    assert bare.engine.is_known_user(1)


def test_create_user_when_several_are_created_assigns_ids_one_two_three_in_order(
    bare: Kit,
) -> None:
    ids = [
        bare.apply(bare.create_user(f"k{n}", f"p{n}")).user_creations[0].user_id for n in range(3)
    ]
    assert ids == [1, 2, 3]
    assert bare.engine.next_user_id == 4


def test_create_user_when_role_is_operator_reports_the_role_on_user_and_key(bare: Kit) -> None:
    out = bare.apply(bare.create_user("kop", "cA==", role=Role.OPERATOR))
    assert out.user_creations[0].role is Role.OPERATOR
    assert out.api_key_updates[0].role is Role.OPERATOR
    assert bare.engine.user_role(1) is Role.OPERATOR


def test_create_user_when_next_id_is_the_fee_account_skips_it() -> None:
    raw = copy.deepcopy(raw_markets())
    raw["fee_account"] = 2
    kit = Kit(Engine(parse_markets(raw)), users=0)
    ids = [kit.apply(kit.create_user(f"k{n}", "p")).user_creations[0].user_id for n in range(3)]
    assert ids == [1, 3, 4]
    assert kit.engine.user_role(2) is None and kit.engine.is_known_user(2)


def test_create_user_when_role_is_a_plain_string_raises_and_changes_nothing(bare: Kit) -> None:
    before = bare.engine.state_hash()
    command = dataclasses.replace(bare.create_user("k", "p"), role="TRADER")  # type: ignore[arg-type]
    with pytest.raises(InvariantError):
        bare.engine.apply(command)
    assert bare.engine.state_hash() == before and bare.engine.users() == []
    assert bare.engine.sequence == 0


def test_create_user_when_key_id_is_known_is_rejected_duplicate_api_key(kit: Kit) -> None:
    out = assert_refused(kit, kit.create_user(key_id(1), "other"), R.DUPLICATE_API_KEY, 0)
    assert out.rejections[0].kind is CommandKind.CREATE_USER
    assert kit.engine.next_user_id == KIT_USERS + 1  # the id was not used up


def test_create_user_when_key_id_was_revoked_is_rejected_duplicate_api_key(kit: Kit) -> None:
    kit.apply(kit.revoke_key(key_id(3)))
    assert_refused(kit, kit.create_user(key_id(3), "again"), R.DUPLICATE_API_KEY, 0)


# ---------------------------------------------------------------- add key


def test_add_api_key_when_user_exists_reports_the_key_with_the_users_role(bare: Kit) -> None:
    bare.apply(bare.create_user("k1", "p1", role=Role.OPERATOR))
    command = bare.add_key(1, "k2", "p2")
    out = bare.apply(command)
    assert out.command_kind is CommandKind.ADD_API_KEY
    assert out.api_key_updates == (
        ApiKeyUpdated(
            api_key="k2",
            user_id=1,
            role=Role.OPERATOR,
            public_key="p2",
            revoked=False,
            updated_at=command.timestamp_ms,
        ),
    )
    assert out.user_creations == ()
    assert [k for k, _ in bare.engine.api_keys()] == ["k1", "k2"]


def test_add_api_key_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    out = assert_refused(kit, kit.add_key(NOBODY, "k-new", "p"), R.UNKNOWN_USER, NOBODY)
    assert out.rejections[0].kind is CommandKind.ADD_API_KEY
    assert kit.engine.api_key("k-new") is None


def test_add_api_key_when_user_is_the_fee_account_is_rejected_unknown_user(kit: Kit) -> None:
    fee = kit.engine.markets.fee_account
    assert_refused(kit, kit.add_key(fee, "k-fee", "p"), R.UNKNOWN_USER, fee)


def test_add_api_key_when_key_id_is_known_is_rejected_duplicate_api_key(kit: Kit) -> None:
    # Another user's key id, and the user's own: both DUPLICATE_API_KEY.
    assert_refused(kit, kit.add_key(1, key_id(2), "p"), R.DUPLICATE_API_KEY, 1)
    assert_refused(kit, kit.add_key(1, key_id(1), "p"), R.DUPLICATE_API_KEY, 1)


def test_add_api_key_when_user_unknown_and_key_known_is_rejected_unknown_user(kit: Kit) -> None:
    assert_refused(kit, kit.add_key(NOBODY, key_id(1), "p"), R.UNKNOWN_USER, NOBODY)


# ---------------------------------------------------------------- revoke key


def test_revoke_api_key_when_key_is_active_reports_it_revoked(kit: Kit) -> None:
    before = kit.engine.api_key(key_id(2))
    assert before is not None and not before.revoked
    command = kit.revoke_key(key_id(2))
    out = kit.apply(command)
    assert out.command_kind is CommandKind.REVOKE_API_KEY
    assert out.api_key_updates == (
        ApiKeyUpdated(
            api_key=key_id(2),
            user_id=2,
            role=Role.TRADER,
            public_key=before.public_key,
            revoked=True,
            updated_at=command.timestamp_ms,
        ),
    )
    assert kit.engine.api_key(key_id(2)) == (2, before.public_key, True)


def test_revoke_api_key_when_already_revoked_is_accepted_and_changes_nothing(kit: Kit) -> None:
    kit.apply(kit.revoke_key(key_id(2)))
    before = kit.engine.state_hash()
    out = kit.apply(kit.revoke_key(key_id(2)))
    assert no_events(out)
    assert kit.engine.state_hash() == before


def test_revoke_api_key_when_never_added_is_rejected_unknown_api_key(kit: Kit) -> None:
    out = assert_refused(kit, kit.revoke_key("k-never-added"), R.UNKNOWN_API_KEY, 0)
    assert out.rejections[0].kind is CommandKind.REVOKE_API_KEY


def test_revoke_api_key_when_user_has_two_keys_leaves_the_other_active(kit: Kit) -> None:
    kit.apply(kit.add_key(4, "k-second", "p"))
    kit.apply(kit.revoke_key(key_id(4)))
    assert kit.engine.api_key("k-second") == (4, "p", False)
    assert kit.engine.is_known_user(4)  # revoking keys does not remove the user


# ---------------------------------------------------------------- unknown users


def test_place_when_user_unknown_is_rejected_unknown_user_with_the_orders_rejected_report(
    kit: Kit,
) -> None:
    order = kit.limit(NOBODY, BUY, 100, 1)
    out = assert_refused(kit, order, R.UNKNOWN_USER, NOBODY)
    assert [(u.order_id, u.status, u.reject_reason) for u in out.order_updates] == [
        (order.order_id, OrderStatus.REJECTED, R.UNKNOWN_USER)
    ]
    assert [(c.order_id, c.reason) for c in out.order_completions] == [
        (order.order_id, CompletionReason.REJECTED)
    ]


def test_place_when_user_unknown_and_symbol_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    assert_refused(kit, kit.limit(NOBODY, BUY, 100, 1, symbol="DOGE_USDT"), R.UNKNOWN_USER, NOBODY)


def test_place_when_order_id_duplicate_and_user_unknown_is_rejected_duplicate_order_id(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    resting = kit.limit(1, BUY, 100, 1)
    kit.apply(resting)
    out = assert_refused(
        kit, kit.limit(NOBODY, BUY, 100, 1, order_id=resting.order_id), R.DUPLICATE_ORDER_ID, NOBODY
    )
    assert out.order_updates == ()  # the real order's history is not touched


def test_place_when_user_id_is_a_bool_is_rejected_unknown_user(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    assert_refused(kit, kit.limit(True, BUY, 100, 1), R.UNKNOWN_USER, True)  # type: ignore[arg-type]


def test_cancel_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 1)
    kit.apply(order)
    out = assert_refused(kit, kit.cancel(NOBODY, order.order_id), R.UNKNOWN_USER, NOBODY)
    assert out.rejections[0].order_id == order.order_id


def test_amend_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 5)
    kit.apply(order)
    assert_refused(kit, kit.amend(NOBODY, order.order_id, 2), R.UNKNOWN_USER, NOBODY)
    assert_refused(kit, kit.amend(2, order.order_id, 2), R.ORDER_NOT_FOUND, 2)
    assert_refused(kit, kit.amend(1, order.order_id, 2, symbol=ETH), R.ORDER_NOT_FOUND, 1)


def test_deposit_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    assert_refused(kit, kit.deposit(NOBODY, "USDT", 5), R.UNKNOWN_USER, NOBODY)
    assert kit.engine.balance(NOBODY, "USDT") == (0, 0)


def test_deposit_when_user_unknown_and_asset_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    assert_refused(kit, kit.deposit(NOBODY, "XYZ", 5), R.UNKNOWN_USER, NOBODY)


def test_withdraw_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    assert_refused(kit, kit.withdraw(NOBODY, "USDT", 5), R.UNKNOWN_USER, NOBODY)


def test_deposit_when_user_is_the_fee_account_is_accepted(kit: Kit) -> None:
    out = kit.apply(kit.deposit(0, "USDT", 5))
    assert out.rejections == ()
    assert out.balance_updates == (BalanceUpdated(user_id=0, asset="USDT", available=5, locked=0),)


def test_deposit_when_user_created_after_a_refusal_is_accepted(bare: Kit) -> None:
    assert_refused(bare, bare.deposit(1, "USDT", 5), R.UNKNOWN_USER, 1)
    bare.apply(bare.create_user("k1", "p1"))
    assert bare.apply(bare.deposit(1, "USDT", 5)).balance_updates[0].available == 5


# ---------------------------------------------------------------- cancel of others' orders


def test_cancel_when_order_is_another_users_is_rejected_order_not_found(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 1)
    kit.apply(order)
    assert_refused(kit, kit.cancel(2, order.order_id), R.ORDER_NOT_FOUND, 2)
    assert kit.engine.open_order(order.order_id) is not None


def test_cancel_when_order_is_in_another_market_is_rejected_order_not_found(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 1)
    kit.apply(order)
    assert_refused(kit, kit.cancel(1, order.order_id, symbol=ETH), R.ORDER_NOT_FOUND, 1)


def test_cancel_when_completed_order_is_another_users_is_rejected_order_not_found(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 1)
    kit.apply(order)
    kit.apply(kit.cancel(1, order.order_id))
    assert_refused(kit, kit.cancel(2, order.order_id), R.ORDER_NOT_FOUND, 2)
    assert_refused(kit, kit.cancel(1, order.order_id), R.ORDER_ALREADY_COMPLETED, 1)


# ---------------------------------------------------------------- cancel all


def test_cancel_all_when_user_has_open_orders_cancels_each_in_order_id_order(kit: Kit) -> None:
    kit.fund(1, USDT=100_000, BTC=10_000)
    kit.fund(2, USDT=100_000)
    first = kit.limit(1, BUY, 100, 2)
    second = kit.limit(1, SELL, 120, 3, client_order_id="s")
    third = kit.limit(1, BUY, 99, 1)
    others = kit.limit(2, BUY, 100, 1)
    for command in (third, others):  # a later id rests first: order ids decide, not arrival
        kit.apply(command)
    kit.apply(first)
    kit.apply(second)
    cancel_all = kit.cancel_all(1)
    out = kit.apply(cancel_all)
    ts = cancel_all.timestamp_ms
    assert out.command_kind is CommandKind.CANCEL_ALL_ORDERS and out.rejections == ()
    assert [
        (u.order_id, u.status, u.remaining_quantity, u.updated_at) for u in out.order_updates
    ] == [
        (first.order_id, OrderStatus.CANCELLED, 0, ts),
        (second.order_id, OrderStatus.CANCELLED, 0, ts),
        (third.order_id, OrderStatus.CANCELLED, 0, ts),
    ]
    assert out.order_completions == tuple(
        OrderCompleted(
            order_id=o.order_id,
            user_id=1,
            symbol=BTC,
            reason=CompletionReason.CANCELLED,
            completed_at=ts,
        )
        for o in (first, second, third)
    )
    # One update per changed balance, with its final value, in first-touched order.
    assert out.balance_updates == (
        BalanceUpdated(user_id=1, asset="USDT", available=100_000, locked=0),
        BalanceUpdated(user_id=1, asset="BTC", available=10_000, locked=0),
    )
    assert [o.order_id for o in kit.engine.open_orders()] == [others.order_id]
    assert kit.engine.balance(2, "USDT") == (99_000, 1_000)


def test_cancel_all_when_orders_in_another_market_leaves_them_open(kit: Kit) -> None:
    kit.fund(1, USDT=10_000_000)
    btc = kit.limit(1, BUY, 100, 1)
    eth = kit.limit(1, BUY, 100, 1, symbol=ETH)
    kit.apply(btc)
    kit.apply(eth)
    out = kit.apply(kit.cancel_all(1, symbol=ETH))
    assert [u.order_id for u in out.order_updates] == [eth.order_id]
    assert [o.order_id for o in kit.engine.open_orders()] == [btc.order_id]


def test_cancel_all_when_order_partially_filled_releases_only_the_remainder(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    kit.fund(2, BTC=10_000)
    bid = kit.limit(1, BUY, 100, 5)
    kit.apply(bid)
    kit.apply(kit.limit(2, SELL, 100, 2))
    out = kit.apply(kit.cancel_all(1))
    assert [
        (u.order_id, u.status, u.filled_quantity, u.remaining_quantity) for u in out.order_updates
    ] == [(bid.order_id, OrderStatus.CANCELLED, 2, 0)]
    assert out.balance_updates == (
        BalanceUpdated(user_id=1, asset="USDT", available=8_000, locked=0),
    )


def test_cancel_all_when_nothing_is_open_outputs_no_events(kit: Kit) -> None:
    kit.fund(2, USDT=10_000)
    kit.apply(kit.limit(2, BUY, 100, 1))  # someone else's order stays
    before = kit.engine.state_hash()
    out = kit.apply(kit.cancel_all(1))
    assert no_events(out)
    assert out.command_kind is CommandKind.CANCEL_ALL_ORDERS
    assert kit.engine.state_hash() == before


def test_cancel_all_when_user_unknown_is_rejected_unknown_user(kit: Kit) -> None:
    out = assert_refused(kit, kit.cancel_all(NOBODY), R.UNKNOWN_USER, NOBODY)
    assert out.rejections[0] == CommandRejected(
        command_id=out.command_id,
        kind=CommandKind.CANCEL_ALL_ORDERS,
        user_id=NOBODY,
        reason=R.UNKNOWN_USER,
        order_id=None,
        client_order_id=None,
        message=f"unknown user {NOBODY}",
    )


def test_cancel_all_when_symbol_unknown_is_rejected_unknown_symbol(kit: Kit) -> None:
    assert_refused(kit, kit.cancel_all(1, symbol="DOGE_USDT"), R.UNKNOWN_SYMBOL, 1)


def test_cancel_all_when_done_the_orders_are_remembered_as_completed(kit: Kit) -> None:
    kit.fund(1, USDT=10_000)
    order = kit.limit(1, BUY, 100, 1, client_order_id="c")
    kit.apply(order)
    kit.apply(kit.cancel_all(1))
    assert kit.engine.is_completed(order.order_id)
    assert_refused(kit, kit.cancel(1, order.order_id), R.ORDER_ALREADY_COMPLETED, 1)
    # The client order id is free again.
    assert kit.apply(kit.limit(1, BUY, 100, 1, client_order_id="c")).rejections == ()


# ---------------------------------------------------------------- state


def test_snapshot_when_users_and_keys_exist_restores_them_and_the_next_id(kit: Kit) -> None:
    kit.apply(kit.create_user("k-op", "p", role=Role.OPERATOR, label="desk"))
    kit.apply(kit.revoke_key(key_id(1)))
    restored = Engine.restore(kit.engine.snapshot(), kit.engine.markets)
    check_invariants(restored)
    assert restored.state_hash() == kit.engine.state_hash()
    assert restored.users() == kit.engine.users()
    assert restored.api_keys() == kit.engine.api_keys()
    assert restored.next_user_id == KIT_USERS + 2
    twin = Kit(restored, first_id=kit.next_id)  # creates no users: they exist
    assert twin.apply(twin.create_user("k-next", "p")).user_creations[0].user_id == KIT_USERS + 2
    assert [o.rejections for o in (twin.apply(twin.deposit(KIT_USERS + 1, "BTC", 1)),)] == [()]


def test_state_hash_when_user_created_or_key_changed_changes(kit: Kit) -> None:
    hashes = [kit.engine.state_hash()]
    for command in (
        kit.create_user("k-a", "p"),
        kit.add_key(1, "k-b", "p"),
        kit.revoke_key("k-b"),
    ):
        kit.apply(command)
        hashes.append(kit.engine.state_hash())
    assert len(set(hashes)) == len(hashes)


def test_check_invariants_when_a_balance_belongs_to_an_unknown_user_raises() -> None:
    kit = Kit(Engine(make_markets()), users=2)
    kit.fund(2, USDT=5)
    users = kit.engine._users  # forget user 2 entirely, as a bug might
    users.known.discard(2)
    del users._roles[2]
    del users._keys[key_id(2)]
    with pytest.raises(InvariantError, match="unknown"):
        check_invariants(kit.engine)


def test_check_invariants_when_a_key_belongs_to_no_created_user_raises() -> None:
    kit = Kit(Engine(make_markets()), users=1)
    kit.engine._users._keys["k-orphan"] = kit.engine._users._keys[key_id(1)]._replace(user_id=7)
    with pytest.raises(InvariantError, match="never created"):
        check_invariants(kit.engine)


def test_timestamps_when_users_are_created_by_the_kit_come_from_the_command(bare: Kit) -> None:
    out = bare.apply(bare.create_user("k", "p"))
    assert out.timestamp_ms == out.user_creations[0].created_at == T0 + out.command_id
