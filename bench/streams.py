"""Streams benchmark: WebSocket subscribers of one gateway under an order flow (issue 15).

    .venv/bin/python bench/streams.py                          # 1,000 subscribers, 2k orders/s
    .venv/bin/python bench/streams.py --subscribers 200 --rate 500 --seconds 20

What runs:

* the stack: ``exchange up`` as a subprocess in a fresh data directory (embedded broker and
  SQLite; ``EXCHANGE_PORT`` 18410, engine and settlement metrics 18411 / 18412, no lag
  exporter, unless ``--port`` says otherwise); the gateway is one process;
* ``--subscribers`` WebSocket clients in a separate process (so their parsing does not share
  a GIL with the load), each subscribed to ``depth@BTC_USDT`` and ``trades@BTC_USDT``. All of
  them parse every frame (websockets' sans-I/O protocol, which also answers the server's
  pings); ``--measured`` of them (20) also decode every message and note when it arrived;
* ``exchange loadgen --via kafka`` in this process at ``--rate`` orders/s for ``--seconds``;
* a REST client asking ``GET /api/v1/depth?symbol=BTC_USDT`` (limit 100) every 20 ms, one
  request at a time, in a process of its own.

Delivery latency is engine publish -> client: the client's arrival time minus the Kafka
timestamp of the engine's output record (the engine's producer stamps it), for each trade
(by trade id) and each depth event (by its ``first_update_id``, the oldest update merged in);
both clocks are this machine's. Also: the gateway's CPU (% of one core, ``/proc``) over the
flow, the depth route's round trip p50/p99 (and the gateway's own histograms of the depth
route and of publish -> socket write, from its ``/metrics``), and how many clients the
gateway closed as slow consumers (a client that cannot keep up is closed with 1008; its
later messages are missing, not late).

Output: ``--out`` (default ``data/bench/streams-<UTC time>.json``, ignored by git). The last
line is ``RESULT streams subscribers=<n> p99_ms=<n> depth_p99_ms=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402  (after the sys.path fix above)
from confluent_kafka import KafkaError, Message  # noqa: E402

from bench.end_to_end import real_stack  # noqa: E402
from bench.soak import Stack, cpu_ticks  # noqa: E402
from exchange.codec import Codec  # noqa: E402
from exchange.kafka import ReadToEnd, make_consumer, where  # noqa: E402
from gateway.dashboard import buckets, histogram_quantile, parse_metrics  # noqa: E402
from ops.loadgen import LoadConfig, LoadGenerator, summary_lines  # noqa: E402
from settlement.sqlite_store import SqliteStore  # noqa: E402

SYMBOL = "BTC_USDT"
STREAMS = [f"depth@{SYMBOL}", f"trades@{SYMBOL}"]
TICK_S = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]  # nearest rank


# --------------------------------------------------------------------------- the clients


def run_clients(
    ws_url: str, n: int, measured: int, stop: Any, ready: Any, out: Any
) -> None:  # a child process
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    uri = parse_uri(ws_url)
    records: list[tuple[str, int, int]] = []  # (kind, key, arrival ms): measured clients only
    stats = {"connected": 0, "subscribed": 0, "messages": 0, "closed": {}}

    pong_text = Frame(Opcode.TEXT, b'{"op":"pong"}').serialize(mask=True)

    class Client(asyncio.Protocol):
        """Handshake with websockets' sans-I/O protocol; then a measured client keeps using
        it (and decodes every message), while the others walk the frames themselves (a
        header read per frame, about a microsecond; pings answered) so that the clients'
        process is not what limits the run."""

        def __init__(self, measure: bool) -> None:
            self.measure = measure
            self.proto = ClientProtocol(uri, max_size=None)
            self.transport: asyncio.Transport | None = None
            self.subscribed = False
            self.raw = False
            self.buf = bytearray()

        def flush(self) -> None:
            if self.transport is not None:
                for chunk in self.proto.data_to_send():
                    if chunk:
                        self.transport.write(chunk)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.proto.send_request(self.proto.connect())
            self.flush()

        def data_received(self, data: bytes) -> None:
            if self.raw:
                self.walk(data)
                return
            self.proto.receive_data(data)
            for event in self.proto.events_received():
                if isinstance(event, Response):
                    stats["connected"] += 1
                    self.proto.send_text(
                        json.dumps({"op": "subscribe", "streams": STREAMS}).encode()
                    )
                    self.flush()
                    if not self.measure:
                        self.raw = True  # nothing else arrives before the subscribe's answer
                        return
                elif event.opcode is Opcode.TEXT:
                    stats["messages"] += 1
                    if not self.subscribed:
                        if b'"subscribed"' in event.data:
                            self.subscribed = True
                            stats["subscribed"] += 1
                        continue
                    now = time.time_ns() // 1_000_000
                    msg = json.loads(event.data)
                    data = msg.get("data")
                    stream = msg.get("stream", "")
                    if stream.startswith("trades@"):  # a batch's trades, in order
                        records.extend(("t", int(t["trade_id"]), now) for t in data)
                    elif stream.startswith("depth@"):
                        records.append(("d", int(data["first_update_id"]), now))
                elif event.opcode is Opcode.CLOSE:
                    code = str(self.proto.close_code)
                    stats["closed"][code] = stats["closed"].get(code, 0) + 1
            self.flush()

        def walk(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            pos, end, n = 0, len(buf), 0
            while end - pos >= 2:
                length = buf[pos + 1] & 0x7F
                head = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                    head = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    head = 10
                if end - pos < head + length:
                    break
                opcode = buf[pos] & 0x0F
                if opcode == 1:
                    n += 1
                elif opcode == 9 and self.transport is not None:
                    payload = bytes(buf[pos + head : pos + head + length])
                    self.transport.write(Frame(Opcode.PONG, payload).serialize(mask=True))
                elif opcode == 8:
                    code = str(int.from_bytes(buf[pos + head : pos + head + 2], "big"))
                    stats["closed"][code] = stats["closed"].get(code, 0) + 1
                pos += head + length
            del buf[:pos]
            if n:
                stats["messages"] += n
                if not self.subscribed:
                    self.subscribed = True  # the first text frame is the subscribe's answer
                    stats["subscribed"] += 1

        def pong(self) -> None:  # any message answers the app-level heartbeat
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(pong_text)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        host, port = uri.host, uri.port
        clients: list[Client] = []
        for i in range(n):
            c = Client(i < measured)
            await loop.create_connection(lambda c=c: c, host, port)
            clients.append(c)
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        while stats["subscribed"] < n:
            await asyncio.sleep(0.05)
        ready.set()
        last_pong = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.2)
            if time.monotonic() - last_pong > 10:
                for c in clients:
                    c.pong()
                last_pong = time.monotonic()
        for c in clients:
            if c.transport is not None:
                c.transport.close()

    asyncio.run(main())
    out.put({"records": records, "stats": stats})


# --------------------------------------------------------------------------- the probes


def run_depth_probe(url: str, interval_s: float, stop: Any, out: Any) -> None:  # a child
    """``GET /api/v1/depth`` one at a time every ``interval_s``, in its own process so the
    load generator's work never delays it; puts (round trips in ms, errors)."""
    rtts: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get(f"/api/v1/depth?symbol={SYMBOL}").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                rtts.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1
            stop.wait(interval_s)
    out.put((rtts, errors))


def gateway_histograms(url: str) -> dict[str, Any]:
    """The gateway's own view, from its ``/metrics``: the depth route's duration and the
    stream delivery latency (engine publish -> socket write), p50/p99 in ms (PromQL-style
    interpolation within the buckets)."""
    try:
        scrape = parse_metrics([httpx.get(f"{url}/metrics", timeout=60).text])
    except httpx.HTTPError as e:
        return {"error": str(e)}
    depth: dict[float, float] = {}
    for labels, value in (scrape.get("exchange_gateway_request_seconds_bucket") or {}).items():
        d = dict(labels)
        if d.get("route") == "/api/v1/depth" and d.get("status") == "200":
            le = math.inf if d["le"] == "+Inf" else float(d["le"])
            depth[le] = depth.get(le, 0.0) + value
    delivery = buckets(scrape, "exchange_gateway_stream_delivery_seconds")
    out: dict[str, Any] = {}
    for name, cumulative in (("depth_route", sorted(depth.items())), ("delivery", delivery)):
        p50, p99 = (histogram_quantile(q, cumulative) for q in (0.5, 0.99))
        out[name] = {
            "n": cumulative[-1][1] if cumulative else 0,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }
    return out


def publish_times(
    bootstrap: str, topic: str, codec: Codec
) -> tuple[dict[int, int], dict[int, int]]:
    """(trade id -> publish ms, BTC_USDT update id -> publish ms) from the whole output log."""
    consumer = make_consumer(
        bootstrap, "bench-streams-reader", latency="bulk", **{"enable.partition.eof": True}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    trades: dict[int, int] = {}
    depth: dict[int, int] = {}

    def fail(_msg: Message, err: KafkaError) -> None:
        raise SystemExit(f"reading {topic}: {err}")

    reading = ReadToEnd(consumer, {(topic, p): 0 for p in partitions}, timeout_s=120, on_error=fail)
    try:
        for msg in reading:
            where(msg)
            ts = msg.timestamp()[1]
            out = codec.decode_output(msg.value() or b"")
            for t in out.trades:
                trades[t.trade_id] = ts
            for d in out.depth_updates:
                if d.symbol == SYMBOL:
                    depth[d.update_id] = ts
    finally:
        consumer.close()
    return trades, depth


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--measured", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18410)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--stack",
        choices=("embedded", "real"),
        default="embedded",
        help="real: Apache Kafka (KAFKA_BOOTSTRAP_SERVERS, else our own `exchange infra`), "
        "with the SQLite store (the streams never read the store)",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as infra:
        real = None if args.stack == "embedded" else infra.enter_context(real_stack("sqlite"))
        return run(args, real)


def run(args: argparse.Namespace, real: dict[str, str] | None) -> int:
    out_path = args.out or ROOT / "data" / "bench" / time.strftime(
        "streams-%Y%m%dT%H%M%SZ.json", time.gmtime()
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    codec = Codec()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXCHANGE_", "KAFKA_", "CASSANDRA_"))
    }
    env.update(real or {})
    orders_topic = env.get("EXCHANGE_TOPIC_ORDERS", "orders")
    output_topic = env.get("EXCHANGE_TOPIC_ENGINE_OUTPUT", "engine-output")
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        data_dir = Path(tmp)
        env.update(
            {
                "EXCHANGE_DATA_DIR": str(data_dir),
                "EXCHANGE_LOG_LEVEL": "WARNING",
                "EXCHANGE_PORT": str(args.port),
                "EXCHANGE_ENGINE_METRICS_PORT": str(args.port + 1),
                "EXCHANGE_SETTLEMENT_METRICS_PORT": str(args.port + 2),
                "EXCHANGE_LAG_METRICS_PORT": "0",
            }
        )
        stack = Stack(env, out_path.with_suffix(".stack.log"))
        ctx = mp.get_context("spawn")
        stop, ready, results = ctx.Event(), ctx.Event(), ctx.Queue()
        clients: Any = None
        try:
            stack.wait_up(90)
            url = f"http://127.0.0.1:{args.port}"
            deadline = time.monotonic() + 90
            while True:
                try:
                    if (
                        httpx.get(f"{url}/api/v1/depth?symbol={SYMBOL}", timeout=2).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway's books never loaded")
                time.sleep(0.2)
            gateway_pid = stack.pids["gateway"]
            print(f"stack up; gateway pid {gateway_pid}; connecting {args.subscribers} clients",
                  flush=True)  # fmt: skip
            clients = ctx.Process(
                target=run_clients,
                args=(f"ws://127.0.0.1:{args.port}/ws", args.subscribers, args.measured, stop,
                      ready, results),
                daemon=True,
            )  # fmt: skip
            clients.start()
            if not ready.wait(120):
                raise SystemExit("the subscribers did not all subscribe within 120 s")
            print("subscribed; starting the flow", flush=True)
            store = SqliteStore(data_dir / "embedded" / "exchange.sqlite3", readonly=True)
            probe_stop, probe_out = ctx.Event(), ctx.Queue()
            probe = ctx.Process(
                target=run_depth_probe, args=(url, 0.02, probe_stop, probe_out), daemon=True
            )
            probe.start()
            ticks0, t0 = cpu_ticks(gateway_pid) or 0, time.monotonic()
            report = LoadGenerator(
                LoadConfig(rate=args.rate, duration_s=args.seconds, users=args.users, seed=15),
                bootstrap=stack.bootstrap or "",
                orders_topic=orders_topic,
                output_topic=output_topic,
                codec=codec,
                store=store,
            ).run()
            ticks1, t1 = cpu_ticks(gateway_pid) or 0, time.monotonic()
            server_side = gateway_histograms(url)
            probe_stop.set()
            probe_rtts, probe_errors = probe_out.get(timeout=30)
            probe.join(10)
            time.sleep(2.0)  # the last messages on their way
            stop.set()
            got = results.get(timeout=60)
            clients.join(30)
            for line in summary_lines(report):
                print("   " + line, flush=True)
            trade_ts, depth_ts = publish_times(stack.bootstrap or "", output_topic, codec)
            store.close()
        finally:
            stop.set()
            if clients is not None and clients.is_alive():
                clients.kill()
            stack.stop()
    latencies: dict[str, list[float]] = {"t": [], "d": []}
    missing = 0
    for kind, key, arrived in got["records"]:
        published = (trade_ts if kind == "t" else depth_ts).get(key)
        if published is None:
            missing += 1
            continue
        latencies[kind].append(arrived - published)
    every = latencies["t"] + latencies["d"]
    cpu_pct = (ticks1 - ticks0) / TICK_S / (t1 - t0) * 100
    result = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "stack": args.stack,
        "subscribers": args.subscribers,
        "measured_clients": args.measured,
        "rate": args.rate,
        "seconds": args.seconds,
        "orders_sent": report.orders_sent,
        "client_stats": got["stats"],
        "latency_ms": {
            name: {
                "n": len(v),
                "p50": percentile(v, 50),
                "p99": percentile(v, 99),
                "max": max(v) if v else None,
            }
            for name, v in (("all", every), ("trades", latencies["t"]), ("depth", latencies["d"]))
        },
        "unmatched_records": missing,
        "gateway_cpu_pct": round(cpu_pct, 1),
        "gateway_side": server_side,
        "depth_rest_ms": {
            "n": len(probe_rtts),
            "p50": percentile(probe_rtts, 50),
            "p99": percentile(probe_rtts, 99),
            "errors": probe_errors,
        },
    }
    out_path.write_text(json.dumps(result, indent=2))
    lat = result["latency_ms"]["all"]
    print(json.dumps(result, indent=2), flush=True)
    print(f"results: {out_path}", flush=True)
    p99 = lat["p99"]
    depth_p99 = result["depth_rest_ms"]["p99"]
    print(
        f"RESULT streams subscribers={args.subscribers} "
        f"p99_ms={'nan' if p99 is None else f'{p99:.0f}'} "
        f"depth_p99_ms={'nan' if depth_p99 is None else f'{depth_p99:.1f}'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
