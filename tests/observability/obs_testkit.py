"""Helpers of the observability tests: in-process services with metrics on free ports."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from engine.engine import Engine
from engine.markets import Markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.metrics import (
    EngineMetrics,
    MetricsServer,
    SettlementMetrics,
    new_registry,
    serve_metrics,
)
from exchange.topics import Topics
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore


@dataclass
class Running:
    """A service running on a thread, with its /metrics endpoint."""

    stop: threading.Event
    thread: threading.Thread
    server: MetricsServer

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "service did not stop"
        self.server.close()


def engine_group(topics: Topics) -> str:
    return f"engine-{topics.orders.name}"


def settlement_group(topics: Topics) -> str:
    return f"settle-{topics.orders.name}"


def start_engine(
    bootstrap: str, topics: Topics, codec: Codec, markets: Markets, snaps: Path
) -> tuple[EngineService, Running]:
    registry = new_registry()
    metrics = EngineMetrics(registry)
    service = EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=engine_group(topics),
            batch_size=1000,
            commit_every_s=0.2,
            snapshot_every_s=3600.0,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(snaps),
        metrics=metrics,
    )
    metrics.watch(service.stats)
    server = serve_metrics(0, registry)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    return service, Running(stop, thread, server)


def start_settlement(
    bootstrap: str, topics: Topics, codec: Codec, store: SqliteStore
) -> tuple[SettlementService, Running]:
    registry = new_registry()
    metrics = SettlementMetrics(registry)
    service = SettlementService(
        bootstrap=bootstrap,
        config=SettlementConfig(
            output_topic=topics.engine_output.name,
            output_dlq_topic=topics.engine_output_dlq.name,
            group_id=settlement_group(topics),
        ),
        codec=codec,
        store=store,
        on_batch=metrics.on_batch,
    )
    metrics.watch(service.stats)
    server = serve_metrics(0, registry)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    return service, Running(stop, thread, server)
