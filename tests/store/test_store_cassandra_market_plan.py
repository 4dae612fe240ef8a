"""The Cassandra adapter's market-data writes, planned and bound without a server (issue 15).

book_levels (insert, or a versioned delete for an emptied level), market_trades with their
hour index, and klines written USING TIMESTAMP trade_count in bounded partitions.
"""

from __future__ import annotations

from market_store_testkit import engine_flow
from test_store_cassandra_plan import TABLE_DEFS, bound, offline_prepared, statement_columns

from settlement import cassandra_store as cs
from settlement.cassandra_store import (
    kline_period,
    plan_batches,
    plan_kline_writes,
    plan_part_writes,
    plan_writes,
)
from settlement.market_data import INTERVAL_MS, KlineRow, kline_from_trades, merge_klines
from settlement.projection import project


def market_writes() -> list[cs.PlannedWrite]:
    _, outs = engine_flow(seed=31, steps=300)
    return [
        w
        for w in plan_writes(project(outs))
        if w.statement in ("level", "level_delete", "market_trade", "market_trade_hour")
    ]


def test_plan_writes_when_depth_and_trades_planned_bind_the_key_and_sequence_timestamp() -> None:
    writes = market_writes()
    assert {w.statement for w in writes} == {
        "level",
        "level_delete",
        "market_trade",
        "market_trade_hour",
    }
    for w in writes:
        values = bound(w)
        table, _ = statement_columns(cs._WRITES[w.statement])
        assert w.partition == (table, *(values[c] for c in TABLE_DEFS[table][1])), w
        assert values["ts"] == values.get("version", values["ts"]) >= 1
    for w in writes:
        values = bound(w)
        if w.statement == "level":
            assert values["quantity"] > 0 and values["order_count"] > 0
        if w.statement == "market_trade":
            assert values["hour"] == values["executed_at"] // 3_600_000  # type: ignore[operator]


def test_plan_kline_writes_when_planned_use_trade_count_as_the_timestamp() -> None:
    minute = kline_from_trades("BTC_USDT", 120_000, [(7, 100, 2, 2_000, 40), (9, 90, 1, 900, 41)])
    assert minute is not None
    daily = merge_klines("BTC_USDT", "1d", 0, [minute])
    assert daily is not None
    writes = plan_kline_writes([minute, daily])
    for w in writes:
        values = bound(w)
        table, _ = statement_columns(cs._WRITES[w.statement])
        assert w.partition == (table, *(values[c] for c in TABLE_DEFS[table][1])), w
        assert values["ts"] == 2  # the trade count: more trades always win
    (part,) = [bound(w) for w in plan_part_writes([(3, minute)])]
    assert (part["block"], part["ts"], part["open_time"]) == (3, 2, 120_000)
    (one_minute,) = [
        bound(w) for w in writes if w.statement == "kline" and bound(w)["interval"] == "1m"
    ]
    assert one_minute["period"] == 120_000 // (60_000 * 1_000)
    assert (one_minute["open"], one_minute["close"], one_minute["version"]) == (100, 90, 41)


def test_kline_period_when_a_query_spans_1000_klines_touches_at_most_two_partitions() -> None:
    for ms in INTERVAL_MS.values():
        for start in (0, 7 * ms, 999 * ms, 1_000 * ms + 3 * ms):
            assert kline_period(start + 999 * ms, ms) - kline_period(start, ms) <= 1


def test_plan_writes_when_bound_by_driver_serializes_market_data_values() -> None:
    from cassandra.query import BatchStatement, BatchType

    rows: list[KlineRow] = [
        k
        for k in (
            kline_from_trades("ETH_USDT", 60_000 * 5, [(1, 10, 1, 10, 3)]),
            kline_from_trades("ETH_USDT", 60_000 * 6, [(2, 11, 4, 44, 4), (3, 12, 1, 12, 5)]),
        )
        if k is not None
    ]
    writes = market_writes() + plan_kline_writes(rows) + plan_part_writes([(0, r) for r in rows])
    prepared = {name: offline_prepared(name) for name in cs._WRITES}
    for chunk in plan_batches(writes):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for w in chunk:
            bound_stmt = prepared[w.statement].bind(w.params)  # type: ignore[attr-defined]
            assert len(bound_stmt.values) == len(w.params)
            batch.add(prepared[w.statement], w.params)
