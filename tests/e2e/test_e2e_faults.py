"""Faults under load on the real stack: while `exchange loadgen` sends a steady flow, kill -9
the engine, a settlement worker, the gateway (each restarted by `exchange up`), the Kafka
broker and the Cassandra node (each restarted by `exchange infra`'s keeper). Afterwards no
order is lost, no output is duplicated (sequences gap-free), and the store equals a replay.

The broker and node are killed through E2E_INFRA_STATE (`make e2e-local` exports the path
of `exchange infra`'s state file; its keeper restarts them) or, under the compose stack,
E2E_COMPOSE (the `docker compose -f ...` command `make e2e-compose` runs: `kill -s SIGKILL`
then `start` of the kafka / cassandra service).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_testkit import running_stack, stack_env, unique_prefix

from ops.infra import InfraConfig, component_answers, read_state
from settlement.cassandra_store import CassandraStore
from tests.support.eventually import eventually
from tests.support.kafka import read_all

pytestmark = pytest.mark.e2e


def _service_pid(log: Path, name: str) -> int:
    pids = re.findall(rf"service   {name} pid=(\d+)", log.read_text())
    assert pids, log.read_text()
    return int(pids[-1])


def _kill_service(log: Path, name: str) -> None:
    pid = _service_pid(log, name)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while _service_pid(log, name) == pid:  # the supervisor restarts it
        assert time.monotonic() < deadline, f"{name} not restarted"
        time.sleep(0.2)


def _kill_infra(state_path: Path, name: str) -> None:
    state = read_state(state_path)
    assert state is not None, state_path
    pid = state.pids[name]
    os.kill(pid, signal.SIGKILL)
    probe = InfraConfig(
        data_dir=state_path.parent,
        cache_dir=state_path.parent,
        pom=state_path,
        host=state.host,
        kafka_port=state.kafka_port or 0,
        cassandra_port=state.cassandra_port or 0,
    )
    deadline = time.monotonic() + 240
    while True:
        now = read_state(state_path)
        if now is not None and now.pids.get(name) != pid and component_answers(probe, name):
            return
        assert time.monotonic() < deadline, f"{name} not restarted"
        time.sleep(1.0)


def _kill_compose(compose: str, name: str, env: dict[str, str]) -> None:
    for action in (["kill", "-s", "SIGKILL", name], ["start", name]):
        subprocess.run([*shlex.split(compose), *action], check=True, timeout=120)
    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)
    probe = InfraConfig(
        data_dir=Path("."),
        cache_dir=Path("."),
        pom=Path("."),
        host=host,
        kafka_port=int(port),
        cassandra_port=int(env.get("CASSANDRA_PORT", "9042")),
    )
    deadline = time.monotonic() + 240
    while not component_answers(probe, name):
        assert time.monotonic() < deadline, f"{name} not back"
        time.sleep(1.0)


def test_faults_when_every_process_is_killed_under_load_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    state_path = Path(os.environ.get("E2E_INFRA_STATE", "/nonexistent"))
    compose = os.environ.get("E2E_COMPOSE", "")
    if not state_path.is_file() and not compose:
        pytest.fail(
            "set E2E_INFRA_STATE (exchange infra's state file) or E2E_COMPOSE (the "
            "compose command): `make e2e` does"
        )
    prefix = unique_prefix()
    env = stack_env(tmp_path, real=True, prefix=prefix)
    log = tmp_path / "stack.log"
    hosts = env["CASSANDRA_CONTACT_POINTS"].split(",")
    live = CassandraStore(hosts, port=int(env.get("CASSANDRA_PORT", "9042")), keyspace=prefix)
    try:
        with running_stack(env, tmp_path) as api:
            load = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "entrypoints.cli",
                    "loadgen",
                    "--via",
                    "kafka",
                    "--rate",
                    "200",
                    "--duration",
                    "60",
                    "--users",
                    "50",
                    "--seed",
                    "11",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                time.sleep(5)
                for name in ("engine", "settlement", "gateway"):
                    _kill_service(log, name)
                    time.sleep(3)
                for name in ("kafka", "cassandra"):
                    if state_path.is_file():
                        _kill_infra(state_path, name)
                    else:
                        _kill_compose(compose, name, env)
                out, _ = load.communicate(timeout=400)
            finally:
                if load.poll() is None:
                    load.kill()
            assert load.returncode == 0, out
            sent = re.search(r"orders sent +(\d+)", out)
            settled = re.search(r"\((\d+) settled in", out)
            assert sent and settled, out
            # 0 lost: every order sent was applied and its effect reached the store.
            assert int(settled.group(1)) == int(sent.group(1)) > 0, out
            assert ", 0 not seen)" in out, out

            outputs = read_all(
                env["KAFKA_BOOTSTRAP_SERVERS"], f"{prefix}.engine-output", 4, timeout_s=120
            )
            sequences = sorted(seq for seq, _, _ in outputs)
            assert len(sequences) == len(set(sequences)), "duplicated outputs"
            assert sequences == list(range(1, len(sequences) + 1)), "gap in the sequences"

            replay = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "entrypoints.cli",
                    "replay",
                    "--into",
                    str(tmp_path / "replay.sqlite3"),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert replay.returncode == 0, replay.stderr
            digest = re.search(r"store digest (\S+)", replay.stdout)
            assert digest, replay.stdout
            deadline = time.monotonic() + 90
            while live.digest() != digest.group(1) and time.monotonic() < deadline:
                time.sleep(1.0)
            assert live.digest() == digest.group(1)
            assert live.max_sequence() == len(sequences)

            # Ready again, though not at once: the gateway's followers back off (up to 10 s)
            # while the store was down, and then catch up with the log.
            def ready() -> None:
                resp = api.get("/ready")
                assert resp.status_code == 200, resp.text

            eventually(ready, timeout_s=60, what="the stack to be ready again")
    finally:
        live.drop_keyspace()
        live.close()
