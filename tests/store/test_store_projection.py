"""Pure unit tests of the projection (EngineOutput -> write set) and of the digest helper."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from store_testkit import Sim, order_update, output, random_stream, trade

from engine.enums import OrderStatus, Role, Side
from engine.events import BalanceUpdated
from settlement.projection import (
    MS_PER_DAY,
    STREAM_BUCKETS,
    WriteSet,
    count_events,
    order_bucket,
    project,
    stream_partition,
    trade_bucket,
)
from settlement.store import (
    DIGEST_SECTIONS,
    ApiKeyRow,
    OrderRow,
    StoreError,
    UserRow,
    canonical_digest,
)


def as_sets(ws: WriteSet) -> tuple[frozenset[object], ...]:
    return (
        frozenset(ws.orders),
        frozenset(ws.order_updates),
        frozenset(ws.trades),
        frozenset(ws.balances),
        frozenset(ws.users),
        frozenset(ws.api_keys),
        frozenset({ws.max_sequence}),
    )


def test_project_when_trade_executed_gives_maker_and_taker_rows_with_opposite_sides() -> None:
    ws = project([output(4, trades=(trade(9, taker_side=Side.BUY),))])

    maker, taker = sorted(ws.trades, key=lambda t: not t.is_maker)
    assert (maker.user_id, maker.order_id, maker.side, maker.fee, maker.fee_asset) == (
        1,
        10,
        Side.SELL,
        1,
        "BTC",
    )
    assert (taker.user_id, taker.order_id, taker.side, taker.fee, taker.fee_asset) == (
        2,
        11,
        Side.BUY,
        2,
        "USDT",
    )
    assert maker.version == taker.version == 4
    assert maker.quote_quantity == taker.quote_quantity == 300


def test_project_when_order_updated_in_several_outputs_keeps_highest_sequence() -> None:
    outs = [
        output(7, updates=(order_update(5, 1, OrderStatus.FILLED, filled=10),)),
        output(3, updates=(order_update(5, 1),)),
        output(5, updates=(order_update(5, 1, OrderStatus.PARTIALLY_FILLED, filled=4),)),
    ]
    ws = project(outs)

    (row,) = ws.orders
    assert (row.status, row.version, row.filled_quantity) == (OrderStatus.FILLED, 7, 10)
    assert [u.version for u in ws.order_updates] == [7, 3, 5]  # the trail keeps every update
    assert ws.max_sequence == 7


def test_project_when_output_lists_same_order_twice_keeps_later_item() -> None:
    first = order_update(5, 1, OrderStatus.PARTIALLY_FILLED, filled=2)
    second = order_update(5, 1, OrderStatus.PARTIALLY_FILLED, filled=6)
    ws = project([output(2, updates=(first, second))])

    (row,) = ws.orders
    (upd,) = ws.order_updates
    assert row.filled_quantity == upd.filled_quantity == 6


def test_project_when_balance_updated_twice_in_output_keeps_last() -> None:
    b1 = BalanceUpdated(user_id=1, asset="USDT", available=10, locked=5)
    b2 = BalanceUpdated(user_id=1, asset="USDT", available=7, locked=8)
    older = BalanceUpdated(user_id=1, asset="USDT", available=0, locked=0)
    ws = project([output(3, balances=(b1, b2)), output(2, balances=(older,))])

    (row,) = ws.balances
    assert (row.available, row.locked, row.version) == (7, 8, 3)


def test_project_when_outputs_duplicated_or_reordered_gives_same_rows() -> None:
    outs = random_stream(seed=11, steps=80)
    expected = as_sets(project(outs))
    shuffled = outs + outs[:30]
    random.Random(1).shuffle(shuffled)
    assert as_sets(project(shuffled)) == expected


def test_project_when_applied_per_batch_equals_whole_stream_under_max_version() -> None:
    # Coalescing per batch, then keeping the max version per key, equals one big batch:
    # what a versioned store does across apply() calls.
    outs = random_stream(seed=12, steps=80)
    whole = project(outs)
    merged: dict[int, OrderRow] = {}
    for i in range(0, len(outs), 9):
        for row in project(outs[i : i + 9]).orders:
            if row.order_id not in merged or row.version > merged[row.order_id].version:
                merged[row.order_id] = row
    assert set(merged.values()) == set(whole.orders)


def test_project_when_only_placement_and_completion_writes_no_order_row() -> None:
    # OrderPlaced / OrderCompleted repeat what the output's OrderUpdated says; a reader that
    # gets an output without the update has nothing to version the row by.
    sim = Sim()
    sim.place(1, "BTC-USDT", Side.BUY, 100, 1)
    placed = sim.outputs[0]
    ws = project([replace(placed, order_updates=())])
    assert ws.orders == [] and ws.order_updates == []
    assert len(ws.balances) == 1 and ws.max_sequence == 1


def test_project_when_command_rejected_without_order_projects_only_sequence() -> None:
    sim = Sim()
    sim.reject_cancel(1, 5)
    ws = project(sim.outputs)
    assert (ws.orders, ws.order_updates, ws.trades, ws.balances) == ([], [], [], [])
    assert ws.max_sequence == 1


def test_project_when_order_rejected_gives_closed_row_with_reason() -> None:
    sim = Sim()
    oid = sim.reject(1, "BTC-USDT", Side.BUY, 100, 5)
    (row,) = project(sim.outputs).orders
    assert row.order_id == oid and row.status is OrderStatus.REJECTED
    assert not row.is_open and row.reject_reason is not None


def test_count_events_when_fill_counts_every_list_item() -> None:
    sim = Sim()
    maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
    sim.take(2, maker, 10)
    # placement: placed + updated + balance; fill: trade + placed + 2 updates
    # + 2 completions + 4 balances
    assert [count_events(o) for o in sim.outputs] == [3, 10]


def test_count_events_when_user_created_counts_the_user_and_its_key() -> None:
    sim = Sim()
    sim.create_user("k-a")
    sim.revoke_key("k-a")
    assert [count_events(o) for o in sim.outputs] == [2, 1]


def test_project_when_key_added_then_revoked_keeps_the_revoked_state_in_any_order() -> None:
    sim = Sim()
    sim.create_user("k-a", role=Role.OPERATOR, label="desk")
    sim.add_key(1, "k-b")
    sim.revoke_key("k-a")
    for outs in (sim.outputs, list(reversed(sim.outputs)), sim.outputs + sim.outputs[:1]):
        ws = project(outs)
        assert ws.users == [UserRow(1, Role.OPERATOR, "desk", sim.outputs[0].timestamp_ms, 1)]
        assert sorted(ws.api_keys) == [
            ApiKeyRow("k-a", 1, Role.OPERATOR, "pub-k-a", True, 3),
            ApiKeyRow("k-b", 1, Role.OPERATOR, "pub-k-b", False, 2),
        ]


def test_buckets_when_ids_cross_boundary_change_bucket() -> None:
    assert order_bucket(0) == order_bucket((1 << 18) - 1) == 0
    assert order_bucket(1 << 18) == trade_bucket(1 << 18) == 1


def test_stream_partition_when_same_day_spreads_by_order_id() -> None:
    rows = project(
        [
            output(1, updates=(order_update(16, 1, updated_at=MS_PER_DAY * 3),)),
            output(2, updates=(order_update(17, 1, updated_at=MS_PER_DAY * 4 - 1),)),
        ]
    ).order_updates
    assert [stream_partition(u) for u in rows] == [(3, 16 % STREAM_BUCKETS), (3, 1)]


def test_canonical_digest_when_enum_or_plain_string_hashes_the_same() -> None:
    def sections(value: object) -> list[tuple[str, list[tuple[object, ...]]]]:
        return [(name, [(1, value, None, True)]) for name in DIGEST_SECTIONS]

    assert canonical_digest(sections(Side.BUY)) == canonical_digest(sections("BUY"))
    assert canonical_digest(sections(Side.BUY)) != canonical_digest(sections("SELL"))


def test_canonical_digest_when_sections_out_of_order_raises() -> None:
    names = list(reversed(DIGEST_SECTIONS))
    with pytest.raises(StoreError):
        canonical_digest((n, []) for n in names)
