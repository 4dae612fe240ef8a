"""The settlement service: a consumer group on ``engine-output`` writing the read model.

Theory of operation
-------------------
Take up to N records (waiting at most T ms for the first), decode them, write the batch
to the store in one call, and only then mark the batch's offsets for commit. The store's
writes are idempotent upserts versioned by the engine sequence, so a crash anywhere (after
the write, before the commit) only makes the next owner of the partition write the same rows
again, which changes nothing. That is also why offsets are committed asynchronously, at most
every ``commit_every_ms``, instead of after every batch: a synchronous commit per batch cost
a tenth of the loop's time at 5k outputs/s, and all a later commit risks is rewriting the
rows of the last interval after a crash. A partition taken away in a rebalance, and a
stopping worker, commit what they wrote synchronously first.

A record that cannot be decoded goes to ``engine-output.dlq`` with its offset and the
error; the batch goes on without it. While the store is unavailable the service keeps the
batch, pauses fetching (but keeps polling, so it stays in the group), retries with
exponential backoff, reports not-ready, and resumes when a write succeeds. Nothing is
committed until then, so nothing is lost.

Rebalances are safe because the loop is synchronous: partitions can only be revoked inside
``poll``/``consume``, and by then the previous batch is written and committed.

Liveness: a :class:`~exchange.watchdog.ConsumerWatchdog` watches the assigned partitions.
When outputs wait and a partition's position has not moved for ``stall_after_s`` (outside a
store outage, when the worker pauses on purpose), the worker closes its consumer (handing
over what it wrote, as in a rebalance) and joins again with twice the fetch wait; it exits
for a restart if that keeps failing. :meth:`SettlementService.readiness` is what the
worker's ``/ready`` answers: assigned (a rebalance completed), the store writable, not
stalled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from engine.events import EngineOutput
from exchange.dlq import send_to_dlq
from exchange.errors import DecodeError
from exchange.kafka import TopicPart, fetch_wait_ms, make_consumer, make_producer, where
from exchange.watchdog import (
    DEFAULT_STALL_AFTER_S,
    ConsumerWatchdog,
    WatchdogSink,
    escalated_fetch_wait_ms,
)
from settlement.store import StoreUnavailable

log = logging.getLogger(__name__)


class StoreWriter(Protocol):
    def apply(self, outputs: Sequence[EngineOutput]) -> None: ...


class OutputDecoder(Protocol):
    def decode_output(self, data: bytes) -> EngineOutput: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementConfig:
    output_topic: str
    output_dlq_topic: str
    group_id: str = "settlement"
    batch_max_records: int = 2000
    batch_max_ms: int = 50
    commit_every_ms: int = 200
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    stall_after_s: float = DEFAULT_STALL_AFTER_S
    fetch_wait_ms: int | None = None  # None: the broker's default (exchange.kafka)


@dataclass(slots=True)
class SettlementStats:
    batches: int = 0
    records: int = 0
    events: int = 0
    dead_lettered: int = 0
    store_retries: int = 0
    ready: bool = False
    last_batch_sizes: list[int] = field(default_factory=list)


class SettlementService:
    def __init__(
        self,
        *,
        bootstrap: str,
        config: SettlementConfig,
        codec: OutputDecoder,
        store: StoreWriter,
        on_batch: Callable[[Sequence[EngineOutput], float], None] | None = None,
        watchdog_sink: WatchdogSink | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._cfg = config
        self._codec = codec
        self._store = store
        self._on_batch = on_batch
        self.stats = SettlementStats()
        # Next offset to commit per (topic, partition): written to the store, not committed.
        self._pending: dict[tuple[str, int], int] = {}
        self._last_commit = 0.0  # monotonic time of the last commit (set when run starts)
        self.watchdog = ConsumerWatchdog(
            "settlement", stall_after_s=config.stall_after_s, sink=watchdog_sink
        )
        self._fetch_wait_ms = config.fetch_wait_ms
        # Next offset to read per assigned partition: from delivered records, else from the
        # committed offset found when the partition was assigned (-1: not known yet).
        self._positions: dict[TopicPart, int] = {}
        self._assigned_once = False  # a rebalance completed (even with nothing assigned)

    def readiness(self) -> tuple[bool, str]:
        """What ``/ready`` answers: in the group, the store writable, not stalled."""
        if not self._assigned_once:
            return False, "waiting for the group to assign partitions"
        if not self.stats.ready:
            return False, "the store is not writable"
        if self.watchdog.stalled:
            return False, "consumer stalled"
        return True, f"settling {len(self._positions)} partition(s)"

    def _subscribed_consumer(self) -> Consumer:
        cfg = self._cfg
        if self._fetch_wait_ms is None:
            self._fetch_wait_ms = fetch_wait_ms(self._bootstrap)
        consumer = make_consumer(
            self._bootstrap,
            cfg.group_id,
            **{
                "fetch.max.bytes": 32 << 20,
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.wait.max.ms": self._fetch_wait_ms,
            },
        )
        self.watchdog.report_fetch_wait(self._fetch_wait_ms)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._assigned_once = True
            if not partitions:
                return
            try:
                committed = c.committed(partitions, timeout=5.0)
            except KafkaException:
                committed = partitions
            for tp in committed:
                self._positions[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else -1

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            # Runs inside poll/consume, after the last batch was written: hand over exactly
            # what this worker has settled, so the next owner starts there.
            revoked = {(tp.topic, tp.partition) for tp in partitions}
            self._commit_pending(c, revoked)
            for tp in revoked:
                self._positions.pop(tp, None)

        consumer.subscribe([cfg.output_topic], on_assign=on_assign, on_revoke=on_revoke)
        return consumer

    def run(self, stop: threading.Event) -> SettlementStats:
        cfg = self._cfg
        consumer = self._subscribed_consumer()
        dlq = make_producer(self._bootstrap)
        self._last_commit = time.monotonic()
        self.stats.ready = True
        try:
            while not stop.is_set():
                if self.watchdog.check(consumer, self._positions) is not None:
                    consumer.close()  # revokes: commits what this worker wrote
                    self._positions.clear()
                    self._fetch_wait_ms = escalated_fetch_wait_ms(self._fetch_wait_ms or 0)
                    consumer = self._subscribed_consumer()
                    self.watchdog.healed()
                # Checked on idle turns too: the last batches of a burst must not wait for
                # the next record to be committed (lag dashboards would show them unread).
                if self._pending and (
                    time.monotonic() - self._last_commit >= cfg.commit_every_ms / 1000
                ):
                    self._commit_pending(consumer, None, asynchronous=True)
                # Smart batching: wait up to T ms for the first record only, then take
                # everything already fetched (up to N). Under load batches grow by themselves
                # while the previous one is written; when idle nothing waits to fill a batch.
                msgs = consumer.consume(cfg.batch_max_records, 0)
                if not msgs:
                    first = consumer.poll(cfg.batch_max_ms / 1000)
                    if first is None:
                        continue
                    more = cfg.batch_max_records - 1
                    msgs = [first, *(consumer.consume(more, 0) if more else [])]
                self._handle(consumer, dlq, msgs, stop)
            self._commit_pending(consumer, None)
        finally:
            self.stats.ready = False
            dlq.flush(10)
            consumer.close()  # leaves the group now, so the others take over at once
        return self.stats

    def _handle(
        self, consumer: Consumer, dlq: Producer, msgs: list[Message], stop: threading.Event
    ) -> None:
        decode = self._codec.decode_output
        outputs: list[EngineOutput] = []
        dead = 0
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("engine-output fetch error: %s", err)
                continue
            topic, partition, offset = where(msg)
            next_offsets[(topic, partition)] = offset + 1
            self._positions[(topic, partition)] = offset + 1
            try:
                outputs.append(decode(msg.value() or b""))
            except DecodeError as e:
                send_to_dlq(dlq, self._cfg.output_dlq_topic, msg, e, "settlement")
                dead += 1
        self.stats.dead_lettered += dead
        # The DLQ copy must be durable before the offset that skips the record commits.
        while dead and dlq.flush(1.0) > 0:
            log.warning("waiting for the broker to acknowledge dead-letter records...")
        if outputs:
            started = time.monotonic()
            if not self._write(consumer, outputs, stop):
                return  # stopping while the store is down: commit nothing
            elapsed = time.monotonic() - started
            if self._on_batch is not None:
                self._on_batch(outputs, elapsed)
            self.stats.batches += 1
            self.stats.records += len(outputs)
            self.stats.events += sum(_events_in(o) for o in outputs)
        self._pending.update(next_offsets)

    def _commit_pending(
        self, consumer: Consumer, only: set[tuple[str, int]] | None, *, asynchronous: bool = False
    ) -> None:
        """Commit the pending offsets (of ``only`` those partitions, when given)."""
        keys = [k for k in self._pending if only is None or k in only]
        if not keys:
            return
        offsets = [TopicPartition(t, p, self._pending.pop((t, p))) for t, p in keys]
        self._last_commit = time.monotonic()
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            # Lost the partitions in a rebalance: the new owner rewrites the same rows,
            # which the versioned upserts make harmless.
            log.warning("offset commit failed (%s); those outputs will be re-applied", e)

    def _write(
        self, consumer: Consumer, outputs: list[EngineOutput], stop: threading.Event
    ) -> bool:
        delay = self._cfg.backoff_initial_s
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    self._store.apply(outputs)
                    self.stats.ready = True
                    if paused:  # lag that sat still while paused was no stall
                        self.watchdog.reset()
                    return True
                except StoreUnavailable as e:
                    self.stats.ready = False
                    self.stats.store_retries += 1
                    log.warning("store unavailable (%s); retrying in %.1fs", e, delay)
                    if not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
                    deadline = time.monotonic() + delay
                    while time.monotonic() < deadline:
                        if stop.is_set():
                            return False
                        consumer.poll(0.1)  # keeps group membership; paused => no records
                    delay = min(self._cfg.backoff_max_s, delay * 2)
        finally:
            if paused:
                consumer.resume(paused)


def _events_in(o: EngineOutput) -> int:
    return (
        len(o.trades)
        + len(o.order_placements)
        + len(o.order_updates)
        + len(o.order_completions)
        + len(o.balance_updates)
        + len(o.rejections)
        + len(o.depth_updates)
        + len(o.user_creations)
        + len(o.api_key_updates)
    )
