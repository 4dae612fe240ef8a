"""Serialising the engine in a forked child, and why that child cannot deadlock.

Why fork at all: a forked child is a copy-on-write image of the engine at one instant, so
matching pauses only for ``fork()`` itself (page tables, not the heap: a few ms) instead of
for the whole serialisation (seconds for a book of half a million orders, see
``bench/engine_core.py``). Replacing the fork would mean either that pause on the loop
thread, or copying the state somewhere first, which costs the same pause.

The risk: the engine process has other threads (librdkafka's, the snapshot writer). ``fork()``
copies only the calling thread; a lock that another thread held at that instant stays held
forever in the child, and a child that then takes it hangs.

The answer: **the child takes no lock that another thread can hold.** It runs exactly this,
and nothing else:

1. ``os.close`` of the pipe's read end, and ``prctl(PR_SET_PDEATHSIG)`` through a function
   pointer resolved in the parent *before* the fork (:class:`_DeathSignal`): no ``dlopen`` in
   the child, whose loader lock a librdkafka thread may hold while resolving a host name
   (glibc loads NSS modules with ``dlopen``).
2. ``gc.disable()``: no collection can run in the child, so no finalizer of a foreign object
   (say a Kafka client, whose destructor joins threads that do not exist in the child).
3. ``engine.snapshot_body()``: the engine's export and ``marshal``, plain CPython under the
   GIL, which ``os.fork()`` hands to the forking thread (CPython reinitialises its runtime
   locks in the child). Memory comes from pymalloc (GIL-protected) and glibc's malloc, whose
   ``fork()`` takes every arena lock before forking and resets them in the child.
4. ``os.write`` to the pipe and ``os._exit`` (no atexit handlers, no flush of inherited stdio
   buffers).

In particular the child does not hash (OpenSSL keeps internal locks that a TLS-using
librdkafka thread may hold), log, print or import. The SHA-256 and the header are added in
the parent, on the writer thread, by :func:`engine.snapshot.frame`.

Evidence: ``tests/engine_service/test_forked_snapshot.py`` forks thousands of times while
other threads produce to Kafka, log, hash and load libraries, and checks every snapshot; and
it shows that a child which *did* take a lock held by another thread at fork time would hang
(the guard test holds the lock that hashing and library loading take in the child, and this
child completes anyway).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from engine.errors import ExchangeError
from engine.snapshot import frame

_PR_SET_PDEATHSIG = 1


class ForkedSnapshotError(ExchangeError):
    """The snapshot child failed (its exit status says how)."""


class SnapshotBody(Protocol):
    def snapshot_body(self) -> bytes: ...


class _DeathSignal:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``, resolved once in the parent (Linux only)."""

    def __init__(self) -> None:
        self._prctl: Callable[..., int] | None = None
        if sys.platform.startswith("linux"):
            self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm(self) -> None:  # pragma: no cover - runs in the forked child
        if self._prctl is not None:
            self._prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_death_signal: _DeathSignal | None = None


def serialize_in_child(engine: SnapshotBody) -> Callable[[], bytes]:
    """Fork; the child streams ``engine.snapshot_body()`` through a pipe and exits.

    Returns a function (run it on another thread) that reads the body, reaps the child and
    returns the framed snapshot (:func:`engine.snapshot.frame`); ForkedSnapshotError if the
    child failed.
    """
    global _death_signal
    if _death_signal is None:  # resolved before the first fork, never in a child
        _death_signal = _DeathSignal()
    death_signal = _death_signal
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its effect is checked by the tests
        code = 0
        try:
            gc.disable()
            os.close(read_fd)
            death_signal.arm()
            view = memoryview(engine.snapshot_body())
            while view:
                view = view[os.write(write_fd, view) :]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)

    def collect() -> bytes:
        with os.fdopen(read_fd, "rb") as pipe:
            body = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise ForkedSnapshotError(f"snapshot child {pid} failed (wait status {status})")
        return frame(body)

    collect.pid = pid  # type: ignore[attr-defined]  # for tests that watch the child
    return collect
