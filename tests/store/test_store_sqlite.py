"""SQLite adapter specifics: error mapping, readers beside the writer, query plans."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_testkit import Sim, random_stream

from engine.enums import Side
from settlement import sqlite_store
from settlement.sqlite_store import SqliteStore, translate_error
from settlement.store import StoreError, StoreUnavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "settlement.db"
    s = SqliteStore(path)
    s.init_schema()
    s.close()
    return path


def test_apply_when_database_locked_by_another_connection_raises_store_unavailable(
    db: Path,
) -> None:
    store = SqliteStore(db, busy_timeout_ms=50)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable) as info:
            store.apply(random_stream(seed=1, steps=5))
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The lock is gone: the same batch now goes through (the service's retry).
    store.apply(random_stream(seed=1, steps=5))
    assert store.max_sequence() > 0
    store.close()


def test_apply_when_store_opened_readonly_raises_store_unavailable(db: Path) -> None:
    reader = SqliteStore(db, readonly=True)
    with pytest.raises(StoreUnavailable) as info:
        reader.apply(random_stream(seed=1, steps=5))
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert reader.max_sequence() == 0
    reader.close()


def test_apply_when_connection_is_query_only_raises_store_unavailable(db: Path) -> None:
    store = SqliteStore(db)
    store.ping()
    with store._wlock:  # reach in: make the writer read-only, as a full disk would
        store._write_conn().execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable):
        store.apply(random_stream(seed=1, steps=5))
    store.close()


def test_queries_when_database_file_missing_raise_store_unavailable(tmp_path: Path) -> None:
    reader = SqliteStore(tmp_path / "nope.db", readonly=True)
    with pytest.raises(StoreUnavailable):
        reader.active_orders(1)
    with pytest.raises(StoreUnavailable):
        reader.ping()
    assert not (tmp_path / "nope.db").exists()  # a reader never creates the file
    reader.close()


def test_ping_when_schema_missing_raises_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "empty.db")
    with store._wlock:
        store._write_conn()  # creates the empty file
    with pytest.raises(StoreUnavailable):
        store.ping()
    store.init_schema()
    store.ping()
    store.close()


def test_translate_error_when_bug_not_environment_gives_plain_store_error() -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as info:
        conn.execute("SELECT * FROM no_such_table")
    err = translate_error(info.value)
    assert type(err) is StoreError


def test_apply_when_closed_raises_store_unavailable(db: Path) -> None:
    store = SqliteStore(db)
    store.close()
    with pytest.raises(StoreUnavailable):
        store.apply(random_stream(seed=1, steps=3))


def test_init_when_synchronous_invalid_raises_store_error(db: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(db, synchronous="SOMETIMES")


def test_reads_when_another_process_reads_during_writes_see_committed_state(db: Path) -> None:
    writer = SqliteStore(db)
    outs = random_stream(seed=3, steps=60)
    writer.apply(outs[:30])
    expected = writer.max_sequence()
    # Hold an open write transaction while the other process reads: WAL readers see the
    # last committed state and are not blocked.
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("UPDATE settlement_progress SET max_sequence = 999999")
    code = (
        "import sys\n"
        "from settlement.sqlite_store import SqliteStore\n"
        "s = SqliteStore(sys.argv[1], readonly=True, busy_timeout_ms=100)\n"
        "print(s.max_sequence(), len(s.order_history(1, limit=1000)[0]))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(db)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        raw.execute("ROLLBACK")
        raw.close()
    seq, n_orders = map(int, done.stdout.split())
    assert seq == expected
    assert n_orders == len(writer.order_history(1, limit=1000)[0])
    writer.close()


def test_reads_when_threadpool_queries_during_writes_never_fail(db: Path) -> None:
    store = SqliteStore(db)
    outs = random_stream(seed=4, steps=300)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_loop() -> int:
        n = 0
        while not stop.is_set():
            try:
                store.active_orders(1)
                store.order_history(2, limit=10)
                store.balances(3)
                n += 1
            except BaseException as e:  # collected and asserted below
                errors.append(e)
                return n
        return n

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(read_loop) for _ in range(4)]
        for i in range(0, len(outs), 10):
            store.apply(outs[i : i + 10])
        stop.set()
        reads = sum(f.result() for f in futures)
    assert errors == []
    assert reads > 0
    store.close()


def test_query_plans_when_reading_use_the_intended_indexes(db: Path) -> None:
    store = SqliteStore(db)
    sim = Sim()
    sim.place(1, "BTC-USDT", Side.BUY, 100, 1)
    store.apply(sim.outputs)
    conn = sqlite3.connect(db)
    # Orders and trades are clustered by (user_id, id): a user's history is one contiguous
    # range of the table itself; open orders come from the partial index.
    expect = {
        sqlite_store._Q_ACTIVE: "USING INDEX orders_active",
        sqlite_store._Q_ACTIVE_SYMBOL: "USING INDEX orders_active",
        sqlite_store._Q_HISTORY: "USING PRIMARY KEY",
        sqlite_store._Q_HISTORY_SYMBOL: "USING INDEX orders_history_symbol",
        sqlite_store._Q_ORDER: "USING INDEX orders_by_id",
        sqlite_store._Q_TRADES: "USING PRIMARY KEY",
        sqlite_store._Q_TRADES_SYMBOL: "USING PRIMARY KEY",
        sqlite_store._Q_STATS: "USING PRIMARY KEY",
    }
    for sql, access in expect.items():
        plan = " ".join(
            str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))
        )
        assert access in plan, (sql, plan)
        if "GROUP BY" not in sql:
            assert "TEMP B-TREE" not in plan, (sql, plan)  # rows come out in order: no sort
    conn.close()
    store.close()
