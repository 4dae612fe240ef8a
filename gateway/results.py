"""The engine-output follower behind ``?wait=true``: match outputs to waiting requests.

Theory of operation
-------------------
A ``?wait=true`` request publishes its command like any other, learns the command id (the
record's offset) from the delivery report, then waits for the ``EngineOutput`` whose
``command_id`` is that offset. A background thread consumes every partition of
``engine-output`` with its own consumer (plain ``assign``, a throw-away group id that never
commits: it is not the settlement group and takes nothing from it), decodes outputs and hands
them to the event loop in batches, where they resolve waiters by command id.

Races and bounds:

* The output may arrive before the request registered its waiter (the delivery report and
  the output race each other). Outputs nobody waits for yet go to a small FIFO cache keyed by
  command id, which :meth:`OutputFollower.wait` checks first. The cache is bounded
  (``cache_size``) and the number of requests waiting at once is capped (``max_waiters``);
  beyond the cap :meth:`OutputFollower.try_begin` says no and the request answers 202
  without waiting.
* Only while at least one waiting request is in flight does the thread decode anything.
  When nobody waits (the usual case) it skips records unread, so the follower costs almost
  nothing under plain load.
* The follower starts near the end of each partition. The embedded broker answers the
  "latest offset" query too low, so it may start earlier and read old outputs: records
  produced well before the follower started (``skip_older_than_ms``, by their timestamp) are
  skipped without decoding, and any other unknown command id only lands in the bounded
  cache. No correctness rests on the start position.
* Taps (:attr:`OutputFollower.taps`) see every record fetched, before any waiter; the key
  registry's feed is one (:mod:`gateway.auth.keyfeed`), and chooses the start positions
  (``start_positions``) so that no key update falls between the store and the stream. With
  taps, a rebuilt consumer resumes where the last one stopped rather than at the end.
* Liveness: a :class:`~exchange.watchdog.ConsumerWatchdog` watches the follower's
  positions; when outputs wait and a position has not moved for ``stall_after_s`` the
  follower rebuilds its consumer (at the end, with twice the fetch wait: waits in flight
  time out into 202s, nothing else depends on what it skips). :meth:`OutputFollower.ready`
  is what the gateway's ``/ready`` asks: following, and not stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import (
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from engine.events import EngineOutput
from exchange.errors import DecodeError
from exchange.kafka import TopicPart
from exchange.watchdog import (
    DEFAULT_STALL_AFTER_S,
    ConsumerWatchdog,
    WatchdogSink,
    escalated_fetch_wait_ms,
)

log = logging.getLogger(__name__)

# Consumer settings of the follower, on top of exchange.kafka's (whose fetch wait suits a
# latency-sensitive loop on either broker).
CONSUMER_OVERRIDES: dict[str, object] = {
    "enable.partition.eof": False,
}


class OutputDecoder(Protocol):
    def decode_output(self, data: bytes) -> EngineOutput: ...


class OutputFollower:
    """Follows ``topic`` and resolves waits for outputs by command id.

    ``consumer_factory`` builds a consumer with the ``fetch.wait.max.ms`` it is given as a
    keyword (called again after a failure or a stall); ``fetch_wait`` gives the first one
    (see :func:`exchange.kafka.fetch_wait_ms`). The waiting API
    (:meth:`try_begin`, :meth:`wait`, :meth:`end`) is for the event loop thread only.
    """

    def __init__(
        self,
        consumer_factory: Callable[..., Consumer],
        topic: str,
        codec: OutputDecoder,
        *,
        max_waiters: int = 10_000,
        cache_size: int = 10_000,
        skip_older_than_ms: int = 60_000,
        batch_size: int = 1_000,
        stall_after_s: float = DEFAULT_STALL_AFTER_S,
        watchdog_sink: WatchdogSink | None = None,
        fetch_wait: Callable[[], int] = lambda: 25,
        start_positions: Callable[[str, list[int]], dict[int, int]] | None = None,
    ) -> None:
        self._factory = consumer_factory
        self._topic = topic
        self._decode = codec.decode_output
        self._max_waiters = max_waiters
        self._cache_size = cache_size
        self._skip_older_than_ms = skip_older_than_ms
        self._batch_size = batch_size
        self._waiters: dict[int, asyncio.Future[EngineOutput]] = {}
        self._cache: OrderedDict[int, EngineOutput] = OrderedDict()
        # Requests between try_begin() and end(). Written by the loop thread, read by the
        # consumer thread as a hint (a stale read only decodes a batch for nothing, or skips
        # one whose waiter then times out into a 202; both harmless).
        self._interest = 0
        self._floor_ms = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()  # set once the partitions are assigned
        self.watchdog = ConsumerWatchdog(
            "gateway-follower", stall_after_s=stall_after_s, sink=watchdog_sink
        )
        self._default_fetch_wait = fetch_wait  # asked on the follower thread (may do I/O)
        self._fetch_wait_ms: int | None = None
        self._positions: dict[TopicPart, int] = {}
        # Where to start each partition (default: its end), asked at the first assignment;
        # a rebuilt consumer resumes where the last one was. Taps see every fetched record,
        # on the follower thread, before waiters get their outputs (gateway.auth.keyfeed).
        self._start_positions = start_positions
        self._resume: dict[int, int] = {}
        self.taps: list[Callable[[list[Message]], None]] = []
        # With start positions: the partitions' ends when the follower started, which it
        # must read up to before it is ready (what the store lacks is in between); and how
        # far it has read, from the records themselves.
        self._catch_up: dict[TopicPart, int] | None = None
        self._read_to: dict[TopicPart, int] = {}
        self._starts: dict[int, int] = {}  # partition -> the offset (or sentinel) assigned
        # Counters written only by the follower thread (observability and tests).
        self.consumed = 0  # records fetched
        self.decoded = 0  # outputs decoded and handed to the loop
        self.delivered = 0  # outputs the loop has taken (written on the loop only)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            return
        self._loop = loop
        self._floor_ms = time.time_ns() // 1_000_000 - self._skip_older_than_ms
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow_forever, name="gateway-output-follower", daemon=True
        )
        self._thread.start()

    def ready(self) -> str | None:
        """None when following, caught up with what was there at its start (when it was
        given start positions), and not stalled; else what is wrong (for ``/ready``)."""
        if not self.assigned.is_set():
            return "engine-output follower: not following yet"
        catch_up = self._catch_up
        if catch_up is not None:
            read_to = self._read_to
            behind = sum(max(0, end - read_to.get(tp, 0)) for tp, end in catch_up.items())
            if behind:
                return f"engine-output follower: reading the {behind} outputs before its start"
            self._catch_up = None
        if self.watchdog.stalled:
            return "engine-output follower: stalled"
        return None

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # ---- waiting (event loop thread) -------------------------------------------------

    def try_begin(self) -> bool:
        """Reserve a waiting slot before publishing; False when the cap is reached."""
        if self._interest >= self._max_waiters or not self.assigned.is_set():
            return False
        self._interest += 1
        return True

    def end(self) -> None:
        """Release the slot taken by :meth:`try_begin` (always, in a ``finally``)."""
        self._interest -= 1

    async def wait(self, command_id: int, timeout_s: float) -> EngineOutput | None:
        """The output of ``command_id``, or None if it did not arrive within ``timeout_s``."""
        output = self._cache.pop(command_id, None)
        if output is not None:
            return output
        loop = self._loop
        if loop is None:
            return None
        future: asyncio.Future[EngineOutput] = loop.create_future()
        self._waiters[command_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            if self._waiters.get(command_id) is future:
                del self._waiters[command_id]

    @property
    def waiting(self) -> int:
        """Requests between :meth:`try_begin` and :meth:`end`."""
        return self._interest

    @property
    def cached(self) -> int:
        """Outputs held for a waiter that has not registered yet."""
        return len(self._cache)

    def _deliver(self, outputs: list[EngineOutput]) -> None:
        waiters = self._waiters
        cache = self._cache
        for output in outputs:
            future = waiters.pop(output.command_id, None)
            if future is not None:
                if not future.done():
                    future.set_result(output)
                continue
            cache[output.command_id] = output
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        self.delivered += len(outputs)

    # ---- consuming (follower thread) ---------------------------------------------------

    def _follow_forever(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except _Rebuild:
                continue  # at once: the watchdog already waited out the stall
            except Exception:  # keep following whatever happens; waits meanwhile time out
                log.exception("engine-output follower failed; restarting in %.1fs", backoff)
                self.assigned.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _follow(self) -> None:
        if self._fetch_wait_ms is None:
            self._fetch_wait_ms = self._default_fetch_wait()
        wait = self._fetch_wait_ms
        consumer = self._factory(**{"fetch.wait.max.ms": wait})
        self.watchdog.report_fetch_wait(wait)
        self._positions.clear()
        try:
            self._assign(consumer)
            if self._stop.is_set():
                return
            # One fetch round first: it resolves the start positions, so an output published
            # once we report ready cannot fall before them.
            initial = consumer.consume(self._batch_size, 0.1)
            self.consumed += len(initial)
            self._tap(initial)
            if self._start_positions is not None and self._catch_up is None and not self._resume:
                ends = {}
                for tp in consumer.assignment():
                    # The first fetch response's end where there was one (the embedded
                    # broker answers ListOffsets low, see exchange.kafka), else the broker's.
                    low, end = consumer.get_watermark_offsets(tp, cached=True)
                    with contextlib.suppress(KafkaException):
                        low, high = consumer.get_watermark_offsets(tp, timeout=5.0)
                        end = max(end, high)
                    key = (tp.topic, tp.partition)
                    # Read up to where it starts already: a start at the end (a gateway
                    # restarted in a quiet market) has nothing to read and nothing will come.
                    start = max(self._starts.get(tp.partition, 0), low, 0)
                    if start > self._read_to.get(key, 0):
                        self._read_to[key] = start
                    if end > start:
                        ends[key] = end
                self._catch_up = ends
            # Until a record arrives, a partition's position is where it started: the end
            # its first fetch response reported (so a follower that never receives a record
            # still shows lag, and the watchdog sees it).
            for tp in consumer.assignment():
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
                if high >= 0:
                    self._positions.setdefault((tp.topic, tp.partition), high)
            self.assigned.set()
            decode = self._decode
            stop = self._stop
            batch = self._batch_size
            positions = self._positions
            watchdog = self.watchdog
            while not stop.is_set():
                if watchdog.check(consumer, positions) is not None:
                    self._fetch_wait_ms = escalated_fetch_wait_ms(wait)
                    watchdog.report_fetch_wait(self._fetch_wait_ms)
                    watchdog.healed()
                    raise _Rebuild
                # Block for the first record only (poll returns as soon as one is there;
                # consume(n, t) would wait out t unless n records came), then take the rest.
                msgs = consumer.consume(batch, 0)
                if not msgs:
                    first = consumer.poll(0.1)
                    if first is None:
                        continue
                    msgs = [first, *consumer.consume(batch - 1, 0)] if batch > 1 else [first]
                self.consumed += len(msgs)
                self._tap(msgs)
                if self._interest == 0:
                    continue
                floor = self._floor_ms
                outputs: list[EngineOutput] = []
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    kind, ts = msg.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE and ts < floor:
                        continue
                    try:
                        outputs.append(decode(msg.value() or b""))
                    except DecodeError:
                        continue  # settlement dead-letters it; a waiter just times out
                self.decoded += len(outputs)
                if outputs and self._loop is not None:
                    try:
                        self._loop.call_soon_threadsafe(self._deliver, outputs)
                    except RuntimeError:  # loop closed: shutting down
                        return
        finally:
            self.assigned.clear()
            if self.taps:
                self._resume = {p: o for (_, p), o in self._positions.items()}
            consumer.close()

    def _tap(self, msgs: list[Message]) -> None:
        """Record the positions, then hand the records to the taps."""
        positions = self._positions
        read_to = self._read_to
        for msg in msgs:  # in order within a partition: the last one wins
            offset = msg.offset()
            if offset is not None and offset >= 0:
                tp = (msg.topic() or "", msg.partition() or 0)
                positions[tp] = read_to[tp] = offset + 1
        if msgs:
            for tap in self.taps:
                tap(msgs)

    def _assign(self, consumer: Consumer) -> None:
        """Assign every partition of the topic at its end, once the topic exists."""
        while not self._stop.is_set():
            try:
                topic = consumer.list_topics(timeout=2.0).topics.get(self._topic)
            except KafkaException as e:
                log.warning("engine-output follower: no broker metadata yet (%s)", e)
                continue
            if topic is not None and topic.error is None and topic.partitions:
                partitions = sorted(topic.partitions)
                starts = self._resume
                if not starts and self._start_positions is not None:
                    starts = self._start_positions(self._topic, partitions)
                self._starts = dict(starts)
                consumer.assign(
                    [TopicPartition(self._topic, p, starts.get(p, OFFSET_END)) for p in partitions]
                )
                return
            self._stop.wait(1.0)


class _Rebuild(Exception):
    """Raised inside the follow loop to restart it with a new consumer."""
