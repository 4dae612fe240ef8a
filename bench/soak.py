"""Soak benchmark: does the stack stay live and fast for a long run? (issue 17)

    .venv/bin/python bench/soak.py                     # embedded stack, 30 minutes
    .venv/bin/python bench/soak.py --minutes 2         # a short look
    .venv/bin/python bench/soak.py --stack real        # KAFKA_BOOTSTRAP_SERVERS, CASSANDRA_*

What runs, all at once, for ``--minutes``:

* the stack: ``exchange up`` as a subprocess in a fresh ``EXCHANGE_DATA_DIR``
  (``<out>/stack``). ``--stack embedded`` (default) clears ``KAFKA_BOOTSTRAP_SERVERS`` and
  ``CASSANDRA_CONTACT_POINTS`` so it starts the embedded broker and SQLite; ``--stack real``
  keeps them (from ``exchange infra env``) and runs the services against that cluster. Ports:
  ``EXCHANGE_PORT`` and the three ``EXCHANGE_*_METRICS_PORT`` from the environment if set,
  else free ones;
* a steady ``--rate`` orders/s (500) through Kafka: ``exchange loadgen --via kafka`` as a
  subprocess (``--rate 0`` = none);
* one sequential REST client replaying the real AMZN day (see ``bench/lobster_flow.py``), one
  request at a time as a trading bot would (a cancel names the order by the id the create's
  answer gave), starting the day again when it ends; it runs in
  its own process (this script with ``--role replay``) so its work never delays the probe;
* the probe: ``POST /api/v1/deposit?wait=true`` ``--probe-rate`` times a second (4), one at a
  time; its round trip (request to the engine's answer) is the latency measured. A probe the
  engine does not answer within 5 s comes back 202 and counts as a timeout (its 5 s count too);
* a scraper, every second: the lag exporter's ``kafka_consumergroup_lag_sum`` and
  ``kafka_consumergroup_current_offset`` per group, the ``orders`` log end, the engine's
  ``exchange_engine_sequence`` and settlement's ``exchange_settlement_sequence_settled``, and
  the stall episodes each service's own consumer watchdog counted
  (``exchange_consumer_stalls_total`` of the engine, settlement and the gateway's follower).

Every 10 s a sample is recorded: probe and replay round trips (p50/p99/max), replay
requests/s and statuses, the CPU (% of one core, from ``/proc/<pid>/stat``) of the broker, of
each service (pids from ``exchange up``'s output; a restarted service's new pid is followed),
of the load generator and of the replay client, and each group's lag (last and max of the
second-by-second scrapes).

Stall rule ("lag back to 0 within a moment of each burst", made measurable): at each lag
sample a group is *behind* when its committed offset is still short of the log end it saw
``--stall-seconds`` earlier (2.5 s; the engine commits its position at most once a second and
the exporter is read about once a second, so a group that keeps up is never that far back).
Each run of consecutive behind samples is one stall in ``stalls``, with its start, length, lag
and whether the committed offset stood still (``frozen``) or crawled. A frozen consumer, one
that crawls, and one that cannot keep up with the flow all count: none of them gives its
answers in time. (For the engine the probe is stricter still: its p99 target is 50 ms.)
The broker is the embedded Tansu process, or with ``--stack real`` the Kafka JVM
(``--broker-pid``, else the one process whose command line runs ``kafka.Kafka``).

Targets (printed at the start, judged at the end): no stall; probe p99 <= 50 ms in the first
and in the last minute; broker CPU in the last 5 minutes <= 1.5x the first 5 (windows of half
the run when it is shorter than 10 minutes).

Output, under ``--out`` (default ``data/soak/<UTC time>/``, ignored by git): ``soak.json``
(every sample, scrape, probe and stall, the load generator's report), ``soak.png`` (the run
over time), and the logs of the stack, the load generator and the replay. The stack's own data
directory is deleted at the end unless ``--keep-data``. The last line is
``RESULT soak minutes=<n> rtt_p99_ms_first=<n> rtt_p99_ms_last=<n> broker_cpu_first=<n>
broker_cpu_last=<n> stalls=<n>`` (on one line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.lobster_flow import (  # noqa: E402  (after the sys.path fix above)
    DEFAULT_MESSAGES,
    DEFAULT_USERS,
    by_order_id,
    funding_calls,
    order_calls,
    read_messages,
)
from gateway.auth.signing import new_key_pair  # noqa: E402
from gateway.dashboard import parse_metrics, total  # noqa: E402
from ops.apiclient import Signer, signer_from_file  # noqa: E402
from ops.broker import die_with_parent, free_port  # noqa: E402

WINDOW_S = 10.0
SCRAPE_S = 1.0
PROBE_USER = 999_001
PROBE_TIMEOUT_MS = 5_000
LOADGEN_USERS = 100
GROUPS = ("engine", "settlement")
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGET_RTT_P99_MS = 50.0
TARGET_BROKER_CPU_RATIO = 1.5
TARGETS = (
    "no stall (no group short of the log end it saw --stall-seconds earlier)",
    f"?wait=true round trip p99 <= {TARGET_RTT_P99_MS:g} ms in the first and the last minute",
    f"broker CPU in the last 5 minutes <= {TARGET_BROKER_CPU_RATIO:g}x the first 5",
)


# --------------------------------------------------------------------------- small helpers


def now_s() -> float:
    return time.monotonic()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process in clock ticks; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def find_kafka_pid() -> int | None:
    """The one local process whose command line runs the Kafka broker (``kafka.Kafka``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in argv:
            found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- the stack


class Stack:
    """``exchange up`` as a subprocess; follows the pids it prints."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.pids: dict[str, int] = {}
        self.bootstrap: str | None = None
        self._up = threading.Event()
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "up"],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # a killed benchmark leaves no stack behind
        )
        threading.Thread(target=self._follow, name="stack-output", daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(f"{time.strftime('%H:%M:%S')} {line}")
            self._log.flush()
            if m := re.match(r"broker\s+\S+.*\bpid=(\d+)", line):
                self.pids["broker"] = int(m.group(1))
            elif m := re.match(r"service\s+(\S+) pid=(\d+)", line):
                self.pids[m.group(1)] = int(m.group(2))
            elif m := re.search(r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)", line):
                self.bootstrap = m.group(1)
                self._up.set()

    def wait_up(self, timeout_s: float) -> None:
        if not self._up.wait(timeout_s):
            raise SystemExit(f"exchange up did not start within {timeout_s:.0f} s (see the log)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def wait_ready(client: httpx.Client, timeout_s: float) -> None:
    """Until the gateway's ``/ready`` is 200 (the admin API then answers in time)."""
    deadline = now_s() + timeout_s
    while now_s() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/ready").status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the gateway was not ready within {timeout_s:.0f} s")


def wait_pipeline(client: httpx.Client, timeout_s: float, probe_user: int) -> float:
    """Until ``/ready`` is 200 and a ``?wait=true`` deposit comes back 200 (the engine
    answered); returns the seconds ``/ready`` was 200 before that."""
    deadline = now_s() + timeout_s
    ready_at = None
    while now_s() < deadline:
        try:
            if ready_at is None:
                if client.get("/ready").status_code == 200:
                    ready_at = now_s()
                else:
                    time.sleep(0.2)
                    continue
            status = client.post(
                "/api/v1/deposit",
                params={"wait": "true", "timeout_ms": "2000"},
                json={"user_id": probe_user, "asset": "USDT", "amount": "1"},
            ).status_code
            if status == 200:
                return now_s() - ready_at
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the pipeline did not answer a ?wait=true deposit within {timeout_s:.0f} s")


# --------------------------------------------------------------------------- measurements


@dataclass(slots=True)
class Probe:
    """Sequential ``?wait=true`` deposits; keeps (t, rtt_ms, status) of each."""

    client: httpx.Client
    t0: float
    interval_s: float
    user: int = 0  # the probe's user (made through the admin API)
    points: list[tuple[float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {"user_id": self.user, "asset": "USDT", "amount": "1"}
        params = {"wait": "true", "timeout_ms": str(PROBE_TIMEOUT_MS)}
        next_at = now_s()
        while not self.stop.is_set():
            started = now_s()
            try:
                status = self.client.post("/api/v1/deposit", params=params, json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.points.append((started - self.t0, (now_s() - started) * 1000, status))
            next_at = max(next_at + self.interval_s, now_s())
            self.stop.wait(next_at - now_s())


def watchdog_stalls(scrape: dict[Any, Any] | None) -> float | None:
    """Stall episodes a service's own consumer watchdog counted (None: no watchdog, or no
    answer). Its counter has a series only after the first stall, so a watchdog that exports
    its fetch wait and no counter has counted none."""
    if scrape is None or total(scrape, "exchange_consumer_fetch_wait_ms") is None:
        return None
    return total(scrape, "exchange_consumer_stalls_total") or 0.0


@dataclass(slots=True)
class GroupState:
    ends: list[tuple[float, float]] = field(default_factory=list)  # (t, log end) per sample
    episode: dict[str, Any] | None = None


@dataclass(slots=True)
class Scraper:
    """Lag and position of each group, the orders log end, the sequences.

    Two loops, each at most once a second: the lag exporter (whose answer can take seconds on
    a busy broker: it reads each partition to its end) and the engine's and settlement's own
    metrics, so a slow lag sample never delays the sequences.
    """

    client: httpx.Client
    t0: float
    urls: dict[str, str]  # lag, engine, settlement, gateway -> /metrics URL
    stall_s: float
    points: list[dict[str, Any]] = field(default_factory=list)  # lag exporter samples
    positions: list[dict[str, Any]] = field(default_factory=list)  # engine/settlement
    lag_failures: int = 0
    stalls: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, GroupState] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def _scrape(self, url: str, timeout_s: float) -> dict[Any, Any] | None:
        try:
            return parse_metrics([self.client.get(url, timeout=timeout_s).text])
        except (httpx.HTTPError, ValueError):
            return None

    def threads(self) -> list[threading.Thread]:
        return [
            threading.Thread(target=self._every_second, args=(self.sample_lag,), daemon=True),
            threading.Thread(target=self._every_second, args=(self.sample_positions,),
                             daemon=True),
        ]  # fmt: skip

    def _every_second(self, sample: Any) -> None:
        next_at = now_s()
        while not self.stop.is_set():
            sample()
            next_at = max(next_at + SCRAPE_S, now_s())
            self.stop.wait(next_at - now_s())

    def sample_positions(self) -> None:
        t = now_s() - self.t0
        engine = self._scrape(self.urls["engine"], 5)
        settlement = self._scrape(self.urls["settlement"], 5)
        gateway = self._scrape(self.urls["gateway"], 5)
        point: dict[str, Any] = {"t": round(t, 2)}
        if engine is not None:
            point["engine_sequence"] = total(engine, "exchange_engine_sequence")
        if settlement is not None:
            point["settled_sequence"] = total(settlement, "exchange_settlement_sequence_settled")
        for name, scrape in (("engine", engine), ("settlement", settlement), ("gateway", gateway)):
            point[f"{name}_watchdog_stalls"] = watchdog_stalls(scrape)
        self.positions.append(point)

    def sample_lag(self) -> None:
        t = now_s() - self.t0
        lag = self._scrape(self.urls["lag"], 30)
        ok = lag is not None and total(lag, "exchange_lag_scrape_success") == 1
        point: dict[str, Any] = {"t": round(t, 2), "took_s": round(now_s() - self.t0 - t, 2),
                                 "lag_ok": ok}  # fmt: skip
        if lag is None or not ok:
            self.lag_failures += 1
        else:
            point["orders_end"] = total(lag, "kafka_topic_partition_current_offset", topic="orders")
            for group in GROUPS:
                group_lag = total(lag, "kafka_consumergroup_lag_sum", consumergroup=group)
                committed = total(lag, "kafka_consumergroup_current_offset", consumergroup=group)
                point[f"{group}_lag"] = group_lag
                point[f"{group}_committed"] = committed
                self._judge(group, t, now_s() - self.t0, group_lag, committed)
        self.points.append(point)

    def _judge(
        self, group: str, t: float, t_done: float, lag: float | None, committed: float | None
    ) -> None:
        """Behind what the log held ``stall_s`` ago -> stalled (see the module docstring).

        A sample is read between ``t`` and ``t_done`` (seconds when the broker is busy), so
        its log end is dated ``t_done`` and a later sample's committed offset ``t``: the
        comparison never blames a group for time the exporter spent reading.
        """
        if lag is None or committed is None:
            return
        state = self.groups.setdefault(group, GroupState())
        earlier = [end for at, end in state.ends if at <= t - self.stall_s]
        state.ends.append((t_done, committed + lag))  # lag = log end - committed
        if not earlier:
            return
        behind = committed < earlier[-1]
        episode = state.episode
        if not behind:
            if episode is not None:
                episode["end_t"] = round(t, 2)
                episode["seconds"] = round(t - episode["start_t"], 2)
                state.episode = None
            return
        if episode is None:
            episode = state.episode = {
                "group": group, "start_t": round(t, 2), "end_t": None, "seconds": None,
                "lag": lag, "max_lag": lag, "committed_at_start": committed, "frozen": True,
            }  # fmt: skip
            self.stalls.append(episode)
            print(f"  STALL  {group}: lag {lag:.0f}; committed {committed:.0f} is short of the "
                  f"log end of {self.stall_s:g} s ago ({earlier[-1]:.0f})", flush=True)  # fmt: skip
        episode["max_lag"] = max(episode["max_lag"], lag)
        if committed != episode["committed_at_start"]:
            episode["frozen"] = False  # it crawls rather than stands still

    def close_open_episodes(self) -> None:
        t = now_s() - self.t0
        for episode in self.stalls:
            if episode["end_t"] is None:
                episode["seconds"] = round(t - episode["start_t"], 2)
                episode["open_at_end"] = True


@dataclass(slots=True)
class Replay:
    """The LOBSTER replay process (this script, ``--role replay``) and its per-second lines."""

    proc: subprocess.Popen[str] | None
    t0: float
    seconds: list[dict[str, Any]] = field(default_factory=list)

    def follow(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                record["t"] = round(record.pop("at") - self.t0, 2)
                self.seconds.append(record)


def make_accounts(client: httpx.Client, lobster_users: Sequence[int]) -> dict[int, list[Any]]:
    """A user with a fresh key per LOBSTER user, made through the admin API (``client``
    signs as the operator): LOBSTER user -> [user id, base64 private key]."""
    accounts: dict[int, list[Any]] = {}
    for u in lobster_users:
        private, public = new_key_pair()
        response = client.post("/api/v1/admin/users", json={"public_key": public})
        if response.status_code != 201:
            raise SystemExit(f"creating a user answered {response.status_code}: {response.text}")
        accounts[u] = [response.json()["data"]["user_id"], private]
    return accounts


def start_replay(
    url: str, args: argparse.Namespace, prefix: str, log: IO[str], accounts: dict[int, list[Any]]
) -> Replay:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "replay",
        "--url",
        url,
        "--prefix",
        prefix,
        "--users",
        str(args.users),
        "--messages",
        str(args.messages),
        "--accounts",
        json.dumps(accounts),
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    replay = Replay(proc, now_s())
    threading.Thread(target=replay.follow, name="replay-output", daemon=True).start()
    return replay


def run_replay_role(args: argparse.Namespace) -> int:
    """``--role replay``: send the day's calls one at a time, forever; print one JSON line per
    second with that second's round trips (ms) and statuses. ``at`` is this host's monotonic
    clock, which the parent shares."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    messages = list(read_messages(args.messages))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    position = {"round": 1, "index": 0}
    second_end = now_s() + 1.0

    def flush() -> None:
        nonlocal latencies, statuses, kinds, second_end
        line = {
            "at": now_s(),
            "lat_ms": [round(x, 2) for x in latencies],
            "status": statuses,
            "kinds": kinds,
            **position,
        }
        print(json.dumps(line), flush=True)
        latencies, statuses, kinds = [], {}, {}
        second_end = now_s() + 1.0

    # The replay's users: LOBSTER user -> (user id, key), made by the parent (admin API).
    accounts = {int(u): (real, Signer(key)) for u, (real, key) in json.loads(args.accounts).items()}
    with httpx.Client(base_url=args.url, timeout=30) as client:
        round_no = 0
        while not stop.is_set():
            round_no += 1
            calls = order_calls(messages, users=args.users, prefix=f"{args.prefix}r{round_no}")
            order_ids: dict[object, str] = {}  # client_order_id -> the id the API answered
            for call in calls:
                if stop.is_set():
                    break
                if call.kind == "cancel":
                    known = order_ids.pop(call.body["client_order_id"], None)
                    if known is not None:
                        call = by_order_id(call, known)
                real, signer = accounts[int(call.body["user_id"])]
                body = {**call.body, "user_id": real}
                started = now_s()
                try:
                    response = client.post(call.path, json=body, auth=signer)
                    status = str(response.status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                    stop.wait(0.1)
                latencies.append((now_s() - started) * 1000)
                if call.kind == "create" and status in ("200", "202"):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        order_ids[call.body["client_order_id"]] = response.json()["data"][
                            "order_id"
                        ]
                statuses[status] = statuses.get(status, 0) + 1
                kinds[call.kind] = kinds.get(call.kind, 0) + 1
                position.update({"round": round_no, "index": call.message_index or 0})
                if now_s() >= second_end:
                    flush()
    flush()
    return 0


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class CpuMeter:
    """Ticks per process at each window boundary; follows new pids under the same name."""

    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (pid, ticks)

    def read(self, pids: dict[str, int], seconds: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pid in pids.items():
            ticks = cpu_ticks(pid)
            if ticks is None:
                out[name] = None
                continue
            before = self.last.get(name)
            # A new pid (a restart) counts from its own start.
            used = ticks - before[1] if before is not None and before[0] == pid else ticks
            self.last[name] = (pid, ticks)
            out[name] = round(used / CLK_TCK / seconds * 100, 1) if seconds > 0 else None
        return out


def window_sample(
    k: int,
    t_end: float,
    probe: Probe,
    replay: Replay,
    scraper: Scraper,
    cpu: dict[str, float | None],
) -> dict[str, Any]:
    t_start = t_end - WINDOW_S
    probes = [p for p in probe.points if t_start <= p[0] < t_end]
    rtts = [p[1] for p in probes]
    seconds = [s for s in replay.seconds if t_start < s["t"] <= t_end]
    replay_lat = [x for s in seconds for x in s["lat_ms"]]
    statuses: dict[str, int] = {}
    for s in seconds:
        for code, n in s["status"].items():
            statuses[code] = statuses.get(code, 0) + n
    scrapes = [p for p in scraper.points if t_start < p["t"] <= t_end]
    lag: dict[str, Any] = {}
    for group in GROUPS:
        values = [p[f"{group}_lag"] for p in scrapes if p.get(f"{group}_lag") is not None]
        lag[group] = {"last": values[-1] if values else None, "max": max(values, default=None)}
    last = scrapes[-1] if scrapes else {}
    positions = [p for p in scraper.positions if t_start < p["t"] <= t_end]
    position = positions[-1] if positions else {}
    took = [p["took_s"] for p in scrapes]
    return {
        "window": k,
        "t": round(t_end, 1),
        "probe": {
            "n": len(rtts),
            "p50_ms": rounded(percentile(rtts, 50)),
            "p99_ms": rounded(percentile(rtts, 99)),
            "max_ms": rounded(max(rtts, default=None)),
            "timeouts": sum(1 for p in probes if p[2] == 202),
            "errors": sum(1 for p in probes if p[2] not in (200, 202)),
        },
        "replay": {
            "requests": len(replay_lat),
            "per_s": round(len(replay_lat) / WINDOW_S, 1),
            "p50_ms": rounded(percentile(replay_lat, 50)),
            "p99_ms": rounded(percentile(replay_lat, 99)),
            "max_ms": rounded(max(replay_lat, default=None)),
            "status": statuses,
            "round": seconds[-1]["round"] if seconds else None,
            "message_index": seconds[-1]["index"] if seconds else None,
        },
        "cpu_pct": cpu,
        "lag": lag,
        "orders_end": last.get("orders_end"),
        "engine_sequence": position.get("engine_sequence"),
        "settled_sequence": position.get("settled_sequence"),
        "watchdog_stalls": {
            name: position.get(f"{name}_watchdog_stalls")
            for name in ("engine", "settlement", "gateway")
        },
        "lag_scrapes": len(scrapes),
        "lag_scrape_max_s": max(took, default=None),
        "stalls_so_far": len(scraper.stalls),
    }


def summary_line(w: dict[str, Any]) -> str:
    cpu = w["cpu_pct"]

    def c(name: str) -> str:
        value = cpu.get(name)
        return "-" if value is None else f"{value:.0f}"

    return (
        f"t={w['t']:>6.0f}s probe p50/p99 {w['probe']['p50_ms']}/{w['probe']['p99_ms']} ms "
        f"(to {w['probe']['timeouts']}) | replay {w['replay']['per_s']}/s p99 "
        f"{w['replay']['p99_ms']} ms | cpu broker {c('broker')} engine {c('engine')} "
        f"settle {c('settlement')} gw {c('gateway')} lag {c('lag')} loadgen {c('loadgen')} | "
        f"lag engine {w['lag']['engine']['max']} settle {w['lag']['settlement']['max']} | "
        f"orders {w['orders_end']} seq {w['engine_sequence']} settled {w['settled_sequence']}"
    )


def mean_cpu(windows: list[dict[str, Any]], name: str, lo: float, hi: float) -> float | None:
    """Mean CPU of ``name`` over the windows ending in (lo, hi] (each window is 10 s)."""
    values = [w["cpu_pct"].get(name) for w in windows if lo < w["t"] <= hi + 1e-6]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def plot(path: Path, windows: list[dict[str, Any]], scraper: Scraper, probe: Probe) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_rtt, ax_cpu, ax_lag, ax_log) = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    tm = [w["t"] / 60 for w in windows]

    def series(*keys: str) -> list[float]:
        out = []
        for w in windows:
            value: Any = w
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            out.append(math.nan if value is None else float(value))
        return out

    ax_rtt.scatter(
        [p[0] / 60 for p in probe.points],
        [max(p[1], 0.1) for p in probe.points],
        s=2,
        alpha=0.25,
        color="grey",
        label="probe round trips",
    )
    ax_rtt.plot(tm, series("probe", "p50_ms"), marker=".", label="probe ?wait=true p50")
    ax_rtt.plot(tm, series("probe", "p99_ms"), marker=".", label="probe ?wait=true p99")
    ax_rtt.plot(tm, series("replay", "p99_ms"), marker=".", label="replay request p99")
    ax_rtt.axhline(
        TARGET_RTT_P99_MS,
        color="red",
        linestyle="--",
        linewidth=0.8,
        label=f"target p99 {TARGET_RTT_P99_MS:g} ms",
    )
    ax_rtt.set_yscale("log")
    ax_rtt.set_ylabel("round trip (ms)")
    ax_rps = ax_rtt.twinx()
    ax_rps.plot(
        tm, series("replay", "per_s"), color="black", linewidth=0.8, label="replay requests/s"
    )
    ax_rps.set_ylabel("replay requests/s")
    ax_rtt.legend(loc="upper left", fontsize=8)
    ax_rps.legend(loc="upper right", fontsize=8)
    ax_rtt.set_title("Soak: round trip, CPU, lag and log growth over time")
    names = sorted({n for w in windows for n in w["cpu_pct"]})
    for name in names:
        ax_cpu.plot(tm, series("cpu_pct", name), marker=".", label=name)
    ax_cpu.set_ylabel("CPU (% of a core)")
    ax_cpu.legend(loc="upper left", fontsize=8, ncol=4)
    ts = [p["t"] / 60 for p in scraper.points]
    for group in GROUPS:
        ax_lag.plot(
            ts,
            [
                math.nan if p.get(f"{group}_lag") is None else p[f"{group}_lag"]
                for p in scraper.points
            ],
            label=f"{group} lag",
        )
    for episode in scraper.stalls:
        end = episode["start_t"] + (episode["seconds"] or 0)
        ax_lag.axvspan(episode["start_t"] / 60, end / 60, color="red", alpha=0.2)
    ax_lag.set_yscale("symlog")
    ax_lag.set_ylabel("records behind (stalls shaded)")
    ax_lag.legend(loc="upper left", fontsize=8)
    for points, key, label in (
        (scraper.points, "orders_end", "orders log end"),
        (scraper.positions, "engine_sequence", "engine sequence"),
        (scraper.positions, "settled_sequence", "settled sequence"),
    ):
        ax_log.plot(
            [p["t"] / 60 for p in points],
            [math.nan if p.get(key) is None else p[key] for p in points],
            label=label,
        )
    ax_log.set_ylabel("records / commands")
    ax_log.set_xlabel("minutes since start")
    ax_log.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def stack_env(args: argparse.Namespace, data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    keep_cluster = args.stack == "real"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EXCHANGE_")
        and (keep_cluster or k not in ("KAFKA_BOOTSTRAP_SERVERS", "CASSANDRA_CONTACT_POINTS"))
    }
    if keep_cluster and not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise SystemExit("--stack real needs KAFKA_BOOTSTRAP_SERVERS (eval $(exchange infra env))")
    env.update(
        {
            "EXCHANGE_DATA_DIR": str(data_dir),
            "EXCHANGE_LOG_LEVEL": "WARNING",
            "EXCHANGE_PORT": str(ports["api"]),
            "EXCHANGE_ENGINE_METRICS_PORT": str(ports["engine"]),
            "EXCHANGE_SETTLEMENT_METRICS_PORT": str(ports["settlement"]),
            "EXCHANGE_LAG_METRICS_PORT": str(ports["lag"]),
        }
    )
    return env


def port_from_env(name: str) -> int:
    value = os.environ.get(name)
    return int(value) if value else free_port()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("embedded", "real"), default="embedded")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="steady orders/s through Kafka (0 = no load generator)",
    )
    parser.add_argument("--probe-rate", type=float, default=4.0, help="?wait=true probes per s")
    parser.add_argument("--stall-seconds", type=float, default=2.5)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="replay users")
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES)
    parser.add_argument("--no-replay", action="store_true", help="no LOBSTER replay client")
    parser.add_argument(
        "--broker-pid",
        type=int,
        default=None,
        help="--stack real: the Kafka broker's pid (default: found by name)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default data/soak/<UTC time>)"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data dir")
    parser.add_argument(
        "--role", choices=("soak", "replay"), default="soak", help=argparse.SUPPRESS
    )
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="lob", help=argparse.SUPPRESS)
    parser.add_argument("--accounts", default="{}", help=argparse.SUPPRESS)  # replay's users
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate < 0 or args.probe_rate <= 0 or args.stall_seconds <= 0:
        parser.error("--minutes, --probe-rate and --stall-seconds must be > 0, --rate >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "replay":
        return run_replay_role(args)
    sys.setswitchinterval(0.001)  # the probe thread's answer must not wait 5 ms for the GIL
    started_at = datetime.now(UTC)
    out = args.out or ROOT / "data" / "soak" / started_at.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "stack"
    ports = {
        "api": port_from_env("EXCHANGE_PORT"),
        "engine": port_from_env("EXCHANGE_ENGINE_METRICS_PORT"),
        "settlement": port_from_env("EXCHANGE_SETTLEMENT_METRICS_PORT"),
        "lag": port_from_env("EXCHANGE_LAG_METRICS_PORT"),
    }
    env = stack_env(args, data_dir, ports)
    total_s = round(args.minutes * 60 / WINDOW_S) * WINDOW_S
    edge_s = min(60.0, total_s / 2)  # "first/last minute"
    cpu_window_s = min(300.0, total_s / 2)  # "first/last 5 minutes"
    print(
        f"soak: {args.stack} stack, {total_s / 60:g} min, {args.rate:g} orders/s via Kafka, "
        f"LOBSTER replay {'off' if args.no_replay else 'on'}, output in {out}",
        flush=True,
    )
    print("targets:", flush=True)
    for target in TARGETS:
        print(f"  - {target}", flush=True)
    if total_s < 600:
        print(
            f"  (a run under 10 min compares its first and last {cpu_window_s:.0f} s of "
            "broker CPU)",
            flush=True,
        )

    base = f"http://127.0.0.1:{ports['api']}"
    urls = {
        name: f"http://127.0.0.1:{ports[name]}/metrics" for name in ("lag", "engine", "settlement")
    }
    urls["gateway"] = f"{base}/metrics"
    stack = Stack(env, out / "stack.log")
    loadgen: subprocess.Popen[bytes] | None = None
    replay: Replay | None = None
    logs: list[IO[str]] = []
    probe_client = httpx.Client(base_url=base, timeout=PROBE_TIMEOUT_MS / 1000 + 10)
    scrape_client = httpx.Client(timeout=5)
    windows: list[dict[str, Any]] = []
    scraper = Scraper(scrape_client, now_s(), urls, args.stall_seconds)
    probe = Probe(probe_client, now_s(), 1 / args.probe_rate)
    threads: list[threading.Thread] = []
    loadgen_report: dict[str, Any] | None = None
    ready_gap_s = None
    try:
        stack.wait_up(120)
        # Every request is signed (gateway.auth): the probe and the funding as the stack's
        # operator (`exchange up` wrote its key file), each replay user with its own key.
        probe_client.auth = signer_from_file(Path(env["EXCHANGE_DATA_DIR"]) / "operator.key")
        wait_ready(probe_client, 120)
        [probe.user] = [real for real, _ in make_accounts(probe_client, [PROBE_USER]).values()]
        ready_gap_s = wait_pipeline(probe_client, 120, probe.user)
        print(
            f"stack up: /ready was 200 {ready_gap_s:.2f} s before the first ?wait=true "
            f"deposit was answered; pids {stack.pids}",
            flush=True,
        )
        if args.stack == "real":
            broker_pid = args.broker_pid or find_kafka_pid()
            if broker_pid is None:
                print("no broker pid (pass --broker-pid): broker CPU not measured", flush=True)
            else:
                stack.pids["broker"] = broker_pid
        accounts: dict[int, list[Any]] = {}
        if not args.no_replay:
            lobster_users = sorted({int(c.body["user_id"]) for c in funding_calls(args.users)})
            accounts = make_accounts(probe_client, lobster_users)
            for call in funding_calls(args.users):
                body = {**call.body, "user_id": accounts[int(call.body["user_id"])][0]}
                probe_client.post(call.path, params={"wait": "true"}, json=body)
        t0 = now_s()
        scraper.t0 = probe.t0 = t0
        if args.rate > 0:
            log = (out / "loadgen.log").open("w")
            logs.append(log)
            loadgen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "entrypoints.cli",
                    "loadgen",
                    "--via",
                    "kafka",
                    "--rate",
                    f"{args.rate:g}",
                    "--duration",
                    f"{total_s:g}",
                    "--users",
                    str(LOADGEN_USERS),
                    "--seed",
                    "17",
                    "--report",
                    str(out / "loadgen.json"),
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        if not args.no_replay:
            log = (out / "replay.log").open("w")
            logs.append(log)
            replay = start_replay(base, args, f"s{started_at:%H%M%S}", log, accounts)
            replay.t0 = t0
        else:
            replay = Replay(None, t0)
        threads = [
            threading.Thread(target=probe.run, name="probe", daemon=True),
            *scraper.threads(),
        ]
        for thread in threads:
            thread.start()
        meter = CpuMeter()
        pids = {**stack.pids, "soak": os.getpid()}
        meter.read(pids, 0)  # baseline ticks
        try:
            for k in range(1, int(total_s / WINDOW_S) + 1):
                time.sleep(max(0.0, t0 + k * WINDOW_S - now_s()))
                pids = {**stack.pids, "soak": os.getpid()}
                if loadgen is not None:
                    pids["loadgen"] = loadgen.pid
                if replay.proc is not None:
                    pids["replay"] = replay.proc.pid
                cpu = meter.read(pids, WINDOW_S)
                windows.append(window_sample(k, now_s() - t0, probe, replay, scraper, cpu))
                print(summary_line(windows[-1]), flush=True)
        except KeyboardInterrupt:  # Ctrl-C: stop everything, report the windows so far
            print(f"interrupted after {len(windows)} windows", flush=True)
            total_s = len(windows) * WINDOW_S
            edge_s, cpu_window_s = min(60.0, total_s / 2), min(300.0, total_s / 2)
    finally:
        probe.stop.set()
        scraper.stop.set()
        for thread in threads:
            thread.join(15)
        scraper.close_open_episodes()
        if replay is not None and replay.proc is not None and replay.proc.poll() is None:
            replay.proc.terminate()
            try:
                replay.proc.wait(15)
            except subprocess.TimeoutExpired:
                replay.proc.kill()
        if loadgen is not None:
            # After sending it waits for its outputs to settle and reads them back (its report).
            if loadgen.poll() is None:
                print("waiting for the load generator's report (at most 5 min)", flush=True)
            try:
                loadgen.wait(300)
            except subprocess.TimeoutExpired:
                loadgen.terminate()
                loadgen.wait(15)
        stack.stop()
        probe_client.close()
        scrape_client.close()
        for log in logs:
            log.close()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    with contextlib.suppress(OSError, ValueError):
        loadgen_report = json.loads((out / "loadgen.json").read_text())

    def rtt_p99(lo: float, hi: float) -> float | None:
        return percentile([p[1] for p in probe.points if lo <= p[0] < hi], 99)

    first_rtt, last_rtt = rtt_p99(0, edge_s), rtt_p99(total_s - edge_s, total_s + WINDOW_S)
    cpu_first = mean_cpu(windows, "broker", 0, cpu_window_s)
    cpu_last = mean_cpu(windows, "broker", total_s - cpu_window_s, total_s)
    stalls = len(scraper.stalls)
    verdicts = {
        "no_stall": stalls == 0,
        "rtt_p99_first": first_rtt is not None and first_rtt <= TARGET_RTT_P99_MS,
        "rtt_p99_last": last_rtt is not None and last_rtt <= TARGET_RTT_P99_MS,
        "broker_cpu_flat": cpu_first is not None
        and cpu_last is not None
        and cpu_last <= TARGET_BROKER_CPU_RATIO * max(cpu_first, 1e-9),
    }
    result = {
        "minutes": round(total_s / 60, 2),
        "rtt_p99_ms_first": rounded(first_rtt),
        "rtt_p99_ms_last": rounded(last_rtt),
        "broker_cpu_first": rounded(cpu_first),
        "broker_cpu_last": rounded(cpu_last),
        "stalls": stalls,
        "edge_window_s": edge_s,
        "cpu_window_s": cpu_window_s,
        "probe_timeouts": sum(1 for p in probe.points if p[2] == 202),
        "watchdog_stalls": windows[-1]["watchdog_stalls"] if windows else None,
        "verdicts": verdicts,
    }
    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started_at": started_at.isoformat(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ports": ports,
        "targets": TARGETS,
        "ready_before_pipeline_s": ready_gap_s,
        "result": result,
        "stalls": scraper.stalls,
        "windows": windows,
        "scrapes": scraper.points,
        "probes": [
            {"t": round(t, 3), "rtt_ms": round(r, 2), "status": s} for t, r, s in probe.points
        ],
        "replay_seconds": [
            {k: v for k, v in s.items() if k != "lat_ms"}
            | {"n": len(s["lat_ms"]), "p99_ms": rounded(percentile(s["lat_ms"], 99))}
            for s in (replay.seconds if replay is not None else [])
        ],
        "loadgen": loadgen_report,
    }
    (out / "soak.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"samples written to {out / 'soak.json'}")
    if plot(out / "soak.png", windows, scraper, probe):
        print(f"plot written to {out / 'soak.png'}")
    for episode in scraper.stalls:
        print(
            f"stall: {episode['group']} from t={episode['start_t']} s for "
            f"{episode['seconds']} s, lag {episode['lag']}"
        )
    if windows:
        print(f"stalls the services' own watchdogs saw: {windows[-1]['watchdog_stalls']}")
    for name, ok in verdicts.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(
        f"RESULT soak minutes={result['minutes']:g} "
        f"rtt_p99_ms_first={_num(first_rtt)} rtt_p99_ms_last={_num(last_rtt)} "
        f"broker_cpu_first={_num(cpu_first)} broker_cpu_last={_num(cpu_last)} stalls={stalls}"
    )
    return 0


def _num(value: float | None) -> str:
    return "nan" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
