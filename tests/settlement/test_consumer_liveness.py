"""Liveness of the consumers: the engine's stall found with the LOBSTER replay, and its cure.

The embedded broker (Tansu 0.6, memory storage) answers a fetch by listing every record
batch of the partition and stops listing when the fetch's wait runs out. A partition of
single-record batches (a trading bot's sequential requests) soon takes longer to list than
the engine's old 10 ms wait: every fetch with data then came back empty, for good. A fetch
wait of 1 ms reproduces that with a log of a few thousand batches, so these tests need no
long run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from engine.commands import Command, Deposit
from engine.engine import Engine
from engine.markets import load_markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.kafka import BrokerFlavour, broker_flavour, make_consumer, make_producer
from exchange.metrics import WatchdogMetrics, new_registry
from exchange.topics import Topics
from exchange.watchdog import ConsumerStalled, ConsumerWatchdog
from ops.workload import user_commands
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore

pytestmark = pytest.mark.kafka

COMMANDS = 10_000  # single-record batches: listing them takes well over 1 ms
USERS = 7


def _commands(count: int) -> list[Command]:
    """``count`` commands: the creation of users 1..7 (the engine refuses unknown users), then
    deposits to them."""
    users = user_commands(USERS)
    return users + [
        Deposit(
            command_id=i,
            timestamp_ms=1_700_000_000_000 + i,
            user_id=1 + i % USERS,
            asset="USDT",
            amount=1_000 + i,
        )
        for i in range(len(users), count)
    ]


def _produce_one_by_one(bootstrap: str, topic: str, codec: Codec, count: int) -> None:
    """Each command in its own record batch, as a sequential REST client produces them."""
    producer = make_producer(bootstrap, **{"batch.num.messages": 1, "linger.ms": 0})
    for command in _commands(count):
        producer.produce(topic, codec.encode_command(command))
        producer.poll(0)
    assert producer.flush(30) == 0


def _require_tansu(bootstrap: str) -> None:
    if broker_flavour(bootstrap) is not BrokerFlavour.TANSU:
        pytest.skip("reproduces a behaviour of the embedded broker (Tansu) only")


def test_fetch_when_listing_outlasts_the_wait_on_the_embedded_broker_returns_no_records(
    kafka_bootstrap: str,
    fresh_topics: Topics,
) -> None:
    _require_tansu(kafka_bootstrap)
    _produce_one_by_one(kafka_bootstrap, fresh_topics.orders.name, Codec(), COMMANDS)

    def records_read(wait_ms: int) -> int:
        consumer = make_consumer(
            kafka_bootstrap, "liveness-probe", **{"fetch.wait.max.ms": wait_ms}
        )
        consumer.assign([TopicPartition(fresh_topics.orders.name, 0, COMMANDS - 10)])
        try:
            deadline = time.monotonic() + 3.0
            read = 0
            while time.monotonic() < deadline and read < 10:
                read += sum(1 for m in consumer.consume(100, 0.1) if m.error() is None)
            high = consumer.get_watermark_offsets(
                TopicPartition(fresh_topics.orders.name, 0), cached=True
            )[1]
            assert high == COMMANDS, "the (empty) fetch responses carry the true end"
            return read
        finally:
            consumer.close()

    assert records_read(1) == 0  # the broker gave up listing before it reached the offset
    assert records_read(1000) == 10  # a wait the listing fits in, even on a busy machine


def test_engine_when_its_consumer_stalls_heals_itself_and_applies_every_command(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
) -> None:
    _require_tansu(kafka_bootstrap)
    codec, markets = Codec(), load_markets()
    _produce_one_by_one(kafka_bootstrap, fresh_topics.orders.name, codec, COMMANDS)
    registry = new_registry()
    service = EngineService(
        bootstrap=kafka_bootstrap,
        config=EngineServiceConfig(
            orders_topic=fresh_topics.orders.name,
            output_topic=fresh_topics.engine_output.name,
            orders_dlq_topic=fresh_topics.orders_dlq.name,
            group_id=f"engine-{fresh_topics.orders.name}",
            snapshot_every_s=3600.0,
            snapshot_on_shutdown=False,
            stall_after_s=1.0,
            fetch_wait_ms=1,  # the stall: no fetch with records ever returns them
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(tmp_path / "snaps"),
        watchdog_sink=WatchdogMetrics(registry),
    )
    done = threading.Event()
    runner = threading.Thread(
        target=lambda: (service.run(threading.Event(), until_offset=COMMANDS), done.set()),
        daemon=True,
    )
    runner.start()

    assert done.wait(60), f"engine still stuck at offset {service.next_offset}"
    assert service.stats.applied == COMMANDS
    # One stall, or more on a loaded machine: each heal doubles the wait until listing fits.
    assert service.watchdog.stalls >= 1
    assert service.fetch_wait is not None and service.fetch_wait >= 50
    assert (
        registry.get_sample_value("exchange_consumer_stalls_total", {"service": "engine"})
        == service.watchdog.stalls
    )


def test_settlement_when_its_consumer_stalls_heals_itself_and_settles_every_output(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
) -> None:
    _require_tansu(kafka_bootstrap)
    codec, markets = Codec(), load_markets()
    engine = Engine(markets)
    topic, parts = fresh_topics.engine_output.name, fresh_topics.engine_output.partitions
    producer = make_producer(kafka_bootstrap, **{"batch.num.messages": 1, "linger.ms": 0})
    outputs = [engine.apply(command) for command in _commands(COMMANDS)]
    assert not any(o.rejections for o in outputs)
    for output in outputs:
        producer.produce(topic, codec.encode_output(output), partition=output.sequence % parts)
        producer.poll(0)
    assert producer.flush(30) == 0
    store = SqliteStore(tmp_path / "store.sqlite3")
    store.init_schema()
    registry = new_registry()
    service = SettlementService(
        bootstrap=kafka_bootstrap,
        config=SettlementConfig(
            output_topic=topic,
            output_dlq_topic=fresh_topics.engine_output_dlq.name,
            group_id=f"settlement-{topic}",
            stall_after_s=1.0,
            fetch_wait_ms=1,
        ),  # the stall, as for the engine
        codec=codec,
        store=store,
        watchdog_sink=WatchdogMetrics(registry),
    )
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 180  # the embedded broker slows as it lists 10k batches
        while service.stats.records < COMMANDS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.stats.records == COMMANDS
        assert service.watchdog.stalls >= 1
        assert (
            registry.get_sample_value("exchange_consumer_stalls_total", {"service": "settlement"})
            == service.watchdog.stalls
        )
    finally:
        stop.set()
        worker.join(30)
    reference = SqliteStore(tmp_path / "reference.sqlite3")
    reference.init_schema()
    reference.apply(outputs)
    assert store.digest() == reference.digest()


def test_watchdog_when_heals_never_help_raises_consumer_stalled_for_a_restart(
    kafka_bootstrap: str,
    fresh_topics: Topics,
) -> None:
    _require_tansu(kafka_bootstrap)
    _produce_one_by_one(kafka_bootstrap, fresh_topics.orders.name, Codec(), COMMANDS)
    orders = (fresh_topics.orders.name, 0)
    consumer = make_consumer(kafka_bootstrap, "watchdog-probe", **{"fetch.wait.max.ms": 1})
    consumer.assign([TopicPartition(*orders, 0)])
    now = [0.0]
    watchdog = ConsumerWatchdog("probe", stall_after_s=5.0, max_heals=2, clock=lambda: now[0])
    try:
        deadline = time.monotonic() + 10
        while consumer.get_watermark_offsets(TopicPartition(*orders), cached=True)[1] < 0:
            assert time.monotonic() < deadline, "no fetch response in 10 s"
            consumer.poll(0.1)
        assert watchdog.check(consumer, {orders: 0}) is None  # behind, not yet stalled
        now[0] += 4.0
        assert watchdog.check(consumer, {orders: 0}) is None
        now[0] += 4.0
        assert watchdog.check(consumer, {orders: 0}, paused=True) is None  # held back
        now[0] += 4.0
        assert watchdog.check(consumer, {orders: 0}) is None  # the clock restarted
        for heal in range(2):
            now[0] += 5.0
            stall = watchdog.check(consumer, {orders: 0})
            assert stall is not None and stall.heals == heal
            assert stall.partitions == {orders: (0, COMMANDS)}
            watchdog.healed()
        now[0] += 5.0
        with pytest.raises(ConsumerStalled):
            watchdog.check(consumer, {orders: 0})
        assert watchdog.stalls == 1 and watchdog.stalled
        now[0] += 1.0
        assert watchdog.check(consumer, {orders: COMMANDS}) is None  # caught up: cleared
        assert not watchdog.stalled
    finally:
        consumer.close()
