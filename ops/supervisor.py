"""``exchange up``: the embedded stack supervisor.

Theory of operation: start the broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names one), make
sure the topics exist, then start each service as a child process in order. A child that
dies is reported and restarted with backoff. SIGINT/SIGTERM stops the services in reverse
order (SIGTERM, then SIGKILL after a grace period) and the broker last. Every child is
started with PDEATHSIG and in its own session, so none outlives the supervisor and a
terminal's Ctrl-C is handled here, in order, rather than by every child at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from exchange.kafka import make_admin
from exchange.settings import Settings
from exchange.topics import Topics, ensure_topics
from ops.broker import EmbeddedBroker, die_with_parent

STACK_FILE = "stack.json"


@dataclass(slots=True, kw_only=True)
class ServiceSpec:
    """A child process of the stack."""

    name: str
    argv: list[str]
    endpoints: dict[str, str] = field(default_factory=dict)  # label -> URL, printed at start
    env: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Child:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def discover_bootstrap(settings: Settings) -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS, else the address of a running ``exchange up``/``broker``."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    path = stack_file(settings.exchange_data_dir)
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
        os.kill(pid, 0)  # still alive?
        return str(info["bootstrap_servers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def discover_data_dir(settings: Settings) -> Path:
    """Where the running stack's services keep their state: the embedded ``exchange up``
    gives them a fresh ``$EXCHANGE_DATA_DIR/embedded``; otherwise ``EXCHANGE_DATA_DIR``."""
    try:
        info = json.loads(stack_file(settings.exchange_data_dir).read_text())
        os.kill(int(info["pid"]), 0)
        return Path(str(info["data_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return settings.exchange_data_dir


def write_stack_file(data_dir: Path, bootstrap: str, extra: dict[str, object]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = stack_file(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "bootstrap_servers": bootstrap, **extra}))
    os.replace(tmp, path)
    return path


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        services: Callable[[Settings, str], Sequence[ServiceSpec]],
        *,
        out: Callable[[str], None] = print,
        grace_s: float = 10.0,
        banner: Sequence[str] = (),
        ready_url: str | None = None,
    ) -> None:
        self._banner = tuple(banner)
        # The gateway's /ready: "ready" is printed when it first answers 200 (and again
        # after it stopped), so a user or a script knows when commands are taken.
        self._ready_url = ready_url
        self._ready: bool | None = None
        self._next_ready_check = 0.0
        self._http: httpx.Client | None = None
        self._settings = settings
        self._services = services
        self._out = out
        self._grace_s = grace_s
        self._stopping = False
        self._children: list[_Child] = []
        self._broker: EmbeddedBroker | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        s = self._settings
        child_env: dict[str, str] = {}
        try:
            if s.embedded_broker:
                self._broker = EmbeddedBroker(
                    port=s.exchange_broker_port, binary=s.tansu_bin
                ).start()
                bootstrap = self._broker.bootstrap_servers
                self._out(
                    f"broker    tansu (embedded, in-memory) pid={self._broker.pid} at {bootstrap}"
                )
                # The in-memory log starts empty, so a read model left by an earlier run
                # no longer matches it: each embedded run gets a fresh state directory.
                state_dir = s.exchange_data_dir / "embedded"
                shutil.rmtree(state_dir, ignore_errors=True)
                state_dir.mkdir(parents=True, exist_ok=True)
                child_env["EXCHANGE_DATA_DIR"] = str(state_dir)
            else:
                bootstrap = str(s.kafka_bootstrap_servers)
                self._out(f"broker    external at {bootstrap}")
            child_env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            outcome = ensure_topics(make_admin(bootstrap), Topics.from_settings(s).all())
            for name, result in outcome.items():
                self._out(f"topic     {name}: {result}")
            specs = list(self._services(s, bootstrap))
            write_stack_file(
                s.exchange_data_dir,
                bootstrap,
                {
                    "services": {sp.name: sp.endpoints for sp in specs},
                    "data_dir": child_env.get("EXCHANGE_DATA_DIR", str(s.exchange_data_dir)),
                },
            )
            for spec in specs:
                spec.env = {**child_env, **spec.env}
                child = _Child(spec)
                self._children.append(child)
                self._start(child)
            self._out(f"stack up: {len(specs)} service(s); Ctrl-C stops everything")
            self._out(f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
            for line in self._banner:
                self._out(line)
            while not self._stopping:
                self._watch()
                self._watch_readiness()
                time.sleep(0.2)
            return 0
        finally:
            self._shutdown()

    def _watch_readiness(self) -> None:
        now = time.monotonic()
        if self._ready_url is None or now < self._next_ready_check:
            return
        # Often until ready, then every few seconds (each check asks every service).
        self._next_ready_check = now + (5.0 if self._ready else 0.5)
        if self._http is None:
            self._http = httpx.Client(timeout=2.0)
        try:
            answer = self._http.get(self._ready_url)
            ready, why = answer.status_code == 200, answer.text[:300]
        except httpx.HTTPError as e:
            ready, why = False, f"{type(e).__name__}"
        if ready and self._ready is not True:
            self._out(f"ready     the pipeline takes commands ({self._ready_url} is 200)")
        elif not ready and self._ready is True:
            self._out(f"not ready {self._ready_url}: {why}")
        self._ready = ready

    def _start(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env}
        child.proc = subprocess.Popen(
            child.spec.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        where = ", ".join(f"{k} {v}" for k, v in child.spec.endpoints.items())
        suffix = f"  {where}" if where else ""
        self._out(f"service   {child.spec.name} pid={child.proc.pid}{suffix}")

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self._children:
            proc = child.proc
            if proc is not None and proc.poll() is not None:
                child.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                self._out(
                    f"service   {child.spec.name} exited with code {proc.returncode}; "
                    f"restarting in {delay:.1f}s (restart #{child.restarts})"
                )
                child.proc = None
                child.next_start = now + delay
            elif proc is None and now >= child.next_start:
                self._start(child)

    def _shutdown(self) -> None:
        for child in reversed(self._children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            self._out(f"stopping  {child.spec.name} pid={proc.pid}")
            proc.terminate()
            try:
                proc.wait(self._grace_s)
            except subprocess.TimeoutExpired:
                self._out(f"killing   {child.spec.name}: no exit after {self._grace_s}s")
                proc.kill()
                proc.wait()
        if self._broker is not None:
            self._out(f"stopping  broker pid={self._broker.pid}")
            self._broker.stop()
        stack_file(self._settings.exchange_data_dir).unlink(missing_ok=True)
        self._out("stack stopped")
        sys.stdout.flush()
