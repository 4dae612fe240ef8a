"""Each service's /metrics parses with prometheus_client's parser and says what happened."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from obs_testkit import start_engine, start_settlement
from prometheus_client.parser import text_string_to_metric_families

from engine.markets import Markets
from exchange.codec import Codec
from exchange.topics import Topics
from ops.workload import command_stream
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually
from tests.support.kafka import produce_commands, produce_raw

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint by sample name (the parser rejects malformed text)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for have, v in samples.get(name, []) if labels.items() <= have.items())


ENGINE_NAMES = (
    "exchange_engine_commands_total",
    "exchange_engine_rejections_total",
    "exchange_engine_outputs_published_total",
    "exchange_engine_sequence",
    "exchange_engine_snapshot_pause_seconds_count",
    "exchange_dlq_records_total",
    "exchange_engine_publish_latency_seconds_bucket",
)
SETTLEMENT_NAMES = (
    "exchange_settlement_batches_total",
    "exchange_settlement_batch_size_bucket",
    "exchange_store_write_seconds_bucket",
    "exchange_settlement_sequence_settled",
    "exchange_pipeline_freshness_seconds_bucket",
    "exchange_pipeline_freshness_seconds_count",
    "exchange_settlement_events_total",
    "exchange_dlq_records_total",
)


@pytest.mark.kafka
def test_service_metrics_when_a_stream_is_settled_report_every_command_and_output(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    store: SqliteStore,
    tmp_path: Path,
) -> None:
    commands = list(command_stream(seed=21, count=3000, users=30))
    n = produce_commands(kafka_bootstrap, fresh_topics.orders.name, commands, codec)
    produce_raw(kafka_bootstrap, fresh_topics.orders.name, [b"not an avro command"])
    engine, e_run = start_engine(kafka_bootstrap, fresh_topics, codec, markets, tmp_path / "snaps")
    settlement, s_run = start_settlement(kafka_bootstrap, fresh_topics, codec, store)
    try:
        eventually(
            lambda: store.max_sequence() == n and engine.stats.dead_lettered == 1,
            what="the stream settled",
        )
        # After the engine's recovery scan (which needs keyed records): a poison output.
        produce_raw(kafka_bootstrap, fresh_topics.engine_output.name, [b"not an output"])
        eventually(lambda: settlement.stats.dead_lettered == 1, what="the poison output parked")
        eng = scrape(e_run.server.url)
        stl = scrape(s_run.server.url)
    finally:
        e_run.halt()
        s_run.halt()

    for name in ENGINE_NAMES:
        assert name in eng, name
    for name in SETTLEMENT_NAMES:
        assert name in stl, name
    assert value(eng, "exchange_engine_commands_total") == n
    assert value(eng, "exchange_engine_commands_total", kind="DEPOSIT") == 30 * 3
    assert value(eng, "exchange_engine_commands_total", result="rejected") == value(
        eng, "exchange_engine_rejections_total"
    )
    assert value(eng, "exchange_engine_outputs_published_total") == n
    assert value(eng, "exchange_engine_sequence") == n
    assert value(eng, "exchange_engine_publish_latency_seconds_count") == n
    assert value(eng, "exchange_dlq_records_total", service="engine") == 1
    assert value(stl, "exchange_settlement_sequence_settled") == n
    assert value(stl, "exchange_pipeline_freshness_seconds_count") == n
    assert value(stl, "exchange_settlement_batch_size_sum") == n
    assert value(stl, "exchange_settlement_batches_total") == value(
        stl, "exchange_store_write_seconds_count"
    )
    assert value(stl, "exchange_settlement_outputs_total") == n
    assert value(stl, "exchange_settlement_events_total") == settlement.stats.events
    assert value(stl, "exchange_dlq_records_total", service="settlement") == 1
    assert value(stl, "exchange_settlement_ready") == 1
    buckets = [
        (float(labels["le"]), v) for labels, v in stl["exchange_pipeline_freshness_seconds_bucket"]
    ]
    assert buckets == sorted(buckets), "cumulative buckets must not decrease"
    assert buckets[-1] == (float("inf"), n)


def test_serve_metrics_when_the_port_is_taken_raises_a_config_error_naming_the_setting() -> None:
    import socket

    from engine.errors import ConfigError
    from exchange.metrics import new_registry, serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"EXCHANGE_ENGINE_METRICS_PORT={port}"):
            serve_metrics(port, new_registry(), setting="EXCHANGE_ENGINE_METRICS_PORT")


def test_engine_metrics_when_recovery_recomputed_part_of_a_batch_times_only_published_outputs() -> (
    None
):
    from engine.enums import CommandKind
    from engine.events import EngineOutput
    from exchange.metrics import EngineMetrics, new_registry

    now = 1_700_000_000_000
    metrics = EngineMetrics(new_registry(), clock_ms=lambda: now)

    def output(seq: int, ts: int) -> EngineOutput:
        return EngineOutput(
            sequence=seq, command_id=seq, command_kind=CommandKind.DEPOSIT, timestamp_ms=ts
        )

    # Ten outputs recovery recomputed (commands from an hour ago, already published before
    # the restart), then five published now, 7 ms after the gateway stamped them.
    batch = [output(i, now - 3_600_000) for i in range(1, 11)]
    batch += [output(i, now - 7) for i in range(11, 16)]
    metrics.record_batch(batch, published=5, sequence=15)

    counts, total_ms = metrics.publish_latency.snapshot()
    assert sum(counts) == 5
    assert total_ms == 5 * 7
