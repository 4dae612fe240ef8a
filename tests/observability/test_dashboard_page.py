"""The dashboard: its numbers from real /metrics endpoints, its page, and (with a browser)
the page drawing live SVG charts offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.enums import CommandKind, RejectReason
from engine.events import CommandRejected, EngineOutput
from exchange.metrics import (
    EngineMetrics,
    GatewayMetrics,
    SettlementMetrics,
    new_registry,
    serve_metrics,
)
from gateway.dashboard import (
    STATIC_DIR,
    DashboardSampler,
    dashboard_router,
    histogram_quantile,
    parse_metrics,
)
from ops.broker import free_port

CHROMIUM = Path("/usr/bin/chromium")


def _output(seq: int, ts: int, rejected: bool = False) -> EngineOutput:
    rejections = (
        (
            CommandRejected(
                command_id=seq,
                kind=CommandKind.CANCEL_ORDER,
                user_id=1,
                reason=RejectReason.ORDER_NOT_FOUND,
                order_id=1,
                client_order_id=None,
                message="no such order",
            ),
        )
        if rejected
        else ()
    )
    return EngineOutput(
        sequence=seq,
        command_id=seq,
        command_kind=CommandKind.CANCEL_ORDER,
        timestamp_ms=ts,
        rejections=rejections,
    )


def test_histogram_quantile_when_rank_falls_inside_a_bucket_interpolates_like_promql() -> None:
    cumulative = [(0.01, 10.0), (0.05, 90.0), (0.1, 100.0), (float("inf"), 100.0)]

    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.01 + 0.04 * 40 / 80)
    assert histogram_quantile(0.99, cumulative) == pytest.approx(0.05 + 0.05 * 9 / 10)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_parse_metrics_when_two_workers_export_a_counter_sums_them() -> None:
    texts = ["exchange_settlement_events_total 5\n", "exchange_settlement_events_total 7\n"]

    assert parse_metrics(texts)["exchange_settlement_events_total"] == {(): 12.0}


def test_dashboard_data_when_sources_move_reports_rates_quantiles_and_lag() -> None:
    clock = {"ms": 1_000_000}
    eng_reg, stl_reg, gw_reg = new_registry(), new_registry(), new_registry()
    engine = EngineMetrics(eng_reg, clock_ms=lambda: clock["ms"])
    settlement = SettlementMetrics(stl_reg, clock_ms=lambda: clock["ms"])
    gateway = GatewayMetrics(gw_reg)
    eng_server = serve_metrics(0, eng_reg)
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    sampler = DashboardSampler([eng_server.url, dead], [stl_reg, gw_reg], min_interval_s=0.0)
    try:
        import asyncio

        asyncio.run(sampler.data())  # the baseline sample
        # Published 5 ms after their stamps (1 ... 100 ms apart).
        engine.record_batch(
            [_output(i, clock["ms"] - 5 - (i - 1), rejected=i % 4 == 0) for i in range(1, 101)],
            published=100,
            sequence=100,
        )
        # 100 outputs stamped 20 ms before the write, 0 ... 99 ms apart.
        settlement.on_batch([_output(i, clock["ms"] - 20 - (i - 1)) for i in range(1, 91)], 0.004)
        for _ in range(30):
            gateway.observe("/api/v1/order/create", "POST", 202, 0.001)
        time.sleep(0.2)
        data = asyncio.run(sampler.data())
    finally:
        eng_server.close()

    charts = {c["id"]: c["series"] for c in data["charts"]}
    assert len(data["t"]) == 2
    assert charts["commands"]["applied/s"][-1] > 0
    assert charts["commands"]["rejected/s"][-1] == pytest.approx(
        charts["commands"]["applied/s"][-1] / 3
    )
    assert charts["settlement"]["events/s"][-1] is None  # no stats attached: no series
    assert charts["gateway"]["requests/s"][-1] > 0
    p50, p99 = charts["freshness"]["p50 ms"][-1], charts["freshness"]["p99 ms"][-1]
    assert 50 <= p50 <= 75  # the true median of 20..109 ms is 64.5, within its bucket
    assert 100 <= p99 <= 125
    assert 75 <= charts["freshness"]["engine p99 ms"][-1] <= 125  # true p99 of 5..104: 103
    assert charts["behind"]["outputs"][-1] == 10  # published 100, settled 90
    assert [s["up"] for s in data["sources"]] == [True, False]


def test_dashboard_router_when_mounted_serves_page_assets_and_data() -> None:
    app = FastAPI()
    app.include_router(dashboard_router([], registries=[new_registry()]))
    with TestClient(app) as client:
        page = client.get("/dashboard")
        script = client.get("/dashboard/assets/dashboard.js")
        missing = client.get("/dashboard/assets/../../etc/passwd")
        unknown = client.get("/dashboard/assets/nope.js")
        data = client.get("/dashboard/data").json()

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="dashboard/assets/dashboard.js"' in page.text
    assert script.status_code == 200 and "setInterval(refresh, 1000)" in script.text
    assert missing.status_code == 404 and unknown.status_code == 404
    assert {c["id"] for c in data["charts"]} == {
        "lag",
        "commands",
        "settlement",
        "freshness",
        "behind",
        "gateway",
    }
    assert (STATIC_DIR / "dashboard.css").is_file()


def test_dashboard_assets_when_read_reference_nothing_outside_the_server() -> None:
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package)")
def test_dashboard_page_when_opened_headless_draws_live_svg_charts(tmp_path: Path) -> None:
    registry = new_registry()
    settlement = SettlementMetrics(registry)
    app = FastAPI()
    app.include_router(dashboard_router([], registries=[registry], min_interval_s=0.0))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stop = threading.Event()

    def feed() -> None:  # outputs keep settling while the page is open
        seq = 0
        while not stop.wait(0.1):
            now = time.time_ns() // 1_000_000
            settlement.on_batch([_output(seq + i, now - 30) for i in range(1, 51)], 0.002)
            seq += 50

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/dashboard").status_code == 200
        dom = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=6000",
                "--dump-dom",
                f"http://127.0.0.1:{port}/dashboard",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    finally:
        stop.set()
        server.should_exit = True
        thread.join(10)

    (tmp_path / "dom.html").write_text(dom)
    assert 'id="chart-freshness"' in dom
    assert dom.count("<svg") >= 1 and "<polyline" in dom
    points = re.search(r'data-points="(\d+)"', dom)
    assert points is not None and int(points.group(1)) >= 2  # refreshed at least once
    assert "cannot reach" not in dom
    assert shutil.which(str(CHROMIUM))
