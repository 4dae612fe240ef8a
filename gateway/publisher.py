"""The command publisher: encoded commands onto the single-partition ``orders`` topic.

Theory of operation
-------------------
confluent-kafka's producer is synchronous and reports deliveries through callbacks served by
``poll()``. The event loop calls :meth:`CommandPublisher.publish`, which ``produce()``s the
record (non-blocking: it only enqueues) with a callback bound to an asyncio future, then
awaits that future. A background thread polls the producer; the callbacks it serves only
append ``(future, error, offset)`` to a list, and after each ``poll()`` the thread hands the
whole list to the loop in one ``call_soon_threadsafe``, so a burst of acknowledgements costs
one loop wake-up, not one per record.

The future resolves with the record's offset once the broker acknowledged it (``acks=all``,
idempotent producer): that offset *is* the command id, and a new order's id. Nothing is
acknowledged to the client before that. A failure, or no acknowledgement within the
producer's ``message.timeout.ms`` (plus a margin, enforced here too by a watchdog timer so a
stalled poll thread cannot hang a request), raises :class:`~gateway.errors.BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from gateway.errors import BrokerUnavailable

log = logging.getLogger(__name__)

# Producer settings of the gateway, on top of exchange.kafka's (idempotent, acks=all).
# A bounded delivery timeout: a client must get 503 within seconds, not after the default
# five minutes of retries. linger.ms=1 batches concurrent requests without adding latency.
DELIVERY_TIMEOUT_MS = 5_000
PRODUCER_OVERRIDES: dict[str, Any] = {
    "message.timeout.ms": DELIVERY_TIMEOUT_MS,
    "linger.ms": 1,
    "queue.buffering.max.messages": 100_000,
}

_SWEEP_INTERVAL_S = 0.1
_Report = tuple["asyncio.Future[int]", KafkaError | None, int]


class CommandPublisher:
    """Publishes encoded commands and resolves each with its acknowledged offset.

    ``producer_factory`` builds the confluent-kafka producer (it is called again to replace a
    producer that hit a fatal error). Call :meth:`start` from the event loop before the first
    :meth:`publish`, and :meth:`close` once at shutdown.
    """

    def __init__(
        self,
        producer_factory: Callable[[], Producer],
        topic: str,
        *,
        ack_timeout_s: float = DELIVERY_TIMEOUT_MS / 1000 + 1.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._factory = producer_factory
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._poll_interval_s = poll_interval_s
        self._producer = producer_factory()
        self._reports: list[_Report] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: deque[tuple[float, asyncio.Future[int]]] = deque()

    @property
    def topic(self) -> str:
        return self._topic

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the poll thread that serves delivery reports into ``loop``."""
        if self._thread is not None:
            return
        self._loop = loop
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_forever, name="gateway-producer-poll", daemon=True
        )
        self._thread.start()
        loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        """Event loop: fail the futures whose acknowledgement is overdue."""
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        inflight = self._inflight
        while inflight and (inflight[0][1].done() or inflight[0][0] <= now):
            _, future = inflight.popleft()
            if not future.done():
                future.set_exception(
                    BrokerUnavailable(
                        f"the broker did not acknowledge within {self._ack_timeout_s:.1f}s"
                    )
                )
        if not self._stop.is_set():
            loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    async def publish(self, value: bytes) -> int:
        """Produce ``value``; return its offset once the broker acknowledged it.

        Raises BrokerUnavailable when it was refused or not acknowledged in time.
        """
        loop = self._loop
        if loop is None:
            raise BrokerUnavailable("the publisher is not started")
        future: asyncio.Future[int] = loop.create_future()
        try:
            self._producer.produce(
                self._topic, value, on_delivery=functools.partial(self._on_delivery, future)
            )
        except BufferError as e:
            raise BrokerUnavailable("the producer queue is full (broker too slow)") from e
        except KafkaException as e:
            error = e.args[0] if e.args else None
            if isinstance(error, KafkaError) and error.fatal():
                self._replace_producer(error)
            raise BrokerUnavailable(f"the broker refused the command: {error}") from e
        # The producer's message.timeout.ms guarantees a report; the watchdog is the bound
        # if that guarantee fails (a stuck poll thread). A deque entry is far cheaper than
        # an asyncio timeout per request, and deadlines are in FIFO order.
        self._inflight.append((loop.time() + self._ack_timeout_s, future))
        return await future

    def ping(self, timeout_s: float = 2.0) -> None:
        """Readiness (blocking): the broker answers metadata and the topic exists."""
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as e:
            raise BrokerUnavailable(f"broker metadata request failed: {e}") from e
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise BrokerUnavailable(f"topic {self._topic!r} is not available")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop polling, then wait up to ``timeout_s`` for outstanding deliveries."""
        self._stop.set()  # the watchdog sees it and does not re-arm
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._producer.flush(timeout_s)
        self._hand_over()

    # ---- delivery reports (poll thread) --------------------------------------------

    def _on_delivery(
        self, future: asyncio.Future[int], error: KafkaError | None, msg: Message
    ) -> None:
        offset = msg.offset() if error is None else None
        self._reports.append((future, error, -1 if offset is None else offset))

    def _poll_forever(self) -> None:
        interval = self._poll_interval_s
        while not self._stop.is_set():
            try:
                self._producer.poll(interval)
            except Exception:  # a callback bug must not kill the thread that resolves all
                log.exception("producer poll failed")
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._reports or self._loop is None:
            return
        reports, self._reports = self._reports, []
        # A closed loop (shutdown) means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, reports)

    def _replace_producer(self, error: KafkaError) -> None:
        """A fatal error (e.g. the idempotent producer lost its state): start a new one.

        Records still queued in the old producer fail by the timeout in :meth:`publish`.
        """
        log.error("producer fatal error, replacing the producer: %s", error)
        self._producer = self._factory()


def _resolve(reports: list[_Report]) -> None:
    """Runs in the event loop: settle each future (skip those whose request gave up)."""
    for future, error, offset in reports:
        if future.done():
            continue
        if error is None and offset >= 0:
            future.set_result(offset)
        elif error is None:  # acks=all always reports an offset; never invent an id
            future.set_exception(BrokerUnavailable("the broker reported no offset"))
        else:
            future.set_exception(BrokerUnavailable(f"the broker did not accept it: {error}"))
