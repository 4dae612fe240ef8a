"""`exchange infra` with the real JVMs: up, status, env, restart after kill -9, down; and no
process outlives `down` or a killed keeper. Uses its own ports and data dir, beside the stack
`make e2e` runs the suite on (the jar cache is shared, so nothing is downloaded here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.broker import free_port
from ops.infra import kafka_answers, pid_alive, read_state

pytestmark = pytest.mark.e2e


def _cli(
    args: list[str], env: dict[str, str], timeout_s: float = 400
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "infra", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXCHANGE_", "KAFKA_", "CASSANDRA_"))
    }
    return {**env, "EXCHANGE_DATA_DIR": str(tmp_path)}


def _ports() -> list[str]:
    return [
        "--kafka-port",
        str(free_port()),
        "--kafka-controller-port",
        str(free_port()),
        "--cassandra-port",
        str(free_port()),
        "--cassandra-storage-port",
        str(free_port()),
    ]


def _ours(tmp_path: Path) -> list[int]:
    """Processes whose command line names this test's data dir (the JVMs and the keeper)."""
    marker = str(tmp_path / "infra").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _wait_gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if pid_alive(p)]


def test_infra_when_up_answers_status_env_and_down_leaves_no_process(tmp_path: Path) -> None:
    env = _env(tmp_path)
    try:
        up = _cli(["up", *_ports()], env)
        assert up.returncode == 0, up.stdout + up.stderr
        state = read_state(tmp_path / "infra" / "infra.json")
        assert state is not None and state.ready
        pids = [state.keeper_pid, *state.pids.values()]
        assert sorted(state.pids) == ["cassandra", "kafka"]

        status = _cli(["status"], env, 60)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(": answers") == 2, status.stdout

        exports = _cli(["env"], env, 60).stdout.splitlines()
        assert exports == [
            f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{state.kafka_port}",
            "export CASSANDRA_CONTACT_POINTS=127.0.0.1",
            f"export CASSANDRA_PORT={state.cassandra_port}",
        ]
    finally:
        down = _cli(["down"], env, 120)

    assert down.returncode == 0, down.stderr
    assert _wait_gone(pids, 5) == []
    assert _ours(tmp_path) == []
    assert _cli(["status"], env, 60).returncode == 1


def test_infra_when_broker_killed_restarts_it_and_when_keeper_killed_nothing_survives(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    kafka_port = free_port()
    try:
        up = _cli(
            [
                "up",
                "--only",
                "kafka",
                "--kafka-port",
                str(kafka_port),
                "--kafka-controller-port",
                str(free_port()),
            ],
            env,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        state = read_state(tmp_path / "infra" / "infra.json")
        assert state is not None
        first = state.pids["kafka"]

        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            state = read_state(tmp_path / "infra" / "infra.json")
            assert state is not None
            if state.pids["kafka"] != first and kafka_answers(f"127.0.0.1:{kafka_port}"):
                break
            assert time.monotonic() < deadline, "the broker was not restarted"
            time.sleep(0.5)
        assert state.restarts["kafka"] == 1

        os.kill(state.keeper_pid, signal.SIGKILL)  # PDEATHSIG takes the broker with it
        assert _wait_gone([state.keeper_pid, state.pids["kafka"]]) == []
        assert _ours(tmp_path) == []
    finally:
        _cli(["down"], env, 120)
