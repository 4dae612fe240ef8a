"""The snapshot child cannot deadlock: it takes no lock another thread can hold.

See engine/service/forked_snapshot.py for the argument. The stress test forks thousands of
times while other threads produce to Kafka (librdkafka's threads), log, hash (OpenSSL) and
load libraries and resolve names (the dynamic loader's lock); every child must finish and
hand over the exact snapshot. ``FORK_STRESS_ITERATIONS`` raises the count for a longer run.
The guard tests show the test can fail: a child that takes a lock held by another thread at
fork time does hang, and the snapshot child does not take such a lock.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import engine.snapshot
from engine.engine import Engine
from engine.markets import load_markets
from engine.service.forked_snapshot import ForkedSnapshotError, serialize_in_child
from exchange.kafka import make_producer
from exchange.topics import Topics
from ops.workload import command_stream

# The normal suite forks up to 2,000 times within a 15 s budget: a fork of the test process
# takes a few ms on a quiet 2-core machine, and the budget keeps a loaded machine's run short
# (the count reached is printed; MIN_FORKS only checks that the loop ran, not the speed).
# A soak with a fixed count: FORK_STRESS_ITERATIONS=3000 FORK_STRESS_SECONDS=3600.
ITERATIONS = int(os.environ.get("FORK_STRESS_ITERATIONS", "2000"))
BUDGET_S = float(os.environ.get("FORK_STRESS_SECONDS", "15"))
MIN_FORKS = 10
CHILD_DEADLINE_S = 10.0


def _engine() -> Engine:
    engine = Engine(load_markets())
    for command in command_stream(seed=7, count=1_000, users=50):
        engine.apply(command)
    return engine


def _collect_or_kill(collect: Callable[[], bytes], deadline_s: float) -> bytes:
    """``collect()``, killing the child if it has not finished by the deadline (a hang)."""
    pid = collect.pid  # type: ignore[attr-defined]
    killer = threading.Timer(deadline_s, lambda: os.kill(pid, signal.SIGKILL))
    killer.start()
    try:
        return collect()
    finally:
        killer.cancel()


@contextmanager
def _busy_threads(bootstrap: str, topic: str, log_path: Path) -> Iterator[dict[str, int]]:
    """Threads that keep taking the locks a careless child could take."""
    stop = threading.Event()
    counts = {"produced": 0, "logged": 0, "hashed": 0, "loaded": 0}
    logger = logging.getLogger("tests.fork_stress")
    handler = logging.FileHandler(log_path)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def produce() -> None:
        producer = make_producer(bootstrap, **{"linger.ms": 1})
        while not stop.is_set():
            try:
                producer.produce(topic, b"x" * 100, partition=0)
                counts["produced"] += 1
            except BufferError:
                pass
            # Keep librdkafka busy, not its queue growing (a bigger heap only slows fork).
            producer.poll(0.001 if len(producer) > 10_000 else 0)
        producer.flush(10)

    def log() -> None:
        while not stop.is_set():
            logger.info("busy %d", counts["logged"])
            counts["logged"] += 1

    def hash_and_load() -> None:
        while not stop.is_set():
            hashlib.sha256(b"y" * 4096).digest()
            ctypes.CDLL("libc.so.6")
            socket.getaddrinfo("localhost", 9092)
            counts["hashed"] += 1
            counts["loaded"] += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (produce, log, hash_and_load)]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.kafka
def test_snapshot_child_when_forked_during_produce_logging_and_hashing_never_hangs(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path
) -> None:
    engine = _engine()
    expected = engine.snapshot()
    started = time.monotonic()
    # Hand the GIL over often: the busy threads must run *while* children fork, and the
    # default 5 ms interval would make each fork wait on them for several intervals.
    monkeypatch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    with _busy_threads(kafka_bootstrap, fresh_topics.orders.name, tmp_path / "busy.log") as busy:
        forks = 0
        while forks < ITERATIONS and time.monotonic() - started < BUDGET_S:
            data = _collect_or_kill(serialize_in_child(engine), CHILD_DEADLINE_S)
            assert data == expected, f"fork {forks}: the snapshot differs"
            forks += 1
        seen = dict(busy)
    sys.setswitchinterval(monkeypatch_interval)
    elapsed = time.monotonic() - started
    print(f"fork stress: {forks} forks in {elapsed:.1f}s while {seen}")
    assert forks >= MIN_FORKS
    # The other threads really were busy while the children ran.
    assert seen["produced"] > 0 and seen["logged"] > 0 and seen["hashed"] > 0


class _LockedHash:
    """Stands for OpenSSL's internal locks: hashing takes a lock another thread may hold."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def sha256(self, data: Any) -> Any:
        with self._lock:
            return hashlib.sha256(data)


def test_child_when_it_takes_a_lock_held_at_fork_time_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard is real: a child that hashes while another thread held the hash lock at
    fork time hangs (it is killed at the deadline), as the old child (which hashed) could."""
    lock = threading.Lock()
    monkeypatch.setattr(engine.snapshot, "hashlib", _LockedHash(lock))
    holder_has_it = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            holder_has_it.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    holder_has_it.wait(10)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            os.write(write_fd, engine.snapshot.frame(b"body"))
        finally:
            os._exit(0)
    os.close(write_fd)
    release.set()
    holder.join(10)
    collect_like: Any = lambda: os.waitpid(pid, 0)[1]  # noqa: E731
    collect_like.pid = pid
    status = _collect_or_kill(collect_like, 1.0)
    os.close(read_fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_snapshot_child_when_the_hash_lock_is_held_at_fork_time_still_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same lock held at fork time does not stop the snapshot child: it does not hash
    (the parent frames the body after the fork, once the holder let go)."""
    engine_ = _engine()
    expected = engine_.snapshot()
    lock = threading.Lock()
    monkeypatch.setattr(engine.snapshot, "hashlib", _LockedHash(lock))
    holder_has_it = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            holder_has_it.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    holder_has_it.wait(10)
    collect = serialize_in_child(engine_)  # forked while the lock is held
    release.set()
    holder.join(10)
    try:
        assert _collect_or_kill(collect, CHILD_DEADLINE_S) == expected
    except ForkedSnapshotError as e:  # killed at the deadline: it hung
        pytest.fail(f"the snapshot child hung on a lock held at fork time: {e}")
