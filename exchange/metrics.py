"""The pipeline's Prometheus metrics: every name in one place, one registry per process.

Theory of operation
-------------------
Each service builds its own :class:`~prometheus_client.CollectorRegistry` (never the
library's global one, so tests can run several services in one process) and one metrics
object over it: :class:`EngineMetrics`, :class:`SettlementMetrics` or
:class:`GatewayMetrics`. The composition root serves the registry with
:func:`serve_metrics` (the gateway serves it at its own ``/metrics`` route instead, see
:mod:`gateway.metrics`).

The hot loops pay almost nothing:

* what the services already count in their stats objects (records, events, dead letters,
  readiness) is read *at scrape time* by a :class:`StatsCollector`, so it costs the loop
  nothing at all;
* what needs a breakdown (commands by kind and result, rejections by reason) is tallied once
  per consumed batch by the engine, not per command;
* pipeline freshness is observed for every output, but through an :class:`IntHistogram`,
  which buckets a whole batch of integer milliseconds under one lock.

Names and labels are a contract with the dashboards (``gateway/dashboard.py``, Grafana):
change them only together.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine.errors import ConfigError
from engine.events import EngineOutput
from exchange.settings import Settings

# Freshness: gateway stamp -> effect in the store. The target is 100 ms at p99, so the
# buckets are dense below and around it (integer milliseconds: timestamps are epoch ms).
FRESHNESS_BUCKETS_MS: tuple[int, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 125, 150, 200, 300, 500,
    750, 1000, 2000, 5000, 10_000, 30_000, 60_000,
)  # fmt: skip
STORE_WRITE_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
SNAPSHOT_PAUSE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000)
# Requests with ?wait=true may legitimately take up to 30 s (MAX_WAIT_MS).
REQUEST_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

UNMATCHED_ROUTE = "<unmatched>"  # the route label of a request no route matched (bounded)


def new_registry() -> CollectorRegistry:
    """A fresh registry for one process (or one service of a test)."""
    return CollectorRegistry(auto_describe=True)


# ----------------------------------------------------------------------------- collectors


class IntHistogram(Collector):
    """A histogram of integer observations (milliseconds) observed a batch at a time.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets for every
    value; this takes the lock once per batch and bisects. It exports in seconds
    (``scale`` = 0.001) with the usual ``_bucket``/``_count``/``_sum`` series.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        bounds: Sequence[int],
        *,
        scale: float = 0.001,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self._name = name
        self._doc = documentation
        self._bounds = tuple(bounds)
        self._scale = scale
        self._counts = [0] * (len(self._bounds) + 1)  # the last slot is +Inf
        self._sum = 0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[int]) -> None:
        """Add every value (negative values, e.g. from clock skew, count as 0)."""
        bounds = self._bounds
        tally: dict[int, int] = {}
        get = tally.get
        total = 0
        for v in values:
            if v < 0:
                v = 0
            i = bisect_left(bounds, v)
            tally[i] = get(i, 0) + 1
            total += v
        with self._lock:
            counts = self._counts
            for i, n in tally.items():
                counts[i] += n
            self._sum += total

    def observe_count(self, value: int, n: int) -> None:
        """Add ``value`` ``n`` times (one message delivered to ``n`` clients at once)."""
        value = max(value, 0)
        i = bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += n
            self._sum += value * n

    def snapshot(self) -> tuple[list[int], int]:
        """(per-bucket counts, last one +Inf; sum) in the observed unit."""
        with self._lock:
            return list(self._counts), self._sum

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._doc)

    def collect(self) -> Iterator[Metric]:
        counts, total = self.snapshot()
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self._bounds, counts, strict=False):
            running += n
            buckets.append((floatToGoString(bound * self._scale), running))
        running += counts[-1]
        buckets.append(("+Inf", running))
        yield HistogramMetricFamily(
            self._name, self._doc, buckets=buckets, sum_value=total * self._scale
        )


@dataclass(frozen=True, slots=True)
class StatSpec:
    """One series read from a live stats object at scrape time."""

    name: str
    documentation: str
    kind: str  # "counter" or "gauge"
    read: Callable[[], float]
    labels: tuple[tuple[str, str], ...] = ()


class StatsCollector(Collector):
    """Exports values a service already keeps (its stats object), read when scraped.

    Reading an int attribute another thread writes is safe in CPython; the value is at most
    one batch old, which is all a scrape needs.
    """

    def __init__(self, specs: Sequence[StatSpec]) -> None:
        self._specs = tuple(specs)

    def _families(self, with_values: bool) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for spec in self._specs:
            family = families.get(spec.name)
            label_names = [k for k, _ in spec.labels]
            if family is None:
                if spec.kind == "counter":
                    # CounterMetricFamily appends _total itself.
                    family = CounterMetricFamily(
                        spec.name.removesuffix("_total"), spec.documentation, labels=label_names
                    )
                else:
                    family = GaugeMetricFamily(spec.name, spec.documentation, labels=label_names)
                families[spec.name] = family
            if with_values:
                family.add_metric([v for _, v in spec.labels], float(spec.read()))
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        return self._families(with_values=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(with_values=True)


# ----------------------------------------------------------------------------- services


class _EngineStatsLike(Protocol):
    dead_lettered: int
    snapshots: int
    recovery_s: float


class _SettlementStatsLike(Protocol):
    records: int
    events: int
    dead_lettered: int
    store_retries: int
    ready: bool


class EngineMetrics:
    """The engine service's metrics. ``record_batch`` is the only call on the hot path."""

    def __init__(
        self, registry: CollectorRegistry, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.registry = registry
        self._clock_ms = clock_ms or _wall_ms
        self.commands = Counter(
            "exchange_engine_commands",
            "Commands applied by the engine, by kind and result.",
            ["kind", "result"],
            registry=registry,
        )
        self.rejections = Counter(
            "exchange_engine_rejections",
            "Commands the engine refused, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.outputs_published = Counter(
            "exchange_engine_outputs_published",
            "EngineOutputs published to engine-output (outputs already on the log and "
            "recomputed during recovery are not counted).",
            registry=registry,
        )
        self.sequence = Gauge(
            "exchange_engine_sequence", "Sequence of the engine's last output.", registry=registry
        )
        self.snapshot_pause = Histogram(
            "exchange_engine_snapshot_pause_seconds",
            "How long matching paused to serialise a snapshot.",
            buckets=SNAPSHOT_PAUSE_BUCKETS_S,
            registry=registry,
        )
        # The first leg of pipeline freshness: with exchange_pipeline_freshness_seconds it
        # tells which half of the pipeline a slow read model is waiting on.
        self.publish_latency = IntHistogram(
            "exchange_engine_publish_latency_seconds",
            "From the gateway accepting a command (EngineOutput.timestamp_ms) to the engine "
            "handing its output to the producer.",
            FRESHNESS_BUCKETS_MS,
            registry=registry,
        )
        self._commands: dict[tuple[str, bool], Any] = {}
        self._rejections: dict[str, Any] = {}

    def record_batch(self, outputs: Sequence[EngineOutput], published: int, sequence: int) -> None:
        """Count one consumed batch: its outputs, how many were published, the sequence."""
        tally: dict[tuple[str, bool], int] = {}
        reasons: dict[str, int] = {}
        get = tally.get
        for o in outputs:
            rejected = o.rejections
            key = (o.command_kind, bool(rejected))
            tally[key] = get(key, 0) + 1
            for r in rejected:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
        for (kind, was_rejected), n in tally.items():
            child = self._commands.get((kind, was_rejected))
            if child is None:
                child = self.commands.labels(str(kind), "rejected" if was_rejected else "applied")
                self._commands[(kind, was_rejected)] = child
            child.inc(n)
        for reason, n in reasons.items():
            rchild = self._rejections.get(reason)
            if rchild is None:
                rchild = self._rejections[reason] = self.rejections.labels(str(reason))
            rchild.inc(n)
        if published:
            self.outputs_published.inc(published)
            # Published outputs follow the ones recovery recomputed silently (whose age
            # says nothing about the pipeline), so they are the batch's tail.
            now_ms = self._clock_ms()
            self.publish_latency.observe_many(
                [now_ms - o.timestamp_ms for o in outputs[len(outputs) - published :]]
            )
        self.sequence.set(sequence)

    def record_snapshot_pause(self, seconds: float) -> None:
        self.snapshot_pause.observe(seconds)

    def watch(self, stats: _EngineStatsLike) -> None:
        """Export what the service's :class:`EngineStats` already counts."""
        self.registry.register(
            StatsCollector(
                [
                    StatSpec(
                        "exchange_dlq_records_total",
                        _DLQ_DOC,
                        "counter",
                        lambda: stats.dead_lettered,
                        (("service", "engine"),),
                    ),
                    StatSpec(
                        "exchange_engine_snapshots_total",
                        "Snapshots written.",
                        "counter",
                        lambda: stats.snapshots,
                    ),
                    StatSpec(
                        "exchange_engine_recovery_seconds",
                        "How long the last recovery (snapshot load + replay) took.",
                        "gauge",
                        lambda: stats.recovery_s,
                    ),
                ]
            )
        )


_DLQ_DOC = "Records parked on a dead-letter topic, by the service that parked them."


class SettlementMetrics:
    """The settlement service's metrics; :meth:`on_batch` is the service's batch hook."""

    def __init__(
        self, registry: CollectorRegistry, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.registry = registry
        self._clock_ms = clock_ms or _wall_ms
        self.batches = Counter(
            "exchange_settlement_batches", "Batches written to the store.", registry=registry
        )
        self.batch_size = Histogram(
            "exchange_settlement_batch_size",
            "Outputs per batch written to the store.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.store_write = Histogram(
            "exchange_store_write_seconds",
            "Time to write one batch to the store.",
            buckets=STORE_WRITE_BUCKETS_S,
            registry=registry,
        )
        self.sequence_settled = Gauge(
            "exchange_settlement_sequence_settled",
            "Highest engine sequence this worker has written to the store.",
            registry=registry,
        )
        self.freshness = IntHistogram(
            "exchange_pipeline_freshness_seconds",
            "From the gateway accepting a command (EngineOutput.timestamp_ms) to its effect "
            "being written to the store.",
            FRESHNESS_BUCKETS_MS,
            registry=registry,
        )
        self._settled = 0

    def on_batch(self, outputs: Sequence[EngineOutput], elapsed_s: float) -> None:
        """Called by the settlement service after each batch is durable in the store."""
        now_ms = self._clock_ms()
        self.batches.inc()
        self.batch_size.observe(len(outputs))
        self.store_write.observe(elapsed_s)
        self.freshness.observe_many([now_ms - o.timestamp_ms for o in outputs])
        top = max(o.sequence for o in outputs) if outputs else 0
        if top > self._settled:
            self._settled = top
            self.sequence_settled.set(top)

    def watch(self, stats: _SettlementStatsLike) -> None:
        """Export what the service's :class:`SettlementStats` already counts."""
        self.registry.register(
            StatsCollector(
                [
                    StatSpec(
                        "exchange_settlement_outputs_total",
                        "Outputs written to the store.",
                        "counter",
                        lambda: stats.records,
                    ),
                    StatSpec(
                        "exchange_settlement_events_total",
                        "Events (trades, order updates, balances, ...) in the outputs written.",
                        "counter",
                        lambda: stats.events,
                    ),
                    StatSpec(
                        "exchange_dlq_records_total",
                        _DLQ_DOC,
                        "counter",
                        lambda: stats.dead_lettered,
                        (("service", "settlement"),),
                    ),
                    StatSpec(
                        "exchange_settlement_store_retries_total",
                        "Store writes retried because the store was unavailable.",
                        "counter",
                        lambda: stats.store_retries,
                    ),
                    StatSpec(
                        "exchange_settlement_ready",
                        "1 while the worker is consuming and the store accepts writes.",
                        "gauge",
                        lambda: 1.0 if stats.ready else 0.0,
                    ),
                ]
            )
        )


class GatewayMetrics:
    """The REST gateway's request metrics (see :mod:`gateway.metrics` for the middleware)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "exchange_gateway_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        # By status too: the p99 of the 4xx answers is not the p99 of the 202s (Grafana's
        # "p99 by route and status" panel).
        self.request_seconds = Histogram(
            "exchange_gateway_request_seconds",
            "HTTP request duration, by route template, method and status.",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str, int], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        timer = self._timers.get(key)
        if timer is None:
            timer = self._timers[key] = self.request_seconds.labels(route, method, str(status))
        timer.observe(seconds)


class WatchdogMetrics:
    """The consumer watchdog's view of one service (see :mod:`exchange.watchdog`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stalled = Gauge(
            "exchange_consumer_stalled",
            "1 while the service's consumer has records waiting and its position has not "
            "moved for the stall period; the service heals itself by rebuilding it.",
            ["service"],
            registry=registry,
        )
        self.stalls = Counter(
            "exchange_consumer_stalls",
            "Stall episodes detected by the consumer watchdog.",
            ["service"],
            registry=registry,
        )
        self.lag = Gauge(
            "exchange_consumer_lag",
            "Records waiting for the service's consumer (high watermarks of its last fetch "
            "responses minus its positions).",
            ["service"],
            registry=registry,
        )
        self.fetch_wait = Gauge(
            "exchange_consumer_fetch_wait_ms",
            "The consumer's current fetch.wait.max.ms.",
            ["service"],
            registry=registry,
        )

    def set_stalled(self, service: str, stalled: bool) -> None:
        self.stalled.labels(service).set(1 if stalled else 0)

    def count_stall(self, service: str) -> None:
        self.stalls.labels(service).inc()

    def set_lag(self, service: str, lag: int) -> None:
        self.lag.labels(service).set(lag)

    def set_fetch_wait(self, service: str, wait_ms: int) -> None:
        self.fetch_wait.labels(service).set(wait_ms)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# ----------------------------------------------------------------------------- serving


Readiness = Callable[[], tuple[bool, str]]  # (ready?, why not / what is ready)


@dataclass(slots=True)
class MetricsServer:
    """A running ``/metrics`` (and ``/ready``) HTTP endpoint (a daemon thread)."""

    server: ThreadingWSGIServer
    thread: threading.Thread
    host: str
    readiness: Readiness | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return f"http://{_connect_host(self.host)}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the service's log."""


def serve_metrics(
    port: int,
    registry: CollectorRegistry,
    host: str = "127.0.0.1",
    *,
    setting: str = "metrics port",
    readiness: Readiness | None = None,
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0: any free port), and the
    service's readiness at ``/ready``: 200 ``{"ready": true, ...}`` or 503 when ``readiness``
    says no (without ``readiness``, ready whenever the process serves).

    A port that cannot be bound is a configuration problem: ConfigError naming ``setting``.
    """
    metrics_app = make_wsgi_app(registry)
    holder: list[MetricsServer] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/ready":
            return metrics_app(environ, start_response)
        check = holder[0].readiness if holder else None
        ready, detail = check() if check is not None else (True, "serving")
        body = json.dumps({"ready": ready, "detail": detail}).encode()
        start_response(
            "200 OK" if ready else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as e:
        raise ConfigError(
            f"{setting}={port}: cannot listen on {host}:{port} ({e.strerror}); "
            "choose another port, or 0 to serve no metrics"
        ) from e
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    served = MetricsServer(server=server, thread=thread, host=host, readiness=readiness)
    holder.append(served)
    return served


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def metrics_url(host: str, port: int) -> str:
    return f"http://{_connect_host(host)}:{port}/metrics"


def stack_metrics_urls(settings: Settings) -> list[str]:
    """The ``/metrics`` URLs of the engine, settlement and lag exporter of a local stack
    (the ones whose port setting is not 0); the gateway serves its own at ``/metrics``.
    ``EXCHANGE_DASHBOARD_SOURCES``, when set, names them instead (the compose stack)."""
    if settings.exchange_dashboard_sources is not None:
        return list(settings.exchange_dashboard_sources)
    ports = (
        settings.exchange_engine_metrics_port,
        settings.exchange_settlement_metrics_port,
        settings.exchange_lag_metrics_port,
    )
    return [metrics_url(settings.exchange_host, p) for p in ports if p]
