"""``ReadToEnd``: partitions read from given offsets to the end the fetch reports."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from exchange.kafka import ReadToEnd, make_admin, make_consumer, make_producer
from exchange.topics import TopicSpec, ensure_topics


def _fail(_msg: Message, err: KafkaError) -> None:
    raise AssertionError(f"unexpected read error: {err}")


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """Three partitions: 50 records on 0, 5 on 1, none on 2, each written in one batch."""
    name = f"rte{uuid.uuid4().hex[:8]}"
    ensure_topics(make_admin(kafka_bootstrap), (TopicSpec(name=name, partitions=3),))
    producer = make_producer(kafka_bootstrap)
    for partition, count in ((0, 50), (1, 5)):
        for i in range(count):
            producer.produce(name, value=f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(15) == 0
    return name


@pytest.fixture
def eof_consumer(kafka_bootstrap: str) -> Iterator[Consumer]:
    consumer = make_consumer(
        kafka_bootstrap, f"rte{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    yield consumer
    consumer.close()


@pytest.mark.kafka
def test_read_to_end_when_started_at_offsets_yields_exactly_the_records_from_there_to_the_end(
    topic: str,
    eof_consumer: Consumer,
) -> None:
    reading = ReadToEnd(
        eof_consumer, {(topic, 0): 10, (topic, 1): 0, (topic, 2): 0}, timeout_s=30, on_error=_fail
    )

    got = [(m.partition(), m.offset(), m.value()) for m in reading]

    assert sorted(got) == [(0, i, f"0-{i}".encode()) for i in range(10, 50)] + [
        (1, i, f"1-{i}".encode()) for i in range(5)
    ]
    assert [o for p, o, _ in got if p == 0] == list(range(10, 50))  # log order per partition
    assert reading.ends == {(topic, 0): 50, (topic, 1): 5, (topic, 2): 0}
    assert reading.pending == set()


@pytest.mark.kafka
def test_read_to_end_when_start_is_the_end_finishes_at_once_with_no_records(
    topic: str,
    eof_consumer: Consumer,
) -> None:
    reading = ReadToEnd(eof_consumer, {(topic, 1): 5, (topic, 2): 0}, timeout_s=30, on_error=_fail)
    started = time.monotonic()

    got = list(reading)

    assert time.monotonic() - started < 5  # not the deadline
    assert got == []
    assert reading.ends == {(topic, 1): 5, (topic, 2): 0}
    assert reading.pending == set()


@pytest.mark.kafka
def test_read_to_end_when_no_end_of_partition_comes_stops_at_the_deadline_with_it_pending(
    kafka_bootstrap: str,
    topic: str,
) -> None:
    # Without enable.partition.eof librdkafka never reports the end.
    consumer = make_consumer(kafka_bootstrap, f"rte{uuid.uuid4().hex[:8]}")
    reading = ReadToEnd(consumer, {(topic, 1): 0}, timeout_s=1.0, on_error=_fail)
    started = time.monotonic()
    try:
        got = [m.offset() for m in reading]
    finally:
        consumer.close()

    assert 1.0 <= time.monotonic() - started < 10
    assert got == [0, 1, 2, 3, 4]  # what was there is still read
    assert reading.ends == {}
    assert reading.pending == {(topic, 1)}


@pytest.mark.kafka
def test_read_to_end_when_start_is_past_the_end_yields_nothing_and_never_ends_elsewhere(
    kafka_bootstrap: str,
    topic: str,
) -> None:
    consumer = make_consumer(
        kafka_bootstrap,
        f"rte{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True, "auto.offset.reset": "latest"},
    )
    reading = ReadToEnd(consumer, {(topic, 1): 80}, timeout_s=2.0, on_error=_fail)
    try:
        got = list(reading)
    finally:
        consumer.close()

    assert got == []
    # Tansu never reports an end here; Apache Kafka resets the offset and reports the real one.
    assert reading.pending == {(topic, 1)} or reading.ends == {(topic, 1): 5}


class _FakeConsumer:
    """Hands out one scripted batch, then nothing."""

    def __init__(self, batch: list[Message]) -> None:
        self.batches = [batch]
        self.assigned: list[TopicPartition] | None = None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return self.batches.pop(0) if self.batches else []


def _eof(topic: str, partition: int, offset: int) -> Message:
    return Message(
        topic=topic, partition=partition, offset=offset, error=KafkaError(KafkaError._PARTITION_EOF)
    )


def test_read_to_end_when_no_partitions_are_given_yields_nothing_and_assigns_nothing() -> None:
    consumer = _FakeConsumer([])
    reading = ReadToEnd(consumer, {}, timeout_s=30, on_error=_fail)  # type: ignore[arg-type]

    assert list(reading) == []
    assert consumer.assigned is None
    assert reading.ends == {}


def test_read_to_end_when_a_record_is_of_another_partition_drops_it() -> None:
    stale = Message(topic="t", partition=1, offset=7, value=b"old")
    mine = Message(topic="t", partition=0, offset=3, value=b"new")
    consumer = _FakeConsumer([stale, mine, _eof("t", 1, 8), _eof("t", 0, 4)])
    reading = ReadToEnd(
        consumer,
        {("t", 0): 3},
        timeout_s=30,  # type: ignore[arg-type]
        on_error=_fail,
    )

    assert [m.value() for m in reading] == [b"new"]
    assert reading.ends == {("t", 0): 4}


def test_read_to_end_when_on_error_raises_stops_the_read_with_that_error() -> None:
    broken = Message(topic="t", partition=0, error=KafkaError(KafkaError._TRANSPORT))
    consumer = _FakeConsumer([broken, Message(topic="t", partition=0, offset=0, value=b"x")])
    seen: list[KafkaError] = []

    def on_error(_msg: Message, err: KafkaError) -> None:
        seen.append(err)
        raise RuntimeError("stop")

    reading = ReadToEnd(
        consumer,
        {("t", 0): 0},
        timeout_s=30,  # type: ignore[arg-type]
        on_error=on_error,
    )

    with pytest.raises(RuntimeError, match="stop"):
        list(reading)
    assert [e.code() for e in seen] == [KafkaError._TRANSPORT]
    assert reading.pending == {("t", 0)}


def test_read_to_end_when_on_error_returns_reads_on_to_the_end() -> None:
    consumer = _FakeConsumer(
        [
            Message(error=KafkaError(KafkaError._TRANSPORT)),
            Message(topic="t", partition=0, offset=0, value=b"x"),
            _eof("t", 0, 1),
        ]
    )
    seen: list[KafkaError] = []

    def on_error(_msg: Message, err: KafkaError) -> None:
        seen.append(err)

    reading = ReadToEnd(
        consumer,
        {("t", 0): 0},
        timeout_s=30,  # type: ignore[arg-type]
        on_error=on_error,
    )

    assert [m.value() for m in reading] == [b"x"]
    assert len(seen) == 1
    assert reading.ends == {("t", 0): 1}
