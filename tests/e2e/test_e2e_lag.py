"""Lag on Apache Kafka: the broker's high watermark is right, so the exporter reports exactly
``kafka-consumer-groups``' definition (log end minus committed) without reading any tail."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from stack_testkit import require_real_stack

from exchange.kafka import make_consumer, make_producer
from exchange.topics import Topics
from ops.lag import LagMonitor

pytestmark = pytest.mark.e2e


def _produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    producer = make_producer(bootstrap)
    for i in range(count):
        producer.produce(topic, value=b"x%d" % i, partition=partition)
        if i % 97 == 0:
            producer.flush()  # many small batches: Tansu's ListOffsets would read low here
    assert producer.flush(30) == 0


def test_lag_when_broker_is_apache_kafka_equals_log_end_minus_committed_without_tail_scan(
    kafka_bootstrap: str,
    fresh_topics: Topics,
) -> None:
    require_real_stack()
    orders, output = fresh_topics.orders.name, fresh_topics.engine_output.name
    group = f"{orders}-lag"
    _produce(kafka_bootstrap, orders, 0, 1234)
    for partition, count in enumerate((500, 301, 7, 0)):
        _produce(kafka_bootstrap, output, partition, count)
    committer = make_consumer(kafka_bootstrap, group)
    committer.commit(
        offsets=[
            TopicPartition(orders, 0, 1000),
            TopicPartition(output, 0, 500),
            TopicPartition(output, 1, 1),
        ],
        asynchronous=False,
    )

    monitor = LagMonitor(kafka_bootstrap, {group: (orders, output)})
    try:
        sample = monitor.sample()
        assert monitor.tail_scan is False
    finally:
        monitor.close()

    # kafka-consumer-groups' definition: high watermark minus committed (log start if none).
    expected = {}
    parts = [TopicPartition(orders, 0)] + [TopicPartition(output, p) for p in range(4)]
    for tp in committer.committed(parts, timeout=15):
        low, high = committer.get_watermark_offsets(tp, timeout=15)
        expected[(tp.topic, tp.partition)] = high - (tp.offset if tp.offset >= 0 else low)
    committer.close()
    got = {(p.topic, p.partition): p.lag for p in sample.partitions}
    assert got == expected
    assert got == {
        (orders, 0): 234,
        (output, 0): 0,
        (output, 1): 300,
        (output, 2): 7,
        (output, 3): 0,
    }
