"""Kafka client factory: the one place that knows librdkafka settings.

The same settings work against Apache Kafka and the embedded Tansu broker. Tansu is slow on
the first group join unless the session timeout is short, so consumers use 6 s, which is
also Apache Kafka's default ``group.min.session.timeout.ms`` and so is accepted there.

How long a fetch may wait (``fetch.wait.max.ms``) is the one setting the two brokers need
differently, so it depends on the broker's :class:`BrokerFlavour`, found once per process:

* Apache Kafka answers a fetch as soon as data arrives, so a long poll costs no latency and
  saves the broker from answering hundreds of empty fetches a second: 500 ms.
* The embedded Tansu 0.6 broker (memory storage) answers a fetch by listing every record
  batch of the partition, and stops listing when the fetch's wait runs out. Once listing a
  partition takes longer than the consumer's wait (about 10,000 single-record batches for
  10 ms on a busy 2-core machine), every fetch that has data to return comes back empty, for
  good, since the log only grows: the consumer stalls at its position while its lag grows.
  That was the engine's stall. Tansu also answers an idle long poll only at the points where
  it looks again (after half the remaining wait each time), so a long wait costs latency
  there (an idle poll with a 50 ms wait answers new data after 11 ms at the median and
  25 ms at p90; with 100 ms, 21 and 53 ms). Consumers therefore start with 50 ms on Tansu
  for latency-sensitive loops (enough to list about 25,000 batches) and 100 ms for readers
  that catch up, and their watchdog doubles the wait whenever the consumer stalls (see
  :mod:`exchange.watchdog`). Past that size a busy partition's fetches get slower with
  every batch: the embedded broker is for short runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Any, Literal

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

SESSION_TIMEOUT_MS = 6000

# The cluster id Tansu reports unless started with --cluster-id (the embedded broker never is).
TANSU_CLUSTER_ID = "tansu_cluster"
# Longest fetch wait a watchdog may escalate to.
MAX_FETCH_WAIT_MS = 5_000

Latency = Literal["low", "bulk"]


class BrokerFlavour(StrEnum):
    KAFKA = "kafka"  # Apache Kafka, or any broker that answers a fetch once data arrives
    TANSU = "tansu"  # the embedded broker: see the module docstring


_FETCH_WAIT_MS: dict[tuple[BrokerFlavour, str], int] = {
    (BrokerFlavour.KAFKA, "low"): 500,
    (BrokerFlavour.KAFKA, "bulk"): 100,  # an idle partition's end-of-partition comes sooner
    (BrokerFlavour.TANSU, "low"): 50,
    (BrokerFlavour.TANSU, "bulk"): 100,
}

_flavours: dict[str, BrokerFlavour] = {}

TopicPart = tuple[str, int]

# librdkafka logs through Python logging, so its connection chatter obeys the log level.
_RDKAFKA_LOGGER = logging.getLogger("rdkafka")


def _common(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _RDKAFKA_LOGGER}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **_common(bootstrap),
        # Idempotent producer: broker-side dedup of retries, ordered per partition.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "none",
        # Keep retrying through a broker outage instead of dropping (delivery reports tell us).
        "message.timeout.ms": 300_000,
    }
    config.update(overrides)
    return config


def broker_flavour(bootstrap: str, timeout_s: float = 10.0) -> BrokerFlavour:
    """Which broker answers at ``bootstrap``: asked once per process (a metadata request)."""
    flavour = _flavours.get(bootstrap)
    if flavour is None:
        try:
            cluster_id = make_admin(bootstrap).list_topics(timeout=timeout_s).cluster_id
        except KafkaException:
            return BrokerFlavour.KAFKA  # not reachable yet: ask again next time
        flavour = BrokerFlavour.TANSU if cluster_id == TANSU_CLUSTER_ID else BrokerFlavour.KAFKA
        _flavours[bootstrap] = flavour
    return flavour


def fetch_wait_ms(bootstrap: str, latency: Latency = "low") -> int:
    """The ``fetch.wait.max.ms`` a consumer of ``bootstrap`` starts with (module docstring)."""
    return _FETCH_WAIT_MS[(broker_flavour(bootstrap), latency)]


def consumer_config(
    bootstrap: str, group_id: str, *, latency: Any = "low", **overrides: Any
) -> dict[str, Any]:
    """librdkafka settings of a consumer; ``latency`` is ``"low"`` or ``"bulk"``.

    (``latency`` is typed Any only so that callers can splat a dict literal of overrides.)
    """
    if latency not in ("low", "bulk"):
        raise ValueError(f"latency must be 'low' or 'bulk', not {latency!r}")
    config: dict[str, Any] = {
        **_common(bootstrap),
        "group.id": group_id,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1000,
        "enable.auto.commit": False,  # offsets are committed only after effects are durable
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": fetch_wait_ms(bootstrap, latency),
    }
    config.update(overrides)
    return config


def make_producer(bootstrap: str, **overrides: Any) -> Producer:
    return Producer(producer_config(bootstrap, **overrides))


def make_consumer(
    bootstrap: str, group_id: str, *, latency: Any = "low", **overrides: Any
) -> Consumer:
    return Consumer(consumer_config(bootstrap, group_id, latency=latency, **overrides))


def make_admin(bootstrap: str, **overrides: Any) -> AdminClient:
    config: dict[str, Any] = _common(bootstrap)
    config.update(overrides)
    return AdminClient(config)


def where(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; always set for a fetched message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("message has no position (it was not fetched from a log)")
    return topic, partition, offset


class ReadToEnd:
    """The records of some partitions, each from a start offset up to the partition's end.

    Why the end comes from the fetch: ListOffsets(latest), what tools usually ask, is answered
    low by the embedded broker (Tansu): with the last record batch's base offset + 1, not the
    offset after its last record, so a partition written in one batch of 2,500 records
    "ends" at 1. The fetch path is right: a consumer made with ``enable.partition.eof=True``
    gets an end-of-partition event whose offset is the true end. This is the one reader of
    that event; the consumer must have the setting, or no partition ever ends.

    Iterating assigns ``starts`` to ``consumer`` and yields the data records of those
    partitions (records arriving on a partition after its end, while others are still read,
    are yielded too). It stops once every partition has reached its end, or at the deadline,
    ``timeout_s`` after it began. Then ``ends`` holds the end offset of each partition that
    reached it and ``pending`` those that did not: whether that is an error is the caller's
    call. A partition whose start is its end (empty, or read before) ends at once. A start
    past the end never ends on the embedded broker (it stays pending until the deadline);
    Apache Kafka moves it by the consumer's ``auto.offset.reset``. Errors other than
    end-of-partition go to ``on_error``, which may raise to stop the read.

    The consumer stays the caller's: this assigns it, never unassigns or closes it. Records of
    partitions outside ``starts`` (left from an earlier assignment) are dropped. Iterate once.
    """

    def __init__(
        self,
        consumer: Consumer,
        starts: Mapping[TopicPart, int],
        *,
        timeout_s: float,
        on_error: Callable[[Message, KafkaError], None],
        max_messages: int = 10_000,
        wait_s: float = 0.05,
    ) -> None:
        self._consumer = consumer
        self._starts = dict(starts)
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._max_messages = max_messages
        self._wait_s = wait_s
        self.ends: dict[TopicPart, int] = {}
        self.pending: set[TopicPart] = set(self._starts)

    def __iter__(self) -> Iterator[Message]:
        if not self.pending:
            return
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._starts.items()])
        deadline = time.monotonic() + self._timeout_s
        while self.pending and time.monotonic() < deadline:
            for msg in self._consumer.consume(self._max_messages, self._wait_s):
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                tp = None if topic is None or partition is None else (topic, partition)
                if tp is not None and tp not in self._starts:
                    continue
                err = msg.error()
                if err is None:
                    yield msg
                elif (
                    err.code() == KafkaError._PARTITION_EOF
                    and tp is not None
                    and offset is not None
                ):
                    self.ends[tp] = offset
                    self.pending.discard(tp)
                else:
                    self._on_error(msg, err)
