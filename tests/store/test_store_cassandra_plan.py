"""Cassandra adapter logic that runs without a server: write planning, batching, schema
parsing, statement/schema consistency, error mapping."""

from __future__ import annotations

import re

import pytest
from cassandra import (
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
    WriteType,
)
from cassandra.cluster import NoHostAvailable
from cassandra.query import UNSET_VALUE
from store_testkit import Sim, order_update, output, random_stream, trade

from engine.enums import OrderStatus, Side
from settlement import cassandra_store as cs
from settlement.cassandra_store import (
    SCHEMA_PATH,
    TABLES,
    CassandraStore,
    PlannedWrite,
    plan_batches,
    plan_writes,
    schema_statements,
    translate_error,
)
from settlement.projection import BUCKET_BITS, project
from settlement.store import StoreError, StoreUnavailable

# ---------------------------------------------------------------------------------------
# A tiny reading of cql/schema.cql: table -> (columns, partition key, clustering key)
# ---------------------------------------------------------------------------------------


def parse_tables() -> dict[str, tuple[list[str], list[str], list[str]]]:
    tables = {}
    for stmt in schema_statements(SCHEMA_PATH.read_text(), "ks"):
        m = re.match(r"CREATE TABLE IF NOT EXISTS ks\.(\w+) \((.*?)\)(?: WITH .*)?$", stmt)
        if not m:
            continue
        body = m.group(2).strip()
        pk = re.search(r"PRIMARY KEY \(\((.*?)\)(?:, (.*?))?\)$", body)
        cols = [c.strip().split()[0] for c in body.split(",") if len(c.strip().split()) >= 2]
        cols = [c for c in cols if c not in ("PRIMARY",)]
        if pk:
            part = [c.strip() for c in pk.group(1).split(",")]
            clus = [c.strip() for c in (pk.group(2) or "").split(",") if c.strip()]
        else:  # "name type PRIMARY KEY"
            (col,) = re.findall(r"(\w+) \w+ PRIMARY KEY", body)
            part, clus = [col], []
        tables[m.group(1)] = (cols, part, clus)
    return tables


TABLE_DEFS = parse_tables()


def statement_columns(cql: str) -> tuple[str, list[str]]:
    """(table, the column each bind marker binds, in marker order; 'ts' for the timestamp)."""
    if m := re.match(
        r"INSERT INTO \{ks\}\.(\w+) \((.*?)\) VALUES \(.*?\) USING TIMESTAMP \?$", cql
    ):
        return m.group(1), [c.strip() for c in m.group(2).split(",")] + ["ts"]
    if m := re.match(r"DELETE FROM \{ks\}\.(\w+) USING TIMESTAMP \? WHERE (.*)$", cql):
        return m.group(1), ["ts", *re.findall(r"(\w+) = \?", m.group(2))]
    if m := re.match(r"UPDATE \{ks\}\.(\w+) USING TIMESTAMP \? SET (.*) WHERE (.*)$", cql):
        return m.group(1), ["ts", *re.findall(r"(\w+) = \?", m.group(2) + " " + m.group(3))]
    raise AssertionError(f"unparsed statement {cql}")


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


def test_schema_statements_when_parsed_are_all_if_not_exists_and_cover_every_table() -> None:
    stmts = schema_statements(SCHEMA_PATH.read_text())
    assert stmts[0].startswith("CREATE KEYSPACE IF NOT EXISTS exchange ")
    assert all(" IF NOT EXISTS " in s for s in stmts)
    assert all("--" not in s and ";" not in s for s in stmts)
    assert set(TABLE_DEFS) == set(TABLES)


def test_schema_statements_when_keyspace_renamed_qualifies_every_table() -> None:
    stmts = schema_statements(SCHEMA_PATH.read_text(), "exchange_test_1")
    assert stmts[0].startswith("CREATE KEYSPACE IF NOT EXISTS exchange_test_1 ")
    for s in stmts[1:]:
        assert re.match(r"CREATE TABLE IF NOT EXISTS exchange_test_1\.\w+ \(", s), s
    assert not any(re.search(r"\bexchange\.", s) for s in stmts)


def test_schema_statements_when_replication_given_replaces_it() -> None:
    repl = "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    stmts = schema_statements(SCHEMA_PATH.read_text(), replication=repl)
    assert f"replication = {repl}" in stmts[0]
    assert "SimpleStrategy" not in stmts[0]


def test_schema_statements_when_keyspace_invalid_raises() -> None:
    with pytest.raises(StoreError):
        schema_statements("", "bad-name; DROP")


def test_schema_when_tables_defined_have_no_counters_and_bounded_keys() -> None:
    stmts = schema_statements(SCHEMA_PATH.read_text())  # comments stripped
    assert not [s for s in stmts if re.search(r"\bcounter\b", s, re.IGNORECASE)]
    for table in ("order_history", "trades_by_user", "order_final_status"):
        assert "bucket" in TABLE_DEFS[table][1], table  # unbounded per user: bucketed
    assert TABLE_DEFS["order_updates_stream"][1] == ["day", "bucket"]


# ---------------------------------------------------------------------------------------
# Statements against the schema
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(cs._WRITES))
def test_write_statement_when_checked_against_schema_binds_known_columns_and_full_key(
    name: str,
) -> None:
    table, cols = statement_columns(cs._WRITES[name])
    known, part, clus = TABLE_DEFS[table]
    assert set(cols) - {"ts"} <= set(known)
    assert set(part + clus) <= set(cols), "a write must name the whole primary key"
    assert cs._WRITES[name].count("?") == len(cols)


@pytest.mark.parametrize("name", sorted(cs._READS))
def test_read_statement_when_checked_against_schema_restricts_whole_partition_key(
    name: str,
) -> None:
    cql = cs._READS[name]
    m = re.match(r"SELECT (.*?) FROM \{ks\}\.(\w+) WHERE (.*)$", cql)
    assert m, cql
    known, part, _ = TABLE_DEFS[m.group(2)]
    selected = [c.strip() for c in m.group(1).split(",") if c.strip() != "COUNT(*)"]
    assert set(selected) <= set(known)
    restricted = re.findall(r"(\w+) = \?", m.group(3))
    assert set(part) <= set(restricted), "every read is a single-partition read"


# ---------------------------------------------------------------------------------------
# Write planning
# ---------------------------------------------------------------------------------------


def bound(w: PlannedWrite) -> dict[str, object]:
    _, cols = statement_columns(cs._WRITES[w.statement])
    assert len(cols) == len(w.params), w.statement
    return dict(zip(cols, w.params, strict=True))


def test_plan_writes_when_stream_planned_binds_params_and_partition_consistently() -> None:
    writes = plan_writes(project(random_stream(seed=21, steps=120)))
    kinds = {w.statement for w in writes}
    # Sim makes no depth updates; klines are planned after the trades are stored (below).
    assert kinds == set(cs._WRITES) - {
        "progress",
        "level",
        "level_delete",
        "kline",
        "kline_period",
        "kline_part",
    }
    for w in writes:
        values = bound(w)
        table, _ = statement_columns(cs._WRITES[w.statement])
        part = TABLE_DEFS[table][1]
        assert w.partition == (table, *(values[c] for c in part)), w
        assert values["ts"] == values.get("version", values["ts"])  # timestamp = version
        assert isinstance(values["ts"], int) and values["ts"] >= 1
        assert w.size > 0


def test_plan_writes_when_order_open_upserts_active_with_sequence_timestamp() -> None:
    sim = Sim()
    maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
    sim.take(2, maker, 4)
    writes = plan_writes(project(sim.outputs))

    (active,) = [w for w in writes if w.statement == "active" and bound(w)["order_id"] == maker]
    values = bound(active)
    assert values["ts"] == 2 and values["status"] == OrderStatus.PARTIALLY_FILLED
    assert not [
        w for w in writes if w.statement == "final_status" and bound(w)["order_id"] == maker
    ]


def test_plan_writes_when_order_filled_deletes_active_and_records_final_status() -> None:
    sim = Sim()
    maker = sim.place(1, "BTC-USDT", Side.BUY, 100, 10)
    sim.take(2, maker, 10)
    writes = plan_writes(project(sim.outputs))

    mine = [w for w in writes if bound(w).get("order_id") == maker]
    kinds = sorted(w.statement for w in mine)
    assert kinds == ["active_delete", "final_status", "history", "lookup", "stream", "stream",
                     "trade", "trail", "trail"]  # fmt: skip
    (delete,) = [w for w in mine if w.statement == "active_delete"]
    assert bound(delete) == {"ts": 2, "user_id": 1, "order_id": maker}
    (final,) = [w for w in mine if w.statement == "final_status"]
    assert bound(final)["final_status"] == OrderStatus.FILLED


def test_plan_writes_when_optional_fields_none_binds_unset_not_null() -> None:
    upd = order_update(7, 1, OrderStatus.EXPIRED, price=None)
    writes = plan_writes(project([output(1, updates=(upd,))]))
    (history,) = [w for w in writes if w.statement == "history"]
    values = bound(history)
    assert values["price"] is UNSET_VALUE
    assert values["client_order_id"] is UNSET_VALUE
    assert values["reject_reason"] is UNSET_VALUE
    assert all(v is not None for w in writes for v in w.params)


def test_plan_writes_when_user_and_keys_change_writes_one_row_each_at_its_sequence() -> None:
    sim = Sim()
    sim.create_user("k-a")  # no label: UNSET, not a null cell
    sim.add_key(1, "k-b")
    sim.revoke_key("k-a")
    writes = plan_writes(project(sim.outputs))

    (user,) = [bound(w) for w in writes if w.statement == "user"]
    assert user["label"] is UNSET_VALUE and user["ts"] == user["version"] == 1
    keys = sorted(
        (b["api_key"], b["revoked"], b["ts"])
        for w in writes
        if w.statement == "api_key"
        for b in [bound(w)]
    )
    assert keys == [("k-a", True, 3), ("k-b", False, 2)]


def test_plan_writes_when_rows_share_bucket_writes_bucket_index_once() -> None:
    b = 1 << BUCKET_BITS
    outs = [output(i + 1, updates=(order_update(oid, 1),)) for i, oid in enumerate([1, 2, b])]
    outs.append(output(9, trades=(trade(5), trade(6))))
    writes = plan_writes(project(outs))

    order_buckets = sorted(
        (bound(w)["bucket"], bound(w)["ts"]) for w in writes if w.statement == "order_bucket"
    )
    assert order_buckets == [(0, 2), (1, 3)]
    trade_buckets = [bound(w) for w in writes if w.statement == "trade_bucket"]
    assert sorted((t["user_id"], t["bucket"]) for t in trade_buckets) == [(1, 0), (2, 0)]


# ---------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------


def pw(partition: tuple[object, ...], size: int = 100) -> PlannedWrite:
    return PlannedWrite("balance", partition, (), size)


def test_plan_batches_when_writes_interleave_groups_by_partition_only() -> None:
    writes = [pw(("balances", u % 3)) for u in range(30)]
    chunks = plan_batches(writes, max_statements=50, max_bytes=10_000)

    assert len(chunks) == 3
    for chunk in chunks:
        assert len({w.partition for w in chunk}) == 1
    assert sorted(w.partition for c in chunks for w in c) == sorted(w.partition for w in writes)


def test_plan_batches_when_group_exceeds_statement_cap_splits() -> None:
    chunks = plan_batches([pw(("t", 1)) for _ in range(45)], max_statements=20, max_bytes=10**6)
    assert [len(c) for c in chunks] == [20, 20, 5]


def test_plan_batches_when_group_exceeds_byte_cap_splits() -> None:
    chunks = plan_batches([pw(("t", 1), 900) for _ in range(10)], max_statements=99, max_bytes=4000)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert all(sum(w.size for w in c) <= 4000 for c in chunks)


def test_plan_batches_when_single_write_oversized_gets_own_chunk() -> None:
    writes = [pw(("t", 1), 100), pw(("t", 1), 9000), pw(("t", 1), 100)]
    chunks = plan_batches(writes, max_statements=10, max_bytes=4000)
    assert [[w.size for w in c] for c in chunks] == [[100], [9000], [100]]


def test_plan_batches_when_real_stream_planned_stays_under_cassandra_warn_threshold() -> None:
    writes = plan_writes(project(random_stream(seed=22, steps=400)))
    chunks = plan_batches(writes)
    assert max(len(c) for c in chunks) > 1  # batching does happen
    for chunk in chunks:
        assert len({w.partition for w in chunk}) == 1
        assert len(chunk) <= cs.DEFAULT_MAX_BATCH_STATEMENTS
        assert sum(w.size for w in chunk) <= 5 * 1024
    assert sum(len(c) for c in chunks) == len(writes)


def test_plan_batches_when_caps_not_positive_raises() -> None:
    with pytest.raises(StoreError):
        plan_batches([], max_statements=0)


# ---------------------------------------------------------------------------------------
# Errors and configuration
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        NoHostAvailable("no host", {}),
        OperationTimedOut("timed out"),
        Unavailable("unavailable"),
        ReadTimeout("read timeout"),
        WriteTimeout("write timeout", write_type=WriteType.SIMPLE),
    ],
)
def test_translate_error_when_store_unreachable_gives_store_unavailable(
    error: Exception,
) -> None:
    assert isinstance(translate_error(error), StoreUnavailable)


def test_translate_error_when_query_invalid_gives_plain_store_error() -> None:
    err = translate_error(InvalidRequest("unconfigured table"))
    assert type(err) is StoreError


def test_init_when_keyspace_or_consistency_invalid_raises_store_error() -> None:
    with pytest.raises(StoreError):
        CassandraStore(["127.0.0.1"], keyspace="Bad-Name")
    with pytest.raises(StoreError):
        CassandraStore(["127.0.0.1"], consistency="MOST")


def test_apply_when_no_cassandra_reachable_raises_store_unavailable() -> None:
    # Port 9 (discard) on localhost: nothing listens, the connect fails fast.
    store = CassandraStore(["127.0.0.1"], port=9, request_timeout_s=1.0)
    sim = Sim()
    sim.deposit(1, "USDT", 5)
    with pytest.raises(StoreUnavailable) as info:
        store.apply(sim.outputs)
    assert isinstance(info.value.__cause__, NoHostAvailable)
    with pytest.raises(StoreUnavailable):
        store.ping()
    store.close()


# ---------------------------------------------------------------------------------------
# Binding through the real driver, offline: prepared statements whose bind metadata is
# built from the schema's column types, as the server would describe them.
# ---------------------------------------------------------------------------------------


def column_types() -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for stmt in schema_statements(SCHEMA_PATH.read_text(), "ks"):
        m = re.match(r"CREATE TABLE IF NOT EXISTS ks\.(\w+) \((.*?)\)(?: WITH .*)?$", stmt)
        if m:
            pairs = (c.strip().split()[:2] for c in m.group(2).split(","))
            types[m.group(1)] = {p[0]: p[1] for p in pairs if len(p) == 2}
    return types


def offline_prepared(name: str) -> object:
    from cassandra import ProtocolVersion, cqltypes
    from cassandra.protocol import ColumnMetadata
    from cassandra.query import PreparedStatement

    cql_types = {
        "bigint": cqltypes.LongType,
        "int": cqltypes.Int32Type,
        "text": cqltypes.UTF8Type,
        "boolean": cqltypes.BooleanType,
    }
    table, cols = statement_columns(cs._WRITES[name])
    types = column_types()[table]
    meta = [
        ColumnMetadata("ks", table, c, cql_types["bigint" if c == "ts" else types[c]]) for c in cols
    ]
    return PreparedStatement(
        meta, b"id-" + name.encode(), None, cs._WRITES[name], "ks", ProtocolVersion.V4, [], None
    )


def test_plan_writes_when_bound_by_driver_serializes_every_value() -> None:
    from cassandra.query import BatchStatement, BatchType

    outs = random_stream(seed=23, steps=150)
    writes = plan_writes(project(outs))
    prepared = {name: offline_prepared(name) for name in cs._WRITES}
    for chunk in plan_batches(writes):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for w in chunk:
            bound_stmt = prepared[w.statement].bind(w.params)  # type: ignore[attr-defined]
            assert len(bound_stmt.values) == len(w.params)
            batch.add(prepared[w.statement], w.params)
    progress = prepared["progress"].bind((5, 5, "engine-output"))  # type: ignore[attr-defined]
    assert progress.values[0] == (5).to_bytes(8, "big")


class RecordingSession:
    """Stands in for a driver Session: records what apply() executes, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def execute(self, statement: object, params: object = None, **_: object) -> list[object]:
        self.log.append(("execute", (statement, params)))
        return []


def test_apply_when_run_sends_unlogged_partition_batches_then_progress_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cassandra.query import BatchStatement, BatchType, BoundStatement

    session = RecordingSession()
    concurrent_calls: list[tuple[list[tuple[object, object]], int]] = []

    def fake_execute_concurrent(
        sess: object, statements: list[tuple[object, object]], *, concurrency: int, **_: object
    ) -> list[object]:
        assert sess is session
        session.log.append(("concurrent", len(statements)))
        concurrent_calls.append((statements, concurrency))
        return [(True, []) for _ in statements]  # reads find nothing

    monkeypatch.setattr(cs, "execute_concurrent", fake_execute_concurrent)
    store = CassandraStore(["127.0.0.1"], concurrency=8, max_batch_statements=5)
    store._session = session  # skip the network: prepared statements built offline
    reads = {name: f"read:{name}" for name in cs._READS}  # the session only records them
    store._prepared = {**{name: offline_prepared(name) for name in cs._WRITES}, **reads}

    outs = random_stream(seed=24, steps=60)
    store.apply(outs)

    # Data writes, then the kline rebuild's read rounds, each one concurrent call (the fake
    # finds nothing, so there is nothing to aggregate and no kline write), then progress.
    kinds = [kind for kind, _ in session.log]
    assert kinds == ["concurrent"] * 7 + ["execute"]
    rounds = [{stmt for stmt, _ in calls} for calls, _ in concurrent_calls[1:]]
    assert rounds == [{"read:q_part_trades"}, {"read:q_parts"}] + [{"read:q_klines_range"}] * 4
    statements, concurrency = concurrent_calls[0]
    assert concurrency == 8
    expected_chunks = plan_batches(plan_writes(project(outs)), max_statements=5)
    assert len(statements) == len(expected_chunks)
    for (stmt, params), chunk in zip(statements, expected_chunks, strict=True):
        assert params is None
        if len(chunk) == 1:
            assert isinstance(stmt, BoundStatement)
        else:
            assert isinstance(stmt, BatchStatement)
            assert stmt.batch_type == BatchType.UNLOGGED
            assert stmt.is_idempotent
            assert len(stmt._statements_and_parameters) == len(chunk) <= 5
    _, (progress_stmt, progress_params) = session.log[-1]
    assert progress_stmt is store._prepared["progress"]
    assert progress_params == (outs[-1].sequence, outs[-1].sequence, "engine-output")


def test_apply_when_driver_times_out_raises_store_unavailable_and_skips_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = RecordingSession()

    def failing(*_: object, **__: object) -> list[object]:
        raise OperationTimedOut("no response")

    monkeypatch.setattr(cs, "execute_concurrent", failing)
    store = CassandraStore(["127.0.0.1"])
    store._session = session
    store._prepared = {name: offline_prepared(name) for name in cs._WRITES}

    with pytest.raises(StoreUnavailable) as info:
        store.apply(random_stream(seed=25, steps=10))
    assert isinstance(info.value.__cause__, OperationTimedOut)
    assert session.log == []  # the progress row was not written
