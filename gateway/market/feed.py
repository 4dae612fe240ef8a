"""The market feed: every engine output, in sequence order, from a consistent start.

Theory of operation
-------------------
The gateway's books (:mod:`gateway.market.book`) and its streams need every
``EngineOutput`` exactly once and in ``sequence`` order. ``engine-output`` spreads outputs
over N partitions (``sequence % N``, see :mod:`engine.service.output_log`), each in order, so
a background thread reads every partition with its own consumer (``assign``, a throw-away
group that never commits) and merges them: a record whose sequence is not the next one waits
in a min-heap until the ones before it arrived. The sequence is the record key, so records
already covered by the start are skipped without decoding.

Where it starts, and why there: the newest engine snapshot. A snapshot is the engine's whole
state after one sequence, taken only after every output up to it was acknowledged, and it
names, per partition, an offset at or before the first output after it
(``SnapshotMeta.output_scan_from``). So the books restored from it are exactly the books
after that sequence (each market at its own update id), and reading from those offsets,
dropping sequences up to the snapshot's, continues them with no gap and no double. With no
snapshot yet the engine itself starts from an empty state at sequence 0, so the feed replays
``engine-output`` from offset 0. A replay from offset 0 alone is not sound in general:
Apache Kafka deletes records after the retention period (24 h under ``exchange infra``),
while the engine's snapshot plus the log after it is exactly what the engine's own recovery
relies on, and costs a bounded read however old the market is.

If the next sequence never shows up while later ones pile up beyond ``max_pending``, the log
lost records (or the start was wrong): the feed raises, and its loop starts over from the
newest snapshot (the books are reinstalled; a depth-stream client sees a gap and resyncs).

The thread hands ordered batches to the event loop (``call_soon_threadsafe``), where the
books are changed and the streams fed: the REST depth route runs on that loop too, so a
depth answer is always the books between two batches, never a mix. The feed reads ahead of
the loop by at most ``max_backlog`` batches: when the loop is busy fanning out, the feed
waits and the records wait in the log, so the gateway's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from engine.engine import Engine
from engine.errors import ExchangeError
from engine.events import EngineOutput
from engine.markets import Markets
from engine.service.output_log import key_sequence
from engine.service.snapshots import SnapshotStore
from gateway.market.book import LevelBook

log = logging.getLogger(__name__)

CONSUMER_OVERRIDES: dict[str, object] = {"enable.partition.eof": True}


class FeedGapError(ExchangeError):
    """The next output did not arrive while later ones piled up: the log has a hole."""


class OutputDecoder(Protocol):
    def decode_output(self, data: bytes) -> EngineOutput: ...


@dataclass(frozen=True, slots=True)
class Published:
    """One output and when the engine's producer stamped its record (epoch ms)."""

    output: EngineOutput
    published_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """Where the feed starts: the books after ``sequence`` and the partition offsets."""

    sequence: int
    books: dict[str, LevelBook]
    offsets: dict[int, int]
    source: str  # "snapshot <id>" or "replay from offset 0"


def books_from_engine(engine: Engine, markets: Markets) -> dict[str, LevelBook]:
    """Each market's aggregated book (and update id) in a restored engine."""
    return {
        symbol: LevelBook.from_levels(
            symbol,
            engine.update_id(symbol),
            engine.sequence,
            (
                (lv.side, lv.price, lv.quantity, lv.order_count)
                for lv in engine.depth_levels(symbol)
            ),
        )
        for symbol in markets.symbols
    }


def find_start(markets: Markets, snapshots: SnapshotStore | None) -> Start:
    """The newest snapshot's books and offsets, or empty books at offset 0."""
    loaded = snapshots.load_latest() if snapshots is not None else None
    if loaded is None:
        return Start(
            sequence=0,
            books={s: LevelBook(s) for s in markets.symbols},
            offsets={},
            source="replay from offset 0",
        )
    meta, data = loaded
    engine = Engine.restore(data, markets)
    return Start(
        sequence=meta.sequence,
        books=books_from_engine(engine, markets),
        offsets=dict(meta.output_scan_from),
        source=f"snapshot {meta.snapshot_id}",
    )


class MarketFeed:
    """Reads ``topic`` in sequence order and hands batches to the event loop.

    ``on_start(start)`` and ``on_batch(published)`` run on the loop, in that order, and again
    (``on_start`` first) after every restart. The loop calls :meth:`done` when it has
    finished with a batch; at most ``max_backlog`` batches are in its hands at once.
    """

    def __init__(
        self,
        consumer_factory: Callable[[], Consumer],
        topic: str,
        codec: OutputDecoder,
        markets: Markets,
        snapshots: SnapshotStore | None,
        *,
        batch_size: int = 2_000,
        max_pending: int = 200_000,
        max_backlog: int = 4,
    ) -> None:
        self._factory = consumer_factory
        self._topic = topic
        self._decode = codec.decode_output
        self._markets = markets
        self._snapshots = snapshots
        self._batch_size = batch_size
        self._max_pending = max_pending
        # Batches handed to the loop and not yet done with (see done()): the feed reads no
        # further ahead than this, so a busy loop slows the feed, not the other way round
        # (the log keeps what is not read yet; the gateway's memory stays bounded).
        self._max_backlog = max_backlog
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_start: Callable[[Start], None] | None = None
        self._on_batch: Callable[[list[Published]], None] | None = None
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = threading.Event()  # set once the start was installed and assigned
        self.caught_up = threading.Event()  # set once every partition was read to its end
        self.applied_sequence = 0  # the last sequence handed to the loop (feed thread)
        self.start_source = ""  # where the books last started from (logs, tests)
        self.restarts = 0

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_start: Callable[[Start], None],
        on_batch: Callable[[list[Published]], None],
    ) -> None:
        if self._thread is not None:
            return
        self._loop = loop
        self._on_start = on_start
        self._on_batch = on_batch
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gateway-market-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def done(self) -> None:
        """The loop finished with one batch handed to ``on_batch`` (loop thread)."""
        with self._backlog_lock:
            self._backlog -= 1

    def request_restart(self) -> None:
        """Start over from the newest snapshot (the loop found its books inconsistent)."""
        self._restart.set()

    def ready(self) -> str | None:
        """None once the books are installed and the feed has read to the end once."""
        if not self.started.is_set():
            return "market feed: not started yet"
        if not self.caught_up.is_set():
            return "market feed: catching up"
        return None

    # ---- the feed thread ------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception:  # start over from the newest snapshot
                log.exception("market feed failed; starting over in %.1fs", backoff)
                self.started.clear()
                self.caught_up.clear()
                self.restarts += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _post(self, fn: Callable[..., None], arg: object) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # loop closed: shutting down
            return False
        return True

    def _follow(self) -> None:
        start = find_start(self._markets, self._snapshots)
        consumer = self._factory()
        try:
            partitions = self._partitions(consumer)
            if partitions is None:
                return
            consumer.assign(
                [TopicPartition(self._topic, p, start.offsets.get(p, 0)) for p in partitions]
            )
            assert self._on_start is not None and self._on_batch is not None
            if not self._post(self._on_start, start):
                return
            log.info("market feed: books from %s (sequence %d)", start.source, start.sequence)
            self.start_source = start.source
            self.applied_sequence = start.sequence
            self.started.set()
            self._consume(consumer, start.sequence + 1, set(partitions), self._on_batch)
        finally:
            consumer.close()

    def _consume(
        self,
        consumer: Consumer,
        next_seq: int,
        partitions: set[int],
        on_batch: Callable[[list[Published]], None],
    ) -> None:
        decode = self._decode
        stop = self._stop
        pending: list[tuple[int, int, EngineOutput]] = []
        at_end: set[int] = set()
        batch_size = self._batch_size
        while not stop.is_set():
            if self._restart.is_set():
                self._restart.clear()
                raise FeedGapError("the books asked for a restart")
            # Block for the first record only (poll returns as soon as one is there;
            # consume(n, t) would wait out t unless n records came), then take the rest.
            msgs = consumer.consume(batch_size, 0)
            if not msgs:
                first = consumer.poll(0.1)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(batch_size - 1, 0)]
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition() or 0)
                        continue
                    raise KafkaException(err)
                seq = key_sequence(msg.key())
                if seq < next_seq:
                    continue  # covered by the start (or a duplicate)
                kind, ts = msg.timestamp()
                published = 0 if kind == TIMESTAMP_NOT_AVAILABLE else ts
                heapq.heappush(pending, (seq, published, decode(msg.value() or b"")))
            ready: list[Published] = []
            while pending and pending[0][0] <= next_seq:
                seq, published, output = heapq.heappop(pending)
                if seq < next_seq:
                    continue  # a duplicate of one already taken
                ready.append(Published(output, published))
                next_seq += 1
            # Judged after ordering this read's records: the last end-of-log event often
            # comes in the same read as records that wait above until then, and a quiet log
            # sends no other (the gateway would never be ready).
            if not pending and at_end >= partitions and not self.caught_up.is_set():
                self.caught_up.set()
            if len(pending) > self._max_pending:
                raise FeedGapError(
                    f"sequence {next_seq} missing while {len(pending)} later outputs wait"
                )
            if ready:
                self.applied_sequence = next_seq - 1
                while self._backlog >= self._max_backlog and not stop.is_set():
                    stop.wait(0.002)
                with self._backlog_lock:
                    self._backlog += 1
                if not self._post(on_batch, ready):
                    return

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        while not self._stop.is_set():
            try:
                topic = consumer.list_topics(self._topic, timeout=2.0).topics.get(self._topic)
            except KafkaException as e:
                log.warning("market feed: no broker metadata yet (%s)", e)
                continue
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            self._stop.wait(1.0)
        return None
