"""The ``engine-output`` log: where each output goes, and what was already published.

Partitioning: output ``sequence`` goes to partition ``sequence % N`` (N fixed for the
topic's life; ``ensure_topics`` refuses a changed count), keyed by the sequence as 8
big-endian bytes. Round-robin by sequence spreads the settlement work evenly; correctness
downstream never depends on order across partitions, because every write is versioned by
the sequence.

Recovery: the idempotent producer writes each partition as a gap-free prefix of what was
sent to it, even across a crash. So after a crash, partition ``p`` holds every output with
``sequence % N == p`` up to some last sequence ``L_p`` and none after. Replaying the
(deterministic) engine and publishing exactly the outputs with ``sequence > L_p`` restores
every sequence exactly once. ``L_p`` is found by reading each partition from a known
offset (the snapshot records one) to its end, detected by the fetch's end-of-partition
signal rather than ListOffsets (see :class:`exchange.kafka.ReadToEnd`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from engine.errors import ExchangeError
from exchange.kafka import ReadToEnd, make_admin, make_consumer, where

SEQ_KEY = struct.Struct(">Q")


class OutputLogError(ExchangeError):
    """The output log could not be read back."""


def sequence_key(sequence: int) -> bytes:
    return SEQ_KEY.pack(sequence)


def key_sequence(key: bytes | None) -> int:
    if key is None or len(key) != SEQ_KEY.size:
        raise OutputLogError(f"engine-output record has a malformed key: {key!r}")
    return int(SEQ_KEY.unpack(key)[0])


@dataclass(frozen=True, slots=True)
class PartitionTail:
    last_sequence: int  # 0 when nothing was ever published to the partition
    last_offset: int  # -1 when empty
    last_value: bytes | None


def scan_tails(
    bootstrap: str, topic: str, start_offsets: dict[int, int], timeout_s: float = 120.0
) -> dict[int, PartitionTail]:
    """Read each partition from ``start_offsets[p]`` to its end; report its last record.

    The end is the fetch's, not ListOffsets' (see :class:`exchange.kafka.ReadToEnd`).
    """

    def fail(_msg: Message, err: KafkaError) -> None:
        raise OutputLogError(f"reading {topic}: {err}")

    consumer = make_consumer(
        bootstrap,
        "engine-output-tail-scan",
        latency="bulk",
        **{"enable.partition.eof": True, "max.partition.fetch.bytes": 8 << 20},
    )
    tails = {p: PartitionTail(0, -1, None) for p in start_offsets}
    reading = ReadToEnd(
        consumer,
        {(topic, p): off for p, off in start_offsets.items()},
        timeout_s=timeout_s,
        on_error=fail,
    )
    try:
        for msg in reading:
            _, p, offset = where(msg)
            seq = key_sequence(msg.key())
            if seq > tails[p].last_sequence:
                tails[p] = PartitionTail(seq, offset, msg.value())
    finally:
        consumer.close()
    if reading.pending:
        raise OutputLogError(
            f"could not read {topic} partitions {sorted(p for _, p in reading.pending)} "
            f"to the end in {timeout_s}s"
        )
    return tails


def partitions_of(bootstrap: str, topic: str) -> int:
    meta = make_admin(bootstrap).list_topics(topic, timeout=15).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise OutputLogError(f"topic {topic!r} does not exist (run `exchange topics`)")
    return len(meta.partitions)
