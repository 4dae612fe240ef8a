"""Rebuild the read model from the start of ``engine-output``.

Because every write is an idempotent upsert versioned by the engine sequence, replaying the
whole log into an empty store gives exactly the store the live settlement group built, and
replaying it into the live store changes nothing. This reads every partition from offset 0
to its end (found by the fetch's end-of-partition signal, which the embedded broker reports
correctly, unlike ListOffsets) without joining any consumer group.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, TopicPartition

from engine.errors import ExchangeError
from engine.events import EngineOutput
from exchange.errors import DecodeError
from exchange.kafka import make_consumer, where
from settlement.service import OutputDecoder, StoreWriter


class ReplayError(ExchangeError):
    """The log could not be read to its end."""


def replay(
    *,
    bootstrap: str,
    topic: str,
    partitions: int,
    codec: OutputDecoder,
    store: StoreWriter,
    batch_size: int = 5000,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float = 3600.0,
) -> tuple[int, int]:
    """Apply every record of ``topic``; return (outputs applied, records skipped as bad)."""
    consumer = make_consumer(bootstrap, "settlement-replay", **{
        "enable.partition.eof": True, "fetch.max.bytes": 32 << 20, "fetch.wait.max.ms": 10,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    pending = set(range(partitions))
    applied = skipped = 0
    batch: list[EngineOutput] = []
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            if time.monotonic() > deadline:
                raise ReplayError(f"{topic} partitions {sorted(pending)} not read to the end")
            for msg in consumer.consume(batch_size, 0.05):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where(msg)[1])
                        continue
                    raise ReplayError(f"reading {topic}: {err}")
                try:
                    batch.append(codec.decode_output(msg.value() or b""))
                except DecodeError:
                    skipped += 1  # the live service dead-lettered it too
            if len(batch) >= batch_size or (batch and not pending):
                store.apply(batch)
                applied += len(batch)
                batch = []
                if on_progress is not None:
                    on_progress(applied)
        if batch:
            store.apply(batch)
            applied += len(batch)
            if on_progress is not None:
                on_progress(applied)
    finally:
        consumer.close()
    return applied, skipped
