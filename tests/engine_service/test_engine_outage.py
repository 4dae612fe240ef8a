"""A broker outage makes the engine wait and retry: it neither exits nor drops an output."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.markets import load_markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from ops.broker import EmbeddedBroker
from ops.workload import command_stream
from tests.support.kafka import produce_commands, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_engine_when_broker_freezes_mid_stream_waits_then_publishes_everything_once(
    tmp_path: Path,
) -> None:
    # A broker of its own: the outage must not disturb the session's shared broker.
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topics = Topics.with_prefix(f"out{uuid.uuid4().hex[:8]}-")
        ensure_topics(make_admin(bootstrap), topics.all())
        codec, markets = Codec(), load_markets()
        commands = list(command_stream(seed=17, count=20_000, users=100))
        n = produce_commands(bootstrap, topics.orders.name, commands, codec)
        service = EngineService(
            bootstrap=bootstrap,
            config=EngineServiceConfig(
                orders_topic=topics.orders.name,
                output_topic=topics.engine_output.name,
                orders_dlq_topic=topics.orders_dlq.name,
                batch_size=200,
                # The engine waits for the broker at its next commit: commit often, so it
                # stalls right after the outage begins, however fast it gets through the
                # commands it has already fetched.
                commit_every_s=0.05,
            ),
            codec=codec,
            new_engine=lambda: Engine(markets),
            restore_engine=lambda data: Engine.restore(data, markets),
            snapshots=FileSnapshotStore(tmp_path / "snaps"),
        )
        errors: list[BaseException] = []

        def run() -> None:
            try:
                service.run(threading.Event(), until_offset=n)
            except BaseException as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while service.stats.applied < 2_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # the outage: the broker stops answering
        try:
            time.sleep(6)
            assert thread.is_alive() and not errors, "the engine gave up during the outage"
            stalled_at = service.stats.applied
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        thread.join(120)

        assert not errors, errors
        assert stalled_at < n, "the outage came too late to test anything"
        assert service.stats.applied == n
        reference = Engine(markets)
        expected = [codec.encode_output(reference.apply(c)) for c in commands]
        records = sorted(
            read_all(bootstrap, topics.engine_output.name, topics.engine_output.partitions)
        )
        assert [seq for seq, _, _ in records] == list(range(1, n + 1))
        assert [value for _, _, value in records] == expected
