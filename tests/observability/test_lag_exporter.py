"""Consumer lag: the exported numbers equal the records a stopped group has not read.

On the embedded broker (Tansu) ListOffsets(latest) answers with the last record batch's
base offset + 1, not the log end; :mod:`ops.lag` reads forward to the fetch's
end-of-partition event to find the real end. The flow test below would fail with the naive
answer, and asserts that the naive answer is indeed low there (the deviation it compensates).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec
from obs_testkit import (
    engine_group,
    settlement_group,
    start_engine,
    start_settlement,
)
from prometheus_client.parser import text_string_to_metric_families

from engine.markets import Markets
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.metrics import new_registry, serve_metrics
from exchange.topics import Topics
from ops.lag import LagCollector, LagMonitor, Tail, partition_lag
from ops.workload import command_stream
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually
from tests.support.kafka import produce_commands

# ---------------------------------------------------------------------------- the rule


def test_partition_lag_when_only_a_transaction_marker_follows_the_commit_is_zero() -> None:
    # Records 0..9, a commit marker at 10, end 11; the consumer committed 10 (last + 1).
    tail = Tail(end=11, scanned_from=9, data_end=10)

    assert partition_lag(10, 0, tail) == 0


def test_partition_lag_when_data_follows_the_commit_counts_up_to_the_end() -> None:
    tail = Tail(end=11, scanned_from=9, data_end=10)

    assert partition_lag(8, 0, tail) == 3


def test_partition_lag_when_commit_is_beyond_the_known_end_is_never_negative() -> None:
    assert partition_lag(50, 0, Tail(end=40, scanned_from=39, data_end=40)) == 0


def test_partition_lag_when_group_never_committed_counts_from_the_log_start() -> None:
    assert partition_lag(None, 5, Tail(end=40, scanned_from=39, data_end=40)) == 35


def test_partition_lag_when_the_tail_was_not_read_past_the_commit_trusts_the_end() -> None:
    # Nothing is known about [10, 20): it may hold data, so the lag is end - committed.
    assert partition_lag(10, 0, Tail(end=30, scanned_from=20, data_end=20)) == 20


# ---------------------------------------------------------------------------- the broker


def _lag_values(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kafka_consumergroup_lag":
            for s in family.samples:
                out[(s.labels["consumergroup"], s.labels["topic"], s.labels["partition"])] = s.value
    return out


@pytest.mark.kafka
def test_tail_scan_when_broker_is_the_embedded_tansu_is_on(kafka_bootstrap: str) -> None:
    monitor = LagMonitor(kafka_bootstrap, {})
    try:
        # Tansu answers DescribeConfigs on its broker with nothing; Apache Kafka (the e2e
        # tier, tests/e2e/test_e2e_lag.py) describes itself and gets no tail scan.
        assert monitor.tail_scan is (not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    finally:
        monitor.close()


@pytest.mark.kafka
def test_lag_when_groups_stop_while_records_are_produced_equals_the_unread_records(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    store: SqliteStore,
    tmp_path: Path,
) -> None:
    import httpx

    t = fresh_topics
    orders, output = t.orders.name, t.engine_output.name
    e_group, s_group = engine_group(t), settlement_group(t)
    monitor = LagMonitor(kafka_bootstrap, {e_group: (orders,), s_group: (output,)})
    registry = new_registry()
    registry.register(LagCollector(monitor, min_interval_s=0.0))
    server = serve_metrics(0, registry)
    try:
        # 1. Both groups caught up on a first stream: lag 0.
        first = list(command_stream(seed=3, count=600, users=20))
        produce_commands(kafka_bootstrap, orders, first, codec)
        _, e_run = start_engine(kafka_bootstrap, t, codec, markets, tmp_path / "snaps")
        _, s_run = start_settlement(kafka_bootstrap, t, codec, store)
        eventually(
            lambda: (
                monitor.sample().lag_of(e_group) == 0
                and store.max_sequence() == len(first)
                and monitor.sample().lag_of(s_group) == 0
            ),
            what="both groups caught up",
        )
        e_run.halt()
        s_run.halt()

        # 2. Both stopped; N more commands arrive.
        more = list(
            command_stream(seed=4, count=1234, users=20, fund=False, first_offset=len(first))
        )
        n = produce_commands(kafka_bootstrap, orders, more, codec)
        sample = monitor.sample()
        exported = _lag_values(httpx.get(server.url).text)

        assert sample.lag_of(e_group, orders) == n
        assert exported[(e_group, orders, "0")] == n
        assert sample.log_ends[(orders, 0)] == len(first) + n
        assert sample.lag_of(s_group) == 0
        admin = make_admin(kafka_bootstrap)  # kept referenced until the answer arrives
        naive = admin.list_offsets({TopicPartition(orders, 0): OffsetSpec.latest()})
        naive_end = next(iter(naive.values())).result(timeout=15).offset
        assert naive_end <= len(first) + n
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # the embedded broker's deviation
            assert naive_end < len(first) + n

        # 3. The engine catches up: its lag returns to 0, and settlement's grows by N.
        _, e_run = start_engine(kafka_bootstrap, t, codec, markets, tmp_path / "snaps")
        eventually(lambda: monitor.sample().lag_of(e_group) == 0, what="engine caught up")
        eventually(lambda: monitor.sample().lag_of(s_group) == n, what="outputs on the log")
        exported = _lag_values(httpx.get(server.url).text)
        assert sum(v for (g, _, _), v in exported.items() if g == s_group) == n
        assert all(v >= 0 for v in exported.values())

        # 4. Settlement catches up: 0 again.
        _, s_run = start_settlement(kafka_bootstrap, t, codec, store)
        eventually(lambda: monitor.sample().lag_of(s_group) == 0, what="settlement caught up")
        exported = _lag_values(httpx.get(server.url).text)
        assert exported[(e_group, orders, "0")] == 0
        assert all(v == 0 for (g, _, _), v in exported.items() if g == s_group)
        assert store.max_sequence() == len(first) + n
        e_run.halt()
        s_run.halt()
    finally:
        server.close()
        monitor.close()
