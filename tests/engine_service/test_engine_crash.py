"""kill -9 the engine process during a stream, several times: nothing lost, nothing twice.

Each kill is driven by the engine's progress (its snapshot log lines), never by a timer, and
guarded: the engine must be alive with work left when it is killed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.markets import load_markets
from exchange.codec import Codec
from exchange.topics import Topics
from ops.workload import command_stream
from tests.support.eventually import eventually
from tests.support.kafka import produce_commands, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _engine_env(bootstrap: str, topics: Topics, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "EXCHANGE_DATA_DIR": str(data_dir),
            "EXCHANGE_TOPIC_ORDERS": topics.orders.name,
            "EXCHANGE_TOPIC_ENGINE_OUTPUT": topics.engine_output.name,
            "EXCHANGE_TOPIC_ORDERS_DLQ": topics.orders_dlq.name,
            "EXCHANGE_TOPIC_ENGINE_SNAPSHOTS": topics.engine_snapshots.name,
            "EXCHANGE_SNAPSHOT_EVERY_COMMANDS": "3000",
            "EXCHANGE_ENGINE_BATCH_SIZE": "500",
            "EXCHANGE_LOG_LEVEL": "INFO",
            "EXCHANGE_ENGINE_METRICS_PORT": "0",
        }
    )
    return env


def test_engine_when_killed_repeatedly_publishes_every_sequence_exactly_once(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
) -> None:
    codec = Codec()
    commands = list(command_stream(seed=99, count=30_000, users=300))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    reference = Engine(load_markets())
    expected = [codec.encode_output(reference.apply(c)) for c in commands]
    env = _engine_env(kafka_bootstrap, fresh_topics, tmp_path)
    parts = fresh_topics.engine_output.partitions
    log_path = tmp_path / "engine.log"

    kills = 0
    with open(log_path, "w") as log:
        for attempt in range(8):
            log.flush()
            start = log_path.stat().st_size
            proc = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", "engine"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if kills < 4:
                # Driven by progress, not by a timer: odd attempts kill while a snapshot is
                # being written (right after its pause), even ones between snapshots (right
                # after one was written). Each run first applies at least a snapshot's worth.
                event = _PAUSED if attempt % 2 else _WRITTEN
                at = _wait_for_progress(log_path, start, proc, event)
                # The guard: the kill interrupts a live engine with work left to do.
                assert proc.poll() is None and at < n, (at, n)
                proc.kill()
                proc.wait()
                kills += 1
                continue
            # Final run: let it finish the stream, then stop it.
            eventually(
                lambda at=start: "engine: consuming" in log_path.read_text()[at:],
                timeout_s=120,
                interval_s=0.01,
                what="the final engine to start",
            )
            _wait_until_published(kafka_bootstrap, fresh_topics, n, parts, proc)
            proc.terminate()
            assert proc.wait(60) == 0
            break

    assert kills >= 3
    assert "restored snapshot" in log_path.read_text(), "no restart recovered from a snapshot"
    records = read_all(kafka_bootstrap, fresh_topics.engine_output.name, parts)
    sequences = [seq for seq, _, _ in records]
    duplicates = len(sequences) - len(set(sequences))
    print(f"engine crash test: {kills} kills, {duplicates} duplicate outputs published")
    assert sorted(set(sequences)) == list(range(1, n + 1)), "an output is missing"
    deduplicated: dict[int, bytes] = {}
    for seq, _, value in records:
        deduplicated.setdefault(seq, value)
    assert [deduplicated[s] for s in range(1, n + 1)] == expected
    assert duplicates == 0


_PAUSED = re.compile(r"snapshot at sequence (\d+): matching paused")
_WRITTEN = re.compile(r"snapshot at sequence (\d+) written")


def _wait_for_progress(
    path: Path, start: int, proc: subprocess.Popen[bytes], event: re.Pattern[str]
) -> int:
    """The sequence of the first ``event`` this run logs (from byte ``start`` of the log)."""

    def progressed() -> int | bool:
        assert proc.poll() is None, "the engine exited before making progress"
        m = event.search(path.read_text()[start:])
        return int(m.group(1)) if m else False

    return eventually(progressed, timeout_s=120, interval_s=0.01, what=event.pattern)


def _wait_until_published(
    bootstrap: str,
    topics: Topics,
    n: int,
    parts: int,
    proc: subprocess.Popen[bytes],
    timeout_s: float = 240,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "engine exited early"
        if len({s for s, _, _ in read_all(bootstrap, topics.engine_output.name, parts)}) >= n:
            return
        time.sleep(2)
    raise AssertionError("engine did not publish the whole stream in time")
