"""Engine service benchmark: sustained commands/s through Kafka, and recovery time.

1. Throughput: pre-load N commands (default 200k, seeded mixed workload) into ``orders``,
   start the engine service, and time it from its first poll until it has published the
   output of the last command (commands/s, end to end through the real broker).
2. Recovery: run the service over a stream that leaves R resting orders (default 1M) in
   the book, let it snapshot on shutdown, then time a fresh service's ``recover()``: load the
   chunked snapshot from the compacted topic, restore the engine, scan the output tails.

Starts its own embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set. Last line:
``RESULT engine_service cmds_per_s=<n> recovery_s=<n>``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: tests.support is not installed
    sys.path.insert(0, str(ROOT))

from engine.commands import Command, PlaceOrder  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.enums import OrderType, Side, TimeInForce  # noqa: E402
from engine.markets import load_markets  # noqa: E402
from engine.service.runner import EngineService, EngineServiceConfig  # noqa: E402
from engine.service.snapshots import KafkaSnapshotStore  # noqa: E402
from entrypoints.bootstrap import tune_gc  # noqa: E402
from exchange.codec import Codec  # noqa: E402
from exchange.kafka import make_admin, make_producer  # noqa: E402
from exchange.topics import Topics, ensure_topics  # noqa: E402
from ops.broker import kafka_for  # noqa: E402
from ops.workload import command_stream, funding_commands  # noqa: E402
from tests.support.kafka import produce_commands  # noqa: E402


def resting_stream(count: int, users: int, seed: int) -> Iterator[Command]:
    """The users' creation and funding, then ``count`` limit orders that never cross: bids
    below, asks above."""
    funding = funding_commands(users)
    yield from funding
    rng = random.Random(seed)
    offset = len(funding)
    for i in range(count):
        side = Side.BUY if i % 2 else Side.SELL
        away = rng.randint(1, 20_000)
        price = 5_000_000 - away if side is Side.BUY else 5_000_000 + away
        yield PlaceOrder(
            command_id=offset,
            timestamp_ms=1_700_000_000_000 + i,
            order_id=offset,
            user_id=rng.randint(1, users),
            symbol="BTC_USDT",
            side=side,
            order_type=OrderType.LIMIT,
            time_in_force=TimeInForce.GTC,
            price=price,
            quantity=rng.randint(1, 50),
        )
        offset += 1


def make_service(
    bootstrap: str, topics: Topics, codec: Codec, store: KafkaSnapshotStore, snapshot_every: int
) -> EngineService:
    markets = load_markets()
    return EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"bench-{topics.orders.name}",
            snapshot_every_commands=snapshot_every,
            snapshot_every_s=3600,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=store,
    )


def fresh_topics(bootstrap: str) -> Topics:
    topics = Topics.with_prefix(f"bench{uuid.uuid4().hex[:8]}-")
    ensure_topics(make_admin(bootstrap), topics.all())
    return topics


def throughput(bootstrap: str, commands: int) -> tuple[float, EngineService]:
    codec = Codec()
    topics = fresh_topics(bootstrap)
    n = produce_commands(
        bootstrap, topics.orders.name, command_stream(seed=42, count=commands, users=1000), codec
    )
    store = KafkaSnapshotStore(make_producer(bootstrap), bootstrap, topics.engine_snapshots.name)
    service = make_service(bootstrap, topics, codec, store, snapshot_every=100_000)
    service.recover()
    thresholds = gc.get_threshold()
    tune_gc()  # as `exchange engine` does after recovery: measure what production runs
    started = time.perf_counter()
    service.run(threading.Event(), until_offset=n)
    elapsed = time.perf_counter() - started
    gc.unfreeze()  # the recovery measurement runs as production's recovery does: untuned
    gc.set_threshold(*thresholds)
    return n / elapsed, service


def recovery(bootstrap: str, resting: int) -> tuple[float, int, EngineService]:
    codec = Codec()
    topics = fresh_topics(bootstrap)
    n = produce_commands(bootstrap, topics.orders.name, resting_stream(resting, 1000, 7), codec)
    store = KafkaSnapshotStore(make_producer(bootstrap), bootstrap, topics.engine_snapshots.name)
    first = make_service(bootstrap, topics, codec, store, snapshot_every=10**9)
    first.run(threading.Event(), until_offset=n)  # snapshots on shutdown
    second = make_service(bootstrap, topics, codec, store, snapshot_every=10**9)
    started = time.perf_counter()
    second.recover()
    elapsed = time.perf_counter() - started
    assert second.next_offset == n, (second.next_offset, n)
    return elapsed, n, first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--resting", type=int, default=1_000_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with kafka_for(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        rate, service = throughput(bootstrap, args.commands)
        print(
            f"throughput: {args.commands} commands (+funding) at {rate:,.0f} commands/s; "
            f"{service.stats.published} outputs published"
        )
        rec_s, n, first = recovery(bootstrap, args.resting)
        pauses = first.stats.snapshot_pause_s
        print(
            f"recovery: {args.resting:,} resting orders ({n:,} commands): recover() took "
            f"{rec_s:.2f}s; snapshot pause {max(pauses) * 1000 if pauses else 0:.0f} ms"
        )
    print(f"RESULT engine_service cmds_per_s={rate:.0f} recovery_s={rec_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
