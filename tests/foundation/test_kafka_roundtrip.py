"""Produce and consume through the real broker with the project's client settings."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from exchange.kafka import make_admin, make_consumer, make_producer
from exchange.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.kafka


def _poll_n(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got.append(msg)
    return got


def test_consumer_group_when_restarted_resumes_from_committed_offset(
    kafka_bootstrap: str,
) -> None:
    topic = f"rt{uuid.uuid4().hex[:8]}"
    group = f"g{uuid.uuid4().hex[:8]}"
    ensure_topics(make_admin(kafka_bootstrap), (TopicSpec(name=topic, partitions=1),))
    producer = make_producer(kafka_bootstrap)
    for i in range(10):
        producer.produce(topic, key=b"k", value=f"v{i}".encode())
    assert producer.flush(15) == 0

    first = make_consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    got = _poll_n(first, 6)
    assert [m.value() for m in got[:6]] == [f"v{i}".encode() for i in range(6)]
    # Commit only what was processed: offset of the next record to read.
    first.commit(offsets=[TopicPartition(topic, 0, got[5].offset() + 1)], asynchronous=False)
    first.close()

    second = make_consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    rest = _poll_n(second, 4)
    second.close()

    assert [m.value() for m in rest] == [f"v{i}".encode() for i in range(6, 10)]


def test_producer_when_idempotent_reports_every_delivery_with_offsets(
    kafka_bootstrap: str,
) -> None:
    topic = f"dr{uuid.uuid4().hex[:8]}"
    ensure_topics(make_admin(kafka_bootstrap), (TopicSpec(name=topic, partitions=1),))
    producer = make_producer(kafka_bootstrap)
    offsets: list[int] = []

    def on_delivery(err: object, msg: Message) -> None:
        assert err is None
        offsets.append(msg.offset())

    for i in range(5):
        producer.produce(topic, value=str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(15) == 0

    assert offsets == [0, 1, 2, 3, 4]
