"""``exchange infra``: the real stack (Apache Kafka and Apache Cassandra) as local processes.

Theory of operation
-------------------
The jars come from Maven Central through ``compose/pom.xml`` (one profile per product, the
versions from :mod:`ops.versions` passed as ``-D`` properties) into a cache outside the repo,
``$XDG_CACHE_HOME/kafka-exchange-pipeline/infra/<product>-<version>/`` (default
``~/.cache``). A directory is used only once its ``.complete`` marker exists, so an interrupted
download is redone and a complete one makes later runs offline (``mvn`` is not even needed).

``up`` starts a *keeper*: ``exchange infra up --foreground`` in its own session. The keeper
writes our own minimal configuration (``server.properties`` for a single KRaft
broker+controller, formatted on first start; ``cassandra.yaml`` for one node), starts both
JVMs with ``PR_SET_PDEATHSIG`` (the kernel kills them if the keeper dies, even by SIGKILL),
waits until each really answers (a Kafka metadata request, CQL ``SELECT release_version FROM
system.local``), then writes the state file ``$EXCHANGE_DATA_DIR/infra/infra.json`` (the pid
file: keeper and JVM pids, addresses). ``up`` returns once that file says ready, or prints the
keeper's log and fails. While starting, the keeper itself dies with ``up`` (PDEATHSIG), so a
killed ``up`` leaves nothing behind; once ready it clears that, so the stack outlives ``up``.

The keeper restarts a JVM that dies (a crash, or a test's ``kill -9``), like ``exchange up``
does for the services. SIGTERM (``down``) stops Cassandra then Kafka (SIGTERM, then SIGKILL
after a grace period) and removes the state file; ``down`` waits until every recorded pid is
gone and kills any that a dead keeper left (checked against its command line first).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from engine.errors import ExchangeError
from ops.broker import die_with_parent
from ops.versions import CASSANDRA_VERSION, KAFKA_VERSION

STATE_FILE = "infra.json"
KAFKA_MAIN = "kafka.Kafka"
KAFKA_STORAGE_TOOL = "kafka.tools.StorageTool"
CASSANDRA_MAIN = "org.apache.cassandra.service.CassandraDaemon"
COMPONENTS = ("kafka", "cassandra")

# The JPMS flags of Cassandra 5.0's conf/jvm17-server.options (without them the daemon fails
# reflective access to JDK internals under Java 17).
CASSANDRA_JAVA17_OPTIONS: tuple[str, ...] = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports",
    "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports",
    "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports",
    "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports",
    "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports",
    "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens",
    "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.io=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.nio=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.math=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.net=ALL-UNNAMED",
)


class InfraError(ExchangeError):
    """The real stack could not be provisioned, started, reached or stopped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InfraConfig:
    """Where the real stack lives and listens (defaults: the products' usual ports)."""

    data_dir: Path  # $EXCHANGE_DATA_DIR/infra
    cache_dir: Path
    pom: Path
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    kafka_heap: str = "512m"
    cassandra_heap: str = "1g"
    kafka_retention_hours: int = 24
    components: tuple[str, ...] = COMPONENTS
    ready_timeout_s: float = 240.0

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-exchange-pipeline" / "infra"


def default_pom() -> Path:
    return Path(__file__).resolve().parents[1] / "compose" / "pom.xml"


# --- provisioning -------------------------------------------------------------------------


def require_tool(name: str) -> str:
    """The path of ``java`` or ``mvn``, or one line saying what to install."""
    path = shutil.which(name)
    if path is None:
        what = {
            "java": "a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)",
            "mvn": "Maven (Debian: apt-get install maven)",
        }[name]
        raise InfraError(f"`{name}` not found on PATH: install {what}")
    return path


def product_version(product: str) -> str:
    return {"kafka": KAFKA_VERSION, "cassandra": CASSANDRA_VERSION}[product]


def jar_dir(cache_dir: Path, product: str) -> Path:
    return cache_dir / f"{product}-{product_version(product)}"


def ensure_jars(config: InfraConfig, product: str, log: Callable[[str], None] = print) -> Path:
    """The directory holding ``product``'s jars; downloads them once with Maven."""
    target = jar_dir(config.cache_dir, product)
    if (target / ".complete").is_file():
        return target
    mvn = require_tool("mvn")
    if not config.pom.is_file():
        raise InfraError(f"{config.pom} is missing: run from a checkout of the project")
    version = product_version(product)
    log(
        f"infra: downloading {product} {version} jars from Maven Central into {target} "
        "(first run only)"
    )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    argv = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(config.pom),
        "-P",
        product,
        f"-D{product}.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
    ]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise InfraError(
            f"mvn could not resolve {product} {version} (exit {done.returncode}):\n"
            + "\n".join(tail)
        )
    (partial / ".complete").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


# --- configuration files ------------------------------------------------------------------


def kafka_properties(config: InfraConfig) -> str:
    h, log_dir = config.host, config.data_dir / "kafka" / "log"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{h}:{config.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{h}:{config.kafka_port},"
        f"CONTROLLER://{h}:{config.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{h}:{config.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": str(config.kafka_retention_hours),
        "log.retention.check.interval.ms": "60000",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


KAFKA_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cassandra_yaml(config: InfraConfig) -> str:
    d, h = config.data_dir / "cassandra", config.host
    # num_tokens 1 + initial_token 0: one node owns the whole ring, no token allocation.
    return f"""\
cluster_name: exchange-infra
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
commitlog_sync: periodic
auto_snapshot: false
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{h}:{config.cassandra_storage_port}"
listen_address: {h}
rpc_address: {h}
storage_port: {config.cassandra_storage_port}
native_transport_port: {config.cassandra_port}
start_native_transport: true
data_file_directories: [{d / "data"}]
commitlog_directory: {d / "commitlog"}
saved_caches_directory: {d / "saved_caches"}
hints_directory: {d / "hints"}
cdc_raw_directory: {d / "cdc_raw"}
"""


CASSANDRA_LOGBACK = """\
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def _heap(size: str) -> list[str]:
    return [f"-Xms{size}", f"-Xmx{size}"]


def kafka_argv(config: InfraConfig, java: str, jars: Path) -> list[str]:
    conf = config.data_dir / "kafka" / "conf"
    return [
        java,
        *_heap(config.kafka_heap),
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        KAFKA_MAIN,
        str(conf / "server.properties"),
    ]


def cassandra_argv(config: InfraConfig, java: str, jars: Path) -> list[str]:
    d = config.data_dir / "cassandra"
    jamm = sorted(jars.glob("jamm-*.jar"))
    agent = [f"-javaagent:{jamm[0]}"] if jamm else []
    return [
        java,
        *_heap(config.cassandra_heap),
        "-Xss256k",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        *CASSANDRA_JAVA17_OPTIONS,
        *agent,
        f"-Dcassandra.config=file://{d / 'conf' / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={d}",
        f"-Dcassandra.logdir={d / 'logs'}",
        f"-Dlogback.configurationFile={d / 'conf' / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.ring_delay_ms=0",
        "-cp",
        f"{jars}/*",
        CASSANDRA_MAIN,
    ]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64. Like Kafka's own
    ``Uuid.randomUuid``, never one starting with ``-``, which the storage tool's argument
    parser would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def write_kafka_config(config: InfraConfig, java: str, jars: Path) -> None:
    """Write the broker's configuration; format its storage on the first start only."""
    root = config.data_dir / "kafka"
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "server.properties").write_text(kafka_properties(config))
    (root / "conf" / "log4j2.properties").write_text(KAFKA_LOG4J2)
    if (root / "log" / "meta.properties").is_file():
        return
    cluster_id = new_cluster_id()
    argv = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={root / 'conf' / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        KAFKA_STORAGE_TOOL,
        "format",
        "-t",
        cluster_id,
        "-c",
        str(root / "conf" / "server.properties"),
    ]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise InfraError(f"formatting Kafka storage failed: {(done.stdout + done.stderr)[-800:]}")


def write_cassandra_config(config: InfraConfig) -> None:
    root = config.data_dir / "cassandra"
    for sub in ("conf", "data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "conf" / "cassandra.yaml").write_text(cassandra_yaml(config))
    (root / "conf" / "logback.xml").write_text(CASSANDRA_LOGBACK)


# --- readiness ----------------------------------------------------------------------------


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    from exchange.kafka import make_admin

    try:
        make_admin(bootstrap, **{"socket.timeout.ms": 1000}).list_topics(timeout=timeout_s)
        return True
    except Exception:  # KafkaException: not (yet) answering
        return False


def cassandra_release_version(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """``SELECT release_version FROM system.local``, or None when the node does not answer."""
    if not port_open(host, port):
        return None
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout_s)
    cluster = Cluster(
        [host],
        port=port,
        connect_timeout=timeout_s,
        control_connection_timeout=timeout_s,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        return str(row[0]) if row is not None else None
    except Exception:  # NoHostAvailable, OperationTimedOut...: not (yet) answering
        return None
    finally:
        cluster.shutdown()


def component_answers(config: InfraConfig, name: str) -> bool:
    if name == "kafka":
        return kafka_answers(config.kafka_bootstrap)
    return cassandra_release_version(config.host, config.cassandra_port) is not None


# --- processes ----------------------------------------------------------------------------


def _clear_pdeathsig() -> None:
    """Undo :func:`ops.broker.die_with_parent` in this process (the ready keeper)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 0)  # PR_SET_PDEATHSIG, no signal


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass(slots=True)
class _Jvm:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )

    def stop(self, grace_s: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(slots=True, kw_only=True)
class InfraState:
    """The content of the state (pid) file."""

    keeper_pid: int
    ready: bool
    host: str
    kafka_port: int | None
    cassandra_port: int | None
    pids: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    data_dir: str = ""
    error: str | None = None

    def exports(self) -> list[str]:
        lines = []
        if self.kafka_port is not None:
            lines.append(f"export KAFKA_BOOTSTRAP_SERVERS={self.host}:{self.kafka_port}")
        if self.cassandra_port is not None:
            lines.append(f"export CASSANDRA_CONTACT_POINTS={self.host}")
            lines.append(f"export CASSANDRA_PORT={self.cassandra_port}")
        return lines


def write_state(path: Path, state: InfraState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def read_state(path: Path) -> InfraState | None:
    try:
        return InfraState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class Keeper:
    """The foreground owner of the JVMs (``exchange infra up --foreground``)."""

    def __init__(self, config: InfraConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self._log = log
        self._stopping = False
        self._jvms: dict[str, _Jvm] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _state(self, *, ready: bool, error: str | None = None) -> InfraState:
        c = self.config
        return InfraState(
            keeper_pid=os.getpid(),
            ready=ready,
            host=c.host,
            kafka_port=c.kafka_port if "kafka" in c.components else None,
            cassandra_port=c.cassandra_port if "cassandra" in c.components else None,
            pids={n: j.proc.pid for n, j in self._jvms.items() if j.proc is not None},
            restarts={n: j.restarts for n, j in self._jvms.items()},
            data_dir=str(c.data_dir),
            error=error,
        )

    def prepare(self) -> None:
        c = self.config
        java = require_tool("java")
        c.data_dir.mkdir(parents=True, exist_ok=True)
        for name in c.components:
            port = c.kafka_port if name == "kafka" else c.cassandra_port
            if port_open(c.host, port):
                raise InfraError(
                    f"{name}: {c.host}:{port} is already in use (another "
                    f"{name} running? `exchange infra status`, or pick another port)"
                )
        jars = {name: ensure_jars(c, name, self._log) for name in c.components}
        if "kafka" in jars:
            write_kafka_config(c, java, jars["kafka"])
            self._jvms["kafka"] = _Jvm(
                "kafka", kafka_argv(c, java, jars["kafka"]), c.data_dir / "kafka" / "kafka.log"
            )
        if "cassandra" in jars:
            write_cassandra_config(c)
            self._jvms["cassandra"] = _Jvm(
                "cassandra",
                cassandra_argv(c, java, jars["cassandra"]),
                c.data_dir / "cassandra" / "cassandra.log",
            )

    def _wait_ready(self, names: Sequence[str]) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        waiting = list(names)
        while waiting:
            if self._stopping:
                raise InfraError("stopped while starting")
            for name in list(waiting):
                jvm = self._jvms[name]
                if jvm.proc is None or jvm.proc.poll() is not None:
                    code = jvm.proc.returncode if jvm.proc else None
                    raise InfraError(
                        f"{name} exited with code {code} while starting; see {jvm.log_path}"
                    )
                if component_answers(self.config, name):
                    waiting.remove(name)
                    self._log(f"infra: {name} answers (pid {jvm.proc.pid})")
            if waiting and time.monotonic() > deadline:
                raise InfraError(
                    f"{', '.join(waiting)} did not answer within {self.config.ready_timeout_s:.0f}s"
                )
            if waiting:
                time.sleep(0.5)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        state_path = self.config.state_path
        try:
            self.prepare()
            for jvm in self._jvms.values():
                jvm.start()
            write_state(state_path, self._state(ready=False))
            self._wait_ready(list(self._jvms))
        except (InfraError, OSError) as e:
            self._shutdown()
            with contextlib.suppress(OSError):
                write_state(state_path, self._state(ready=False, error=str(e)))
            self._log(f"infra: start failed: {e}")
            return 1
        _clear_pdeathsig()  # ready: from now on the stack outlives `exchange infra up`
        write_state(state_path, self._state(ready=True))
        for line in describe(self.config):
            self._log(line)
        try:
            self._watch(state_path)
        finally:
            self._shutdown()
            state_path.unlink(missing_ok=True)
            self._log("infra: stopped")
        return 0

    def _watch(self, state_path: Path) -> None:
        while not self._stopping:
            time.sleep(0.2)
            for jvm in self._jvms.values():
                if self._stopping or jvm.proc is None or jvm.proc.poll() is None:
                    continue
                self._log(f"infra: {jvm.name} exited with code {jvm.proc.returncode}; restarting")
                jvm.restarts += 1
                time.sleep(min(5.0, 0.5 * jvm.restarts))
                jvm.start()
                write_state(state_path, self._state(ready=True))

    def _shutdown(self) -> None:
        # Cassandra first (it may flush for a while), then the broker.
        for name in ("cassandra", "kafka"):
            if name in self._jvms:
                self._jvms[name].stop(grace_s=45.0)


def describe(config: InfraConfig) -> list[str]:
    lines = []
    if "kafka" in config.components:
        lines.append(
            f"kafka     {KAFKA_VERSION} at {config.kafka_bootstrap} "
            f"(KRaft broker+controller; data {config.data_dir / 'kafka'})"
        )
    if "cassandra" in config.components:
        lines.append(
            f"cassandra {CASSANDRA_VERSION} at {config.host}:{config.cassandra_port} "
            f"(data {config.data_dir / 'cassandra'})"
        )
    return lines


# --- the commands -------------------------------------------------------------------------


def keeper_argv(config: InfraConfig) -> list[str]:
    return [
        sys.executable,
        "-m",
        "entrypoints.cli",
        "infra",
        "up",
        "--foreground",
        "--kafka-port",
        str(config.kafka_port),
        "--kafka-controller-port",
        str(config.kafka_controller_port),
        "--cassandra-port",
        str(config.cassandra_port),
        "--cassandra-storage-port",
        str(config.cassandra_storage_port),
        "--only",
        ",".join(config.components),
    ]


def up(config: InfraConfig, out: Callable[[str], None] = print) -> InfraState:
    """Start the keeper in the background; return once both products answer."""
    require_tool("java")
    existing = read_state(config.state_path)
    if existing is not None and pid_alive(existing.keeper_pid):
        raise InfraError(
            f"already running (keeper pid {existing.keeper_pid}); `exchange infra down` first"
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.state_path.unlink(missing_ok=True)
    keeper_log = config.data_dir / "keeper.log"
    with open(keeper_log, "ab") as log:
        keeper = subprocess.Popen(
            keeper_argv(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
    # The jar download has its own budget; readiness has ready_timeout_s inside the keeper.
    while True:
        state = read_state(config.state_path)
        if state is not None and state.keeper_pid == keeper.pid and state.ready:
            return state
        code = keeper.poll()
        if code is not None:
            tail = keeper_log.read_text(errors="replace").strip().splitlines()[-20:]
            raise InfraError("infra did not start:\n" + "\n".join(tail))
        time.sleep(0.3)


def recorded_pids(state: InfraState) -> dict[str, int]:
    return {"keeper": state.keeper_pid, **state.pids}


def down(config: InfraConfig, timeout_s: float = 90.0) -> list[str]:
    """Stop the keeper (which stops the JVMs); kill leftovers. Returns what was stopped."""
    state = read_state(config.state_path)
    if state is None:
        return []
    pids = recorded_pids(state)
    marker = str(config.data_dir)
    if pid_alive(state.keeper_pid):
        os.kill(state.keeper_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.2)
    for name, pid in pids.items():  # a keeper that died without cleaning up
        if pid_alive(pid) and (name == "keeper" or marker in pid_cmdline(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in pids.values():
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    config.state_path.unlink(missing_ok=True)
    return list(pids)


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    pid: int | None
    alive: bool
    answers: bool
    address: str


def status(config: InfraConfig) -> tuple[InfraState | None, list[ComponentStatus]]:
    state = read_state(config.state_path)
    if state is None:
        return None, []
    probe = InfraConfig(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        pom=config.pom,
        host=state.host,
        kafka_port=state.kafka_port or 0,
        cassandra_port=state.cassandra_port or 0,
    )
    out = []
    for name in COMPONENTS:
        port = state.kafka_port if name == "kafka" else state.cassandra_port
        if port is None:
            continue
        pid = state.pids.get(name)
        alive = pid is not None and pid_alive(pid)
        out.append(
            ComponentStatus(
                name, pid, alive, alive and component_answers(probe, name), f"{state.host}:{port}"
            )
        )
    return state, out


@contextlib.contextmanager
def running(config: InfraConfig) -> Iterator[InfraState]:
    """``up`` ... ``down`` as a context manager (tests, benchmarks)."""
    try:
        yield up(config)
    finally:
        down(config)
