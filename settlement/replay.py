"""Rebuild the read model from the start of ``engine-output``.

Because every write is an idempotent upsert versioned by the engine sequence, replaying the
whole log into an empty store gives exactly the store the live settlement group built, and
replaying it into the live store changes nothing. This reads every partition from offset 0
to its end (the fetch's end, not ListOffsets': see :class:`exchange.kafka.ReadToEnd`)
without joining any consumer group.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaError, Message

from engine.errors import ExchangeError
from engine.events import EngineOutput
from exchange.errors import DecodeError
from exchange.kafka import ReadToEnd, make_consumer
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

    def fail(_msg: Message, err: KafkaError) -> None:
        raise ReplayError(f"reading {topic}: {err}")

    consumer = make_consumer(
        bootstrap,
        "settlement-replay",
        latency="bulk",
        **{
            "enable.partition.eof": True,
            "fetch.max.bytes": 32 << 20,
        },
    )
    reading = ReadToEnd(
        consumer,
        {(topic, p): 0 for p in range(partitions)},
        timeout_s=timeout_s,
        on_error=fail,
        max_messages=batch_size,
    )
    applied = skipped = 0
    batch: list[EngineOutput] = []

    def flush() -> None:
        nonlocal applied, batch
        store.apply(batch)
        applied += len(batch)
        batch = []
        if on_progress is not None:
            on_progress(applied)

    try:
        for msg in reading:
            try:
                batch.append(codec.decode_output(msg.value() or b""))
            except DecodeError:
                skipped += 1  # the live service dead-lettered it too
            if len(batch) >= batch_size:
                flush()
        if reading.pending:
            raise ReplayError(
                f"{topic} partitions {sorted(p for _, p in reading.pending)} not read to the end"
            )
        if batch:
            flush()
    finally:
        consumer.close()
    return applied, skipped
