"""A short load run through an in-process engine and settlement: its report matches the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from obs_testkit import start_engine, start_settlement

from engine.commands import PlaceOrder
from engine.enums import OrderStatus
from engine.markets import Markets
from exchange.codec import Codec
from exchange.topics import Topics
from ops.loadgen import LoadConfig, LoadGenerator, summary_lines
from ops.workload import command_stream, funding_commands
from settlement.sqlite_store import SqliteStore

USERS = 25
ORDERS = 3000
SEED = 9


@pytest.mark.kafka
def test_loadgen_when_run_via_kafka_reports_counts_that_match_the_store(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    store: SqliteStore,
    tmp_path: Path,
) -> None:
    _, e_run = start_engine(kafka_bootstrap, fresh_topics, codec, markets, tmp_path / "snaps")
    _, s_run = start_settlement(kafka_bootstrap, fresh_topics, codec, store)
    progress: list[int] = []
    try:
        generator = LoadGenerator(
            LoadConfig(
                via="kafka",
                rate=1500,
                orders=ORDERS,
                duration_s=30,
                users=USERS,
                seed=SEED,
                drain_timeout_s=60,
            ),
            bootstrap=kafka_bootstrap,
            orders_topic=fresh_topics.orders.name,
            output_topic=fresh_topics.engine_output.name,
            codec=codec,
            store=store,
            on_progress=lambda sent, seq, elapsed: progress.append(sent),
        )
        report = generator.run()
    finally:
        e_run.halt()
        s_run.halt()
    report.write(tmp_path / "report.json")

    funding = USERS * 4  # each user's creation and three deposits
    assert report.funding_sent == funding == len(funding_commands(USERS))
    assert report.orders_sent == ORDERS == report.places_sent + report.cancels_sent
    assert report.settled == ORDERS and report.unsettled == 0
    assert store.max_sequence() == funding + ORDERS  # fresh topics: sequence = position
    # The same seeded stream, at the offsets it was produced to: every place is in the store.
    places = [
        c
        for c in command_stream(SEED, ORDERS, users=USERS, first_offset=funding, fund=False)
        if isinstance(c, PlaceOrder)
    ]
    assert len(places) == report.places_sent
    rows = [store.get_order(c.order_id) for c in places]
    assert all(r is not None for r in rows)
    store_rejected = sum(1 for r in rows if r is not None and r.status is OrderStatus.REJECTED)
    place_reasons = {
        "INSUFFICIENT_FUNDS",
        "POST_ONLY_WOULD_TAKE",
        "INVALID_PRICE",
        "INVALID_QUANTITY",
        "INVALID_ORDER",
        "UNKNOWN_SYMBOL",
    }
    assert store_rejected == sum(
        n for reason, n in report.rejected.items() if reason in place_reasons
    )
    assert report.applied + sum(report.rejected.values()) == ORDERS
    f = report.freshness_ms
    assert f["p50"] is not None and f["p95"] is not None and f["p99"] is not None
    assert f["max"] is not None
    assert 0 <= f["p50"] <= f["p95"] <= f["p99"] <= f["max"]
    assert report.send_rate > 0 and report.pipeline_rate > 0
    assert sum(int(p["sent"] or 0) for p in report.timeline) == ORDERS
    assert progress and progress[-1] <= ORDERS
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["orders_sent"] == ORDERS and saved["rejected"] == report.rejected
    assert any(line.startswith("freshness") for line in summary_lines(report))


def test_loadgen_command_when_rate_is_negative_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EXCHANGE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env["EXCHANGE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "loadgen", "--rate", "-5", "--orders", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "exchange: --rate must be >= 0 (0 = flat out), got -5.0"
    ]


def test_loadgen_command_when_neither_duration_nor_orders_is_given_exits_2(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EXCHANGE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env["EXCHANGE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "loadgen"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "give --duration or --orders" in done.stderr


@pytest.mark.kafka
def test_loadgen_when_run_via_http_cancels_only_ids_the_api_returned(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    codec: Codec,
    markets: Markets,
    store: SqliteStore,
    tmp_path: Path,
) -> None:
    from typing import cast

    from fastapi import FastAPI

    from gateway.server import ServerThread, create_gateway_app
    from ops.broker import free_port

    _, e_run = start_engine(kafka_bootstrap, fresh_topics, codec, markets, tmp_path / "snaps")
    _, s_run = start_settlement(kafka_bootstrap, fresh_topics, codec, store)
    reader = SqliteStore(tmp_path / "store.sqlite3", readonly=True)
    app = create_gateway_app(
        bootstrap=kafka_bootstrap, topics=fresh_topics, markets=markets, codec=codec, store=reader
    )
    try:
        with ServerThread(cast(FastAPI, app), free_port()) as url:
            report = LoadGenerator(
                LoadConfig(
                    via="http",
                    url=url,
                    rate=300,
                    orders=600,
                    duration_s=30,
                    users=10,
                    seed=5,
                    concurrency=16,
                    drain_timeout_s=60,
                ),
                bootstrap=kafka_bootstrap,
                orders_topic=fresh_topics.orders.name,
                output_topic=fresh_topics.engine_output.name,
                codec=codec,
                store=store,
                markets=markets,
            ).run()
    finally:
        e_run.halt()
        s_run.halt()
        reader.close()

    assert report.funding_sent == 10 * 3
    assert report.places_sent > 0 and report.cancels_sent > 0
    assert report.orders_sent == report.places_sent + report.cancels_sent
    # Every order the API accepted is in the store, and settled freshness covers them all.
    assert report.settled == report.places_sent and report.unsettled == 0
    # Each of the 600 workload commands was accepted, refused by the API (a cancel of an
    # order already gone: 404), or skipped (a cancel of an order the API had refused).
    assert report.orders_sent + sum(report.http_errors.values()) + report.cancels_skipped == 600
    assert set(report.http_errors) <= {"404 ORDER_NOT_FOUND"}
    assert report.applied + sum(report.rejected.values()) == report.orders_sent
    # The 10 users' creation, produced to the log before the funding, counts in the sequence.
    assert store.max_sequence() == 10 + report.funding_sent + report.orders_sent
