"""Gateway benchmark: signed create-order throughput on one uvicorn worker, latency at 1k req/s,
and what verifying the signatures costs.

    .venv/bin/python bench/gateway.py            # defaults: under 3 minutes
    .venv/bin/python bench/gateway.py --help

What it starts: an embedded broker (Tansu) with fresh topics, an empty SQLite store in a
temp dir, and the gateway in its own process (one uvicorn worker, production settings:
``gateway.server.uvicorn_config``). The engine is not running: the measured path is
HTTP -> validation -> Avro -> Kafka acknowledgement -> 202, which is what a client waits for.

The load client is not httpx: an httpx client tops out near 1-2k req/s per process, far
below what it would measure. It is a minimal HTTP/1.1 keep-alive client on asyncio
protocols (pre-built requests, responses framed by Content-Length), run in a separate
process from the gateway so the two do not share a GIL. On a 2-core machine the client,
the broker and the gateway still share the cores, so the numbers are a floor.

Every request is signed as a real client signs it (gateway.auth: Ed25519 over timestamp,
method, target and body) with one of ``--users`` trader keys, which the gateway learns from
the store at start like in production; the default per-key rate limits apply (50 orders/s),
so the users are many enough to stay under them. The client re-signs its pool of requests
every second (a signature is valid for 5 s), so signing costs it a few hundred signatures a
second, not one per request.

Phases:
1. warm-up;
2. throughput: closed loop, ``--connections`` keep-alive connections each sending its next
   request as soon as the previous answer arrives, for ``--seconds``;
3. latency: open loop at ``--rate`` req/s for ``--seconds``; each latency is measured from
   the request's *scheduled* send time, so a stall is not hidden (no coordinated omission).

4. verification cost: the Ed25519 verification of one request in-process (``verify`` as the
   gate calls it), and the same closed loop against a second gateway with the gate removed
   (``--compare-unsigned``, on by default, where every request acts as one trader): the
   gateway CPU per request with and without the gate, in alternating rounds.

The last line is ``RESULT gateway req_per_s=<n> p99_ms_at_1k=<n> verify_us=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATH = "/api/v1/order/create"


# ----------------------------------------------------------------------------- load client


def build_requests(
    host: str, port: int, keys: list[str], n: int = 0, signed: bool = True
) -> list[bytes]:
    """Distinct, valid create-order requests (both sides, a spread of prices), one per key
    (at least ``n``), each signed now by its key (or unsigned)."""
    from gateway.auth.signing import (
        HEADER_KEY,
        HEADER_SIGNATURE,
        HEADER_TIMESTAMP,
        key_id,
        private_key,
        public_key_b64,
        sign,
    )

    signers = [(private_key(k), key_id(public_key_b64(k))) for k in keys]
    ts = time.time_ns() // 1_000_000
    out = []
    for i in range(max(n, len(signers))):
        body = json.dumps(
            {
                "symbol": "BTC_USDT",
                "side": "BUY" if i % 2 else "SELL",
                "order_type": "LIMIT",
                "price": f"{50000 + (i % 32) * 0.5:.2f}",
                "quantity": "0.01000",
                "time_in_force": "GTC",
            },
            separators=(",", ":"),
        ).encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
        )
        if signed:
            key, api_key = signers[i % len(signers)]
            head += (
                f"{HEADER_KEY}: {api_key}\r\n{HEADER_TIMESTAMP}: {ts}\r\n"
                f"{HEADER_SIGNATURE}: {sign(key, ts, 'POST', PATH, body)}\r\n"
            )
        out.append(head.encode() + b"\r\n" + body)
    return out


class RequestPool:
    """The requests to send, re-signed every second (a signature is good for 5 s)."""

    def __init__(self, host: str, port: int, keys: list[str], signed: bool) -> None:
        self._args = (host, port, keys)
        self._signed = signed
        self.current = build_requests(host, port, keys, signed=signed)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> RequestPool:
        self._handle = asyncio.get_running_loop().call_later(1.0, self._refresh)
        return self

    def _refresh(self) -> None:
        self.current = build_requests(*self._args, signed=self._signed)
        self.start()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: dict[int, int] = field(default_factory=dict)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, on_response: object) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.on_response = on_response
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            length = (
                int(
                    head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else len(head)]
                )
                if i >= 0
                else 0
            )
            total = end + 4 + length
            if len(buf) < total:
                return
            status = int(head[9:12])
            del buf[:total]
            self.on_response(self, status)  # type: ignore[operator]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def closed_loop(
    host: str, port: int, connections: int, seconds: float, keys: list[str], signed: bool
) -> Tally:
    loop = asyncio.get_running_loop()
    pool = RequestPool(host, port, keys, signed).start()
    tally = Tally()
    deadline = perf_counter() + seconds
    sent_at: dict[_Conn, float] = {}
    counter = 0

    def send(conn: _Conn) -> None:
        nonlocal counter
        counter += 1
        sent_at[conn] = perf_counter()
        assert conn.transport is not None
        requests = pool.current
        conn.transport.write(requests[counter % len(requests)])

    def on_response(conn: _Conn, status: int) -> None:
        now = perf_counter()
        tally.latencies.append(now - sent_at[conn])
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if now < deadline:
            send(conn)
        else:
            assert conn.transport is not None
            conn.transport.close()

    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: _Conn(on_response), host, port)
        conns.append(proto)
    for conn in conns:
        send(conn)
    await asyncio.wait([c.closed for c in conns], timeout=seconds + 30)
    pool.stop()
    return tally


async def open_loop(
    host: str, port: int, rate: float, seconds: float, pool: int, keys: list[str],
    is_signed: bool = True,
) -> Tally:  # fmt: skip
    """Send at a fixed rate; latency from each request's scheduled time."""
    loop = asyncio.get_running_loop()
    signed = RequestPool(host, port, keys, is_signed).start()
    tally = Tally()
    idle: deque[_Conn] = deque()  # FIFO: every connection stays busy, none idles into
    # the server's keep-alive timeout
    scheduled: dict[_Conn, float] = {}
    backlog: list[float] = []  # scheduled times waiting for a free connection

    def on_response(conn: _Conn, status: int) -> None:
        now = perf_counter()
        tally.latencies.append(now - scheduled.pop(conn))
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if backlog:
            dispatch(conn, backlog.pop(0))
        else:
            idle.append(conn)

    counter = 0

    def dispatch(conn: _Conn, at: float) -> None:
        nonlocal counter
        counter += 1
        scheduled[conn] = at
        assert conn.transport is not None
        requests = signed.current
        conn.transport.write(requests[counter % len(requests)])

    conns = []
    for _ in range(pool):
        _, proto = await loop.create_connection(lambda: _Conn(on_response), host, port)
        conns.append(proto)
    idle.extend(conns)
    interval = 1.0 / rate
    start = perf_counter() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        at = start + i * interval
        delay = at - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            dispatch(idle.popleft(), at)
        else:
            backlog.append(at)
    drain_deadline = loop.time() + 30
    while (scheduled or backlog) and loop.time() < drain_deadline:
        await asyncio.sleep(0.01)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    signed.stop()
    return tally


def _client_process(
    mode: str,
    host: str,
    port: int,
    arg: float,
    seconds: float,
    connections: int,
    keys: list[str],
    signed: bool,
    out: mp.Queue[object],
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        if mode == "closed":
            tally = asyncio.run(closed_loop(host, port, connections, seconds, keys, signed))
        else:
            tally = asyncio.run(open_loop(host, port, arg, seconds, connections, keys, signed))
    except BaseException as e:
        out.put(e)
        raise
    out.put((tally.latencies, tally.statuses))


def run_client(
    mode: str, host: str, port: int, *, seconds: float, connections: int, keys: list[str],
    rate: float = 0.0, signed: bool = True,
) -> Tally:  # fmt: skip
    ctx = mp.get_context("spawn")
    queue: mp.Queue[object] = ctx.Queue()
    proc = ctx.Process(
        target=_client_process,
        args=(mode, host, port, rate, seconds, connections, keys, signed, queue),
    )
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(30)
    if isinstance(result, BaseException):
        raise RuntimeError(f"the load client failed: {result!r}")
    assert isinstance(result, tuple)
    latencies: list[float] = result[0]
    statuses: dict[int, int] = result[1]
    return Tally(latencies, statuses)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# ----------------------------------------------------------------------------- gateway


def serve(bootstrap: str, prefix: str, db: str, port: int, auth: bool = True) -> None:
    """The gateway process: production wiring, one uvicorn worker (``auth`` False: the
    access gate removed, to measure what it costs)."""
    import logging

    from engine.markets import load_markets
    from exchange.codec import Codec
    from exchange.topics import Topics
    from gateway.server import create_gateway_app, uvicorn_config
    from settlement.sqlite_store import SqliteStore

    logging.basicConfig(level=logging.WARNING)
    import uvicorn

    store = SqliteStore(db, readonly=True)
    app = create_gateway_app(
        bootstrap=bootstrap, topics=Topics.with_prefix(prefix), markets=load_markets(),
        codec=Codec(), store=store,
    )  # fmt: skip
    served: Any = app
    if not auth:  # the same work minus the gate: every request acts as trader 1
        from engine.enums import Role
        from gateway.auth.principal import CURRENT, Principal

        app.gate = None
        trader = Principal(api_key="bench", user_id=1, role=Role.TRADER)

        async def as_trader(scope: Any, receive: Any, send: Any) -> None:
            token = CURRENT.set(trader)
            try:
                await app(scope, receive, send)
            finally:
                CURRENT.reset(token)

        served = as_trader
    uvicorn.Server(uvicorn_config(served, "127.0.0.1", port)).run()


def wait_http(host: str, port: int, timeout_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured phase")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop req/s")
    parser.add_argument("--users", type=int, default=256, help="trader keys the client signs with")
    parser.add_argument(
        "--compare-unsigned",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the closed loop against a gateway without the access gate",
    )
    parser.add_argument(
        "--serve", nargs=5, metavar=("BOOTSTRAP", "PREFIX", "DB", "PORT", "AUTH"),
        help=argparse.SUPPRESS,
    )  # fmt: skip
    args = parser.parse_args()
    if args.serve:
        bootstrap, prefix, db, port, auth = args.serve
        serve(bootstrap, prefix, db, int(port), auth == "on")
        return 0

    from exchange.kafka import make_admin
    from exchange.topics import Topics, ensure_topics
    from gateway.server import uvicorn_config
    from ops.broker import EmbeddedBroker, free_port

    probe = uvicorn_config(None, "127.0.0.1", 1)  # type: ignore[arg-type]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, uvicorn http={probe.http} loop={probe.loop}"
    )
    if probe.http != "httptools" or probe.loop != "uvloop":
        print(
            "note: httptools/uvloop are not installed, so uvicorn runs on pure-Python h11 "
            "and asyncio: expect roughly half the throughput (see bench/GATEWAY_RESULTS.md)"
        )
    host = "127.0.0.1"
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        prefix = f"bench{uuid.uuid4().hex[:6]}-"
        ensure_topics(make_admin(broker.bootstrap_servers), Topics.with_prefix(prefix).all())
        db = str(Path(tmp) / "exchange.sqlite3")
        keys = seed_users(db, args.users)

        def start(auth: bool) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            argv = [sys.executable, __file__, "--serve", broker.bootstrap_servers, prefix, db]
            proc = subprocess.Popen(
                [*argv, str(port), "on" if auth else "off"], start_new_session=True
            )
            return proc, port

        gateway, port = start(True)
        try:
            wait_http(host, port)
            run_client("closed", host, port, seconds=3, connections=args.connections, keys=keys)

            cpu0 = cpu_seconds(gateway.pid)
            tally = run_client(
                "closed", host, port, seconds=args.seconds, connections=args.connections,
                keys=keys,
            )  # fmt: skip
            cpu = cpu_seconds(gateway.pid) - cpu0
            n = len(tally.latencies)
            rps = n / args.seconds
            print(
                f"throughput: {n} requests in {args.seconds:.0f}s over {args.connections} "
                f"connections = {rps:.0f} req/s; statuses {tally.statuses}; "
                f"p50 {pct(tally.latencies, 50) * 1e3:.1f} ms, "
                f"p99 {pct(tally.latencies, 99) * 1e3:.1f} ms"
            )
            print(
                f"gateway process CPU: {cpu:.1f} s for {n} requests = "
                f"{cpu / n * 1e6:.0f} us/request (all its threads, librdkafka included) "
                f"-> {n / cpu:.0f} req/s per fully used core"
            )

            tally = run_client(
                "open", host, port, seconds=args.seconds, connections=32, rate=args.rate,
                keys=keys,
            )  # fmt: skip
            p50 = pct(tally.latencies, 50) * 1e3
            p99 = pct(tally.latencies, 99) * 1e3
            p999 = pct(tally.latencies, 99.9) * 1e3
            print(
                f"latency at {args.rate:.0f} req/s: {len(tally.latencies)} requests; "
                f"statuses {tally.statuses}; p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"p99.9 {p999:.2f} ms, max {max(tally.latencies) * 1e3:.2f} ms"
            )
            verify_us = verify_cost_us(keys[0])
            print(f"signature verification (Ed25519, in-process): {verify_us:.1f} us/request")
            if args.compare_unsigned:
                compare(args, host, (gateway, port), start(False), keys)
        finally:
            stop(gateway)
    print(f"RESULT gateway req_per_s={rps:.0f} p99_ms_at_1k={p99:.2f} verify_us={verify_us:.1f}")
    return 0


def compare(
    args: argparse.Namespace,
    host: str,
    signed: tuple[subprocess.Popen[bytes], int],
    plain: tuple[subprocess.Popen[bytes], int],
    keys: list[str],
    rounds: int = 3,
    seconds: float = 6.0,
) -> None:
    """Gateway CPU per request with and without the access gate, at the same open-loop rate
    (``--rate``; at equal rates the gateway's fixed costs per second, its follower and
    librdkafka threads, weigh the same per request), in alternating rounds (a shared
    machine's load drifts; alternating exposes both to the same drift)."""
    try:
        wait_http(host, plain[1])
        run_client("closed", host, plain[1], seconds=2, connections=args.connections,
                   keys=keys, signed=False)  # fmt: skip
        rate = args.rate
        per: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for is_signed, (proc, port) in ((True, signed), (False, plain)):
                cpu0 = cpu_seconds(proc.pid)
                tally = run_client(
                    "open", host, port, seconds=seconds, connections=32, rate=rate,
                    keys=keys, signed=is_signed,
                )  # fmt: skip
                n = len(tally.latencies)
                assert set(tally.statuses) == {202}, tally.statuses
                per[is_signed].append((cpu_seconds(proc.pid) - cpu0) / n * 1e6)
        with_gate, without = sorted(per[True])[rounds // 2], sorted(per[False])[rounds // 2]
        print(
            f"gate on/off at {rate:.0f} req/s, {rounds} alternating rounds of {seconds:.0f} s: "
            f"median gateway CPU {with_gate:.0f} / {without:.0f} us/request -> the gate "
            f"(signature, key lookup, rate limits) costs {with_gate - without:.0f} us/request"
        )
    finally:
        stop(plain[0])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def seed_users(db: str, users: int) -> list[str]:
    """``users`` traders with a key each, in the store as settlement writes them (the
    gateway loads its keys from there at start); their private keys, base64."""
    from engine.commands import CreateUser
    from engine.engine import Engine
    from engine.markets import load_markets
    from gateway.auth.signing import key_id, new_key_pair
    from settlement.sqlite_store import SqliteStore

    engine = Engine(load_markets())
    keys, outputs = [], []
    for i in range(users):
        private, public = new_key_pair()
        keys.append(private)
        outputs.append(
            engine.apply(
                CreateUser(command_id=i, timestamp_ms=1, api_key=key_id(public), public_key=public)
            )
        )
    store = SqliteStore(db)
    store.init_schema()
    store.apply(outputs)
    store.close()
    return keys


def verify_cost_us(private: str, n: int = 5_000) -> float:
    """Microseconds per ``verify`` of a create-order request, as the gate calls it."""
    from gateway.auth.signing import public_key, public_key_b64, sign, verify

    key = public_key(public_key_b64(private))
    assert key is not None
    body = build_requests("127.0.0.1", 1, [private], signed=False)[0].split(b"\r\n\r\n")[1]
    ts = str(time.time_ns() // 1_000_000).encode()
    signature = sign(private, ts, "POST", PATH, body)
    started = perf_counter()
    for _ in range(n):
        verify(key, ts, b"POST", PATH.encode(), body, signature)
    return (perf_counter() - started) / n * 1e6


if __name__ == "__main__":
    sys.exit(main())
