"""End-to-end benchmark: orders -> engine -> settlement -> store, embedded or real stack.

    .venv/bin/python bench/end_to_end.py            # defaults: about 2-3 minutes
    .venv/bin/python bench/end_to_end.py --stack real   # Apache Kafka + Cassandra
    .venv/bin/python bench/end_to_end.py --stack real --store sqlite   # Apache Kafka + SQLite
    .venv/bin/python bench/end_to_end.py --help

``--stack embedded`` (default): Tansu and SQLite. ``--stack real``: Apache Kafka and (by
default) Cassandra: the ones KAFKA_BOOTSTRAP_SERVERS / CASSANDRA_CONTACT_POINTS name if set,
else its own ``exchange infra`` in a temporary directory on free ports (stopped at the end);
topics and keyspace of its own either way.

What it starts: ``exchange up`` as a subprocess (embedded Tansu broker, the engine, one
settlement worker, the lag exporter; production settings, metrics on free ports) in a
temporary data directory. The load generator runs in this process (its own GIL), driving
``orders`` directly with the codec (``exchange loadgen --via kafka``): see
:mod:`ops.loadgen` for how freshness is measured.

Phases:
1. flat out: ``--flat-orders`` orders, encoded before the clock starts, produced as fast as
   the producer takes them; the result is the *pipeline* rate, orders whose effect reached
   the store per second (target >= 20k/s);
2. paced: ``--rate`` orders/s (5k) for ``--seconds``; the result is the freshness p99, send to
   effect visible in the store (target <= 100 ms). The settlement service's own histogram
   (``exchange_pipeline_freshness_seconds``, gateway stamp to write) is reported beside it.
   If the pipeline cannot sustain the rate, queues grow and so does freshness, without bound;
3. floor: ``--floor-rate`` orders/s (1k), a rate the pipeline sustains even on a busy 2-core
   machine, for ``--floor-seconds``: the freshness the pipeline gives when it is not queueing.

While it runs, a thread samples consumer lag (``ops.lag``) twice a second. The numbers go
to ``bench/e2e_results.json``, and a plot of lag and freshness over the run to
``bench/e2e_run.png`` when matplotlib is installed. On a 2-core machine the broker, both
services and the load generator share the cores, so the numbers are a floor.

The last line is ``RESULT e2e orders_per_s=<n> freshness_p99_ms_at_5k=<n> stack=<name>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exchange.codec import Codec  # noqa: E402
from gateway.dashboard import buckets, histogram_quantile, parse_metrics  # noqa: E402
from ops.broker import free_port  # noqa: E402  (after the sys.path fix above)
from ops.lag import ENGINE_GROUP, SETTLEMENT_GROUP, LagMonitor  # noqa: E402
from ops.loadgen import LoadConfig, LoadGenerator, LoadReport, summary_lines  # noqa: E402
from settlement.sqlite_store import SqliteStore  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent


def start_stack(
    data_dir: Path, ports: dict[str, int], real: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXCHANGE_", "KAFKA_", "CASSANDRA_"))
    }
    env.update(real or {})
    env.update(
        {
            "EXCHANGE_DATA_DIR": str(data_dir),
            "EXCHANGE_LOG_LEVEL": "WARNING",
            "EXCHANGE_ENGINE_METRICS_PORT": str(ports["engine"]),
            "EXCHANGE_SETTLEMENT_METRICS_PORT": str(ports["settlement"]),
            "EXCHANGE_LAG_METRICS_PORT": str(ports["lag"]),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    bootstrap = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)", line)
        if m:
            bootstrap = m.group(1)
            break
    if bootstrap is None:
        proc.kill()
        raise SystemExit("exchange up did not start")
    # Drain its output in the background so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    return proc, bootstrap


def wait_ready(store: Any, settlement_url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = httpx.get(settlement_url, timeout=2).text
            if "exchange_settlement_ready 1.0" in text:
                store.max_sequence()
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("the stack did not become ready")


class Sampler:
    """Lag of both groups every 0.5 s, for the plot."""

    def __init__(self, bootstrap: str, orders: str, output: str) -> None:
        self.monitor = LagMonitor(bootstrap, {ENGINE_GROUP: (orders,), SETTLEMENT_GROUP: (output,)})
        self.points: list[tuple[float, str, int, int]] = []  # (t, phase, engine, settlement)
        self.phase = "idle"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                s = self.monitor.sample()
            except Exception:
                continue
            self.points.append(
                (
                    time.monotonic() - self.t0,
                    self.phase,
                    s.lag_of(ENGINE_GROUP),
                    s.lag_of(SETTLEMENT_GROUP),
                )
            )

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.monitor.close()


def settlement_freshness(url: str) -> list[tuple[float, float]]:
    import httpx

    return buckets(
        parse_metrics([httpx.get(url, timeout=5).text]), "exchange_pipeline_freshness_seconds"
    )


def snapshot_pauses(url: str) -> dict[str, float | None]:
    """How often and how long the engine paused matching for snapshots (from its metrics)."""
    import httpx

    scrape = parse_metrics([httpx.get(url, timeout=5).text])
    name = "exchange_engine_snapshot_pause_seconds"
    count = sum((scrape.get(f"{name}_count") or {}).values())
    total = sum((scrape.get(f"{name}_sum") or {}).values())
    return {
        "count": count,
        "sum_s": total,
        "p99_s": histogram_quantile(0.99, buckets(scrape, name)),
    }


def window_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float | None:
    prev = dict(before)
    v = histogram_quantile(q, [(le, c - prev.get(le, 0.0)) for le, c in after])
    return None if v is None else v * 1000


def run_phase(
    name: str,
    config: LoadConfig,
    bootstrap: str,
    store: Any,
    sampler: Sampler,
    settlement_url: str,
    topics: tuple[str, str] = ("orders", "engine-output"),
) -> tuple[LoadReport, dict[str, Any]]:
    print(
        f"== {name}: via kafka, "
        f"{'flat out' if config.rate == 0 else f'{config.rate:g}/s'}, "
        f"{config.orders or '-'} orders, {config.duration_s or '-'} s",
        flush=True,
    )
    before = settlement_freshness(settlement_url)
    sampler.phase = name
    report = LoadGenerator(
        config,
        bootstrap=bootstrap,
        orders_topic=topics[0],
        output_topic=topics[1],
        codec=Codec(),
        store=store,
    ).run()
    sampler.phase = "idle"
    after = settlement_freshness(settlement_url)
    for line in summary_lines(report):
        print("   " + line, flush=True)
    service_side = {
        "p50_ms": window_quantile(before, after, 0.50),
        "p99_ms": window_quantile(before, after, 0.99),
    }
    print(
        f"   settlement histogram (gateway stamp -> write): p50 "
        f"{service_side['p50_ms'] or 0:.1f} ms, p99 {service_side['p99_ms'] or 0:.1f} ms",
        flush=True,
    )
    return report, {
        "started_s": report.send_started - sampler.t0,
        "service_freshness": service_side,
    }


def plot(
    path: Path, sampler: Sampler, phases: list[tuple[str, LoadReport, dict[str, Any]]]
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_lag, ax_fresh) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [p[0] for p in sampler.points]
    ax_lag.plot(t, [p[2] for p in sampler.points], label="engine lag (orders)")
    ax_lag.plot(t, [p[3] for p in sampler.points], label="settlement lag (engine-output)")
    # The engine commits its orders offset about once a second, so its lag is a staircase.
    ax_lag.set_ylabel("records behind")
    ax_lag.legend(loc="upper right")
    ax_lag.set_title("End-to-end run: consumer lag and freshness")
    for name, report, info in phases:
        x0 = info["started_s"]
        xs = [x0 + p["second"] for p in report.timeline]
        ax_fresh.plot(
            xs,
            [p["freshness_p50_ms"] for p in report.timeline],
            marker=".",
            label=f"{name} p50 (by send second)",
        )
        ax_fresh.plot(
            xs, [p["freshness_p99_ms"] for p in report.timeline], marker=".", label=f"{name} p99"
        )
        for ax in (ax_lag, ax_fresh):
            ax.axvspan(x0, x0 + report.send_seconds, alpha=0.08)
    ax_fresh.set_yscale("log")
    ax_fresh.set_ylabel("freshness, send -> store (ms)")
    ax_fresh.set_xlabel("seconds since start")
    ax_fresh.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flat-orders", type=int, default=150_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--floor-rate", type=float, default=1000.0)
    parser.add_argument("--floor-seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "e2e_results.json")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="default bench/e2e_run.png (embedded), e2e_run_real.png (real)",
    )
    parser.add_argument("--stack", choices=("embedded", "real"), default="embedded")
    parser.add_argument(
        "--store",
        choices=("sqlite", "cassandra"),
        default=None,
        help="default: sqlite on the embedded stack, cassandra on the real one",
    )
    args = parser.parse_args()
    store_kind = args.store or ("cassandra" if args.stack == "real" else "sqlite")
    if args.stack == "embedded" and store_kind == "cassandra":
        parser.error("--store cassandra needs --stack real")
    suffix = (
        "" if args.stack == "embedded" else "_real_sqlite" if store_kind == "sqlite" else "_real"
    )
    if args.out == OUT_DIR / "e2e_results.json":
        args.out = OUT_DIR / f"e2e_results{suffix}.json"
    if args.plot is None:
        args.plot = OUT_DIR / f"e2e_run{suffix}.png"
    stack_name = args.stack if store_kind != "sqlite" or args.stack == "embedded" else "real-sqlite"
    with contextlib.ExitStack() as infra:
        real = None if args.stack == "embedded" else infra.enter_context(real_stack(store_kind))
        return run(args, real, stack_name)


@contextlib.contextmanager
def real_stack(store_kind: str) -> Iterator[dict[str, str]]:
    """The real stack's environment: the configured one, else our own `exchange infra`."""
    from ops.infra import InfraConfig, default_cache_dir, default_pom, running

    prefix = f"bench{os.getpid()}"
    topics = {
        "EXCHANGE_TOPIC_ORDERS": f"{prefix}.orders",
        "EXCHANGE_TOPIC_ENGINE_OUTPUT": f"{prefix}.engine-output",
        "EXCHANGE_TOPIC_ORDERS_DLQ": f"{prefix}.orders.dlq",
        "EXCHANGE_TOPIC_ENGINE_OUTPUT_DLQ": f"{prefix}.engine-output.dlq",
        "EXCHANGE_TOPIC_ENGINE_SNAPSHOTS": f"{prefix}.engine-snapshots",
    }
    given = {
        k: os.environ[k]
        for k in ("KAFKA_BOOTSTRAP_SERVERS", "CASSANDRA_CONTACT_POINTS", "CASSANDRA_PORT")
        if os.environ.get(k)
    }
    with contextlib.ExitStack() as stack:
        if "KAFKA_BOOTSTRAP_SERVERS" not in given or (
            store_kind == "cassandra" and "CASSANDRA_CONTACT_POINTS" not in given
        ):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-infra-")))
            config = InfraConfig(
                data_dir=tmp / "infra",
                cache_dir=default_cache_dir(),
                pom=default_pom(),
                kafka_port=free_port(),
                kafka_controller_port=free_port(),
                cassandra_port=free_port(),
                cassandra_storage_port=free_port(),
                components=("kafka", "cassandra") if store_kind == "cassandra" else ("kafka",),
            )
            print(
                "starting exchange infra (Apache Kafka"
                f"{' + Cassandra' if store_kind == 'cassandra' else ''})...",
                flush=True,
            )
            state = stack.enter_context(running(config))
            given = dict(line.removeprefix("export ").split("=", 1) for line in state.exports())
        env = {"KAFKA_BOOTSTRAP_SERVERS": given["KAFKA_BOOTSTRAP_SERVERS"], **topics}
        if store_kind == "cassandra":
            env.update(
                {
                    "CASSANDRA_CONTACT_POINTS": given["CASSANDRA_CONTACT_POINTS"],
                    "CASSANDRA_PORT": given.get("CASSANDRA_PORT", "9042"),
                    "CASSANDRA_KEYSPACE": prefix,
                }
            )
        yield env


def open_store(data_dir: Path, real: dict[str, str] | None) -> Any:
    if real is not None and "CASSANDRA_CONTACT_POINTS" in real:
        from settlement.cassandra_store import CassandraStore

        store = CassandraStore(
            real["CASSANDRA_CONTACT_POINTS"].split(","),
            port=int(real["CASSANDRA_PORT"]),
            keyspace=real["CASSANDRA_KEYSPACE"],
        )
        store.init_schema()
        return store
    sub = "embedded" if real is None else "."
    return SqliteStore(data_dir / sub / "exchange.sqlite3", readonly=True)


def run(args: argparse.Namespace, real: dict[str, str] | None, stack_name: str) -> int:

    ports = {"engine": free_port(), "settlement": free_port(), "lag": free_port()}
    settlement_url = f"http://127.0.0.1:{ports['settlement']}/metrics"
    engine_url = f"http://127.0.0.1:{ports['engine']}/metrics"
    snapshots: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        data_dir = Path(tmp)
        proc, bootstrap = start_stack(data_dir, ports, real)
        store = open_store(data_dir, real)
        topics = (
            (real or {}).get("EXCHANGE_TOPIC_ORDERS", "orders"),
            (real or {}).get("EXCHANGE_TOPIC_ENGINE_OUTPUT", "engine-output"),
        )
        sampler: Sampler | None = None
        try:
            wait_ready(store, settlement_url)
            sampler = Sampler(bootstrap, *topics).start()
            phases = []
            flat, info = run_phase(
                "flat out",
                LoadConfig(
                    rate=0, orders=args.flat_orders, users=args.users, seed=1, drain_timeout_s=120
                ),
                bootstrap,
                store,
                sampler,
                settlement_url,
                topics,
            )
            phases.append(("flat out", flat, info))
            paced, info = run_phase(
                f"{args.rate:g}/s",
                LoadConfig(
                    rate=args.rate,
                    duration_s=args.seconds,
                    users=args.users,
                    seed=2,
                    drain_timeout_s=120,
                ),
                bootstrap,
                store,
                sampler,
                settlement_url,
                topics,
            )
            phases.append((f"{args.rate:g}/s", paced, info))
            if args.floor_seconds > 0:
                floor, info = run_phase(
                    f"{args.floor_rate:g}/s",
                    LoadConfig(
                        rate=args.floor_rate,
                        duration_s=args.floor_seconds,
                        users=args.users,
                        seed=3,
                        drain_timeout_s=120,
                    ),
                    bootstrap,
                    store,
                    sampler,
                    settlement_url,
                    topics,
                )
                phases.append((f"{args.floor_rate:g}/s", floor, info))
            snapshots = snapshot_pauses(engine_url)
            print(
                f"engine snapshots during the run: {snapshots['count']:.0f}, matching paused "
                f"{snapshots['sum_s']:.2f} s in all (p99 <= {snapshots['p99_s']} s)",
                flush=True,
            )
        finally:
            if sampler is not None:
                sampler.stop()
            store.close()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    orders_per_s = flat.pipeline_rate
    p99 = paced.freshness_ms.get("p99")
    results = {
        "stack": stack_name,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "phases": [{"name": n, "report": json.loads(r.to_json()), **i} for n, r, i in phases],
        "engine_snapshot_pauses": snapshots,
        "lag": [
            {"t": t, "phase": ph, "engine": e, "settlement": s} for t, ph, e, s in sampler.points
        ]
        if sampler
        else [],
        "result": {
            "orders_per_s": round(orders_per_s),
            "freshness_p99_ms_at_rate": None if p99 is None else round(p99, 1),
            "rate": args.rate,
            "freshness_ms_at_floor_rate": phases[-1][1].freshness_ms
            if args.floor_seconds > 0
            else None,
            "floor_rate": args.floor_rate,
        },
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if sampler is not None and plot(args.plot, sampler, phases):
        print(f"plot written to {args.plot}")
    else:
        print("plot skipped (pip install matplotlib)")
    print(f"results written to {args.out}")
    p99_text = "nan" if p99 is None else f"{p99:.0f}"
    print(
        f"RESULT e2e orders_per_s={orders_per_s:.0f} freshness_p99_ms_at_5k={p99_text} "
        f"stack={stack_name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
