"""The embedded broker never outlives the process that started it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EXCHANGE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env["EXCHANGE_DATA_DIR"] = str(tmp_path)
    # Free ports, so a `make run` on the same machine does not collide with the test's stack.
    from ops.broker import free_port

    for name in (
        "EXCHANGE_PORT",
        "EXCHANGE_ENGINE_METRICS_PORT",
        "EXCHANGE_SETTLEMENT_METRICS_PORT",
        "EXCHANGE_LAG_METRICS_PORT",
    ):
        env[name] = str(free_port())
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(
    proc: subprocess.Popen[str], pattern: str, timeout_s: float = 60.0
) -> tuple[re.Match[str], list[str]]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m, seen
    raise AssertionError(f"{pattern!r} not printed; output: {''.join(seen)}")


def test_broker_command_when_killed_with_sigkill_takes_tansu_down_too(tmp_path: Path) -> None:
    proc = _start(["broker"], tmp_path)
    m, _ = _read_until(proc, r"tansu pid=(\d+)")
    tansu = int(m.group(1))
    assert _alive(tansu)

    proc.kill()
    proc.wait(10)

    eventually(lambda: not _alive(tansu), timeout_s=10, what="tansu outlived its parent")


def test_up_when_interrupted_stops_everything_and_exits_0(tmp_path: Path) -> None:
    proc = _start(["up"], tmp_path)
    m, _ = _read_until(proc, r"tansu \(embedded, in-memory\) pid=(\d+)")
    tansu = int(m.group(1))
    _read_until(proc, r"stack up")
    assert (tmp_path / "stack.json").exists()

    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, out
    assert "stack stopped" in out
    eventually(lambda: not _alive(tansu), timeout_s=10, what="tansu to exit")
    assert not (tmp_path / "stack.json").exists()


def test_topics_command_when_run_twice_reports_no_change_the_second_time(tmp_path: Path) -> None:
    broker = _start(["broker"], tmp_path)
    try:
        m, _ = _read_until(broker, r"export KAFKA_BOOTSTRAP_SERVERS=(\S+)")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "KAFKA_BOOTSTRAP_SERVERS": m.group(1),
            "EXCHANGE_DATA_DIR": str(tmp_path),
        }
        run = [sys.executable, "-m", "entrypoints.cli", "topics"]
        first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    finally:
        broker.send_signal(signal.SIGINT)
        broker.communicate(timeout=30)

    assert first.returncode == 0, first.stderr
    assert "5 created, 0 unchanged" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "0 created, 5 unchanged" in second.stdout


def test_embedded_broker_when_context_exits_leaves_no_process() -> None:
    from ops.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None and _alive(pid)

    eventually(lambda: not _alive(pid), timeout_s=10, what="pid to exit")
