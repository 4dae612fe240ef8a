"""The consumer watchdog: a loop whose position stops moving while records wait is caught.

Theory of operation
-------------------
Every consumer loop of the pipeline (engine, settlement, the gateway's output follower)
calls :meth:`ConsumerWatchdog.check` on each turn with its consumer and the offset it will
read next on each partition. At most every ``interval_s`` the watchdog compares those
positions with the high watermarks the consumer last learnt from a fetch response
(``get_watermark_offsets(cached=True)``: no request to the broker, so the check costs
nothing on either broker; a ListOffsets would make the embedded broker list the whole
partition every time). A partition is *behind* when its high watermark is above its
position, and *stalled* when it has stayed behind at the same position for
``stall_after_s``. A stuck fetcher still receives (empty) fetch responses, and each carries
the high watermark, which is how the engine's stall on the embedded broker shows up here.

A stall is reported once per episode: a WARNING log line naming the partitions, their
positions and watermarks, the ``exchange_consumer_stalled`` gauge set to 1 and the
``exchange_consumer_stalls_total`` counter incremented. :meth:`check` then returns the
:class:`Stall` so that the loop heals itself: each service rebuilds its consumer at the
same positions with twice the fetch wait (:meth:`escalated_fetch_wait_ms`), which is what
frees a consumer whose fetches the embedded broker can no longer answer in time, and also
drops whatever state a stuck client may hold. The loop then calls :meth:`healed`, which
restarts the clock; a partition that moves again clears the stall. After
``max_heals`` heals in a row without progress the loop gives up and raises
:class:`ConsumerStalled`, so the process exits and its supervisor restarts it (the engine
then recovers from its snapshot and the log; settlement's writes are idempotent).

Lag that sits still because the loop chose not to read (a settlement worker waiting for the
store, which pauses its partitions) is not a stall: the loop passes ``paused=True`` and the
clock restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import TopicPartition

from engine.errors import ExchangeError
from exchange.kafka import MAX_FETCH_WAIT_MS, TopicPart

log = logging.getLogger(__name__)

DEFAULT_STALL_AFTER_S = 5.0


class ConsumerStalled(ExchangeError):
    """A consumer stayed stalled through every heal: the process must restart."""


class WatermarkSource(Protocol):
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...


class WatchdogSink(Protocol):
    """Where stalls are reported (see :class:`exchange.metrics.WatchdogMetrics`)."""

    def set_stalled(self, service: str, stalled: bool) -> None: ...

    def count_stall(self, service: str) -> None: ...

    def set_lag(self, service: str, lag: int) -> None: ...

    def set_fetch_wait(self, service: str, wait_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Stall:
    """Partitions that stayed behind without moving: (position, high watermark) each."""

    service: str
    partitions: Mapping[TopicPart, tuple[int, int]]
    stuck_for_s: float
    heals: int  # heals already tried in this episode

    def describe(self) -> str:
        parts = ", ".join(
            f"{t}[{p}] at {pos} of {high}"
            for (t, p), (pos, high) in sorted(self.partitions.items())
        )
        return (
            f"{self.service}: consumer stalled for {self.stuck_for_s:.1f}s with records "
            f"waiting ({parts})"
        )


class ConsumerWatchdog:
    """Detects a consumer loop that stopped moving while its partitions have records waiting.

    Not thread-safe: one loop calls it. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        service: str,
        *,
        stall_after_s: float = DEFAULT_STALL_AFTER_S,
        interval_s: float = 0.5,
        max_heals: int = 6,
        sink: WatchdogSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_after_s <= 0:
            raise ValueError("stall_after_s must be positive")
        self.service = service
        self._stall_after_s = stall_after_s
        self._interval_s = min(interval_s, stall_after_s / 2)
        self._max_heals = max_heals
        self.sink = sink  # settable: a process may attach its metrics after wiring
        self._clock = clock
        self._next_check = 0.0
        # Per partition: (position, since when it has been behind at that position).
        self._behind: dict[TopicPart, tuple[int, float]] = {}
        self._stalled = False
        self._heals = 0
        self.stalls = 0  # episodes reported so far
        self.lag = 0  # records waiting at the last check (by the cached watermarks)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def check(
        self, consumer: WatermarkSource, positions: Mapping[TopicPart, int], *, paused: bool = False
    ) -> Stall | None:
        """Call on every loop turn; returns a :class:`Stall` when the loop must heal.

        ``positions`` maps each assigned partition to the next offset the loop will read
        (its committed or starting offset until it has read one). Raises
        :class:`ConsumerStalled` once ``max_heals`` heals did not help.
        """
        now = self._clock()
        if now < self._next_check:
            return None
        self._next_check = now + self._interval_s
        if paused:
            self._behind.clear()
            return None
        lag = 0
        behind: dict[TopicPart, tuple[int, float]] = {}
        waiting: dict[TopicPart, tuple[int, int]] = {}
        for tp, position in positions.items():
            if position < 0:
                continue  # not resolved yet (no fetch so far)
            marks = consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]), cached=True)
            high = marks[1] if marks is not None else -1
            if high <= position:
                continue
            lag += high - position
            seen = self._behind.get(tp)
            since = seen[1] if seen is not None and seen[0] == position else now
            behind[tp] = (position, since)
            if now - since >= self._stall_after_s:
                waiting[tp] = (position, high)
        self._behind = behind
        self.lag = lag
        if self.sink is not None:
            self.sink.set_lag(self.service, lag)
        if not waiting:
            if self._stalled or self._heals:
                log.warning("%s: consumer moving again", self.service)
            self._set_stalled(False)
            self._heals = 0
            return None
        stuck_for = max(now - behind[tp][1] for tp in waiting)
        stall = Stall(self.service, waiting, stuck_for, self._heals)
        if not self._stalled:
            self.stalls += 1
            if self.sink is not None:
                self.sink.count_stall(self.service)
            self._set_stalled(True)
        if self._heals >= self._max_heals:
            raise ConsumerStalled(f"{stall.describe()}; {self._heals} heals did not help")
        log.warning(
            "%s; healing (attempt %d of %d)", stall.describe(), self._heals + 1, self._max_heals
        )
        return stall

    def reset(self) -> None:
        """The loop held back on purpose (paused): lag that sat still until now is no stall."""
        self._behind.clear()

    def healed(self) -> None:
        """The loop rebuilt its consumer: give it ``stall_after_s`` again from now."""
        self._heals += 1
        now = self._clock()
        self._behind = {tp: (pos, now) for tp, (pos, _) in self._behind.items()}

    def report_fetch_wait(self, wait_ms: int) -> None:
        if self.sink is not None:
            self.sink.set_fetch_wait(self.service, wait_ms)

    def _set_stalled(self, stalled: bool) -> None:
        # Reported on every check, not only on a change: a healthy consumer shows 0 (so
        # dashboards and alerts have a series) as soon as a sink is attached.
        if self.sink is not None:
            self.sink.set_stalled(self.service, stalled)
        self._stalled = stalled


def escalated_fetch_wait_ms(current_ms: int) -> int:
    """The fetch wait to rebuild a stalled consumer with: twice as long, within bounds."""
    return min(MAX_FETCH_WAIT_MS, max(2 * current_ms, 50))
