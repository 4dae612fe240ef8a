"""Settlement on the real broker and real SQLite: flow, crashes, rebalancing, replay, outage."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.commands import Command
from engine.engine import Engine
from engine.events import EngineOutput
from engine.markets import Markets, load_markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.topics import Topics
from ops.workload import command_stream
from settlement.replay import replay
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore
from settlement.store import StoreError
from tests.support.eventually import eventually
from tests.support.kafka import produce_commands

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def markets() -> Markets:
    return load_markets()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _engine_to(
    bootstrap: str, topics: Topics, codec: Codec, markets: Markets, offset: int, snaps: Path
) -> None:
    service = EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"engine-{topics.orders.name}",
            snapshot_on_shutdown=True,
            batch_size=1000,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(snaps),
    )
    service.run(threading.Event(), until_offset=offset)


def _reference_digest(markets: Markets, commands: Sequence[Command], path: Path) -> str:
    engine = Engine(markets)
    outputs: list[EngineOutput] = [engine.apply(c) for c in commands]
    store = SqliteStore(path)
    store.init_schema()
    store.apply(outputs)
    return store.digest()


def _settle(
    bootstrap: str, topics: Topics, codec: Codec, store: SqliteStore, group: str, **kw: int
) -> tuple[SettlementService, threading.Event, threading.Thread]:
    service = SettlementService(
        bootstrap=bootstrap,
        config=SettlementConfig(
            output_topic=topics.engine_output.name,
            output_dlq_topic=topics.engine_output_dlq.name,
            group_id=group,
            **kw,
        ),
        codec=codec,
        store=store,
    )
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    return service, stop, thread


def _settled(store: SqliteStore) -> int:
    """The store's last settled sequence; 0 before the service created its schema."""
    try:
        return store.max_sequence()
    except StoreError:
        return 0


def _store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    store.init_schema()
    return store


def test_settlement_when_stream_flows_through_engine_equals_read_model_of_in_process_outputs(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=5, count=8_000, users=100))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, n, tmp_path / "snaps")
    live = _store(tmp_path / "live.sqlite3")

    service, stop, thread = _settle(
        kafka_bootstrap, fresh_topics, codec, live, f"settle-{fresh_topics.orders.name}"
    )
    eventually(
        lambda: live.max_sequence() >= n and service.stats.records >= n,
        timeout_s=120,
        what="settlement",
    )
    stop.set()
    thread.join(30)

    assert live.digest() == _reference_digest(markets, commands, tmp_path / "ref.sqlite3")
    assert service.stats.dead_lettered == 0

    rebuilt = _store(tmp_path / "replayed.sqlite3")
    applied, skipped = replay(
        bootstrap=kafka_bootstrap,
        topic=fresh_topics.engine_output.name,
        partitions=fresh_topics.engine_output.partitions,
        codec=codec,
        store=rebuilt,
    )
    assert (applied, skipped) == (n, 0)
    assert rebuilt.digest() == live.digest()

    cli = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "replay", "--into", str(tmp_path / "cli.db")],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")},
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "EXCHANGE_DATA_DIR": str(tmp_path),
            "EXCHANGE_TOPIC_ENGINE_OUTPUT": fresh_topics.engine_output.name,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"replayed {n} outputs (0 undecodable skipped); store digest {live.digest()}" in (
        cli.stdout
    )


def test_settlement_when_store_is_locked_mid_stream_retries_and_loses_nothing(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=8, count=4_000, users=50))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    path = tmp_path / "live.sqlite3"
    live = SqliteStore(path, busy_timeout_ms=100)
    live.init_schema()
    # The outage: another connection holds an exclusive lock on the database file.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")

    service, stop, thread = _settle(
        kafka_bootstrap,
        fresh_topics,
        codec,
        live,
        f"settle-{fresh_topics.orders.name}",
        batch_max_records=300,
    )
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, n, tmp_path / "snaps")
    eventually(lambda: service.stats.store_retries >= 2, timeout_s=120, what="store retries")
    assert not service.stats.ready
    assert live.max_sequence() == 0
    blocker.execute("ROLLBACK")
    blocker.close()

    eventually(
        lambda: live.max_sequence() >= n and service.stats.records >= n,
        timeout_s=120,
        what="catch-up",
    )
    stop.set()
    thread.join(30)
    assert service.stats.ready is False  # stopped
    assert live.digest() == _reference_digest(markets, commands, tmp_path / "ref.sqlite3")


def test_settlement_when_one_of_two_workers_stops_the_other_takes_over_without_loss(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=13, count=6_000, users=80))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    path = tmp_path / "live.sqlite3"
    group = f"settle-{fresh_topics.orders.name}"
    store_a, store_b = _store(path), SqliteStore(path)
    a, stop_a, thread_a = _settle(
        kafka_bootstrap, fresh_topics, codec, store_a, group, batch_max_records=200
    )
    b, stop_b, thread_b = _settle(
        kafka_bootstrap, fresh_topics, codec, store_b, group, batch_max_records=200
    )

    half = n // 2
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, half, tmp_path / "snaps")
    eventually(
        lambda: a.stats.records > 0 and b.stats.records > 0, timeout_s=120, what="both workers busy"
    )
    stop_a.set()
    thread_a.join(30)
    settled_by_a = a.stats.records

    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, n, tmp_path / "snaps")
    ref = _reference_digest(markets, commands, tmp_path / "ref.sqlite3")
    eventually(lambda: store_b.digest() == ref, timeout_s=120, what="worker b to settle everything")
    stop_b.set()
    thread_b.join(30)

    assert 0 < settled_by_a < n
    assert b.stats.records + settled_by_a >= n


def test_settlement_when_killed_repeatedly_ends_identical_to_an_uninterrupted_run(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=21, count=15_000, users=150))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, n, tmp_path / "snaps")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "EXCHANGE_DATA_DIR": str(data),
            "EXCHANGE_TOPIC_ENGINE_OUTPUT": fresh_topics.engine_output.name,
            "EXCHANGE_TOPIC_ENGINE_OUTPUT_DLQ": fresh_topics.engine_output_dlq.name,
            "EXCHANGE_SETTLEMENT_BATCH_MAX_RECORDS": "100",
            "EXCHANGE_SETTLEMENT_METRICS_PORT": "0",
        }
    )
    rng = random.Random(77)
    kills = 0
    live = SqliteStore(data / "exchange.sqlite3")
    for _ in range(4):
        # Driven by progress, not by a timer: each run is killed once it has settled a random
        # 500-2,500 more outputs, and only while it is alive with outputs left (the guard).
        target = _settled(live) + rng.randint(500, 2_500)
        proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "settlement"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def progressed(proc: subprocess.Popen[bytes] = proc, target: int = target) -> int | bool:
            assert proc.poll() is None, "settlement exited before making progress"
            at = _settled(live)
            return at if at >= target else False

        at = eventually(progressed, timeout_s=120, interval_s=0.01, what=f"sequence {target}")
        assert proc.poll() is None and at < n, (at, n)
        proc.kill()
        proc.wait()
        kills += 1
    assert kills == 4
    assert live.max_sequence() < n, "the kills came too late to interrupt anything"

    final = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "settlement"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ref = _reference_digest(markets, commands, tmp_path / "ref.sqlite3")
        eventually(lambda: live.max_sequence() >= n, timeout_s=180, what="final catch-up")
        eventually(lambda: live.digest() == ref, timeout_s=60, what="identical store")
    finally:
        final.terminate()
        assert final.wait(60) == 0


def _committed(bootstrap: str, topics: Topics, group: str) -> dict[int, int]:
    """The group's committed offset per engine-output partition (-1001: none)."""
    from confluent_kafka import TopicPartition

    from exchange.kafka import make_consumer

    consumer = make_consumer(bootstrap, group)
    try:
        parts = [
            TopicPartition(topics.engine_output.name, p)
            for p in range(topics.engine_output.partitions)
        ]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def _ends(topics: Topics, outputs: int) -> dict[int, int]:
    """Log end per engine-output partition after ``outputs`` outputs: sequence s is the
    only record the engine publishes to partition s % N (fresh topics start at offset 0)."""
    parts = topics.engine_output.partitions
    return {p: sum(1 for s in range(1, outputs + 1) if s % parts == p) for p in range(parts)}


def test_settlement_when_stopped_between_commit_intervals_commits_everything_it_wrote(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=31, count=3_000, users=40))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, n, tmp_path / "snaps")
    live = _store(tmp_path / "live.sqlite3")
    group = f"settle-{fresh_topics.orders.name}"

    service, stop, thread = _settle(
        kafka_bootstrap,
        fresh_topics,
        codec,
        live,
        group,
        batch_max_records=250,
        commit_every_ms=600_000,
    )
    eventually(lambda: service.stats.records >= n, timeout_s=120, what="settlement")
    # Written, but the next periodic commit is ten minutes away.
    assert _committed(kafka_bootstrap, fresh_topics, group) != _ends(fresh_topics, n)
    stop.set()
    thread.join(30)

    assert _committed(kafka_bootstrap, fresh_topics, group) == _ends(fresh_topics, n)


def test_settlement_when_a_second_worker_joins_the_first_hands_over_what_it_wrote(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=34, count=4_000, users=60))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    path = tmp_path / "live.sqlite3"
    group = f"settle-{fresh_topics.orders.name}"
    store_a, store_b = _store(path), SqliteStore(path)
    half = n // 2
    _engine_to(kafka_bootstrap, fresh_topics, codec, markets, half, tmp_path / "snaps")
    # No periodic commit during the test: only the rebalance hands offsets over.
    a, stop_a, thread_a = _settle(
        kafka_bootstrap,
        fresh_topics,
        codec,
        store_a,
        group,
        batch_max_records=200,
        commit_every_ms=600_000,
    )
    eventually(
        lambda: a.stats.records >= half, timeout_s=120, what="worker a to settle the first half"
    )

    b, stop_b, thread_b = _settle(
        kafka_bootstrap,
        fresh_topics,
        codec,
        store_b,
        group,
        batch_max_records=200,
        commit_every_ms=600_000,
    )
    # Feed the rest in steps until b has partitions (its first join takes a moment).
    offset = half
    while offset < n:
        offset = min(n, offset + (100 if b.stats.records == 0 else n))
        _engine_to(kafka_bootstrap, fresh_topics, codec, markets, offset, tmp_path / "snaps")
        if b.stats.records == 0:
            time.sleep(0.3)
    ref = _reference_digest(markets, commands, tmp_path / "ref.sqlite3")
    eventually(
        lambda: store_b.digest() == ref and a.stats.records + b.stats.records >= n,
        what="both workers to settle everything",
        timeout_s=120,
    )
    stop_a.set()
    stop_b.set()
    thread_a.join(30)
    thread_b.join(30)

    assert b.stats.records > 0, "worker b never got a partition"
    # Every output settled exactly once: b started where a had written, not where a last
    # committed (it had not committed at all).
    assert a.stats.records + b.stats.records == n
