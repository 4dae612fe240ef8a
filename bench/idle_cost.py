"""What an idle stack costs after a long log: broker and services CPU after N commands.

Starts ``exchange up`` (the embedded stack by default; with ``KAFKA_BOOTSTRAP_SERVERS`` set,
that cluster) on free ports in a fresh data directory under ``data/idle_cost/``, pushes
``--orders`` commands through it with ``exchange loadgen --via kafka --rate 0`` (flat out,
until every output is settled), then leaves it idle and reads each process's CPU time from
``/proc`` over ``--idle-seconds``. Issue 17's target: the embedded stack idles at no more
than 10% of a core after 100k commands.

Run: ``.venv/bin/python bench/idle_cost.py [--orders 100000] [--idle-seconds 30]``; a few
minutes. Last line:
``RESULT idle_cost orders=<n> broker_cpu_pct=<n> services_cpu_pct=<n> stack=<name>``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.broker_growth import cpu_ticks  # noqa: E402
from ops.broker import die_with_parent, free_port  # noqa: E402

SERVICES = ("engine", "settlement", "gateway", "lag")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()

    data = ROOT / "data" / "idle_cost" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(
        {
            "EXCHANGE_DATA_DIR": str(data),
            "EXCHANGE_PORT": str(free_port()),
            "EXCHANGE_ENGINE_METRICS_PORT": str(free_port()),
            "EXCHANGE_SETTLEMENT_METRICS_PORT": str(free_port()),
            "EXCHANGE_LAG_METRICS_PORT": str(free_port()),
        }
    )
    stack = "real" if env.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded"
    up = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    pids: dict[str, int] = {}
    ready = threading.Event()

    def follow() -> None:
        assert up.stdout is not None
        with (data / "stack.log").open("w") as log:
            for line in up.stdout:
                log.write(line)
                log.flush()
                if m := re.match(r"broker\s+tansu .* pid=(\d+)", line):
                    pids["broker"] = int(m.group(1))
                elif m := re.match(r"service\s+(\w+) pid=(\d+)", line):
                    pids[m.group(1)] = int(m.group(2))
                elif line.startswith("ready"):
                    ready.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        if not ready.wait(120):
            raise SystemExit(f"the stack never became ready; see {data / 'stack.log'}")
        print(f"stack ready ({stack}); pushing {args.orders:,} commands", flush=True)
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "entrypoints.cli",
                "loadgen",
                "--via",
                "kafka",
                "--rate",
                "0",
                "--orders",
                str(args.orders),
                "--report",
                str(data / "loadgen.json"),
            ],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        print(
            f"all settled in {time.monotonic() - started:.1f} s; idle for "
            f"{args.idle_seconds:.0f} s",
            flush=True,
        )
        time.sleep(5)  # the last commits and snapshot settle
        measured = {name: pid for name, pid in pids.items() if name == "broker" or name in SERVICES}
        before = {name: cpu_ticks(pid) for name, pid in measured.items()}
        time.sleep(args.idle_seconds)
        pct = {
            name: (cpu_ticks(pid) - before[name]) / args.idle_seconds
            for name, pid in measured.items()
        }
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    for name, value in sorted(pct.items()):
        print(f"{name:<11} {value:5.1f}% of a core", flush=True)
    services = sum(v for k, v in pct.items() if k != "broker")
    broker = pct.get("broker", 0.0)
    print(
        f"RESULT idle_cost orders={args.orders} broker_cpu_pct={broker:.1f} "
        f"services_cpu_pct={services:.1f} stack={stack}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
