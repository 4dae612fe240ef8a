"""Replay on the real stack: `exchange loadgen` drives `exchange up` on Apache Kafka +
Cassandra; then `exchange replay` into a fresh keyspace, and into SQLite, gives the live
Cassandra store's digest (the two backends agree on the same outputs)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_testkit import running_stack, stack_env, unique_prefix

from settlement.cassandra_store import CassandraStore

pytestmark = pytest.mark.e2e


def _exchange(
    args: list[str], env: dict[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _digest_of(replay_output: str) -> str:
    found = re.search(r"store digest (\S+)", replay_output)
    assert found, replay_output
    return found.group(1)


def test_replay_when_load_has_settled_into_cassandra_gives_the_live_digest(
    tmp_path: Path,
) -> None:
    prefix = unique_prefix()
    env = stack_env(tmp_path, real=True, prefix=prefix)
    hosts = env["CASSANDRA_CONTACT_POINTS"].split(",")
    port = int(env.get("CASSANDRA_PORT", "9042"))
    live = CassandraStore(hosts, port=port, keyspace=prefix)
    replayed = CassandraStore(hosts, port=port, keyspace=f"{prefix}r")
    try:
        with running_stack(env, tmp_path):
            load = _exchange(
                [
                    "loadgen",
                    "--via",
                    "kafka",
                    "--orders",
                    "3000",
                    "--rate",
                    "0",
                    "--users",
                    "50",
                    "--seed",
                    "7",
                ],
                env,
            )
            assert ", 0 not seen)" in load.stdout, load.stdout  # every order settled

            into_cassandra = _exchange(["replay"], {**env, "CASSANDRA_KEYSPACE": f"{prefix}r"})
            into_sqlite = _exchange(["replay", "--into", str(tmp_path / "replay.sqlite3")], env)
            digest = _digest_of(into_cassandra.stdout)

            deadline = time.monotonic() + 60  # the live store settles what the log holds
            while live.digest() != digest and time.monotonic() < deadline:
                time.sleep(0.5)

            assert live.digest() == digest
            assert _digest_of(into_sqlite.stdout) == digest
            assert live.max_sequence() >= 3000
    finally:
        for store in (live, replayed):
            store.drop_keyspace()
            store.close()
