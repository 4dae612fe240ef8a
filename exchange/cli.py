"""The ``exchange`` command line: the composition root of every process.

Settings are read here and only here, then handed to the part being started. A bad setting
ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from engine.errors import ConfigError, ExchangeError
from exchange.settings import Settings, load_settings
from exchange.supervisor import ServiceSpec, discover_bootstrap, write_stack_file

Handler = Callable[[Settings, argparse.Namespace], int]


def _die(message: str, code: int = 2) -> NoReturn:
    print(f"exchange: {message}", file=sys.stderr)
    raise SystemExit(code)


def stack_services(settings: Settings, bootstrap: str) -> list[ServiceSpec]:
    """The services ``exchange up`` runs, in start order (stopped in reverse)."""
    del settings, bootstrap  # each service reads its settings in its own process
    me = [sys.executable, "-m", "exchange.cli"]
    return [
        ServiceSpec(name="engine", argv=[*me, "engine"]),
        ServiceSpec(name="settlement", argv=[*me, "settlement"]),
    ]


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.supervisor import Supervisor

    return Supervisor(settings, stack_services).run()


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.broker import EmbeddedBroker
    from exchange.kafka import make_admin
    from exchange.topics import Topics, ensure_topics

    stop = _stop_on_signals()
    port = args.port if args.port is not None else settings.exchange_broker_port
    with EmbeddedBroker(port=port, binary=settings.tansu_bin) as broker:
        bootstrap = broker.bootstrap_servers
        print(f"broker tansu pid={broker.pid} at {bootstrap} (in-memory; Ctrl-C stops it)",
              flush=True)
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
    bootstrap = discover_bootstrap(settings)
    if bootstrap is None:
        _die("KAFKA_BOOTSTRAP_SERVERS is not set and no `exchange up`/`exchange broker` is "
             "running (start one, or set KAFKA_BOOTSTRAP_SERVERS)")
    return bootstrap


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.kafka import make_admin
    from exchange.topics import TopicOutcome, Topics, ensure_topics

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


def cmd_engine(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.bootstrap import build_engine_service

    bootstrap = require_bootstrap(settings)
    service = build_engine_service(settings, bootstrap)
    stop = _stop_on_signals()
    service.recover()
    print(f"engine: consuming {settings.exchange_topic_orders} from offset "
          f"{service.next_offset}, sequence {service.engine.sequence}", flush=True)
    stats = service.run(stop)
    print(f"engine: stopped after {stats.applied} commands "
          f"({stats.published} published, {stats.dead_lettered} dead-lettered)", flush=True)
    return 0


def cmd_settlement(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.bootstrap import build_settlement_service

    bootstrap = require_bootstrap(settings)
    service = build_settlement_service(settings, bootstrap)
    stop = _stop_on_signals()
    print(f"settlement: consuming {settings.exchange_topic_engine_output} "
          f"(group settlement)", flush=True)
    stats = service.run(stop)
    print(f"settlement: stopped after {stats.records} outputs in {stats.batches} batches",
          flush=True)
    return 0


def cmd_db_init(settings: Settings, args: argparse.Namespace) -> int:
    from exchange.bootstrap import build_store

    store = build_store(settings)
    store.init_schema()
    where = (f"Cassandra {','.join(settings.cassandra_contact_points)} keyspace "
             f"{settings.cassandra_keyspace}" if settings.cassandra_contact_points
             else f"SQLite {settings.exchange_data_dir / 'exchange.sqlite3'}")
    print(f"schema applied to {where}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.service.output_log import partitions_of
    from exchange.bootstrap import build_codec, build_store
    from settlement.replay import replay
    from settlement.store import SettlementStore

    bootstrap = require_bootstrap(settings)
    store: SettlementStore
    if args.into:
        from settlement.sqlite_store import SqliteStore

        target_path = Path(args.into)
        if target_path.exists() and not args.force:
            _die(f"{target_path} exists; pass --force to replay into it anyway")
        store = SqliteStore(target_path)
    else:
        store = build_store(settings)
    store.init_schema()
    topic = settings.exchange_topic_engine_output
    partitions = partitions_of(bootstrap, topic)
    with Progress(TextColumn("replaying {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("outputs")) as progress:
        task = progress.add_task(topic, total=None)
        applied, skipped = replay(
            bootstrap=bootstrap, topic=topic, partitions=partitions, codec=build_codec(),
            store=store, on_progress=lambda n: progress.update(task, completed=n),
        )
    print(f"replayed {applied} outputs ({skipped} undecodable skipped); "
          f"store digest {store.digest()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange", description="Kafka-backed, event-sourced exchange order pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run the whole stack (embedded broker unless "
                                  "KAFKA_BOOTSTRAP_SERVERS is set)")
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

    p = sub.add_parser("db", help="store administration")
    db = p.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = db.add_parser("init", help="apply the schema (idempotent) to Cassandra or SQLite")
    p.set_defaults(handler=cmd_db_init)

    p = sub.add_parser("replay", help="rebuild the store from the start of engine-output")
    p.add_argument("--into", metavar="SQLITE_FILE",
                   help="rebuild into this SQLite file instead of the configured store")
    p.add_argument("--force", action="store_true", help="allow --into an existing file")
    p.set_defaults(handler=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
