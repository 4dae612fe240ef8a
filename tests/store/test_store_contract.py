"""One contract for the settlement store port, run against every adapter.

SQLite always runs (a file under tmp_path). Cassandra is the e2e tier: `make test` deselects it,
`make e2e` runs it against the real node it exports as CASSANDRA_CONTACT_POINTS / CASSANDRA_PORT;
it uses a fresh keyspace per run, truncated between tests, and dropped at the end.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_testkit import (
    BASE,
    TERMINAL,
    Sim,
    batches,
    cassandra_keyspace,
    order_update,
    output,
    random_stream,
    sqlite_stores,
    trade,
)

from engine.enums import OrderStatus, RejectReason, Role, Side
from engine.events import BalanceUpdated, EngineOutput
from settlement.projection import BUCKET_BITS
from settlement.sqlite_store import SqliteStore
from settlement.store import FINAL_STATUSES, ApiKeyRow, InvalidQuery, SettlementStore, UserRow

MakeStore = Callable[[], SettlementStore]


def apply_in_batches(store: SettlementStore, outs: list[EngineOutput], size: int) -> None:
    for b in batches(outs, size):
        store.apply(b)


class StoreContract:
    """The port's contract. Subclasses provide the ``make_store`` fixture: a factory that
    returns an empty store with its schema applied (a previous one may be discarded)."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> SettlementStore:
        return make_store()

    # ---- order lifecycle ----------------------------------------------------------

    def test_active_orders_when_order_placed_lists_it(self, store: SettlementStore) -> None:
        sim = Sim()
        oid = sim.place(1, "BTC-USDT", Side.BUY, 100, 10, client_order_id="c-1")
        store.apply(sim.outputs)

        (row,) = store.active_orders(1)
        assert row.order_id == oid
        assert row.client_order_id == "c-1"
        assert (row.side, row.price, row.quantity) == (Side.BUY, 100, 10)
        assert (row.filled_quantity, row.remaining_quantity) == (0, 10)
        assert row.status is OrderStatus.NEW
        assert row.version == 1
        assert store.get_order(oid) == row
        assert store.active_orders(2) == []

    def test_apply_when_partial_fill_updates_quantities_and_average(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, maker, 4)
        store.apply(sim.outputs)

        (row,) = store.active_orders(1)
        assert row.status is OrderStatus.PARTIALLY_FILLED
        assert (row.filled_quantity, row.remaining_quantity) == (4, 6)
        assert (row.cumulative_quote, row.avg_fill_price) == (400, 100)
        assert row.version == 2
        assert row.created_at < row.updated_at

    def test_active_orders_when_order_filled_drops_it_and_history_keeps_final_status(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, maker, 4)
        sim.take(2, maker, 6)
        store.apply(sim.outputs)

        assert store.active_orders(1) == []
        rows, cursor = store.order_history(1)
        assert cursor is None
        assert [(r.order_id, r.status, r.filled_quantity) for r in rows] == [
            (maker, OrderStatus.FILLED, 10)
        ]
        got = store.get_order(maker)
        assert got is not None and got.remaining_quantity == 0 and got.version == 3

    def test_active_orders_when_order_cancelled_drops_it(self, store: SettlementStore) -> None:
        sim = Sim()
        keep = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        gone = sim.place(1, "ETH-USDT", Side.SELL, 50, 5)
        sim.cancel(gone)
        store.apply(sim.outputs)

        assert [r.order_id for r in store.active_orders(1)] == [keep]
        got = store.get_order(gone)
        assert got is not None and got.status is OrderStatus.CANCELLED

    def test_active_orders_when_several_open_lists_newest_first_and_filters_symbol(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        ids = [sim.place(1, s, Side.BUY, 100, 1) for s in ("BTC-USDT", "ETH-USDT", "BTC-USDT")]
        store.apply(sim.outputs)

        assert [r.order_id for r in store.active_orders(1)] == sorted(ids, reverse=True)
        assert [r.order_id for r in store.active_orders(1, "BTC-USDT")] == [ids[2], ids[0]]
        assert [r.order_id for r in store.active_orders(1, "ETH-USDT")] == [ids[1]]
        assert store.active_orders(1, "DOGE-USDT") == []

    def test_apply_when_order_rejected_shows_in_history_never_in_active(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        oid = sim.reject(1, "BTC-USDT", Side.BUY, 100, 10**9)
        store.apply(sim.outputs)

        assert store.active_orders(1) == []
        rows, _ = store.order_history(1)
        assert [(r.order_id, r.status, r.reject_reason) for r in rows] == [
            (oid, OrderStatus.REJECTED, RejectReason.INSUFFICIENT_FUNDS)
        ]
        assert store.order_statistics(1)[OrderStatus.REJECTED] == 1

    def test_apply_when_market_order_has_no_price_stores_null(self, store: SettlementStore) -> None:
        store.apply([output(1, updates=(order_update(7, 1, OrderStatus.EXPIRED, price=None),))])

        got = store.get_order(7)
        assert got is not None
        assert got.price is None and got.client_order_id is None and got.reject_reason is None

    def test_order_trail_when_order_updated_returns_every_update_oldest_first(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, maker, 4)
        sim.cancel(maker)
        store.apply(list(reversed(sim.outputs)))

        trail = store.order_trail(maker)
        assert [(u.version, u.status) for u in trail] == [
            (1, OrderStatus.NEW),
            (2, OrderStatus.PARTIALLY_FILLED),
            (3, OrderStatus.CANCELLED),
        ]
        assert trail[1].last_fill_quantity == 4 and trail[1].last_fill_price == 100
        assert trail[2].command_id == sim.outputs[2].command_id
        assert store.order_trail(999_999) == []

    def test_get_order_when_unknown_returns_none(self, store: SettlementStore) -> None:
        assert store.get_order(424242) is None

    # ---- idempotence and ordering ------------------------------------------------

    def test_apply_when_batch_reapplied_leaves_digest_unchanged(
        self, store: SettlementStore
    ) -> None:
        outs = random_stream(seed=1, steps=120)
        apply_in_batches(store, outs, 25)
        before = store.digest()

        apply_in_batches(store, outs, 25)
        store.apply(outs[10:40])
        store.apply([outs[5], outs[5]])

        assert store.digest() == before

    def test_apply_when_outputs_shuffled_or_reversed_gives_in_order_digest(
        self, make_store: MakeStore
    ) -> None:
        outs = random_stream(seed=2, steps=120)
        in_order = make_store()
        apply_in_batches(in_order, outs, 20)
        expected = in_order.digest()

        reversed_batches = make_store()
        for b in reversed(batches(outs, 20)):
            reversed_batches.apply(b)
        assert reversed_batches.digest() == expected

        for seed in (3, 4):
            shuffled = list(outs)
            random.Random(seed).shuffle(shuffled)
            store = make_store()
            apply_in_batches(store, shuffled, 7)
            assert store.digest() == expected

    def test_apply_when_partitions_interleave_with_redelivery_gives_in_order_digest(
        self, make_store: MakeStore
    ) -> None:
        # Three "Kafka partitions" by sequence % 3, consumed at different speeds, with a
        # redelivered (uncommitted) batch replayed after a later one was written.
        outs = random_stream(seed=5, steps=100)
        in_order = make_store()
        in_order.apply(outs)
        expected = in_order.digest()

        parts = [[o for o in outs if o.sequence % 3 == p] for p in range(3)]
        store = make_store()
        store.apply(parts[2][:10])
        store.apply(parts[0])
        store.apply(parts[2][:10])  # redelivery
        store.apply(parts[1][20:])
        store.apply(parts[2][10:])
        store.apply(parts[1][:20])
        store.apply(parts[0][:5])  # redelivery
        assert store.digest() == expected

    def test_apply_when_old_new_update_arrives_late_does_not_resurrect_filled_order(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, maker, 10)
        placed, filled = sim.outputs
        store.apply([filled])
        digest_after_fill = store.digest()

        store.apply([placed])  # the NEW arrives late (another partition, or redelivered)
        store.apply([placed])

        assert store.active_orders(1) == []
        got = store.get_order(maker)
        assert got is not None and got.status is OrderStatus.FILLED and got.version == 2
        assert [u.status for u in store.order_trail(maker)] == [
            OrderStatus.NEW,
            OrderStatus.FILLED,
        ]
        assert store.digest() != digest_after_fill  # the trail gained the NEW entry ...
        complete = store.digest()
        store.apply(sim.outputs)  # ... and applying everything again changes nothing more
        assert store.digest() == complete

    def test_apply_when_older_partial_fill_arrives_late_keeps_newer_state(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, maker, 3)
        sim.take(2, maker, 3)
        store.apply([sim.outputs[0], sim.outputs[2]])
        store.apply([sim.outputs[1]])

        (row,) = store.active_orders(1)
        assert (row.filled_quantity, row.version) == (6, 3)

    def test_apply_when_output_lists_same_order_twice_keeps_later_item(
        self, store: SettlementStore
    ) -> None:
        first = order_update(5, 1, OrderStatus.PARTIALLY_FILLED, filled=2)
        second = order_update(5, 1, OrderStatus.FILLED, filled=10)
        store.apply([output(9, updates=(first, second))])

        got = store.get_order(5)
        assert got is not None and got.status is OrderStatus.FILLED
        assert store.active_orders(1) == []

    def test_apply_when_empty_batch_or_no_read_model_events_changes_only_progress(
        self, store: SettlementStore
    ) -> None:
        store.apply([])
        assert store.max_sequence() == 0
        empty = store.digest()

        sim = Sim()
        sim.reject_cancel(1, 77)
        store.apply(sim.outputs)

        assert store.max_sequence() == 1
        assert store.digest() != empty
        assert store.order_history(1) == ([], None)

    def test_max_sequence_when_batches_out_of_order_returns_highest(
        self, store: SettlementStore
    ) -> None:
        outs = random_stream(seed=6, steps=30)
        store.apply(outs[20:])
        store.apply(outs[:20])
        assert store.max_sequence() == outs[-1].sequence

    def test_digest_when_state_differs_changes(self, store: SettlementStore) -> None:
        empty = store.digest()
        store.apply([output(1, updates=(order_update(5, 1),))])
        one = store.digest()
        store.apply([output(2, updates=(order_update(5, 1, OrderStatus.CANCELLED),))])
        assert len({empty, one, store.digest()}) == 3

    def test_init_schema_when_run_again_keeps_data(self, store: SettlementStore) -> None:
        store.apply(random_stream(seed=7, steps=20))
        before = store.digest()
        store.init_schema()
        assert store.digest() == before
        store.ping()

    # ---- pagination ----------------------------------------------------------------

    def test_order_history_when_paginated_returns_every_order_once_newest_first(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        ids = [sim.place(1, "BTC-USDT", Side.BUY, 100, 1) for _ in range(25)]
        sim.place(2, "BTC-USDT", Side.BUY, 100, 1)
        store.apply(sim.outputs)

        seen: list[int] = []
        cursor: int | None = None
        pages = 0
        while True:
            rows, cursor = store.order_history(1, limit=10, before=cursor)
            pages += 1
            seen += [r.order_id for r in rows]
            assert all(r.user_id == 1 for r in rows)
            if cursor is None:
                break
            assert cursor == rows[-1].order_id
        assert pages == 3
        assert seen == sorted(ids, reverse=True)

    def test_order_history_when_last_page_is_exactly_full_returns_no_cursor(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        for _ in range(4):
            sim.place(1, "BTC-USDT", Side.BUY, 100, 1)
        store.apply(sim.outputs)

        rows, cursor = store.order_history(1, limit=2)
        assert len(rows) == 2 and cursor is not None
        rows, cursor = store.order_history(1, limit=2, before=cursor)
        assert len(rows) == 2 and cursor is None
        assert store.order_history(1, limit=4) == (store.order_history(1)[0], None)

    def test_order_history_when_symbol_given_filters_and_paginates(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        btc = []
        for i in range(12):
            symbol = "BTC-USDT" if i % 3 else "ETH-USDT"
            oid = sim.place(1, symbol, Side.SELL, 100, 1)
            if symbol == "BTC-USDT":
                btc.append(oid)
        store.apply(sim.outputs)

        first, cursor = store.order_history(1, symbol="BTC-USDT", limit=5)
        assert cursor is not None
        second, cursor2 = store.order_history(1, symbol="BTC-USDT", limit=5, before=cursor)
        assert cursor2 is None
        assert [r.order_id for r in first + second] == sorted(btc, reverse=True)
        assert {r.symbol for r in first + second} == {"BTC-USDT"}

    def test_order_history_when_orders_span_buckets_pages_across_them(
        self, store: SettlementStore
    ) -> None:
        b = 1 << BUCKET_BITS
        ids = [3, b - 1, b, b + 1, 3 * b + 7, 3 * b + 8]  # buckets 0, 0, 1, 1, 3, 3
        outs = [
            output(i + 1, updates=(order_update(oid, 1, symbol=("BTC-USDT", "ETH-USDT")[i % 2]),))
            for i, oid in enumerate(ids)
        ]
        store.apply(outs)

        seen: list[int] = []
        cursor: int | None = None
        while True:
            rows, cursor = store.order_history(1, limit=4, before=cursor)
            seen += [r.order_id for r in rows]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)
        # ETH-USDT orders are b - 1, b + 1 and 3b + 8 (buckets 0, 1, 3; bucket 2 is empty).
        rows, cursor = store.order_history(1, symbol="ETH-USDT", limit=2)
        assert [r.order_id for r in rows] == [3 * b + 8, b + 1]
        assert cursor == b + 1
        rows, cursor = store.order_history(1, symbol="ETH-USDT", limit=2, before=cursor)
        assert [r.order_id for r in rows] == [b - 1] and cursor is None
        rows, cursor = store.order_history(1, limit=2, before=b + 1)
        assert [r.order_id for r in rows] == [b, b - 1] and cursor == b - 1
        assert store.order_statistics(1) == dict.fromkeys(FINAL_STATUSES, 0)

    def test_order_history_when_limit_out_of_range_raises_invalid_query(
        self, store: SettlementStore
    ) -> None:
        with pytest.raises(InvalidQuery):
            store.order_history(1, limit=0)
        with pytest.raises(InvalidQuery):
            store.trades(1, limit=100_000)

    # ---- trades, balances, statistics ---------------------------------------------

    def test_trades_when_trade_executed_gives_maker_and_taker_rows(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        taker = sim.take(2, maker, 4)
        store.apply(sim.outputs)

        (m,) = store.trades(1)
        (t,) = store.trades(2)
        assert (m.trade_id, m.is_maker, m.order_id, m.side) == (1, True, maker, Side.BUY)
        assert (t.trade_id, t.is_maker, t.order_id, t.side) == (1, False, taker, Side.SELL)
        for row in (m, t):
            assert (row.price, row.quantity, row.quote_quantity) == (100, 4, 400)
            assert row.symbol == "BTC-USDT" and row.version == 2
        assert (m.fee, m.fee_asset) == (1, "BTC")  # the maker receives BTC
        assert (t.fee, t.fee_asset) == (2, "USDT")  # the taker receives USDT
        assert m.executed_at == t.executed_at == sim.outputs[1].timestamp_ms

    def test_trades_when_symbol_and_limit_given_filters_newest_first(
        self, store: SettlementStore
    ) -> None:
        b = 1 << BUCKET_BITS
        trade_ids = [1, 2, b - 1, b + 5, 2 * b + 1]
        outs = [
            output(
                i + 1,
                trades=(trade(tid, symbol=("BTC-USDT", "ETH-USDT")[i % 2]),),
            )
            for i, tid in enumerate(trade_ids)
        ]
        store.apply(list(reversed(outs)))

        assert [t.trade_id for t in store.trades(1)] == sorted(trade_ids, reverse=True)
        assert [t.trade_id for t in store.trades(2, limit=2)] == [2 * b + 1, b + 5]
        assert [t.trade_id for t in store.trades(1, symbol="ETH-USDT")] == [b + 5, 2]
        assert [t.trade_id for t in store.trades(1, symbol="BTC-USDT", limit=2)] == [
            2 * b + 1,
            b - 1,
        ]

    def test_balances_when_updated_returns_latest_sorted_by_asset(
        self, store: SettlementStore
    ) -> None:
        def bal(seq: int, asset: str, avail: int, locked: int) -> EngineOutput:
            return output(
                seq,
                balances=(BalanceUpdated(user_id=1, asset=asset, available=avail, locked=locked),),
            )

        store.apply([bal(3, "USDT", 70, 30), bal(1, "USDT", 100, 0), bal(2, "BTC", 5, 0)])
        store.apply([bal(1, "USDT", 100, 0)])

        rows = store.balances(1)
        assert [(b.asset, b.available, b.locked, b.version) for b in rows] == [
            ("BTC", 5, 0, 2),
            ("USDT", 70, 30, 3),
        ]
        assert store.balances(2) == []

    def test_order_statistics_when_replayed_counts_each_order_once(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        a = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.take(2, a, 10)
        b = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
        sim.cancel(b)
        sim.place(1, "ETH-USDT", Side.BUY, 100, 10)  # still open: not counted
        sim.reject(1, "BTC-USDT", Side.BUY, 100, 10)
        store.apply(sim.outputs)
        expected = {
            OrderStatus.FILLED: 1,
            OrderStatus.CANCELLED: 1,
            OrderStatus.EXPIRED: 0,
            OrderStatus.REJECTED: 1,
        }
        assert store.order_statistics(1) == expected

        store.apply(sim.outputs)
        store.apply(list(reversed(sim.outputs)))
        assert store.order_statistics(1) == expected
        assert store.order_statistics(2)[OrderStatus.FILLED] == 1

    # ---- users and keys -------------------------------------------------------------

    def test_get_user_when_user_created_returns_its_row(self, store: SettlementStore) -> None:
        sim = Sim()
        sim.create_user("k-a", label="alice")
        sim.create_user("k-op", role=Role.OPERATOR)
        store.apply(sim.outputs)

        assert store.get_user(1) == UserRow(1, Role.TRADER, "alice", sim.outputs[0].timestamp_ms, 1)
        got = store.get_user(2)
        assert got is not None and got.role is Role.OPERATOR and got.label is None
        assert got.version == 2
        assert store.get_user(3) is None

    def test_api_keys_when_added_and_revoked_lists_each_keys_latest_state(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        sim.create_user("k-b")
        sim.create_user("k-a", role=Role.OPERATOR)
        sim.add_key(1, "k-c")
        sim.revoke_key("k-b")
        store.apply(sim.outputs)

        assert store.api_keys() == [
            ApiKeyRow("k-a", 2, Role.OPERATOR, "pub-k-a", False, 2),
            ApiKeyRow("k-b", 1, Role.TRADER, "pub-k-b", True, 4),
            ApiKeyRow("k-c", 1, Role.TRADER, "pub-k-c", False, 3),
        ]
        (revoked,) = [k for k in store.api_keys() if k.revoked]
        assert type(revoked.revoked) is bool and revoked.role is Role.TRADER

    def test_api_keys_when_revocation_applied_before_the_add_stays_revoked(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        sim.create_user("k-a")
        sim.revoke_key("k-a")
        store.apply(sim.outputs[1:])  # the revoke lands first (another partition) ...
        store.apply(sim.outputs[:1])  # ... then the older creation: it must not un-revoke
        store.apply(sim.outputs)  # and a redelivery changes nothing

        assert store.api_keys() == [ApiKeyRow("k-a", 1, Role.TRADER, "pub-k-a", True, 2)]
        assert store.get_user(1) is not None

    def test_api_keys_since_when_sequence_given_returns_keys_changed_after_it(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        sim.create_user("k-a")  # 1
        sim.create_user("k-b")  # 2
        sim.add_key(1, "k-c")  # 3
        sim.revoke_key("k-a")  # 4
        store.apply(sim.outputs)

        assert [(k.api_key, k.sequence) for k in store.api_keys_since(2)] == [
            ("k-a", 4),
            ("k-c", 3),
        ]
        assert store.api_keys_since(4) == []
        assert store.api_keys_since(0) == store.api_keys()

    def test_digest_when_key_revoked_changes_and_replay_does_not(
        self, store: SettlementStore
    ) -> None:
        sim = Sim()
        sim.create_user("k-a")
        store.apply(sim.outputs)
        before = store.digest()
        sim.revoke_key("k-a")
        store.apply(sim.outputs)
        after = store.digest()
        store.apply(list(reversed(sim.outputs)))
        assert before != after == store.digest()

    def test_queries_when_random_stream_applied_match_naive_model(
        self, store: SettlementStore
    ) -> None:
        # The naive model: the last update of every order and balance in sequence order.
        outs = random_stream(seed=8, steps=150, users=3)
        shuffled = list(outs)
        random.Random(9).shuffle(shuffled)
        apply_in_batches(store, shuffled, 13)

        latest = {}
        for o in outs:
            for u in o.order_updates:
                latest[u.order_id] = u
        balances: dict[tuple[int, str], BalanceUpdated] = {}
        for o in outs:
            for bu in o.balance_updates:
                balances[(bu.user_id, bu.asset)] = bu
        for user in (1, 2, 3):
            mine = [u for u in latest.values() if u.user_id == user]
            open_ids = sorted((u.order_id for u in mine if u.status not in TERMINAL), reverse=True)
            assert [r.order_id for r in store.active_orders(user)] == open_ids
            history, cursor = store.order_history(user, limit=1000)
            assert cursor is None
            assert [(r.order_id, r.status, r.filled_quantity) for r in history] == [
                (u.order_id, u.status, u.filled_quantity)
                for u in sorted(mine, key=lambda u: -u.order_id)
            ]
            counts = Counter(u.status for u in mine if u.status in TERMINAL)
            assert store.order_statistics(user) == {s: counts[s] for s in FINAL_STATUSES}
            assert [(b.asset, b.available, b.locked) for b in store.balances(user)] == sorted(
                (a, bu.available, bu.locked) for (u, a), bu in balances.items() if u == user
            )
            n_trades = sum(
                (t.maker_user_id == user) + (t.taker_user_id == user)
                for o in outs
                for t in o.trades
            )
            assert len(store.trades(user, limit=1000)) == n_trades
        assert set(BASE) >= {r.symbol for r in store.active_orders(1)}
        keys = {k.api_key: k for o in outs for k in o.api_key_updates}  # the last state wins
        assert [(k.api_key, k.user_id, k.revoked) for k in store.api_keys()] == [
            (k.api_key, k.user_id, k.revoked)
            for k in sorted(keys.values(), key=lambda k: k.api_key)
        ]
        assert {store.get_user(u).role for u in (1, 2, 3)} == {Role.TRADER, Role.OPERATOR}  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        with sqlite_stores(tmp_path) as make:
            yield make


@pytest.fixture(scope="module")
def cassandra_store() -> Iterator[SettlementStore]:
    """One fresh keyspace per test run; dropped at the end."""
    with cassandra_keyspace("exchange_test") as store:
        yield store


@pytest.mark.cassandra
@pytest.mark.e2e
class TestCassandraStore(StoreContract):
    @pytest.fixture
    def make_store(self, cassandra_store: SettlementStore) -> MakeStore:
        from settlement.cassandra_store import CassandraStore

        assert isinstance(cassandra_store, CassandraStore)

        def make() -> SettlementStore:
            cassandra_store.truncate_all()  # one keyspace per run: a new store = emptied tables
            return cassandra_store

        return make

    def test_digest_when_same_stream_equals_sqlite_digest(
        self, make_store: MakeStore, tmp_path: Path
    ) -> None:
        outs = random_stream(seed=10, steps=80)
        lite = SqliteStore(tmp_path / "ref.db")
        lite.init_schema()
        lite.apply(outs)
        store = make_store()
        apply_in_batches(store, outs, 9)
        assert store.digest() == lite.digest()
        lite.close()
