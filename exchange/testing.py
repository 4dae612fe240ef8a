"""Kafka helpers for tests, benchmarks and tools: produce a command stream, read a log back."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError, TopicPartition

from engine.commands import Command
from engine.service.output_log import key_sequence
from exchange.codec import Codec
from exchange.kafka import make_consumer, make_producer, where


def produce_commands(bootstrap: str, topic: str, commands: Iterable[Command],
                     codec: Codec) -> int:
    producer = make_producer(bootstrap, **{"linger.ms": 20, "batch.num.messages": 10000,
                                           "queue.buffering.max.messages": 2_000_000})
    n = 0
    for c in commands:
        while True:
            try:
                producer.produce(topic, codec.encode_command(c), partition=0)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    assert producer.flush(120) == 0
    return n


def produce_raw(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = make_producer(bootstrap)
    for v in values:
        producer.produce(topic, v, partition=0)
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: str, partitions: int, timeout_s: float = 60.0
             ) -> list[tuple[int, int, bytes]]:
    """Every record of ``topic`` as (sequence-from-key, partition, value), in log order."""
    consumer = make_consumer(bootstrap, "test-reader", **{"enable.partition.eof": True,
                                                          "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    pending = set(range(partitions))
    out: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.05):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where(msg)[1])
                    continue
                out.append((key_sequence(msg.key()), where(msg)[1], msg.value() or b""))
    finally:
        consumer.close()
    assert not pending, f"partitions {pending} not read to the end"
    return out


def read_headers(bootstrap: str, topic: str, timeout_s: float = 30.0
                 ) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = make_consumer(bootstrap, "test-dlq-reader", **{"enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                continue
            raw = msg.headers() or []
            pairs = raw.items() if isinstance(raw, dict) else raw
            headers = {k: v if isinstance(v, bytes) else (v or "").encode() for k, v in pairs}
            out.append((msg.value() or b"", headers))
    finally:
        consumer.close()
    return out
