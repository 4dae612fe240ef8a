"""The engine service loop: ``orders`` -> engine core -> ``engine-output``.

Theory of operation
-------------------
One process is the single writer. It consumes the one partition of ``orders`` in order;
each record's offset is the command id (and a new order's id). Each command yields exactly
one output, published to ``engine-output`` (see :mod:`engine.service.output_log` for
partitioning). Nothing here reads the clock on the engine's behalf: timestamps travel on the
commands, so a replay reproduces every output byte for byte.

Crash safety does not rest on broker transactions (the embedded broker's are not
trustworthy). On start the service loads the newest whole snapshot (engine state, next
``orders`` offset, sequence), reads the tail of every output partition to learn the last
sequence each one holds, then replays ``orders`` from the snapshot's offset: outputs the log
already holds are recomputed silently (the newest one per partition is compared byte for
byte, which guards determinism), the rest are published. So after any crash every sequence
appears exactly once on the log.

Snapshots are taken every N commands or T seconds, after flushing the producer (so every
output up to the snapshot's sequence is on the log). The state is serialised by a forked
copy-on-write child, so matching pauses only for the fork (measured and exported); a
background thread collects the bytes and writes them out. Why that child cannot deadlock is
in :mod:`engine.service.forked_snapshot`.

An ``orders`` record that cannot be decoded goes to ``orders.dlq`` with its offset and the
error, and matching goes on. A delivery failure or an engine invariant error stops the
process: the supervisor restarts it and recovery replays.

Liveness: a :class:`~exchange.watchdog.ConsumerWatchdog` watches the ``orders`` position.
When commands wait and the position has not moved for ``stall_after_s``, the loop rebuilds
its consumer at the same offset with twice the fetch wait (what frees a consumer whose
fetches the embedded broker can no longer answer in time, see :mod:`exchange.kafka`), and
exits for a restart if that keeps failing. :meth:`EngineService.readiness` is what the
engine's ``/ready`` answers: recovered, consuming (a fetch answered) and not stalled.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from engine.commands import Command
from engine.errors import ExchangeError, InvariantError
from engine.events import EngineOutput
from engine.service.forked_snapshot import serialize_in_child
from engine.service.output_log import PartitionTail, partitions_of, scan_tails, sequence_key
from engine.service.snapshots import SnapshotMeta, SnapshotStore
from exchange.dlq import send_to_dlq
from exchange.errors import DecodeError
from exchange.kafka import fetch_wait_ms, make_consumer, make_producer, where
from exchange.watchdog import (
    DEFAULT_STALL_AFTER_S,
    ConsumerWatchdog,
    WatchdogSink,
    escalated_fetch_wait_ms,
)

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    @property
    def sequence(self) -> int: ...

    def apply(self, command: Command) -> EngineOutput: ...

    def snapshot(self) -> bytes: ...

    def snapshot_body(self) -> bytes: ...

    def state_hash(self) -> str: ...


class CodecLike(Protocol):
    def decode_command(self, data: bytes, *, command_id: int) -> Command: ...

    def encode_output(self, output: EngineOutput) -> bytes: ...


class EngineMetricsSink(Protocol):
    """What the loop reports to (see :class:`exchange.metrics.EngineMetrics`): once per
    consumed batch and once per snapshot, never per command."""

    def record_batch(
        self, outputs: Sequence[EngineOutput], published: int, sequence: int
    ) -> None: ...

    def record_snapshot_pause(self, seconds: float) -> None: ...


class DeliveryError(ExchangeError):
    """An output could not be delivered; the process must stop and recover."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineServiceConfig:
    orders_topic: str
    output_topic: str
    orders_dlq_topic: str
    group_id: str = "engine"
    batch_size: int = 5000
    snapshot_every_commands: int = 100_000
    snapshot_every_s: float = 60.0
    snapshot_on_shutdown: bool = True
    # Serialise snapshots in a forked copy-on-write child (Linux): matching pauses for the
    # fork only. Off: serialise inline (the pause grows with the book).
    snapshot_fork: bool = True
    commit_every_s: float = 1.0
    # Liveness (see the module docstring): the stall period, and the fetch wait the orders
    # consumer starts with (None: the broker's default, see exchange.kafka).
    stall_after_s: float = DEFAULT_STALL_AFTER_S
    fetch_wait_ms: int | None = None


@dataclass(slots=True)
class EngineStats:
    applied: int = 0
    published: int = 0
    replayed_silently: int = 0
    dead_lettered: int = 0
    snapshots: int = 0
    snapshot_pause_s: list[float] = field(default_factory=list)
    recovery_s: float = 0.0


class EngineService:
    def __init__(
        self,
        *,
        bootstrap: str,
        config: EngineServiceConfig,
        codec: CodecLike,
        new_engine: Callable[[], EngineLike],
        restore_engine: Callable[[bytes], EngineLike],
        snapshots: SnapshotStore,
        on_output: Callable[[EngineOutput], None] | None = None,
        metrics: EngineMetricsSink | None = None,
        watchdog_sink: WatchdogSink | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._cfg = config
        self._codec = codec
        self._new_engine = new_engine
        self._restore_engine = restore_engine
        self._snapshots = snapshots
        self._on_output = on_output
        self._metrics = metrics
        self.stats = EngineStats()
        self._engine: EngineLike | None = None
        self._next_offset = 0
        self._partitions = 0
        self._skip_until: dict[int, int] = {}
        self._tails: dict[int, PartitionTail] = {}
        self._scan_from: dict[int, int] = {}
        self._delivery_errors: list[KafkaError] = []
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_failed: BaseException | None = None
        self.watchdog = ConsumerWatchdog(
            "engine", stall_after_s=config.stall_after_s, sink=watchdog_sink
        )
        self._fetch_wait_ms = config.fetch_wait_ms
        self._consuming = False  # set once the orders consumer had a fetch answered

    @property
    def engine(self) -> EngineLike:
        if self._engine is None:
            raise InvariantError("engine service used before recover()")
        return self._engine

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def fetch_wait(self) -> int | None:
        """The orders consumer's current ``fetch.wait.max.ms`` (None before it runs)."""
        return self._fetch_wait_ms

    def readiness(self) -> tuple[bool, str]:
        """What ``/ready`` answers: ready once recovered and consuming, unless stalled."""
        if self._engine is None:
            return False, "recovering"
        if not self._consuming:
            return False, "orders consumer not answered yet"
        if self.watchdog.stalled:
            return False, f"orders consumer stalled at offset {self._next_offset}"
        return True, f"consuming orders at offset {self._next_offset}"

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> None:
        started = time.monotonic()
        loaded = self._snapshots.load_latest()
        if loaded is None:
            self._engine = self._new_engine()
            self._next_offset = 0
            scan_from: dict[int, int] = {}
            snapshot_sequence = 0
            log.info("no snapshot: starting from an empty engine at orders offset 0")
        else:
            meta, data = loaded
            self._engine = self._restore_engine(data)
            if meta.state_hash and self._engine.state_hash() != meta.state_hash:
                raise InvariantError(
                    f"snapshot {meta.snapshot_id} restored to a different "
                    "state hash than it was taken with"
                )
            self._next_offset = meta.orders_next_offset
            scan_from = dict(meta.output_scan_from)
            snapshot_sequence = meta.sequence
            log.info(
                "restored snapshot at sequence %d (orders offset %d, %d bytes)",
                meta.sequence,
                meta.orders_next_offset,
                meta.size,
            )
        self._partitions = partitions_of(self._bootstrap, self._cfg.output_topic)
        for p in range(self._partitions):
            scan_from.setdefault(p, 0)
        self._tails = scan_tails(self._bootstrap, self._cfg.output_topic, scan_from)
        self._skip_until = {p: t.last_sequence for p, t in self._tails.items()}
        self._scan_from = {
            p: (t.last_offset if t.last_offset >= 0 else scan_from[p])
            for p, t in self._tails.items()
        }
        for p in range(self._partitions):
            # Every output up to the snapshot was flushed before it was taken.
            expected = _last_sequence_in_partition(snapshot_sequence, p, self._partitions)
            if self._skip_until[p] < expected:
                raise InvariantError(
                    f"{self._cfg.output_topic}[{p}] ends at sequence {self._skip_until[p]} but "
                    f"the snapshot says it held {expected}: the output log lost records"
                )
        self.stats.recovery_s = time.monotonic() - started
        log.info("recovered in %.2fs; output tails %s", self.stats.recovery_s, self._skip_until)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, until_offset: int | None = None) -> EngineStats:
        """Process until ``stop`` is set (or ``until_offset`` is reached, for tools/tests)."""
        if self._engine is None:
            self.recover()
        cfg = self._cfg
        if self._fetch_wait_ms is None:
            self._fetch_wait_ms = fetch_wait_ms(self._bootstrap)
        consumer = self._orders_consumer()
        producer = make_producer(
            self._bootstrap,
            **{
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "batch.size": 4 << 20,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1 << 20,
                # A broker outage makes us wait, never drop: no delivery deadline.
                "message.timeout.ms": 0,
            },
        )
        orders = (cfg.orders_topic, 0)
        watchdog = self.watchdog
        last_commit = time.monotonic()
        last_snapshot = time.monotonic()
        since_snapshot = 0
        committed = -1
        try:
            while not stop.is_set():
                if until_offset is not None and self._next_offset >= until_offset:
                    break
                want = cfg.batch_size
                if until_offset is not None:
                    want = min(want, until_offset - self._next_offset)
                # Block for the first record only, then take whatever else is already
                # fetched: a batch never waits for stragglers, so latency stays low at any rate.
                msgs = consumer.consume(want, 0)
                if not msgs:
                    first = consumer.poll(0.05)
                    if first is not None:
                        msgs = [first, *consumer.consume(want - 1, 0)] if want > 1 else [first]
                if msgs:
                    since_snapshot += self._process(msgs, producer)
                if not self._consuming:
                    marks = consumer.get_watermark_offsets(TopicPartition(*orders), cached=True)
                    self._consuming = marks is not None and marks[1] >= 0
                if watchdog.check(consumer, {orders: self._next_offset}) is not None:
                    consumer.close()
                    self._fetch_wait_ms = escalated_fetch_wait_ms(self._fetch_wait_ms)
                    consumer = self._orders_consumer()
                    watchdog.healed()
                producer.poll(0)
                if self._delivery_errors:
                    raise DeliveryError(f"output delivery failed: {self._delivery_errors[0]}")
                if self._snapshot_failed is not None:
                    log.error("snapshot write failed (will retry): %s", self._snapshot_failed)
                    self._snapshot_failed = None
                now = time.monotonic()
                if since_snapshot and (
                    since_snapshot >= cfg.snapshot_every_commands
                    or now - last_snapshot >= cfg.snapshot_every_s
                ):
                    self._snapshot(producer)
                    since_snapshot = 0
                    last_snapshot = now
                if now - last_commit >= cfg.commit_every_s and self._next_offset != committed:
                    self._flush(producer)
                    self._commit(consumer)
                    committed = self._next_offset
                    last_commit = now
            self._flush(producer)
            self._commit(consumer)
            if cfg.snapshot_on_shutdown and since_snapshot:
                self._snapshot(producer)
            self._wait_snapshot()
        finally:
            self._consuming = False
            consumer.close()
        return self.stats

    def _orders_consumer(self) -> Consumer:
        """A consumer of ``orders`` assigned at the next offset to apply."""
        wait = self._fetch_wait_ms
        overrides: dict[str, Any] = {
            "fetch.max.bytes": 32 << 20,
            "max.partition.fetch.bytes": 16 << 20,
            "queued.max.messages.kbytes": 256 << 10,
        }
        if wait is not None:
            overrides["fetch.wait.max.ms"] = wait
        consumer = make_consumer(self._bootstrap, self._cfg.group_id, **overrides)
        consumer.assign([TopicPartition(self._cfg.orders_topic, 0, self._next_offset)])
        if wait is not None:
            self.watchdog.report_fetch_wait(wait)
        return consumer

    def _process(self, msgs: list[Message], producer: Producer) -> int:
        engine = self.engine
        apply = engine.apply
        decode = self._codec.decode_command
        encode = self._codec.encode_output
        topic = self._cfg.output_topic
        n_parts = self._partitions
        skip_until = self._skip_until
        on_delivery = self._on_delivery
        on_output = self._on_output
        metrics = self._metrics
        # Outputs of this batch, for one metrics call after the loop (None: no metrics).
        batch: list[EngineOutput] | None = [] if metrics is not None else None
        published_before = self.stats.published
        applied = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("orders fetch error: %s", err)
                continue
            offset = where(msg)[2]
            if offset < self._next_offset:
                continue  # already applied (a re-fetch after a seek)
            try:
                command = decode(msg.value() or b"", command_id=offset)
            except DecodeError as e:
                self._dead_letter(producer, msg, e)
                self._next_offset = offset + 1
                continue
            output = apply(command)
            applied += 1
            seq = output.sequence
            part = seq % n_parts
            if seq > skip_until[part]:
                value = encode(output)
                while True:
                    try:
                        producer.produce(topic, value, sequence_key(seq), part, on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)  # queue full (broker slow or down): wait
                self.stats.published += 1
            else:
                self.stats.replayed_silently += 1
                tail = self._tails[part]
                if seq == tail.last_sequence and encode(output) != tail.last_value:
                    raise InvariantError(
                        f"replayed output {seq} differs from the one already published: "
                        "the engine is not deterministic"
                    )
            if on_output is not None:
                on_output(output)
            if batch is not None:
                batch.append(output)
            self._next_offset = offset + 1
        self.stats.applied += applied
        if metrics is not None and batch:
            metrics.record_batch(batch, self.stats.published - published_before, engine.sequence)
        return applied

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)
        else:
            _, partition, offset = where(msg)
            self._scan_from[partition] = offset

    def _dead_letter(self, producer: Producer, msg: Message, error: Exception) -> None:
        send_to_dlq(producer, self._cfg.orders_dlq_topic, msg, error, "engine")
        self.stats.dead_lettered += 1

    def _flush(self, producer: Producer) -> None:
        while producer.flush(1.0) > 0:
            if self._delivery_errors:
                break
            log.warning("waiting for the broker to acknowledge outputs...")
        if self._delivery_errors:
            raise DeliveryError(f"output delivery failed: {self._delivery_errors[0]}")

    def _commit(self, consumer: Any) -> None:
        # Committed offsets only feed lag dashboards; recovery uses snapshots and the log.
        try:
            consumer.commit(
                offsets=[TopicPartition(self._cfg.orders_topic, 0, self._next_offset)],
                asynchronous=False,
            )
        except Exception as e:  # a failed commit costs only dashboard accuracy
            log.warning("committing the orders offset failed: %s", e)

    # -- snapshots --------------------------------------------------------------------------

    def _snapshot(self, producer: Producer) -> None:
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            return  # the previous one is still being written; the next interval retries
        self._flush(producer)
        started = time.monotonic()
        engine = self.engine
        meta = SnapshotMeta(
            snapshot_id=engine.sequence,
            orders_next_offset=self._next_offset,
            sequence=engine.sequence,
            output_scan_from=dict(self._scan_from),
        )
        if self._cfg.snapshot_fork and hasattr(os, "fork"):
            serialized = serialize_in_child(engine)
        else:
            data = engine.snapshot()

            def serialized() -> bytes:
                return data

        pause = time.monotonic() - started
        self.stats.snapshot_pause_s.append(pause)
        if self._metrics is not None:
            self._metrics.record_snapshot_pause(pause)
        log.info("snapshot at sequence %d: matching paused %.1f ms", meta.sequence, pause * 1000)
        self._snapshot_thread = threading.Thread(
            target=self._write_snapshot,
            args=(meta, serialized),
            name="snapshot-writer",
            daemon=True,
        )
        self._snapshot_thread.start()

    def _write_snapshot(self, meta: SnapshotMeta, serialized: Callable[[], bytes]) -> None:
        try:
            data = serialized()
            self._snapshots.save(meta, data)
            log.info("snapshot at sequence %d written: %d bytes", meta.sequence, len(data))
            self.stats.snapshots += 1
        except BaseException as e:  # reported by the loop; the next interval retries
            self._snapshot_failed = e

    def _wait_snapshot(self) -> None:
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()


def _last_sequence_in_partition(sequence: int, partition: int, partitions: int) -> int:
    """The largest s <= sequence with s % partitions == partition (0 if none)."""
    if sequence <= 0:
        return 0
    s = sequence - ((sequence - partition) % partitions)
    return s if s > 0 else 0
