"""The ``exchange`` command line: the composition root of every process.

Settings are read here and only here, then handed to the part being started. A bad setting
ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.errors import ConfigError, ExchangeError
from engine.service.output_log import partitions_of
from entrypoints.bootstrap import (
    build_codec,
    build_engine_service,
    build_markets,
    build_settlement_service,
    build_store,
    find_bootstrap,
    tune_gc,
)
from exchange.kafka import make_admin
from exchange.metrics import (
    EngineMetrics,
    MetricsServer,
    SettlementMetrics,
    WatchdogMetrics,
    metrics_url,
    new_registry,
    serve_metrics,
    stack_metrics_urls,
)
from exchange.settings import Settings, load_settings
from exchange.topics import TopicOutcome, Topics, ensure_topics
from ops.broker import EmbeddedBroker
from ops.lag import LagCollector, LagMonitor, lag_table, project_groups
from ops.supervisor import (
    ServiceSpec,
    Supervisor,
    discover_data_dir,
    write_stack_file,
)
from settlement.replay import replay
from settlement.sqlite_store import SqliteStore
from settlement.store import SettlementStore

Handler = Callable[[Settings, argparse.Namespace], int]
OPERATOR_KEY_FILE = "operator.key"  # in $EXCHANGE_DATA_DIR (see ensure_operator_key)


def _die(message: str, code: int = 2) -> NoReturn:
    print(f"exchange: {message}", file=sys.stderr)
    raise SystemExit(code)


def stack_services(settings: Settings, bootstrap: str) -> list[ServiceSpec]:
    """The services ``exchange up`` runs, in start order (stopped in reverse)."""
    del bootstrap  # each service reads its settings in its own process
    me = [sys.executable, "-m", "entrypoints.cli"]

    def metrics(port: int) -> dict[str, str]:
        return {"metrics": metrics_url(settings.exchange_host, port)} if port else {}

    services = [
        ServiceSpec(
            name="engine",
            argv=[*me, "engine"],
            endpoints=metrics(settings.exchange_engine_metrics_port),
        ),
        ServiceSpec(
            name="settlement",
            argv=[*me, "settlement"],
            endpoints=metrics(settings.exchange_settlement_metrics_port),
        ),
    ]
    base = f"http://{settings.exchange_host}:{settings.exchange_port}"
    operator = settings.exchange_operator_public_key  # set by `exchange up` when generated
    services.append(
        ServiceSpec(
            name="gateway",
            argv=[*me, "gateway"],
            env={"EXCHANGE_OPERATOR_PUBLIC_KEY": operator} if operator else {},
            endpoints={
                "api": f"{base}/docs",
                "metrics": f"{base}/metrics",
                "dashboard": f"{base}/dashboard",
            },
        )
    )
    if settings.exchange_lag_metrics_port:  # the one lag exporter of the stack
        services.append(
            ServiceSpec(
                name="lag",
                argv=[*me, "lag", "--serve"],
                endpoints=metrics(settings.exchange_lag_metrics_port),
            )
        )
    return services


def ensure_operator_key(settings: Settings) -> tuple[Settings, Path | None]:
    """The first operator: ``EXCHANGE_OPERATOR_PUBLIC_KEY`` when set; else the key pair in
    ``$EXCHANGE_DATA_DIR/operator.key``, generated (mode 0600) when that file is missing.
    Returns the settings with the public key and the key file (None when configured).

    An existing key file is kept rather than replaced at every start, so the key files and
    scripts that use it keep working across restarts (the operator is configuration, not on
    the log, so nothing else depends on which key it is)."""
    from gateway.auth.signing import new_key_pair, public_key_b64, read_key_file, write_key_file

    if settings.exchange_operator_public_key is not None:
        return settings, None
    path = settings.exchange_data_dir / OPERATOR_KEY_FILE
    if path.exists():
        try:
            public = public_key_b64(read_key_file(path))
        except ValueError as e:
            raise ConfigError(f"{e} (delete it to generate a new operator key)") from None
    else:
        private, public = new_key_pair()
        write_key_file(path, private)
    return settings.model_copy(update={"exchange_operator_public_key": public}), path


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    settings, key_file = ensure_operator_key(settings)
    base = f"http://{settings.exchange_host}:{settings.exchange_port}"
    banner = [
        f"API       {base}  (docs {base}/docs, dashboard {base}/dashboard)",
        f"operator  key file {key_file.resolve()} (key id operator)"
        if key_file is not None
        else "operator  EXCHANGE_OPERATOR_PUBLIC_KEY (key id operator)",
        "try       exchange users create --out alice.key",
        """          exchange call POST /api/v1/deposit """
        """'{"user_id": 1, "asset": "USDT", "amount": "1000"}'""",
    ]
    return Supervisor(settings, stack_services, banner=banner, ready_url=f"{base}/ready").run()


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    port = args.port if args.port is not None else settings.exchange_broker_port
    with EmbeddedBroker(port=port, binary=settings.tansu_bin) as broker:
        bootstrap = broker.bootstrap_servers
        print(
            f"broker tansu pid={broker.pid} at {bootstrap} (in-memory; Ctrl-C stops it)", flush=True
        )
        if args.topics:
            ensure_topics(make_admin(bootstrap), Topics.from_settings(settings).all())
            print("topics created", flush=True)
        write_stack_file(settings.exchange_data_dir, bootstrap, {"services": {}})
        print(f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        try:
            stop.wait()
        finally:
            (settings.exchange_data_dir / "stack.json").unlink(missing_ok=True)
    print("broker stopped", flush=True)
    return 0


def require_bootstrap(settings: Settings) -> str:
    try:
        return find_bootstrap(settings)
    except ConfigError as e:
        _die(str(e))


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap = require_bootstrap(settings)
    outcome = ensure_topics(make_admin(bootstrap), Topics.from_settings(settings).all())
    for name, result in outcome.items():
        print(f"{name}: {result}")
    created = sum(1 for r in outcome.values() if r is TopicOutcome.CREATED)
    print(f"{created} created, {len(outcome) - created} unchanged")
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _metrics_registry(
    settings: Settings, port: int, variable: str, who: str
) -> tuple[CollectorRegistry, MetricsServer] | tuple[None, None]:
    """A registry served at ``http://EXCHANGE_HOST:port/metrics`` (and the service's
    readiness at ``/ready``, once the caller sets it); (None, None) when port is 0."""
    if not port:
        return None, None

    registry = new_registry()
    server = serve_metrics(
        port,
        registry,
        settings.exchange_host,
        setting=variable,
        readiness=lambda: (False, "starting"),
    )
    print(f"{who}: metrics at {server.url}, readiness at {server.url[:-8]}/ready", flush=True)
    return registry, server


def cmd_engine(settings: Settings, args: argparse.Namespace) -> int:
    stop = _stop_on_signals()  # first: a SIGTERM during recovery still stops cleanly
    bootstrap = require_bootstrap(settings)
    registry, server = _metrics_registry(
        settings, settings.exchange_engine_metrics_port, "EXCHANGE_ENGINE_METRICS_PORT", "engine"
    )
    service = build_engine_service(
        settings,
        bootstrap,
        EngineMetrics(registry) if registry is not None else None,
        WatchdogMetrics(registry) if registry is not None else None,
    )
    if server is not None:
        server.readiness = service.readiness
    service.recover()
    tune_gc()
    print(
        f"engine: consuming {settings.exchange_topic_orders} from offset "
        f"{service.next_offset}, sequence {service.engine.sequence}",
        flush=True,
    )
    stats = service.run(stop)
    print(
        f"engine: stopped after {stats.applied} commands "
        f"({stats.published} published, {stats.dead_lettered} dead-lettered)",
        flush=True,
    )
    return 0


def cmd_settlement(settings: Settings, args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    bootstrap = require_bootstrap(settings)
    registry, server = _metrics_registry(
        settings,
        settings.exchange_settlement_metrics_port,
        "EXCHANGE_SETTLEMENT_METRICS_PORT",
        "settlement",
    )
    service = build_settlement_service(
        settings,
        bootstrap,
        metrics=SettlementMetrics(registry) if registry is not None else None,
        watchdog_sink=WatchdogMetrics(registry) if registry is not None else None,
    )
    if server is not None:
        server.readiness = service.readiness
    tune_gc()
    print(
        f"settlement: consuming {settings.exchange_topic_engine_output} (group settlement)",
        flush=True,
    )
    stats = service.run(stop)
    print(
        f"settlement: stopped after {stats.records} outputs in {stats.batches} batches", flush=True
    )
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    # The FastAPI/uvicorn stack is imported here, not at the top: each process loads only
    # the service it runs, so the engine and settlement processes never pay for it.
    from entrypoints.gateway import run_gateway
    from gateway.dashboard import dashboard_router
    from gateway.metrics import instrument

    registry = new_registry()

    def wrap(app: Any) -> Any:
        app.include_router(dashboard_router(stack_metrics_urls(settings), registries=[registry]))
        app.state.follower.watchdog.sink = WatchdogMetrics(registry)
        registry.register(app.state.streams.metrics)  # WebSocket delivery latency, clients
        return instrument(app, registry)[0]

    print(
        f"gateway: serving http://{settings.exchange_host}:{settings.exchange_port} "
        f"(docs at /docs, dashboard at /dashboard)",
        flush=True,
    )
    return run_gateway(settings, bootstrap=require_bootstrap(settings), wrap=wrap)


def cmd_db_init(settings: Settings, args: argparse.Namespace) -> int:
    store = build_store(settings)
    store.init_schema()
    where = (
        f"Cassandra {','.join(settings.cassandra_contact_points)} keyspace "
        f"{settings.cassandra_keyspace}"
        if settings.cassandra_contact_points
        else f"SQLite {settings.exchange_data_dir / 'exchange.sqlite3'}"
    )
    print(f"schema applied to {where}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap = require_bootstrap(settings)
    store: SettlementStore
    if args.into:
        target_path = Path(args.into)
        if target_path.exists() and not args.force:
            _die(f"{target_path} exists; pass --force to replay into it anyway")
        store = SqliteStore(target_path)
    else:
        store = build_store(settings)
    store.init_schema()
    topic = settings.exchange_topic_engine_output
    partitions = partitions_of(bootstrap, topic)
    with Progress(
        TextColumn("replaying {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("outputs"),
    ) as progress:
        task = progress.add_task(topic, total=None)
        applied, skipped = replay(
            bootstrap=bootstrap,
            topic=topic,
            partitions=partitions,
            codec=build_codec(),
            store=store,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    print(
        f"replayed {applied} outputs ({skipped} undecodable skipped); store digest {store.digest()}"
    )
    return 0


def cmd_lag(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap = require_bootstrap(settings)
    groups = project_groups(settings)
    for group in args.group or ():
        groups.setdefault(group, ())
    monitor = LagMonitor(bootstrap, groups)
    try:
        if args.serve:
            port = settings.exchange_lag_metrics_port
            if not port:
                _die("EXCHANGE_LAG_METRICS_PORT is 0: no port to serve lag metrics on")
            registry = new_registry()
            registry.register(LagCollector(monitor))
            server = serve_metrics(
                port, registry, settings.exchange_host, setting="EXCHANGE_LAG_METRICS_PORT"
            )
            print(
                f"lag: exporting consumer lag of {', '.join(sorted(groups))} at {server.url}",
                flush=True,
            )
            _stop_on_signals().wait()
            server.close()
        elif args.watch:
            stop = _stop_on_signals()
            with Live(lag_table(monitor.sample()), auto_refresh=False) as live:
                while not stop.wait(1.0):
                    live.update(lag_table(monitor.sample()), refresh=True)
        else:
            sample = monitor.sample()
            Console().print(lag_table(sample))
            for group in sorted(set(groups) - {p.group for p in sample.partitions}):
                print(f"group {group}: no committed offsets and no expected topics")
    finally:
        monitor.close()
    return 0


def cmd_loadgen(settings: Settings, args: argparse.Namespace) -> int:
    # Only `exchange loadgen` needs the load generator and its HTTP client (httpx).
    from ops.loadgen import LoadConfig, LoadError, LoadGenerator, summary_lines

    config = LoadConfig(
        via=args.via,
        rate=args.rate,
        duration_s=args.duration,
        orders=args.orders,
        users=args.users,
        seed=args.seed,
        url=args.url or f"http://{settings.exchange_host}:{settings.exchange_port}",
        concurrency=args.concurrency,
        operator_key=Path(args.key) if args.key else settings.exchange_data_dir / OPERATOR_KEY_FILE,
    )
    try:
        config.check()
    except LoadError as e:
        _die(str(e))
    bootstrap = require_bootstrap(settings)
    # The store the running stack writes (an embedded `exchange up` uses its own data dir).
    store = build_store(
        settings.model_copy(update={"exchange_data_dir": discover_data_dir(settings)}),
        readonly=True,
    )
    console = Console(stderr=True)
    total = float(config.orders) if config.orders is not None else config.duration_s
    with Progress(
        TextColumn("loadgen {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sent]} sent, store at sequence {task.fields[seq]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"via {config.via}", total=total, sent=0, seq=0)

        def on_progress(sent: int, seq: int, elapsed: float) -> None:
            done = sent if config.orders is not None else elapsed
            progress.update(task, completed=done, sent=sent, seq=seq)

        generator = LoadGenerator(
            config,
            bootstrap=bootstrap,
            orders_topic=settings.exchange_topic_orders,
            output_topic=settings.exchange_topic_engine_output,
            codec=build_codec(),
            store=store,
            markets=build_markets(settings),
            on_progress=on_progress,
        )
        report = generator.run()
    store.close()
    for line in summary_lines(report):
        print(line)
    if args.report:
        report.write(Path(args.report))
        print(f"report written to {args.report}")
    return 0


def _api_signer(settings: Settings, args: argparse.Namespace) -> Any:
    from ops.apiclient import signer_from_file

    path = Path(args.key) if args.key else settings.exchange_data_dir / OPERATOR_KEY_FILE
    if not path.exists():
        _die(f"{path}: no key file (`exchange up` writes the operator's; or pass --key FILE)")
    try:
        return signer_from_file(path, args.api_key, settings.exchange_operator_public_key)
    except ValueError as e:
        _die(str(e))


def _api_call(
    settings: Settings, args: argparse.Namespace, method: str, path: str, body: bytes = b""
) -> tuple[int, Any]:
    """Send one signed request; (status, decoded JSON answer)."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # the answer is the output

    url = args.url or f"http://{settings.exchange_host}:{settings.exchange_port}"
    headers = {"content-type": "application/json"} if body else {}
    try:
        with httpx.Client(base_url=url, timeout=30, auth=_api_signer(settings, args)) as client:
            response = client.request(method.upper(), path, content=body, headers=headers)
    except httpx.HTTPError as e:
        _die(f"{url}: {e}", code=1)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2) if not isinstance(data, str) else data)


def cmd_call(settings: Settings, args: argparse.Namespace) -> int:
    body = (args.json or "").encode()
    status, data = _api_call(settings, args, args.method, args.path, body)
    _print_json(data)
    return 0 if 200 <= status < 300 else 1


def _new_key(args: argparse.Namespace) -> tuple[str, str]:
    from gateway.auth.signing import new_key_pair, write_key_file

    private, public = new_key_pair()
    if args.out:
        out = Path(args.out)
        if out.exists():
            _die(f"{out} exists; choose another --out")
        write_key_file(out, private)
    return private, public


def _created(status: int, data: Any, private: str, out: str | None) -> int:
    if status != 201:
        _print_json(data)
        return 1
    for name, value in data["data"].items():
        print(f"{name:<12}{value}")
    if out:
        print(f"{'key file':<12}{out} (mode 0600)")
    else:
        print(f"{'private key':<12}{private}")
        print("(shown once: keep it; the server stores only the public key)")
    return 0


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    private, public = _new_key(args)
    body = {"public_key": public, **({"label": args.label} if args.label else {})}
    status, data = _api_call(
        settings, args, "POST", "/api/v1/admin/users", json.dumps(body).encode()
    )
    return _created(status, data, private, args.out)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    if args.keys_command == "revoke":
        status, data = _api_call(settings, args, "DELETE", f"/api/v1/admin/keys/{args.api_key_id}")
        _print_json(data)
        return 0 if status == 200 else 1
    private, public = _new_key(args)
    status, data = _api_call(
        settings, args, "POST", f"/api/v1/admin/users/{args.user}/keys",
        json.dumps({"public_key": public}).encode(),
    )  # fmt: skip
    return _created(status, data, private, args.out)


def _add_api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        metavar="FILE",
        help="key file to sign with (one line: base64 raw private key); "
        "default $EXCHANGE_DATA_DIR/operator.key",
    )
    p.add_argument(
        "--api-key",
        metavar="ID",
        help="key id to send (default: operator for the operator's key, else derived)",
    )
    p.add_argument(
        "--url", default=None, help="gateway URL (default http://EXCHANGE_HOST:EXCHANGE_PORT)"
    )


def _infra_config(settings: Settings, args: argparse.Namespace) -> Any:
    from ops.infra import COMPONENTS, InfraConfig, default_cache_dir, default_pom

    only: str = getattr(args, "only", None) or ",".join(COMPONENTS)
    components = tuple(c.strip() for c in only.split(",") if c.strip())
    unknown = set(components) - set(COMPONENTS)
    if unknown or not components:
        _die(f"--only: choose from {', '.join(COMPONENTS)} (got {only!r})")
    ports = {
        k: getattr(args, k)
        for k in ("kafka_port", "kafka_controller_port", "cassandra_port", "cassandra_storage_port")
        if getattr(args, k, None) is not None
    }
    return InfraConfig(
        data_dir=settings.exchange_data_dir.resolve() / "infra",
        cache_dir=default_cache_dir(),
        pom=default_pom(),
        components=components,
        **ports,
    )


def cmd_infra(settings: Settings, args: argparse.Namespace) -> int:
    from ops import infra

    config = _infra_config(settings, args)
    if args.infra_command == "up":
        if args.foreground:
            return infra.Keeper(config, log=lambda line: print(line, flush=True)).run()
        started = infra.up(config)
        for line in infra.describe(config):
            print(line)
        print(
            f'infra: ready (keeper pid {started.keeper_pid}); `eval "$(exchange infra env)"` '
            "points the project at it; `exchange infra down` stops it"
        )
        return 0
    if args.infra_command == "down":
        stopped = infra.down(config)
        print("infra: stopped " + (", ".join(stopped) if stopped else "nothing (not running)"))
        return 0
    state, components = infra.status(config)
    if args.infra_command == "env":
        if state is None or not state.ready:
            _die("infra is not running: `exchange infra up` first", code=1)
        for line in state.exports():
            print(line)
        return 0
    if state is None:
        print("infra: not running")
        return 1
    healthy = bool(components) and all(c.answers for c in components)
    print(
        f"infra: keeper pid {state.keeper_pid} "
        f"{'alive' if infra.pid_alive(state.keeper_pid) else 'DEAD'}, "
        f"{'ready' if state.ready else 'not ready'}"
        + (f", error: {state.error}" if state.error else "")
    )
    for c in components:
        print(
            f"{c.name:<10} pid {c.pid} {'alive' if c.alive else 'dead'}, at {c.address}: "
            f"{'answers' if c.answers else 'NOT answering'}, "
            f"{state.restarts.get(c.name, 0)} restarts"
        )
    return 0 if healthy else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange", description="Kafka-backed, event-sourced exchange order pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up", help="run the whole stack (embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)"
    )
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("broker", help="run only the embedded broker in the foreground")
    p.add_argument("--port", type=int, default=None, help="listen port (default: free port)")
    p.add_argument("--topics", action="store_true", help="also create the project's topics")
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser("topics", help="create the project's topics (idempotent)")
    p.set_defaults(handler=cmd_topics)

    p = sub.add_parser("engine", help="run the matching engine service (orders -> engine-output)")
    p.set_defaults(handler=cmd_engine)

    p = sub.add_parser("settlement", help="run a settlement worker (engine-output -> store)")
    p.set_defaults(handler=cmd_settlement)

    p = sub.add_parser("gateway", help="run the REST gateway (FastAPI + uvicorn)")
    p.set_defaults(handler=cmd_gateway)

    p = sub.add_parser("db", help="store administration")
    db = p.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = db.add_parser("init", help="apply the schema (idempotent) to Cassandra or SQLite")
    p.set_defaults(handler=cmd_db_init)

    p = sub.add_parser("replay", help="rebuild the store from the start of engine-output")
    p.add_argument(
        "--into",
        metavar="SQLITE_FILE",
        help="rebuild into this SQLite file instead of the configured store",
    )
    p.add_argument("--force", action="store_true", help="allow --into an existing file")
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser("lag", help="consumer lag per group, topic and partition")
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    p.add_argument(
        "--serve",
        action="store_true",
        help="export it as Prometheus metrics on EXCHANGE_LAG_METRICS_PORT",
    )
    p.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="also show this consumer group (default: engine and settlement)",
    )
    p.set_defaults(handler=cmd_lag)

    p = sub.add_parser(
        "loadgen",
        help="drive the stack with a realistic order flow and report throughput and freshness",
    )
    p.add_argument(
        "--via",
        choices=("kafka", "http"),
        default="kafka",
        help="kafka: produce to orders (the pipeline); http: the REST API",
    )
    p.add_argument(
        "--rate", type=float, default=1000.0, help="orders per second; 0 = flat out (default 1000)"
    )
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS")
    p.add_argument(
        "--orders",
        type=int,
        default=None,
        metavar="N",
        help="number of orders (places and cancels); with --duration, whichever ends first",
    )
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--url",
        default=None,
        help="gateway URL for --via http (default http://EXCHANGE_HOST:EXCHANGE_PORT)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="http requests in flight")
    p.add_argument(
        "--key",
        metavar="FILE",
        help="--via http: the operator's key file (default $EXCHANGE_DATA_DIR/operator.key)",
    )
    p.add_argument("--report", metavar="PATH", help="write the raw numbers as JSON here")
    p.set_defaults(handler=cmd_loadgen)

    p = sub.add_parser("call", help="send one signed request: exchange call METHOD PATH [JSON]")
    p.add_argument("method", metavar="METHOD", help="GET, POST, DELETE, ...")
    p.add_argument("path", metavar="PATH", help="e.g. '/api/v1/balances' (query included)")
    p.add_argument("json", metavar="JSON", nargs="?", default=None, help="the request body")
    _add_api_options(p)
    p.set_defaults(handler=cmd_call)

    p = sub.add_parser("users", help="users (operators): create")
    users = p.add_subparsers(dest="users_command", required=True, metavar="USERS_COMMAND")
    p = users.add_parser(
        "create",
        help="generate a key pair here, register its public key as a new trader, print the "
        "user id, key id and private key (once)",
    )
    p.add_argument("--label", default=None)
    p.add_argument("--out", metavar="FILE", help="write the private key to this key file (0600)")
    _add_api_options(p)
    p.set_defaults(handler=cmd_users)

    p = sub.add_parser("keys", help="API keys (operators): create, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    p = keys.add_parser("create", help="one more key for a user (generated here)")
    p.add_argument("--user", type=int, required=True, metavar="USER_ID")
    p.add_argument("--out", metavar="FILE", help="write the private key to this key file (0600)")
    _add_api_options(p)
    p.set_defaults(handler=cmd_keys)
    p = keys.add_parser("revoke", help="revoke a key: every gateway refuses it within 1 s")
    p.add_argument("api_key_id", metavar="API_KEY")
    _add_api_options(p)
    p.set_defaults(handler=cmd_keys)

    p = sub.add_parser(
        "infra",
        help="the real stack (Apache Kafka + Apache Cassandra) as "
        "local processes: up, down, status, env",
    )
    infra = p.add_subparsers(dest="infra_command", required=True, metavar="INFRA_COMMAND")
    p = infra.add_parser("up", help="start Kafka and Cassandra; return once both answer")
    p.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground owning the JVMs (Ctrl-C stops them)",
    )
    p.add_argument("--kafka-port", type=int, default=None, help="Kafka listener (default 9092)")
    p.add_argument(
        "--kafka-controller-port",
        type=int,
        default=None,
        help="KRaft controller listener (default 9093)",
    )
    p.add_argument(
        "--cassandra-port", type=int, default=None, help="CQL native port (default 9042)"
    )
    p.add_argument(
        "--cassandra-storage-port",
        type=int,
        default=None,
        help="Cassandra internode port (default 7000)",
    )
    p.add_argument(
        "--only", default=None, metavar="kafka,cassandra", help="start only these (default both)"
    )
    p.set_defaults(handler=cmd_infra)
    for name, text in (
        ("down", "stop them; no process is left behind"),
        ("status", "pids, addresses and whether each answers (exit 1 if not)"),
        ("env", "print `export ...` lines for `eval`"),
    ):
        p = infra.add_parser(name, help=text)
        p.set_defaults(handler=cmd_infra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # `exchange call POST PATH --key FILE JSON`: argparse takes no positional after an option
    # once the positionals were matched; the body may come last all the same.
    if (
        len(extras) == 1
        and getattr(args, "handler", None) is cmd_call
        and args.json is None
        and not extras[0].startswith("--")
    ):
        args.json, extras = extras[0], []
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        settings = load_settings()
    except ConfigError as e:
        _die(f"configuration error: {e}")
    logging.basicConfig(
        level=settings.exchange_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(settings, args)
    except ConfigError as e:
        _die(f"configuration error: {e}")
    except ExchangeError as e:
        _die(str(e), code=1)


if __name__ == "__main__":
    sys.exit(main())
