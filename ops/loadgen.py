"""Load generator: drive the stack at a target rate (or flat out) and measure what comes out.

Theory of operation
-------------------
*What it sends.* The seeded mix of :mod:`ops.workload` (resting limits near the touch,
crossing limits, cancels of earlier orders, market orders) over ``users`` users and both
default symbols, after the users' creation (on the ``orders`` log in both modes: the engine
refuses unknown users) and one deposit per user and asset. ``--via kafka`` encodes each command
with the codec and produces it straight to ``orders`` (this measures the pipeline);
``--via http`` posts it to the REST API with httpx (this measures the gateway too), where a
cancel names the id the API returned for the order, never a guessed one.

*Pacing.* At ``rate`` > 0 command ``i`` is due at ``t0 + i / rate``; its send time is that
*scheduled* time, so a stall in the generator or a full producer queue shows up in the
numbers instead of being hidden (no coordinated omission). At ``rate`` 0 (flat out) with a
fixed ``orders`` count the commands are encoded before the clock starts, so the generator
is not what is measured; their timestamps are then the encoding time.

*Freshness* is the time from sending a command to its effect being in the store. While it
sends, a thread polls the store's ``max_sequence()`` every ``poll_interval_s`` and keeps the
first time each new value was seen. Afterwards the generator reads ``engine-output`` from
where it ended before the run, decodes the outputs of its own commands (matched by command
id: the broker's offsets in kafka mode, the ids the API answered in http mode) and so learns
each command's engine sequence, its rejection reason if any, and, with the poll record, when
the store first reached that sequence. Freshness = that time - send time. ``max_sequence``
is the highest sequence written; with several ``engine-output`` partitions one could trail
the others by part of a settlement batch, so this is a slight lower bound (the settlement
service's own ``exchange_pipeline_freshness_seconds`` histogram measures every output exactly,
in buckets). In http mode freshness covers the creates: the API does not return a cancel's
own command id.

*Throughput* is reported twice: ``send_rate`` (orders handed to Kafka or answered by the
API per second) and ``pipeline_rate`` (orders whose effect reached the store, divided by the
time from the first send to the last one becoming visible).

The generator assumes it is the only writer of ``orders`` while it runs (a workload cancel
names an order by its position in the stream); other writers only make some cancels miss,
which the report shows as ``ORDER_NOT_FOUND`` rejections and a note.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import logging
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from confluent_kafka import KafkaError, Message, TopicPartition

from engine.commands import CancelOrder, Command, Deposit, PlaceOrder
from engine.enums import CommandKind, OrderType
from engine.errors import ExchangeError
from engine.events import EngineOutput
from engine.markets import Markets
from engine.service.output_log import partitions_of
from exchange.kafka import make_consumer, make_producer
from ops.lag import LogEnds
from ops.workload import command_stream, funding_commands, user_commands
from settlement.store import StoreError

log = logging.getLogger(__name__)

Via = Literal["kafka", "http"]
_FOREVER = 10**12  # "count" of an open-ended stream (the generator is lazy)


class LoadError(ExchangeError):
    """The load run could not go on (bad options, broker refused records, no store)."""


class CodecLike(Protocol):
    def encode_command(self, command: Command) -> bytes: ...

    def decode_output(self, data: bytes) -> EngineOutput: ...


class ProgressStore(Protocol):
    def max_sequence(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    via: Via = "kafka"
    rate: float = 1000.0  # trading commands per second; 0 = flat out
    duration_s: float | None = None
    orders: int | None = None  # trading commands (places and cancels), not deposits
    users: int = 100
    seed: int = 1
    url: str = "http://127.0.0.1:8000"
    concurrency: int = 64  # http: requests in flight
    poll_interval_s: float = 0.002
    drain_timeout_s: float = 120.0

    def check(self) -> None:
        """LoadError naming the first bad option."""
        if self.via not in ("kafka", "http"):
            raise LoadError(f"--via must be kafka or http, got {self.via!r}")
        if not (self.rate >= 0 and math.isfinite(self.rate)):
            raise LoadError(f"--rate must be >= 0 (0 = flat out), got {self.rate}")
        if self.duration_s is None and self.orders is None:
            raise LoadError("give --duration or --orders (or both: whichever ends first)")
        if self.duration_s is not None and not self.duration_s > 0:
            raise LoadError(f"--duration must be > 0, got {self.duration_s}")
        if self.orders is not None and self.orders < 1:
            raise LoadError(f"--orders must be >= 1, got {self.orders}")
        if self.users < 1:
            raise LoadError(f"--users must be >= 1, got {self.users}")
        if self.concurrency < 1:
            raise LoadError(f"--concurrency must be >= 1, got {self.concurrency}")


@dataclass(slots=True, kw_only=True)
class LoadReport:
    via: str
    rate_target: float
    users: int
    seed: int
    funding_sent: int = 0
    orders_sent: int = 0  # trading commands accepted (by the broker, or 202 from the API)
    places_sent: int = 0
    cancels_sent: int = 0
    send_started: float = 0.0  # time.monotonic() of the first send (aligns other samples)
    send_seconds: float = 0.0
    send_rate: float = 0.0
    settled: int = 0  # our orders whose effect was seen in the store
    unsettled: int = 0
    settle_seconds: float = 0.0
    pipeline_rate: float = 0.0
    freshness_ms: dict[str, float | None] = field(default_factory=dict)
    freshness_percentiles_ms: list[float] = field(default_factory=list)  # p0..p100
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # engine reason -> count
    http_errors: dict[str, int] = field(default_factory=dict)  # "404 ORDER_NOT_FOUND" -> n
    cancels_skipped: int = 0  # http: the order's create was refused, so nothing to cancel
    timeline: list[dict[str, float | int | None]] = field(default_factory=list)  # per second
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")


# ----------------------------------------------------------------------------- measuring


class StoreProgress:
    """Polls ``max_sequence()`` on a thread; remembers when each new value was first seen."""

    def __init__(self, store: ProgressStore, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self.times = array("d")  # monotonic seconds
        self.sequences = array("q")  # strictly increasing
        self.latest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-progress", daemon=True)

    def start(self) -> StoreProgress:
        self.latest = self._read()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _read(self) -> int:
        try:
            return self._store.max_sequence()
        except StoreError:  # not created yet, or busy: the next poll sees it
            return self.latest

    def _run(self) -> None:
        times, sequences = self.times, self.sequences
        clock, wait, interval = time.monotonic, self._stop.wait, self._interval_s
        while not wait(interval):
            seq = self._read()
            if seq > self.latest:
                times.append(clock())
                sequences.append(seq)
                self.latest = seq

    def first_seen(self, sequence: int) -> float | None:
        """When the store first reached ``sequence`` (None: not yet)."""
        i = bisect.bisect_left(self.sequences, sequence)
        return self.times[i] if i < len(self.times) else None

    def wait_for(self, sequence: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.latest < sequence:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class OutputReader:
    """Reads ``engine-output`` forward from given offsets and hands each output over."""

    def __init__(
        self, bootstrap: str, topic: str, starts: dict[int, int], codec: CodecLike
    ) -> None:
        self._codec = codec
        self._consumer = make_consumer(
            bootstrap,
            "loadgen-output-reader",
            **{
                "fetch.max.bytes": 32 << 20,
                "max.partition.fetch.bytes": 8 << 20,
            },
        )
        self._partitions = [TopicPartition(topic, p, o) for p, o in starts.items()]
        self._consumer.assign(self._partitions)
        # Paused between reads: while the generator sends, a consumer left running would
        # prefetch every output as it appears, and that fetching (here and in the broker)
        # took as much CPU as the pipeline it measures on a two-core machine.
        self._consumer.pause(self._partitions)

    def read(self, handle: Callable[[EngineOutput], bool], expected: int, timeout_s: float) -> int:
        """Decode outputs until ``handle`` accepted ``expected`` of them (or the timeout)."""
        decode = self._codec.decode_output
        found = 0
        deadline = time.monotonic() + timeout_s
        self._consumer.resume(self._partitions)
        try:
            while found < expected and time.monotonic() < deadline:
                for msg in self._consumer.consume(10_000, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        output = decode(msg.value() or b"")
                    except ExchangeError:
                        continue  # not ours to judge: settlement dead-letters it
                    if handle(output):
                        found += 1
        finally:
            self._consumer.pause(self._partitions)
        return found

    def close(self) -> None:
        self._consumer.close()


@dataclass(slots=True)
class _Sent:
    """Our trading commands: id (command id / order id) and send time, in send order."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None if empty)."""
    n = len(sorted_values)
    if n == 0:
        return None
    k = min(n - 1, max(0, math.ceil(q / 100 * n) - 1))
    return sorted_values[k]


# ----------------------------------------------------------------------------- the run


class LoadGenerator:
    """One load run against a stack. :meth:`run` returns the report."""

    def __init__(
        self,
        config: LoadConfig,
        *,
        bootstrap: str,
        orders_topic: str,
        output_topic: str,
        codec: CodecLike,
        store: ProgressStore,
        markets: Markets | None = None,
        on_progress: Callable[[int, int, float], None] | None = None,
    ) -> None:
        config.check()
        if config.via == "http" and markets is None:
            raise LoadError("--via http needs the markets (to write decimal prices)")
        self._cfg = config
        self._bootstrap = bootstrap
        self._orders_topic = orders_topic
        self._output_topic = output_topic
        self._codec = codec
        self._store = store
        self._markets = markets
        self._on_progress = on_progress  # (sent, settled sequence, elapsed s)
        self.report = LoadReport(
            via=config.via, rate_target=config.rate, users=config.users, seed=config.seed
        )

    # -- top level ----------------------------------------------------------------------

    def run(self) -> LoadReport:
        cfg = self._cfg
        n_out = partitions_of(self._bootstrap, self._output_topic)
        ends = LogEnds(self._bootstrap)
        try:
            parts = [(self._orders_topic, 0)] + [(self._output_topic, p) for p in range(n_out)]
            tails = ends.refresh(parts)
        finally:
            ends.close()
        first_offset = tails[(self._orders_topic, 0)].end
        starts = {p: tails[(self._output_topic, p)].end for p in range(n_out)}
        progress = StoreProgress(self._store, cfg.poll_interval_s).start()
        reader = OutputReader(self._bootstrap, self._output_topic, starts, self._codec)
        try:
            if cfg.via == "kafka":
                sent = self._run_kafka(first_offset, reader, progress)
            else:
                sent = asyncio.run(self._run_http(reader, progress))
            self._finish(sent, reader, progress)
        finally:
            reader.close()
            progress.stop()
        return self.report

    def _finish(self, sent: _Sent, reader: OutputReader, progress: StoreProgress) -> None:
        """Learn each command's sequence from engine-output, then wait for the store."""
        cfg, rep = self._cfg, self.report
        order = sorted(range(len(sent.ids)), key=sent.ids.__getitem__)
        ids = array("q", (sent.ids[i] for i in order))
        times = array("d", (sent.times[i] for i in order))
        sequence_of = array("q", bytes(8 * len(ids)))
        place_ids = set(ids) if cfg.via == "http" else set()
        rejected: dict[str, int] = {}
        top = [0]

        def handle(o: EngineOutput) -> bool:
            cid = o.command_id
            i = bisect.bisect_left(ids, cid)
            if i < len(ids) and ids[i] == cid:
                sequence_of[i] = o.sequence
            elif not (
                o.command_kind == CommandKind.CANCEL_ORDER
                and place_ids
                and _cancelled_id(o) in place_ids
            ):
                return False  # somebody else's command
            if o.sequence > top[0]:
                top[0] = o.sequence
            for r in o.rejections:
                rejected[str(r.reason)] = rejected.get(str(r.reason), 0) + 1
            return True

        expected = rep.orders_sent
        found = reader.read(handle, expected, cfg.drain_timeout_s)
        if found < expected:
            rep.notes.append(
                f"only {found} of {expected} outputs appeared on engine-output "
                f"within {cfg.drain_timeout_s:.0f}s"
            )
        if not progress.wait_for(top[0], cfg.drain_timeout_s):
            rep.notes.append(
                f"the store did not reach sequence {top[0]} within {cfg.drain_timeout_s:.0f}s"
            )
        rep.rejected = dict(sorted(rejected.items()))
        rep.applied = found - sum(rejected.values())
        self._freshness(ids, times, sequence_of, progress)

    def _freshness(
        self, ids: array[int], times: array[float], sequence_of: array[int], progress: StoreProgress
    ) -> None:
        rep = self.report
        values: list[float] = []
        first_send = min(times) if times else 0.0
        last_seen = first_send
        per_second: dict[int, list[float]] = {}
        settled_in: dict[int, int] = {}
        sent_in: dict[int, int] = {}
        for i in range(len(ids)):
            second = int(times[i] - first_send)
            sent_in[second] = sent_in.get(second, 0) + 1
            seq = sequence_of[i]
            seen = progress.first_seen(seq) if seq else None
            if seen is None:
                rep.unsettled += 1
                continue
            ms = max(0.0, (seen - times[i]) * 1000)
            values.append(ms)
            per_second.setdefault(second, []).append(ms)
            at = int(seen - first_send)
            settled_in[at] = settled_in.get(at, 0) + 1
            last_seen = max(last_seen, seen)
        values.sort()
        rep.settled = len(values)
        rep.settle_seconds = last_seen - first_send
        rep.pipeline_rate = rep.settled / rep.settle_seconds if rep.settle_seconds > 0 else 0.0
        rep.freshness_ms = {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": values[-1] if values else None,
            "mean": sum(values) / len(values) if values else None,
        }
        rep.freshness_percentiles_ms = [
            round(v, 3) for v in (percentile(values, q) for q in range(101)) if v is not None
        ]
        last = max([*sent_in, *settled_in], default=-1)
        for s in range(last + 1):
            window = sorted(per_second.get(s, []))
            rep.timeline.append(
                {
                    "second": s,
                    "sent": sent_in.get(s, 0),
                    "settled": settled_in.get(s, 0),
                    "freshness_p50_ms": percentile(window, 50),
                    "freshness_p99_ms": percentile(window, 99),
                }
            )

    def _tick(self, sent: int, progress: StoreProgress, started: float) -> None:
        if self._on_progress is not None:
            self._on_progress(sent, progress.latest, time.monotonic() - started)

    # -- kafka --------------------------------------------------------------------------

    def _run_kafka(self, first_offset: int, reader: OutputReader, progress: StoreProgress) -> _Sent:
        cfg, rep = self._cfg, self.report
        encode = self._codec.encode_command
        topic = self._orders_topic
        offsets = array("q")
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                offsets.append(msg.offset() or 0)

        # linger 5 ms: the embedded broker's cost is per request far more than per record
        # (3k records/s in 1 ms batches took it 20% of a core, in 5 ms batches 5%).
        # Not idempotent: against a busy broker librdkafka's idempotent producer spins its
        # broker thread (poll with timeout 0) while requests are in flight, which took 40% of
        # a core at 5k records/s (2% without); cf. librdkafka issues #2565, #3692. A retry
        # that duplicated a command would show in the report as a gap in the offsets (the
        # "another producer" note); the engine's own producer stays idempotent.
        producer = make_producer(
            self._bootstrap,
            **{
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "enable.idempotence": False,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 1 << 21,
            },
        )

        def produce(value: bytes) -> None:
            while True:
                try:
                    producer.produce(topic, value, None, 0, on_delivery)
                    return
                except BufferError:
                    producer.poll(0.001)

        # 1. Funding, before the clock: the users' creation, one deposit per user and asset.
        stamp = _wall_ms()
        funding = funding_commands(cfg.users, first_offset=first_offset, timestamp_ms=stamp)
        for c in funding:
            produce(encode(c))
        _flush(producer, errors)
        funding_ids = list(offsets)
        del offsets[:]
        next_offset = (funding_ids[-1] + 1) if funding_ids else first_offset
        self._await_funding(funding_ids, reader, progress)

        # 2. Trading.
        count = cfg.orders if cfg.orders is not None else _FOREVER
        commands = command_stream(
            cfg.seed, count, users=cfg.users, first_offset=next_offset, fund=False
        )
        sent = _Sent()
        kinds = array("b")  # 1 = place, 2 = cancel
        started = time.monotonic()
        deadline = started + cfg.duration_s if cfg.duration_s is not None else math.inf
        try:
            if cfg.rate == 0 and cfg.orders is not None:
                started = self._kafka_flat_out_preencoded(
                    commands, produce, producer, sent, kinds, deadline, progress
                )
            else:
                self._kafka_paced(
                    commands, produce, producer, sent, kinds, deadline, progress, started
                )
        except KeyboardInterrupt:
            rep.notes.append("interrupted: stopped sending early")
        send_end = time.monotonic()
        _flush(producer, errors)
        n = len(offsets)
        if n != len(sent.times):
            raise LoadError(f"{len(sent.times)} commands sent but {n} delivered")
        sent.ids = offsets
        if n and offsets[-1] - offsets[0] != n - 1:
            rep.notes.append(
                "another producer wrote to orders during the run: some cancels "
                "named the wrong order (ORDER_NOT_FOUND)"
            )
        rep.orders_sent = n
        rep.places_sent = kinds.count(1)
        rep.cancels_sent = kinds.count(2)
        rep.send_started = started
        rep.send_seconds = send_end - started
        rep.send_rate = n / rep.send_seconds if rep.send_seconds > 0 else 0.0
        return sent

    def _kafka_paced(
        self,
        commands: Iterator[Command],
        produce: Callable[[bytes], None],
        producer: Any,
        sent: _Sent,
        kinds: array[int],
        deadline: float,
        progress: StoreProgress,
        started: float,
    ) -> None:
        rate = self._cfg.rate
        encode = self._codec.encode_command
        replace = dataclasses.replace
        times_append, kinds_append = sent.times.append, kinds.append
        clock = time.monotonic
        i = 0
        last_tick = started
        for_ever = rate == 0
        while True:
            now = clock()
            if now >= deadline:
                return
            due = 2000 if for_ever else min(2000, int((now - started) * rate) + 1 - i)
            if due <= 0:
                # Whole-millisecond ticks: waking for every single command (thousands of
                # sleeps and producer wakeups a second) cost more CPU than the sending.
                time.sleep(max(0.001, (i / rate) - (now - started)))
                continue
            stamp = _wall_ms()
            for _ in range(due):
                c = next(commands, None)
                if c is None:
                    return
                produce(encode(replace(c, timestamp_ms=stamp)))
                times_append(clock() if for_ever else started + i / rate)
                kinds_append(2 if type(c) is CancelOrder else 1)
                i += 1
            producer.poll(0)
            if now - last_tick >= 0.1:
                self._tick(i, progress, started)
                last_tick = now

    def _kafka_flat_out_preencoded(
        self,
        commands: Iterator[Command],
        produce: Callable[[bytes], None],
        producer: Any,
        sent: _Sent,
        kinds: array[int],
        deadline: float,
        progress: StoreProgress,
    ) -> float:
        """Encode everything, then start the clock and produce: returns the start time."""
        encode = self._codec.encode_command
        stamp = _wall_ms()
        values: list[bytes] = []
        for c in commands:
            values.append(encode(dataclasses.replace(c, timestamp_ms=stamp)))
            kinds.append(2 if type(c) is CancelOrder else 1)
        clock = time.monotonic
        times_append = sent.times.append
        started = last_tick = clock()
        if self._cfg.duration_s is not None:  # it counts from now, not from before encoding
            deadline = started + self._cfg.duration_s
        for i, value in enumerate(values):
            produce(value)
            now = clock()
            times_append(now)
            if i % 2000 == 1999:
                producer.poll(0)
                if now >= deadline:
                    del kinds[i + 1 :]
                    break
                if now - last_tick >= 0.1:
                    self._tick(i + 1, progress, started)
                    last_tick = now
        return started

    def _await_funding(
        self, funding_ids: Sequence[int], reader: OutputReader, progress: StoreProgress
    ) -> None:
        """Let the deposits reach the store before the clock starts (best effort): read
        their outputs to learn their sequences, then wait for the store to show them."""
        self.report.funding_sent = len(funding_ids)
        ids = set(funding_ids)
        top = 0

        def handle(o: EngineOutput) -> bool:
            nonlocal top
            if o.command_id in ids:
                top = max(top, o.sequence)
                return True
            return False

        found = reader.read(handle, len(ids), 60.0)
        if found < len(ids) or not progress.wait_for(top, 60.0):
            self.report.notes.append(
                "the users' creation and funding did not all reach the store within 60s before "
                "trading began"
            )

    # -- http ---------------------------------------------------------------------------

    async def _run_http(self, reader: OutputReader, progress: StoreProgress) -> _Sent:
        cfg = self._cfg
        assert self._markets is not None
        markets = self._markets
        limits = httpx.Limits(
            max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
        )
        async with httpx.AsyncClient(base_url=cfg.url, limits=limits, timeout=60.0) as client:
            # 1. Funding, after the users' creation.
            await asyncio.to_thread(self._create_users_on_the_log)
            funding_ids: list[int] = []
            gate = asyncio.Semaphore(cfg.concurrency)

            async def deposit(c: Deposit) -> None:
                async with gate:
                    body = {
                        "user_id": c.user_id,
                        "asset": c.asset,
                        "amount": _plain(markets.assets[c.asset].from_minor(c.amount)),
                    }
                    status, data = await _post(client, "/api/v1/deposit", body)
                if status == 202:
                    funding_ids.append(int(data["command_id"]))
                else:
                    self._http_error(status, data)

            try:
                await asyncio.gather(
                    *(deposit(c) for c in funding_commands(cfg.users) if isinstance(c, Deposit))
                )
            except httpx.HTTPError as e:
                raise LoadError(f"the gateway at {cfg.url} did not answer: {e}") from e
            await asyncio.to_thread(self._await_funding, funding_ids, reader, progress)
            # 2. Trading.
            return await self._http_trading(client, progress)

    def _create_users_on_the_log(self) -> None:
        """Produce the workload's ``CreateUser`` commands straight to ``orders``: the engine
        refuses deposits and orders for users it never created. (Through Kafka, not the API:
        creating users is an operator's signed request there.) They precede every deposit
        the API produces afterwards on the single-partition log."""
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        producer = make_producer(self._bootstrap)
        encode = self._codec.encode_command
        for command in user_commands(self._cfg.users, timestamp_ms=_wall_ms()):
            producer.produce(self._orders_topic, encode(command), None, 0, on_delivery)
        _flush(producer, errors)

    async def _http_trading(self, client: httpx.AsyncClient, progress: StoreProgress) -> _Sent:
        cfg, rep = self._cfg, self.report
        assert self._markets is not None
        symbols = self._markets.symbols
        count = cfg.orders if cfg.orders is not None else _FOREVER
        commands = command_stream(cfg.seed, count, users=cfg.users, fund=False)
        placed: dict[int, asyncio.Future[int | None]] = {}  # workload id -> API order id
        sent = _Sent()
        loop = asyncio.get_running_loop()
        clock = time.monotonic
        started = clock()
        deadline = started + cfg.duration_s if cfg.duration_s is not None else math.inf
        rate = cfg.rate
        state = {"next": 0, "sent": 0}
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                i = state["next"]
                c = next(commands, None)
                if c is None:
                    return
                state["next"] = i + 1
                at = started + i / rate if rate else clock()
                delay = at - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if clock() >= deadline:
                    stop.set()
                    return
                if isinstance(c, PlaceOrder):
                    fut: asyncio.Future[int | None] = loop.create_future()
                    placed[c.order_id] = fut
                    spec = symbols[c.symbol]
                    body: dict[str, object] = {
                        "user_id": c.user_id,
                        "symbol": c.symbol,
                        "side": str(c.side),
                        "order_type": str(c.order_type),
                        "time_in_force": str(c.time_in_force),
                        "quantity": _plain(spec.lots_to_quantity(c.quantity)),
                    }
                    if c.order_type is OrderType.LIMIT and c.price is not None:
                        body["price"] = _plain(spec.ticks_to_price(c.price))
                    status, data = await _post(client, "/api/v1/order/create", body)
                    if status == 202:
                        order_id = int(data["order_id"])
                        sent.ids.append(order_id)
                        sent.times.append(at)
                        rep.places_sent += 1
                        state["sent"] += 1
                        fut.set_result(order_id)
                    else:
                        self._http_error(status, data)
                        fut.set_result(None)
                elif isinstance(c, CancelOrder) and c.order_id is not None:
                    target = placed.pop(c.order_id, None)
                    real = await target if target is not None else None
                    if real is None:
                        rep.cancels_skipped += 1
                        continue
                    status, data = await _post(
                        client,
                        "/api/v1/order/cancel",
                        {"user_id": c.user_id, "symbol": c.symbol, "order_id": str(real)},
                    )
                    if status == 202:
                        rep.cancels_sent += 1
                        state["sent"] += 1
                    else:
                        self._http_error(status, data)

        async def ticker() -> None:
            while not stop.is_set():
                self._tick(state["sent"], progress, started)
                await asyncio.sleep(0.1)

        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        except asyncio.CancelledError:
            rep.notes.append("interrupted: stopped sending early")
        finally:
            stop.set()
            await tick
        rep.orders_sent = rep.places_sent + rep.cancels_sent
        rep.send_started = started
        rep.send_seconds = clock() - started
        rep.send_rate = rep.orders_sent / rep.send_seconds if rep.send_seconds > 0 else 0.0
        return sent

    def _http_error(self, status: int, data: dict[str, Any]) -> None:
        code = str(data.get("code", "")) if isinstance(data, dict) else ""
        key = f"{status} {code}".strip()
        self.report.http_errors[key] = self.report.http_errors.get(key, 0) + 1


def _cancelled_id(o: EngineOutput) -> int | None:
    if o.rejections:
        return o.rejections[0].order_id
    if o.order_updates:
        return o.order_updates[0].order_id
    return None


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, object]
) -> tuple[int, dict[str, Any]]:
    """(status, data or error) of a POST; a transport failure is status 0."""
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as e:
        return 0, {"code": type(e).__name__}
    try:
        payload = response.json()
    except ValueError:
        return response.status_code, {}
    if payload.get("success"):
        return response.status_code, payload.get("data") or {}
    return response.status_code, payload.get("error") or {}


def _plain(value: object) -> str:
    """A decimal as plain digits (never exponent notation, which the API refuses)."""
    return format(value, "f")


def _flush(producer: Any, errors: list[KafkaError]) -> None:
    while producer.flush(1.0) > 0:
        if errors:
            break
    if errors:
        raise LoadError(f"the broker refused records: {errors[0]}")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# ----------------------------------------------------------------------------- console


def summary_lines(rep: LoadReport) -> list[str]:
    """The end-of-run report, as lines of text."""
    f = rep.freshness_ms

    def ms(key: str) -> str:
        v = f.get(key)
        return "-" if v is None else f"{v:.1f} ms"

    lines = [
        f"via {rep.via}, target {'flat out' if rep.rate_target == 0 else f'{rep.rate_target:g}/s'}"
        f", {rep.users} users, seed {rep.seed}",
        f"orders sent      {rep.orders_sent} ({rep.places_sent} places, {rep.cancels_sent} "
        f"cancels) + {rep.funding_sent} funding deposits",
        f"send rate        {rep.send_rate:,.0f} orders/s over {rep.send_seconds:.2f} s",
        f"pipeline rate    {rep.pipeline_rate:,.0f} orders/s into the store "
        f"({rep.settled} settled in {rep.settle_seconds:.2f} s, {rep.unsettled} not seen)",
        f"freshness        p50 {ms('p50')}  p95 {ms('p95')}  p99 {ms('p99')}  max {ms('max')}",
        f"engine           {rep.applied} applied, "
        f"{sum(rep.rejected.values())} rejected"
        + (": " + ", ".join(f"{k} {v}" for k, v in rep.rejected.items()) if rep.rejected else ""),
    ]
    if rep.http_errors:
        lines.append(
            "http errors      " + ", ".join(f"{k}: {v}" for k, v in rep.http_errors.items())
        )
    if rep.cancels_skipped:
        lines.append(f"cancels skipped  {rep.cancels_skipped} (their order was refused)")
    lines.extend(f"note: {n}" for n in rep.notes)
    return lines
