"""Run `exchange up` for a test: on the embedded stack, or on the real one under `make e2e`.

The real stack is whatever KAFKA_BOOTSTRAP_SERVERS / CASSANDRA_CONTACT_POINTS / CASSANDRA_PORT
name (`make e2e` exports them from `exchange infra env` or the compose stack). Each stack gets
topics and a keyspace of its own, so tests sharing one cluster never see each other's data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ops.apiclient import signer_from_file
from ops.broker import free_port
from tests.support.signing import ByUser, Signer, new_signer

REAL_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "CASSANDRA_CONTACT_POINTS")


def require_real_stack() -> dict[str, str]:
    """The real stack's variables; fails (never skips) when an e2e test runs without them."""
    found = {k: os.environ.get(k, "").strip() for k in (*REAL_VARIABLES, "CASSANDRA_PORT")}
    missing = [k for k in REAL_VARIABLES if not found[k]]
    if missing:
        pytest.fail(f"e2e tests need {', '.join(missing)}: run them with `make e2e`")
    return {k: v for k, v in found.items() if v}


def unique_prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}"


def stack_env(data: Path, *, real: bool, prefix: str | None = None) -> dict[str, str]:
    """The environment of an `exchange up` with its own ports, data dir, topics, keyspace."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXCHANGE_", "KAFKA_", "CASSANDRA_"))
    }
    env.update(
        {
            "EXCHANGE_DATA_DIR": str(data),
            "EXCHANGE_PORT": str(free_port()),
            "EXCHANGE_ENGINE_METRICS_PORT": str(free_port()),
            "EXCHANGE_SETTLEMENT_METRICS_PORT": str(free_port()),
            "EXCHANGE_LAG_METRICS_PORT": str(free_port()),
        }
    )
    if real:
        env.update(require_real_stack())
        p = prefix or unique_prefix()
        env.update(
            {
                "CASSANDRA_KEYSPACE": p,
                "EXCHANGE_TOPIC_ORDERS": f"{p}.orders",
                "EXCHANGE_TOPIC_ENGINE_OUTPUT": f"{p}.engine-output",
                "EXCHANGE_TOPIC_ORDERS_DLQ": f"{p}.orders.dlq",
                "EXCHANGE_TOPIC_ENGINE_OUTPUT_DLQ": f"{p}.engine-output.dlq",
                "EXCHANGE_TOPIC_ENGINE_SNAPSHOTS": f"{p}.engine-snapshots",
            }
        )
    return env


class StackUsers:
    """Users made through the admin API of a running stack, each with its key."""

    def __init__(self) -> None:
        self.signers: dict[int, Signer] = {}

    def create(self, client: httpx.Client, n: int) -> list[int]:
        """``n`` new users (the engine numbers them 1, 2, 3, ... on a fresh log)."""
        made = []
        for _ in range(n):
            signer = new_signer()
            response = client.post("/api/v1/admin/users", json={"public_key": signer.public_key})
            assert response.status_code == 201, response.text
            user = response.json()["data"]["user_id"]
            self.signers[user] = signer
            made.append(user)
        return made

    def trader(self, user: int) -> Signer:
        assert user in self.signers, (
            f"user {user} was not created (created: {sorted(self.signers)})"
        )
        return self.signers[user]


@contextmanager
def running_stack(
    env: dict[str, str], data: Path, ready_timeout_s: float = 180.0, users: int = 0
) -> Iterator[httpx.Client]:
    """`exchange up` with ``env``; yields an HTTP client once the gateway is ready; stops the
    stack with SIGINT and asserts it exits cleanly.

    The client signs every request (the stack's operator key, written by `exchange up` to
    its data dir, on operator routes; else the key of the user the request names); the
    users 1..``users`` are created first, through the admin API."""
    log = open(data / "stack.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{env['EXCHANGE_PORT']}", timeout=10)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            assert proc.poll() is None, (data / "stack.log").read_text()
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (data / "stack.log").read_text()
            time.sleep(0.3)
        made = StackUsers()
        operator = signer_from_file(Path(env["EXCHANGE_DATA_DIR"]) / "operator.key")
        client.auth = ByUser(operator, made.trader)
        assert made.create(client, users) == list(range(1, users + 1))
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        finally:
            log.close()
        assert code == 0, (data / "stack.log").read_text()
