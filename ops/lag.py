"""Consumer lag per group, topic and partition: committed offset versus log end.

Theory of operation
-------------------
Lag is ``log end - committed`` for each partition a watched group reads. Both halves need
care on the brokers this project runs on:

*Log end.* ListOffsets(latest) is what every lag tool uses, but the embedded broker (Tansu)
answers it low: with the offset *after the first record of the last record batch* (base
offset + 1), not after its last record. A partition written in one batch of 2,500 records
reports an end of 1. The fetch's end-of-partition event is right (see
:class:`exchange.kafka.ReadToEnd`). So each sample asks ListOffsets for every partition
(cheap, and right on Apache Kafka), then reads each partition forward from
``max(last known end, ListOffsets - 1)`` to that event, skipping the records without
decoding them, and takes ``max(ListOffsets, end-of-partition)``.
Starting one record before the ListOffsets answer reads exactly the last batch on Tansu and
the last record on Kafka, so a sample costs one small fetch per partition however fast the
topic grows; when the previous sample's end is later, reading resumes there.

*Which broker.* Apache Kafka's ListOffsets(latest) is the high watermark, exactly the end
``kafka-consumer-groups`` uses, so there the tail read is skipped and lag is plainly ``log end
- committed``. Which broker answers is probed once (:func:`exchange.kafka.broker_flavour`,
the cluster id); only Tansu is given the tail read.

*Committed offsets and control records.* A transactional producer follows each transaction
with a commit marker, which takes an offset but is never delivered to consumers. A consumer
that commits ``last message offset + 1`` then sits one below the end for good, and a naive
exporter shows a lag of 1 forever. The forward read sees which offsets hold deliverable
records: if the committed position lies in the range the reader has seen and no data
record follows it, the lag is 0 (see :func:`partition_lag`). The pipeline does not use
transactions, but the rule costs nothing and makes the metric right on clusters that do.
Lag is never negative.

*Groups.* Offsets are read with the admin API (OffsetFetch), which works for groups with no
live members and for groups that only ``assign()`` (the engine), which is why lag reads the
committed offset rather than a consumer's position. A group that never committed on a
partition it is expected to read shows ``committed=None`` and, as lag, everything from the
log start (where ``auto.offset.reset=earliest`` would begin).

Who exports it: the ``lag`` service of ``exchange up`` (``exchange lag --serve``), one per
stack, on ``EXCHANGE_LAG_METRICS_PORT``, with the names and labels of kafka_exporter
(``kafka_consumergroup_lag`` ...), so existing dashboards work unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rich.table import Table

from engine.errors import ExchangeError
from exchange.kafka import (
    BrokerFlavour,
    ReadToEnd,
    TopicPart,
    broker_flavour,
    make_admin,
    make_consumer,
    where,
)
from exchange.settings import Settings

log = logging.getLogger(__name__)

ENGINE_GROUP = "engine"
SETTLEMENT_GROUP = "settlement"


class LagError(ExchangeError):
    """Offsets could not be read from the cluster."""


@dataclass(frozen=True, slots=True)
class Tail:
    """What is known of a partition's tail.

    ``end`` is the log end offset (the next offset to be written). Every record in
    ``[scanned_from, end)`` has been read past; ``data_end`` is the offset after the last
    deliverable record among them (``scanned_from`` if there was none: only control records,
    such as transaction markers, lie in that range).
    """

    end: int
    scanned_from: int
    data_end: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed an offset here
    log_end: int
    lag: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LagSample:
    taken_at: float  # epoch seconds
    partitions: tuple[PartitionLag, ...]
    log_ends: Mapping[TopicPart, int]
    elapsed_s: float

    def lag_of(self, group: str, topic: str | None = None) -> int:
        """Total lag of ``group`` (on ``topic`` only, if given)."""
        return sum(
            p.lag
            for p in self.partitions
            if p.group == group and (topic is None or p.topic == topic)
        )


def partition_lag(committed: int | None, log_start: int, tail: Tail) -> int:
    """Records a consumer at ``committed`` still has to read; never negative.

    0 when only control records (transaction markers) lie between the committed offset and
    the end: the commit-``offset+1`` trap must not leave a lag of 1 for good.
    """
    position = log_start if committed is None else committed
    if position >= tail.end:
        return 0
    if tail.scanned_from <= position and tail.data_end <= position:
        return 0
    return tail.end - position


def project_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The pipeline's consumer groups and the topics each is expected to read."""
    return {
        ENGINE_GROUP: (settings.exchange_topic_orders,),
        SETTLEMENT_GROUP: (settings.exchange_topic_engine_output,),
    }


class LogEnds:
    """True log end offsets, right even where ListOffsets answers low (see the module doc).

    ``tail_scan``: True reads each tail forward (Tansu); False trusts ListOffsets (Apache
    Kafka); None (default) probes the broker once, on first use.
    Keeps the last known tail of each partition between calls; not thread-safe (one caller
    at a time; :class:`LagMonitor` holds a lock).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        admin: AdminClient | None = None,
        timeout_s: float = 5.0,
        tail_scan: bool | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._admin = admin or make_admin(bootstrap)
        self._timeout_s = timeout_s
        self._tail_scan = tail_scan
        self._consumer: Consumer | None = None
        self._tails: dict[TopicPart, Tail] = {}

    @property
    def tail_scan(self) -> bool:
        if self._tail_scan is None:
            self._tail_scan = broker_flavour(self._bootstrap) is BrokerFlavour.TANSU
            log.info(
                "lag: %s",
                "reading partition tails (the broker's ListOffsets reads low)"
                if self._tail_scan
                else "log end = the broker's high watermark",
            )
        return self._tail_scan

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = make_consumer(
                self._bootstrap,
                "exchange-lag-reader",
                latency="bulk",
                **{
                    "enable.partition.eof": True,
                    "max.partition.fetch.bytes": 1 << 20,
                    "auto.offset.reset": "latest",
                },
            )
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def list_offsets(self, parts: Sequence[TopicPart], spec: OffsetSpec) -> dict[TopicPart, int]:
        if not parts:
            return {}
        try:
            futures = self._admin.list_offsets(
                {TopicPartition(t, p): spec for t, p in parts}, request_timeout=self._timeout_s
            )
            return {
                (tp.topic, tp.partition): int(f.result(timeout=self._timeout_s).offset)
                for tp, f in futures.items()
            }
        except (KafkaException, TimeoutError) as e:
            raise LagError(f"ListOffsets failed: {e}") from e

    def refresh(self, parts: Sequence[TopicPart]) -> dict[TopicPart, Tail]:
        """The current tail of each partition (one ListOffsets, and on Tansu one short read)."""
        latest = self.list_offsets(parts, OffsetSpec.latest())
        if not self.tail_scan:  # the high watermark is the end; nothing else to learn
            return {tp: Tail(end, end, end) for tp, end in latest.items()}
        starts: dict[TopicPart, int] = {}
        for tp in parts:
            reported = latest[tp]
            known = self._tails.get(tp)
            resume = max(0, reported - 1)
            if known is not None and known.end >= resume:
                starts[tp] = known.end  # contiguous with what was read before
            else:
                starts[tp] = resume
                self._tails[tp] = Tail(resume, resume, resume)  # nothing before it is known
        eofs, data_ends = self._read_to_end(starts)
        out: dict[TopicPart, Tail] = {}
        for tp in parts:
            known = self._tails[tp]
            eof = eofs.get(tp)
            if eof is None:  # no end-of-partition in time: keep what we know
                log.warning(
                    "%s[%d]: no end-of-partition within %.1fs; using ListOffsets",
                    tp[0],
                    tp[1],
                    self._timeout_s,
                )
                end = max(latest[tp], known.end)
                tail = Tail(end, end, end) if end != known.end else known
            elif eof < starts[tp]:  # the log restarted below what we knew (recreated topic)
                end = max(latest[tp], eof)
                tail = Tail(end, end, end)
            else:
                end = max(latest[tp], eof)
                data_end = data_ends.get(tp, known.data_end)
                scanned_from = known.scanned_from if end == eof else end
                tail = Tail(end, scanned_from, max(data_end, scanned_from))
            self._tails[tp] = tail
            out[tp] = tail
        return out

    def _read_to_end(
        self, starts: Mapping[TopicPart, int]
    ) -> tuple[dict[TopicPart, int], dict[TopicPart, int]]:
        """Read each partition from its start to end-of-partition: (ends, data ends)."""
        data_ends: dict[TopicPart, int] = {}
        consumer = self._reader()
        reading = ReadToEnd(
            consumer,
            starts,
            timeout_s=self._timeout_s,
            on_error=_warn_read_error,
            max_messages=1000,
            wait_s=0.005,
        )
        try:
            for msg in reading:
                topic, partition, offset = where(msg)
                data_ends[(topic, partition)] = offset + 1  # a deliverable record: skipped unread
        finally:
            consumer.unassign()
        return reading.ends, data_ends


def _warn_read_error(msg: Message, err: KafkaError) -> None:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    # One without a position is the client's own (a broker connection, say); it retries.
    if topic is not None and partition is not None and offset is not None:
        log.warning("reading %s[%d] for its end: %s", topic, partition, err)


class LagMonitor:
    """Samples the lag of the watched groups. Thread-safe (one sample at a time)."""

    def __init__(
        self,
        bootstrap: str,
        groups: Mapping[str, Sequence[str]],
        *,
        timeout_s: float = 5.0,
        tail_scan: bool | None = None,
    ) -> None:
        self._admin = make_admin(bootstrap)
        self._groups = {g: tuple(topics) for g, topics in groups.items()}
        self._timeout_s = timeout_s
        self._ends = LogEnds(bootstrap, admin=self._admin, timeout_s=timeout_s, tail_scan=tail_scan)
        self._lock = threading.Lock()
        self._partitions: dict[str, int] = {}

    @property
    def tail_scan(self) -> bool:
        """Whether log ends come from reading tails (Tansu) or ListOffsets (Apache Kafka)."""
        with self._lock:
            return self._ends.tail_scan

    def close(self) -> None:
        with self._lock:
            self._ends.close()

    def sample(self) -> LagSample:
        with self._lock:
            started = time.monotonic()
            committed = {g: self._committed(g) for g in self._groups}
            reads: dict[str, set[TopicPart]] = {}
            for group, topics in self._groups.items():
                parts = {tp for tp in committed[group]}
                for topic in topics:
                    parts.update((topic, p) for p in range(self._partition_count(topic)))
                reads[group] = parts
            every = sorted(set().union(*reads.values())) if reads else []
            tails = self._ends.refresh(every)
            uncommitted = sorted(
                {tp for g, parts in reads.items() for tp in parts if tp not in committed[g]}
            )
            starts = self._ends.list_offsets(uncommitted, OffsetSpec.earliest())
            rows = [
                PartitionLag(
                    group=group,
                    topic=tp[0],
                    partition=tp[1],
                    committed=committed[group].get(tp),
                    log_end=tails[tp].end,
                    lag=partition_lag(committed[group].get(tp), starts.get(tp, 0), tails[tp]),
                )
                for group in sorted(reads)
                for tp in sorted(reads[group])
            ]
            return LagSample(
                taken_at=time.time(),
                partitions=tuple(rows),
                log_ends={tp: t.end for tp, t in tails.items()},
                elapsed_s=time.monotonic() - started,
            )

    def _committed(self, group: str) -> dict[TopicPart, int]:
        try:
            futures = self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self._timeout_s
            )
            result = futures[group].result(timeout=self._timeout_s)
        except (KafkaException, TimeoutError) as e:
            raise LagError(f"reading the committed offsets of group {group!r} failed: {e}") from e
        return {
            (tp.topic, tp.partition): int(tp.offset)
            for tp in result.topic_partitions or []
            if tp.offset >= 0 and tp.error is None
        }

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            try:
                meta = self._admin.list_topics(topic, timeout=self._timeout_s).topics.get(topic)
            except KafkaException as e:
                raise LagError(f"reading the metadata of {topic!r} failed: {e}") from e
            if meta is None or meta.error is not None or not meta.partitions:
                return 0  # not created yet: nothing to lag behind
            count = self._partitions[topic] = len(meta.partitions)
        return count


class LagCollector(Collector):
    """Exports a :class:`LagMonitor`'s samples with kafka_exporter's names and labels.

    Scrapes closer together than ``min_interval_s`` (Prometheus and the dashboard both
    scraping) share one sample. If the cluster cannot be read, only
    ``exchange_lag_scrape_success 0`` is exported.
    """

    def __init__(self, monitor: LagMonitor, *, min_interval_s: float = 0.5) -> None:
        self._monitor = monitor
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last: LagSample | None = None
        self._last_at = 0.0

    def _sample(self) -> LagSample | None:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last_at >= self._min_interval_s:
                try:
                    self._last = self._monitor.sample()
                except LagError as e:
                    log.warning("lag sample failed: %s", e)
                    self._last = None
                    return None
                self._last_at = now
            return self._last

    def describe(self) -> Iterator[Metric]:
        return iter(_families(_EMPTY))

    def collect(self) -> Iterator[Metric]:
        return iter(_families(self._sample()))


def _families(sample: LagSample | None) -> list[Metric]:
    gp = ["consumergroup", "topic", "partition"]
    lag = GaugeMetricFamily(
        "kafka_consumergroup_lag",
        "Log end offset minus committed offset (0 if only control "
        "records follow the committed offset).",
        labels=gp,
    )
    current = GaugeMetricFamily(
        "kafka_consumergroup_current_offset", "Committed offset of the group.", labels=gp
    )
    lag_sum = GaugeMetricFamily(
        "kafka_consumergroup_lag_sum",
        "Lag of the group summed over the topic's partitions.",
        labels=["consumergroup", "topic"],
    )
    end = GaugeMetricFamily(
        "kafka_topic_partition_current_offset",
        "Log end offset (next offset to be written).",
        labels=["topic", "partition"],
    )
    ok = GaugeMetricFamily(
        "exchange_lag_scrape_success", "1 if the last lag sample read the cluster successfully."
    )
    took = GaugeMetricFamily("exchange_lag_scrape_seconds", "How long the last sample took.")
    if sample is None:
        ok.add_metric([], 0.0)
        return [ok]
    sums: dict[tuple[str, str], int] = {}
    for p in sample.partitions:
        labels = [p.group, p.topic, str(p.partition)]
        lag.add_metric(labels, p.lag)
        if p.committed is not None:
            current.add_metric(labels, p.committed)
        sums[(p.group, p.topic)] = sums.get((p.group, p.topic), 0) + p.lag
    for (group, topic), total in sorted(sums.items()):
        lag_sum.add_metric([group, topic], total)
    for (topic, partition), offset in sorted(sample.log_ends.items()):
        end.add_metric([topic, str(partition)], offset)
    ok.add_metric([], 1.0)
    took.add_metric([], sample.elapsed_s)
    return [lag, current, lag_sum, end, ok, took]


_EMPTY = LagSample(taken_at=0.0, partitions=(), log_ends={}, elapsed_s=0.0)


def lag_table(sample: LagSample) -> Table:
    """A ``kafka-consumer-groups --describe`` style table (a rich renderable)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"):
        justify = "left" if name in ("GROUP", "TOPIC") else "right"
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in sample.partitions:
        table.add_row(
            p.group,
            p.topic,
            str(p.partition),
            "-" if p.committed is None else str(p.committed),
            str(p.log_end),
            str(p.lag),
        )
    return table
