"""Kafka helpers for tests and benchmarks: produce a command stream, read a log back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError, Message

from engine.commands import Command
from engine.service.output_log import key_sequence
from exchange.codec import Codec
from exchange.kafka import ReadToEnd, make_consumer, make_producer, where


def produce_commands(bootstrap: str, topic: str, commands: Iterable[Command], codec: Codec) -> int:
    producer = make_producer(
        bootstrap,
        **{"linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 2_000_000},
    )
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


def skip_read_errors(_msg: Message, _err: KafkaError) -> None:
    """Tests tolerate transient read errors: the deadline catches a reader that is stuck."""


def read_all(
    bootstrap: str, topic: str, partitions: int, timeout_s: float = 60.0
) -> list[tuple[int, int, bytes]]:
    """Every record of ``topic`` as (sequence-from-key, partition, value), in log order."""
    # A catch-up reader: the broker's bulk fetch wait (a 10 ms one stalls on the embedded
    # broker once listing a partition takes longer; see exchange.kafka).
    consumer = make_consumer(
        bootstrap, "test-reader", latency="bulk", **{"enable.partition.eof": True}
    )
    reading = ReadToEnd(
        consumer,
        {(topic, p): 0 for p in range(partitions)},
        timeout_s=timeout_s,
        on_error=skip_read_errors,
    )
    try:
        out = [(key_sequence(msg.key()), where(msg)[1], msg.value() or b"") for msg in reading]
    finally:
        consumer.close()
    pending = {p for _, p in reading.pending}
    assert not pending, f"partitions {pending} not read to the end"
    return out


def read_headers(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every record of a single-partition ``topic`` as (value, headers); at the deadline, those
    read so far."""
    consumer = make_consumer(bootstrap, "test-dlq-reader", **{"enable.partition.eof": True})
    reading = ReadToEnd(consumer, {(topic, 0): 0}, timeout_s=timeout_s, on_error=skip_read_errors)
    out: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        for msg in reading:
            raw = msg.headers() or []
            pairs = raw.items() if isinstance(raw, dict) else raw
            headers = {k: v if isinstance(v, bytes) else (v or "").encode() for k, v in pairs}
            out.append((msg.value() or b"", headers))
    finally:
        consumer.close()
    return out
