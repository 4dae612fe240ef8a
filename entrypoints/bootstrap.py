"""Builders that wire each service from the settings: the composition root's toolbox.

Only the CLI entry points (one per process) call these. Nothing here runs at import time.
"""

from __future__ import annotations

import gc
from pathlib import Path

from engine.engine import Engine
from engine.errors import ConfigError
from engine.markets import Markets, load_markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore, KafkaSnapshotStore, SnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_producer
from exchange.metrics import EngineMetrics, SettlementMetrics
from exchange.settings import Settings
from exchange.topics import Topics
from exchange.watchdog import WatchdogSink
from ops.supervisor import discover_bootstrap
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore
from settlement.store import SettlementStore


def tune_gc() -> None:
    """Call once a service has built its long-lived heap (the book, the codec caches): move
    that heap out of the collector's reach and collect the young generation less often, so
    full collections stop stalling the loop. Nothing depends on collection timing."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def find_bootstrap(settings: Settings) -> str:
    """``KAFKA_BOOTSTRAP_SERVERS``, else the broker of a running ``exchange up``/``exchange
    broker``; ConfigError if there is none."""
    bootstrap = discover_bootstrap(settings)
    if not bootstrap:
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no `exchange up`/`exchange broker` is "
            "running (start one, or set KAFKA_BOOTSTRAP_SERVERS)"
        )
    return bootstrap


def sqlite_path(settings: Settings) -> Path:
    return settings.exchange_data_dir / "exchange.sqlite3"


def build_markets(settings: Settings) -> Markets:
    return load_markets(settings.exchange_markets_file)


def build_codec() -> Codec:
    return Codec()


def build_store(settings: Settings, *, readonly: bool = False) -> SettlementStore:
    """Cassandra when CASSANDRA_CONTACT_POINTS is set, else the embedded SQLite file."""
    if settings.cassandra_contact_points:
        # Here, not at the top: the Cassandra driver is heavy to import and only this
        # configuration needs it (the embedded stack runs on SQLite).
        from settlement.cassandra_store import CassandraStore

        return CassandraStore(
            contact_points=list(settings.cassandra_contact_points),
            port=settings.cassandra_port,
            keyspace=settings.cassandra_keyspace,
        )

    path = sqlite_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, readonly=readonly)


def build_snapshot_store(settings: Settings, bootstrap: str) -> SnapshotStore:
    if settings.exchange_snapshot_store == "file":
        return FileSnapshotStore(settings.exchange_data_dir / "engine-snapshots")
    producer = make_producer(bootstrap, **{"message.max.bytes": 1 << 20, "linger.ms": 20})
    return KafkaSnapshotStore(producer, bootstrap, settings.exchange_topic_engine_snapshots)


def build_engine_service(
    settings: Settings,
    bootstrap: str,
    metrics: EngineMetrics | None = None,
    watchdog_sink: WatchdogSink | None = None,
) -> EngineService:
    markets = build_markets(settings)
    topics = Topics.from_settings(settings)
    service = EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            batch_size=settings.exchange_engine_batch_size,
            snapshot_every_commands=settings.exchange_snapshot_every_commands,
            snapshot_every_s=settings.exchange_snapshot_every_seconds,
            stall_after_s=settings.exchange_stall_after_seconds,
        ),
        codec=build_codec(),
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=build_snapshot_store(settings, bootstrap),
        metrics=metrics,
        watchdog_sink=watchdog_sink,
    )
    if metrics is not None:
        metrics.watch(service.stats)
    return service


def build_settlement_service(
    settings: Settings,
    bootstrap: str,
    store: SettlementStore | None = None,
    metrics: SettlementMetrics | None = None,
    watchdog_sink: WatchdogSink | None = None,
) -> SettlementService:
    topics = Topics.from_settings(settings)
    if store is None:
        store = build_store(settings)
        store.init_schema()
    service = SettlementService(
        bootstrap=bootstrap,
        config=SettlementConfig(
            output_topic=topics.engine_output.name,
            output_dlq_topic=topics.engine_output_dlq.name,
            batch_max_records=settings.exchange_settlement_batch_max_records,
            batch_max_ms=settings.exchange_settlement_batch_max_ms,
            commit_every_ms=settings.exchange_settlement_commit_every_ms,
            stall_after_s=settings.exchange_stall_after_seconds,
        ),
        codec=build_codec(),
        store=store,
        on_batch=metrics.on_batch if metrics is not None else None,
        watchdog_sink=watchdog_sink,
    )
    if metrics is not None:
        metrics.watch(service.stats)
    return service
