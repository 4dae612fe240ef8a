"""Builders that wire each service from the settings: the composition root's toolbox.

Only the CLI entry points (one per process) call these. Nothing here runs at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from exchange.settings import Settings
from exchange.topics import Topics

if TYPE_CHECKING:
    from engine.markets import Markets
    from engine.service.runner import EngineService
    from engine.service.snapshots import SnapshotStore
    from exchange.codec import Codec
    from exchange.metrics import EngineMetrics, SettlementMetrics
    from settlement.service import SettlementService
    from settlement.store import SettlementStore


def tune_gc() -> None:
    """Call once a service has built its long-lived heap (the book, the codec caches): move
    that heap out of the collector's reach and collect the young generation less often, so
    full collections stop stalling the loop. Nothing depends on collection timing."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def sqlite_path(settings: Settings) -> Path:
    return settings.exchange_data_dir / "exchange.sqlite3"


def build_markets(settings: Settings) -> Markets:
    from engine.markets import load_markets

    return load_markets(settings.exchange_markets_file)


def build_codec() -> Codec:
    from exchange.codec import Codec

    return Codec()


def build_store(settings: Settings, *, readonly: bool = False) -> SettlementStore:
    """Cassandra when CASSANDRA_CONTACT_POINTS is set, else the embedded SQLite file."""
    if settings.cassandra_contact_points:
        from settlement.cassandra_store import CassandraStore

        return CassandraStore(
            contact_points=list(settings.cassandra_contact_points),
            port=settings.cassandra_port,
            keyspace=settings.cassandra_keyspace,
        )
    from settlement.sqlite_store import SqliteStore

    path = sqlite_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, readonly=readonly)


def build_snapshot_store(settings: Settings, bootstrap: str) -> SnapshotStore:
    from engine.service.snapshots import FileSnapshotStore, KafkaSnapshotStore
    from exchange.kafka import make_producer

    if settings.exchange_snapshot_store == "file":
        return FileSnapshotStore(settings.exchange_data_dir / "engine-snapshots")
    producer = make_producer(bootstrap, **{"message.max.bytes": 1 << 20, "linger.ms": 20})
    return KafkaSnapshotStore(producer, bootstrap, settings.exchange_topic_engine_snapshots)


def build_engine_service(settings: Settings, bootstrap: str,
                         metrics: EngineMetrics | None = None) -> EngineService:
    from engine.engine import Engine
    from engine.service.runner import EngineService, EngineServiceConfig

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
        ),
        codec=build_codec(),
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=build_snapshot_store(settings, bootstrap),
        metrics=metrics,
    )
    if metrics is not None:
        metrics.watch(service.stats)
    return service


def build_settlement_service(settings: Settings, bootstrap: str,
                             store: SettlementStore | None = None,
                             metrics: SettlementMetrics | None = None) -> SettlementService:
    from settlement.service import SettlementConfig, SettlementService

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
        ),
        codec=build_codec(),
        store=store,
        on_batch=metrics.on_batch if metrics is not None else None,
    )
    if metrics is not None:
        metrics.watch(service.stats)
    return service
