"""``/dashboard``: live charts of the pipeline, built from the services' Prometheus metrics.

Theory of operation
-------------------
The router is given where the metrics are: ``/metrics`` URLs (the engine, the settlement
workers, the lag exporter: :func:`exchange.metrics.stack_metrics_urls`) and, optionally,
registries of this very process (the gateway's own). The page polls ``dashboard/data``
once a second. A request for data takes a new sample when the last one is older than
``min_interval_s`` (so several open pages share samples and nothing is scraped while nobody
looks): it scrapes every source concurrently with httpx, parses the text format with
``prometheus_client``'s parser, sums each series over the sources (several settlement
workers add up) and turns it into points:

* rates (commands/s, settlement events/s, gateway requests/s) from the counters' increase
  since the previous sample (a counter that went down was reset, and one that was absent
  started at 0: in both cases its value is the increase);
* freshness p50/p99 from the increase of the freshness histogram's buckets since the
  previous sample, interpolated like PromQL's ``histogram_quantile``, and the p99 of its
  first leg (gateway -> engine output published) the same way;
* consumer lag per group, topic and partition (``kafka_consumergroup_lag``) as is;
* how far settlement trails the engine: ``max(exchange_engine_sequence) -
  max(exchange_settlement_sequence_settled)``, in outputs.

The last ``history`` points are kept in memory and returned whole, so a page opened late
still shows the last minutes. Everything on the page is drawn as SVG by a small vanilla
script in ``gateway/static/``: no CDN, no build step, works offline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import JSONResponse, Response

STATIC_DIR = Path(__file__).resolve().with_name("static")
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

Labels = tuple[tuple[str, str], ...]
# sample name -> labels -> value, summed over the sources
Scrape = dict[str, dict[Labels, float]]


@dataclass(slots=True)
class SourceStatus:
    url: str
    up: bool = False
    error: str | None = None


@dataclass(slots=True)
class _Point:
    t_ms: int
    charts: dict[str, dict[str, float | None]] = field(default_factory=dict)


def parse_metrics(texts: Iterable[str]) -> Scrape:
    """Sum every sample over the given exposition texts, keyed by name and labels."""
    out: Scrape = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = tuple(sorted(s.labels.items()))
                series = out.setdefault(s.name, {})
                series[labels] = series.get(labels, 0.0) + float(s.value)
    return out


def total(scrape: Scrape, name: str, **match: str) -> float | None:
    """Sum of ``name`` over the series whose labels include ``match`` (None: no series)."""
    series = scrape.get(name)
    if not series:
        return None
    values = [v for labels, v in series.items() if _matches(labels, match)]
    return sum(values) if values else None


def maximum(scrape: Scrape, name: str) -> float | None:
    series = scrape.get(name)
    return max(series.values()) if series else None


def _matches(labels: Labels, match: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def buckets(scrape: Scrape, name: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of histogram ``name`` (its ``_bucket`` series), by ``le``."""
    by_le: dict[float, float] = {}
    for labels, value in (scrape.get(f"{name}_bucket") or {}).items():
        le = dict(labels).get("le")
        if le is not None:
            bound = math.inf if le == "+Inf" else float(le)
            by_le[bound] = by_le.get(bound, 0.0) + value
    return sorted(by_le.items())


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as PromQL's ``histogram_quantile``
    computes it (linear within the bucket; the highest finite bound if it falls in +Inf)."""
    if not cumulative:
        return None
    count = cumulative[-1][1]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cum in cumulative:
        if cum >= rank:
            if math.isinf(bound):
                return lower
            in_bucket = cum - below
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / in_bucket
        lower, below = bound, cum
    return lower


def _increase(now: float | None, before: float | None) -> float | None:
    """A counter's increase between two samples. A series that was absent before started
    at 0 since (labelled series appear on first use); one that went down was reset."""
    if now is None:
        return None
    if before is None or now < before:
        return now
    return now - before


class DashboardSampler:
    """Scrapes the sources, keeps the history, and builds the page's JSON."""

    def __init__(
        self,
        sources: Sequence[str],
        registries: Sequence[CollectorRegistry] = (),
        *,
        history: int = 300,
        min_interval_s: float = 0.9,
        timeout_s: float = 0.8,
    ) -> None:
        self._sources = list(sources)
        self._registries = list(registries)
        self._points: deque[_Point] = deque(maxlen=history)
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._last: Scrape | None = None
        self._last_at = 0.0
        self.status = [SourceStatus(url) for url in self._sources]

    async def scrape(self) -> Scrape:
        async def one(client: httpx.AsyncClient, i: int) -> str | None:
            status = self.status[i]
            try:
                response = await client.get(status.url)
                response.raise_for_status()
            except httpx.HTTPError as e:
                status.up, status.error = False, f"{type(e).__name__}: {e}"[:200]
                return None
            status.up, status.error = True, None
            return response.text

        texts: list[str] = []
        if self._sources:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                results = await asyncio.gather(*(one(client, i) for i in range(len(self._sources))))
            texts.extend(t for t in results if t is not None)
        texts.extend(generate_latest(r).decode() for r in self._registries)
        return parse_metrics(texts)

    async def data(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last_at >= self._min_interval_s:
                scrape = await self.scrape()
                self._points.append(self._point(scrape, self._last, now - self._last_at))
                self._last, self._last_at = scrape, now
            return self._render()

    def _point(self, s: Scrape, prev: Scrape | None, dt: float) -> _Point:
        point = _Point(t_ms=time.time_ns() // 1_000_000)
        charts = point.charts

        def rate(name: str, **match: str) -> float | None:
            if prev is None or dt <= 0:
                return None
            inc = _increase(total(s, name, **match), total(prev, name, **match))
            return None if inc is None else inc / dt

        lag: dict[str, float | None] = {}
        for labels, value in sorted((s.get("kafka_consumergroup_lag") or {}).items()):
            d = dict(labels)
            lag[f"{d.get('consumergroup')} {d.get('topic')}[{d.get('partition')}]"] = value
        charts["lag"] = lag
        charts["commands"] = {
            "applied/s": rate("exchange_engine_commands_total", result="applied"),
            "rejected/s": rate("exchange_engine_commands_total", result="rejected"),
        }
        charts["settlement"] = {
            "events/s": rate("exchange_settlement_events_total"),
            "outputs/s": rate("exchange_settlement_outputs_total"),
        }

        def quantile_ms(q: float, name: str) -> float | None:
            """The q-quantile of the observations since the previous sample."""
            if prev is None:
                return None
            before = dict(buckets(prev, name))
            window = [(le, _increase(c, before.get(le, 0.0)) or 0.0) for le, c in buckets(s, name)]
            value = histogram_quantile(q, window)
            return None if value is None else value * 1000

        freshness = "exchange_pipeline_freshness_seconds"
        charts["freshness"] = {
            "p50 ms": quantile_ms(0.50, freshness),
            "p99 ms": quantile_ms(0.99, freshness),
            # The first leg alone: the rest of p99 is engine-output -> settlement -> store.
            "engine p99 ms": quantile_ms(0.99, "exchange_engine_publish_latency_seconds"),
        }
        published = maximum(s, "exchange_engine_sequence")
        settled = maximum(s, "exchange_settlement_sequence_settled")
        charts["behind"] = {
            "outputs": None
            if published is None or settled is None
            else max(0.0, published - settled),
        }
        charts["gateway"] = {"requests/s": rate("exchange_gateway_requests_total")}
        return point

    def _render(self) -> dict[str, Any]:
        points = list(self._points)
        titles = {
            "lag": "Consumer lag (records)",
            "commands": "Engine commands/s",
            "settlement": "Settlement events/s",
            "freshness": "Freshness (ms): gateway -> store; gateway -> engine output",
            "behind": "Settlement behind engine (outputs)",
            "gateway": "Gateway requests/s",
        }
        charts = []
        for chart_id, title in titles.items():
            names: list[str] = []
            for p in points:
                for name in p.charts.get(chart_id, {}):
                    if name not in names:
                        names.append(name)
            series = {n: [p.charts.get(chart_id, {}).get(n) for p in points] for n in names}
            charts.append({"id": chart_id, "title": title, "series": series})
        return {
            "t": [p.t_ms for p in points],
            "charts": charts,
            "sources": [{"url": st.url, "up": st.up, "error": st.error} for st in self.status],
        }


def dashboard_router(
    sources: Sequence[str],
    *,
    registries: Sequence[CollectorRegistry] = (),
    history: int = 300,
    min_interval_s: float = 0.9,
) -> APIRouter:
    """``GET /dashboard`` (the page), ``/dashboard/data`` (its JSON) and its two assets.

    ``sources``: ``/metrics`` URLs to scrape (e.g. :func:`exchange.metrics.stack_metrics_urls`);
    ``registries``: registries of this process to include (e.g. the gateway's own);
    ``min_interval_s``: data requests closer together than this share one sample.
    """
    page = (STATIC_DIR / "dashboard.html").read_bytes()
    assets = {name: (STATIC_DIR / name).read_bytes() for name in _ASSETS}
    sampler = DashboardSampler(sources, registries, history=history, min_interval_s=min_interval_s)
    router = APIRouter()

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @router.get("/dashboard/data", include_in_schema=False)
    async def dashboard_data() -> Response:
        return JSONResponse(await sampler.data(), headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/assets/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            return JSONResponse(
                {"success": False, "error": {"code": "NOT_FOUND", "message": "no such asset"}},
                status_code=404,
            )
        return Response(body, media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})

    return router
