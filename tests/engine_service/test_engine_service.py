"""The engine service on the real broker: outputs, snapshots, recovery and poison input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.markets import Markets, load_markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore, KafkaSnapshotStore, SnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_producer
from exchange.topics import Topics
from ops.workload import command_stream
from tests.support.kafka import produce_commands, produce_raw, read_all, read_headers

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def markets() -> Markets:
    return load_markets()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _service(
    bootstrap: str,
    topics: Topics,
    codec: Codec,
    markets: Markets,
    snapshots: SnapshotStore,
    every: int = 10**9,
) -> EngineService:
    return EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"engine-{topics.orders.name}",
            snapshot_every_commands=every,
            snapshot_every_s=3600.0,
            batch_size=500,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=snapshots,
    )


def _run_to(service: EngineService, offset: int) -> None:
    service.run(threading.Event(), until_offset=offset)


def test_engine_service_when_stream_consumed_publishes_exactly_the_in_process_outputs(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=7, count=20_000, users=200))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    reference = Engine(markets)
    expected = [codec.encode_output(reference.apply(c)) for c in commands]

    service = _service(
        kafka_bootstrap,
        fresh_topics,
        codec,
        markets,
        FileSnapshotStore(tmp_path / "snaps"),
        every=5000,
    )
    _run_to(service, n)

    records = read_all(
        kafka_bootstrap, fresh_topics.engine_output.name, fresh_topics.engine_output.partitions
    )
    by_sequence = sorted(records)
    assert [seq for seq, _, _ in by_sequence] == list(range(1, n + 1))
    assert all(part == seq % fresh_topics.engine_output.partitions for seq, part, _ in by_sequence)
    assert [value for _, _, value in by_sequence] == expected
    assert service.engine.state_hash() == reference.state_hash()


def test_engine_service_when_restarted_from_snapshot_reaches_the_uninterrupted_state(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
) -> None:
    commands = list(command_stream(seed=11, count=6_000, users=50))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    store = KafkaSnapshotStore(
        make_producer(kafka_bootstrap),
        kafka_bootstrap,
        fresh_topics.engine_snapshots.name,
        chunk_size=64 * 1024,
    )

    first = _service(kafka_bootstrap, fresh_topics, codec, markets, store, every=1000)
    _run_to(first, 4_321)  # stops mid-stream; the last snapshot is at or before it
    assert first.stats.snapshots >= 3

    second = _service(kafka_bootstrap, fresh_topics, codec, markets, store, every=1000)
    second.recover()
    assert 0 < second.next_offset <= 4_321
    _run_to(second, n)

    reference = Engine(markets)
    for c in commands:
        reference.apply(c)
    assert second.engine.state_hash() == reference.state_hash()
    records = read_all(
        kafka_bootstrap, fresh_topics.engine_output.name, fresh_topics.engine_output.partitions
    )
    sequences = sorted(seq for seq, _, _ in records)
    assert sequences == list(range(1, n + 1)), "an output was lost or published twice"


def test_engine_service_when_record_is_poison_dead_letters_it_and_keeps_matching(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=3, count=50, users=5))
    produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands[:20], codec)
    produce_raw(kafka_bootstrap, fresh_topics.orders.name, [b"\x00garbage", b""])
    produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands[20:], codec)
    total = len(commands) + 2

    service = _service(
        kafka_bootstrap, fresh_topics, codec, markets, FileSnapshotStore(tmp_path / "snaps")
    )
    _run_to(service, total)

    assert service.stats.dead_lettered == 2
    assert service.stats.applied == len(commands)
    dead = read_headers(kafka_bootstrap, fresh_topics.orders_dlq.name)
    assert [value for value, _ in dead] == [b"\x00garbage", b""]
    assert [h["dlq.source.offset"] for _, h in dead] == [b"20", b"21"]
    assert all(h["dlq.error.type"] == b"DecodeError" for _, h in dead)
    outputs = read_all(
        kafka_bootstrap, fresh_topics.engine_output.name, fresh_topics.engine_output.partitions
    )
    assert sorted(seq for seq, _, _ in outputs) == list(range(1, len(commands) + 1))
