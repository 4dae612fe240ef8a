"""The market-data part of the store contract (issue 15), run against every adapter.

book_levels from depth updates, public trades by symbol, klines built from trades, the 24 h
ticker inputs, and an amended order's new quantity. SQLite always runs; Cassandra is the e2e
tier (`make e2e`), with a fresh keyspace per run, as in test_store_contract.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_store_testkit import SYMBOLS, T0, engine_flow, engine_levels, naive_klines
from store_testkit import batches, cassandra_keyspace, sqlite_stores

from engine import AmendOrder, OrderType, PlaceOrder
from engine.enums import CommandKind, Side
from engine.events import DepthUpdated, EngineOutput, LevelUpdated, TradeExecuted
from settlement.market_data import INTERVAL_MS, MarketDataStore
from settlement.sqlite_store import SqliteStore
from settlement.store import InvalidQuery

MakeStore = Callable[[], Any]  # a store that is both a SettlementStore and a MarketDataStore
BUY, SELL = Side.BUY, Side.SELL


def depth(
    seq: int, symbol: str, update_id: int, *levels: tuple[Side, int, int, int]
) -> EngineOutput:
    return EngineOutput(
        sequence=seq,
        command_id=1000 + seq,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=T0 + seq,
        depth_updates=(
            DepthUpdated(
                symbol=symbol,
                update_id=update_id,
                levels=tuple(
                    LevelUpdated(side=s, price=p, quantity=q, order_count=n)
                    for s, p, q, n in levels
                ),
            ),
        ),
    )


def trade_output(
    seq: int, trade_id: int, price: int, qty: int, at: int, symbol: str = "BTC_USDT"
) -> EngineOutput:
    return EngineOutput(
        sequence=seq,
        command_id=1000 + seq,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=at,
        trades=(
            TradeExecuted(
                trade_id=trade_id, symbol=symbol, price=price, quantity=qty,
                quote_quantity=price * qty * 10, maker_order_id=1, taker_order_id=2,
                maker_user_id=1, taker_user_id=2, taker_side=BUY if trade_id % 2 else SELL,
                maker_fee=0, maker_fee_asset="USDT", taker_fee=0, taker_fee_asset="BTC",
                executed_at=at,
            ),
        ),
    )  # fmt: skip


def levels_of(store: MarketDataStore, symbol: str) -> list[tuple[Side, int, int, int]]:
    return [(r.side, r.price, r.quantity, r.order_count) for r in store.book_levels(symbol)]


def klines_of(store: MarketDataStore, symbol: str, interval: str) -> list[tuple[int, ...]]:
    return [
        (k.open_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trade_count)
        for k in store.klines(symbol, interval, start=0, limit=1000)
    ]


class MarketContract:
    """Subclasses provide ``make_store``: a factory returning an empty store with its schema."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Any:
        return make_store()

    # ---- book levels ---------------------------------------------------------------

    def test_book_levels_when_depth_updates_applied_returns_live_levels_best_first(
        self, store: Any
    ) -> None:
        store.apply(
            [
                depth(1, "BTC_USDT", 1, (BUY, 100, 5, 1)),
                depth(2, "BTC_USDT", 2, (BUY, 101, 2, 1)),
                depth(3, "BTC_USDT", 3, (SELL, 105, 7, 2)),
                depth(4, "BTC_USDT", 4, (BUY, 99, 1, 1), (SELL, 103, 4, 1)),
                depth(5, "ETH_USDT", 1, (SELL, 50, 1, 1)),
            ]
        )
        assert levels_of(store, "BTC_USDT") == [
            (BUY, 101, 2, 1),
            (BUY, 100, 5, 1),
            (BUY, 99, 1, 1),
            (SELL, 103, 4, 1),
            (SELL, 105, 7, 2),
        ]
        (row,) = [r for r in store.book_levels("BTC_USDT") if r.price == 105]
        assert (row.update_id, row.version) == (3, 3)
        assert levels_of(store, "ETH_USDT") == [(SELL, 50, 1, 1)]
        assert store.book_levels("DOGE_USDT") == []

    def test_book_levels_when_level_emptied_drops_it_and_a_replayed_older_write_cannot_revive_it(
        self, store: Any
    ) -> None:
        outs = [
            depth(1, "BTC_USDT", 1, (BUY, 100, 5, 1)),
            depth(2, "BTC_USDT", 2, (BUY, 100, 8, 2)),
            depth(3, "BTC_USDT", 3, (BUY, 100, 0, 0)),
        ]
        store.apply(outs)
        assert levels_of(store, "BTC_USDT") == []
        store.apply(outs[:2])  # redelivered, out of order
        store.apply(list(reversed(outs)))
        assert levels_of(store, "BTC_USDT") == []
        store.apply([depth(4, "BTC_USDT", 4, (BUY, 100, 1, 1))])
        assert levels_of(store, "BTC_USDT") == [(BUY, 100, 1, 1)]

    def test_book_levels_when_batches_reordered_keeps_each_levels_latest_state(
        self, store: Any
    ) -> None:
        outs = [
            depth(1, "BTC_USDT", 1, (SELL, 100, 5, 1)),
            depth(2, "BTC_USDT", 2, (SELL, 100, 3, 1), (SELL, 101, 2, 1)),
            depth(3, "BTC_USDT", 3, (SELL, 101, 9, 2)),
        ]
        store.apply([outs[2]])
        store.apply([outs[0], outs[1]])
        assert levels_of(store, "BTC_USDT") == [(SELL, 100, 3, 1), (SELL, 101, 9, 2)]

    # ---- public trades -------------------------------------------------------------

    def test_recent_trades_when_applied_returns_the_symbols_trades_newest_first(
        self, store: Any
    ) -> None:
        outs = [trade_output(i, i, 100 + i, i, T0 + 1_000 * i) for i in range(1, 8)]
        outs.append(trade_output(8, 8, 50, 1, T0 + 8_000, symbol="ETH_USDT"))
        store.apply(list(reversed(outs)))
        store.apply(outs[:3])  # replayed: no duplicates
        got = store.recent_trades("BTC_USDT", 5)
        assert [t.trade_id for t in got] == [7, 6, 5, 4, 3]
        first = got[0]
        assert (first.price, first.quantity, first.quote_quantity) == (107, 7, 7_490)
        assert (first.taker_side, first.executed_at, first.version) == (BUY, T0 + 7_000, 7)
        assert [t.trade_id for t in store.recent_trades("ETH_USDT")] == [8]
        assert store.recent_trades("DOGE_USDT") == []
        with pytest.raises(InvalidQuery):
            store.recent_trades("BTC_USDT", 0)

    # ---- klines --------------------------------------------------------------------

    def test_klines_when_trades_span_minutes_aggregate_every_interval(self, store: Any) -> None:
        minute = 60_000
        day0 = T0 - T0 % 86_400_000
        at = [
            day0 + 5 * minute + 1,
            day0 + 5 * minute + 59_999,
            day0 + 7 * minute,
            day0 + 61 * minute,
        ]
        prices = [100, 90, 120, 110]
        outs = [trade_output(i + 1, i + 1, prices[i], i + 1, at[i]) for i in range(4)]
        store.apply(outs)

        assert klines_of(store, "BTC_USDT", "1m") == [
            (day0 + 5 * minute, 100, 100, 90, 90, 3, 2_800, 2),
            (day0 + 7 * minute, 120, 120, 120, 120, 3, 3_600, 1),
            (day0 + 61 * minute, 110, 110, 110, 110, 4, 4_400, 1),
        ]
        for interval in INTERVAL_MS:
            assert klines_of(store, "BTC_USDT", interval) == naive_klines(
                outs, "BTC_USDT", interval
            )
        (five,) = [
            k for k in store.klines("BTC_USDT", "5m", start=0) if k.open_time == day0 + 5 * minute
        ]
        assert (five.open, five.high, five.low, five.close, five.trade_count) == (
            100,
            120,
            90,
            120,
            3,
        )
        assert (five.close_time, five.first_trade_id, five.last_trade_id) == (
            day0 + 10 * minute - 1,
            1,
            3,
        )
        (daily,) = store.klines("BTC_USDT", "1d")
        assert (daily.open_time, daily.open, daily.close, daily.volume) == (day0, 100, 110, 10)

    def test_klines_when_batches_replayed_and_reordered_equal_the_in_order_result(
        self, make_store: MakeStore
    ) -> None:
        _, outs = engine_flow(seed=3, steps=400)
        assert sum(len(o.trades) for o in outs) > 50
        store = make_store()
        shuffled = list(outs)
        random.Random(4).shuffle(shuffled)
        for b in batches(shuffled, 17):
            store.apply(b)
        for b in batches(outs[::3], 5):  # redelivered
            store.apply(b)
        for symbol in SYMBOLS:
            for interval in INTERVAL_MS:
                assert klines_of(store, symbol, interval) == naive_klines(outs, symbol, interval)

    def test_klines_when_a_busy_minute_spans_several_parts_equal_the_naive_aggregate(
        self, store: Any
    ) -> None:
        # 700 trades in two minutes: ids cross two part boundaries (256, 512) inside a minute.
        minute = 60_000
        base = T0 - T0 % minute
        rng = random.Random(12)
        outs = [
            trade_output(i, i, rng.randint(90, 110), rng.randint(1, 5), base + i * 150)
            for i in range(1, 701)
        ]
        shuffled = list(outs)
        rng.shuffle(shuffled)
        for b in batches(shuffled, 23):
            store.apply(b)
        for interval in INTERVAL_MS:
            assert klines_of(store, "BTC_USDT", interval) == naive_klines(
                outs, "BTC_USDT", interval
            )

    def test_klines_when_range_and_limit_given_returns_oldest_first_within_them(
        self, store: Any
    ) -> None:
        minute = 60_000
        base = T0 - T0 % minute
        store.apply([trade_output(i, i, 100, 1, base + i * minute) for i in range(1, 11)])
        opens = [
            k.open_time
            for k in store.klines("BTC_USDT", "1m", start=base + 3 * minute, end=base + 6 * minute)
        ]
        assert opens == [base + m * minute for m in (3, 4, 5, 6)]
        limited = store.klines("BTC_USDT", "1m", start=base + 3 * minute, limit=2)
        assert [k.open_time for k in limited] == [base + 3 * minute, base + 4 * minute]
        newest = store.klines("BTC_USDT", "1m", limit=3)  # no start: the newest, oldest first
        assert [k.open_time for k in newest] == [base + m * minute for m in (8, 9, 10)]
        up_to = store.klines("BTC_USDT", "1m", end=base + 2 * minute, limit=5)
        assert [k.open_time for k in up_to] == [base + minute, base + 2 * minute]

    @pytest.mark.parametrize("interval", ["2m", "1w", "", "1M"])
    def test_klines_when_interval_unknown_raises_invalid_query(
        self, store: Any, interval: str
    ) -> None:
        with pytest.raises(InvalidQuery):
            store.klines("BTC_USDT", interval)

    def test_klines_when_limit_out_of_range_raises_invalid_query(self, store: Any) -> None:
        with pytest.raises(InvalidQuery):
            store.klines("BTC_USDT", "1m", limit=1001)
        with pytest.raises(InvalidQuery):
            store.klines("BTC_USDT", "1m", start=5, end=4)

    def test_ticker_inputs_when_window_given_sums_its_minutes(self, store: Any) -> None:
        minute = 60_000
        base = T0 - T0 % minute
        store.apply(
            [
                trade_output(1, 1, 100, 1, base - 2 * minute),  # before the window
                trade_output(2, 2, 104, 2, base),
                trade_output(3, 3, 97, 3, base + minute),
                trade_output(4, 4, 101, 4, base + 2 * minute + 5),
            ]
        )
        t = store.ticker_inputs("BTC_USDT", base, base + 3 * minute)
        assert (t.last_price, t.open, t.high, t.low) == (101, 104, 104, 97)
        assert (t.volume, t.trade_count) == (9, 3)
        empty = store.ticker_inputs("ETH_USDT", base, base + minute)
        assert (empty.last_price, empty.open, empty.volume, empty.trade_count) == (None, None, 0, 0)

    # ---- amend ---------------------------------------------------------------------

    def test_get_order_when_amended_shows_the_new_quantity(self, make_store: MakeStore) -> None:
        engine, outs = engine_flow(seed=5, steps=0)
        place = PlaceOrder(
            command_id=100, timestamp_ms=T0, order_id=100, user_id=1, symbol="BTC_USDT",
            side=BUY, order_type=OrderType.LIMIT, price=100_00, quantity=9,
        )  # fmt: skip
        amend = AmendOrder(
            command_id=101, timestamp_ms=T0 + 1, user_id=1, symbol="BTC_USDT", order_id=100,
            quantity=4,
        )  # fmt: skip
        outs += [engine.apply(place), engine.apply(amend)]
        store = make_store()
        store.apply(outs[:-1])  # the order as placed, then the amend in a later batch
        store.apply(outs[-1:])
        row = store.get_order(100)
        assert row is not None and (row.quantity, row.remaining_quantity) == (4, 4)
        assert [(r.order_id, r.quantity) for r in store.active_orders(1)] == [(100, 4)]
        assert levels_of(store, "BTC_USDT") == [(BUY, 100_00, 4, 1)]

    # ---- the invariant -------------------------------------------------------------

    @settings(
        max_examples=int(os.environ.get("STORE_MARKET_EXAMPLES", "15")),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 10**6),
        steps=st.integers(1, 300),
        size=st.integers(1, 40),
        shuffle=st.booleans(),
    )
    def test_book_levels_when_any_random_flow_applied_equal_the_active_orders_aggregated(
        self, make_store: MakeStore, seed: int, steps: int, size: int, shuffle: bool
    ) -> None:
        engine, outs = engine_flow(seed, steps)
        store = make_store()
        order = list(outs)
        if shuffle:
            random.Random(seed).shuffle(order)
        for b in batches(order, size):
            store.apply(b)
        for symbol in SYMBOLS:
            expected = engine_levels(engine, symbol)
            assert levels_of(store, symbol) == expected
            # ... and equal to the store's own active orders, aggregated per level.
            active: dict[tuple[Side, int], list[int]] = {}
            for user in range(1, 5):
                for o in store.active_orders(user, symbol):
                    level = active.setdefault((o.side, o.price), [0, 0])
                    level[0] += o.remaining_quantity
                    level[1] += 1
            assert sorted((s, p, q, n) for (s, p), (q, n) in active.items()) == sorted(expected)


# ---------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------


class TestSqliteMarketData(MarketContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        with sqlite_stores(tmp_path) as make:
            yield make


@pytest.fixture(scope="module")
def cassandra_market_store() -> Iterator[Any]:
    """One fresh keyspace per test run; dropped at the end."""
    with cassandra_keyspace("exchange_mkt") as store:
        yield store


@pytest.mark.cassandra
@pytest.mark.e2e
class TestCassandraMarketData(MarketContract):
    @pytest.fixture
    def make_store(self, cassandra_market_store: Any) -> MakeStore:
        def make() -> Any:
            cassandra_market_store.truncate_all()
            return cassandra_market_store

        return make

    def test_digest_when_same_flow_equals_sqlite_digest(
        self, make_store: MakeStore, tmp_path: Path
    ) -> None:
        _, outs = engine_flow(seed=11, steps=200)
        lite = SqliteStore(tmp_path / "ref.db")
        lite.init_schema()
        lite.apply(outs)
        store = make_store()
        for b in batches(outs, 9):
            store.apply(b)
        assert store.digest() == lite.digest()
        lite.close()
