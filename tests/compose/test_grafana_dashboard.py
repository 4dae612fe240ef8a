"""Grafana: the dashboard JSON against Grafana's schema, its datasource, and its queries.

Grafana's dashboard schema comes as typed models generated from it in grafana-foundation-sdk
(Grafana Labs): a dashboard, each panel, each panel plugin's options and field config, and
each Prometheus query must survive a round trip through them with every key kept, so a
misspelt or misplaced key fails here. That the queries return data is proven against a real
Prometheus in test_prometheus_queries.py (e2e).
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from compose_testkit import (
    DASHBOARDS,
    DATASOURCES,
    alert_rules,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    panels,
    substitute,
    variable_values,
)
from grafana_foundation_sdk.models import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.models import dashboard as schema

from engine.service.runner import EngineStats
from exchange.metrics import (
    EngineMetrics,
    GatewayMetrics,
    SettlementMetrics,
    WatchdogMetrics,
    new_registry,
)
from ops.lag import LagCollector
from settlement.service import SettlementStats

PLUGINS: dict[str, Any] = {"timeseries": timeseries, "stat": stat, "bargauge": bargauge}


def _plain(value: Any) -> Any:
    """A model's to_json() output with nested models turned into plain JSON."""
    return json.loads(json.dumps(value, default=lambda o: o.to_json()))


def _lost_keys(original: Any, round_trip: Any, path: str = "") -> list[str]:
    if isinstance(original, dict):
        if not isinstance(round_trip, dict):
            return [path or "."]
        lost = [f"{path}.{k}" for k in original if k not in round_trip]
        for k in original.keys() & round_trip.keys():
            lost += _lost_keys(original[k], round_trip[k], f"{path}.{k}")
        return lost
    if isinstance(original, list):
        if not isinstance(round_trip, list) or len(original) != len(round_trip):
            return [path]
        return [
            k
            for i, (a, b) in enumerate(zip(original, round_trip, strict=True))
            for k in _lost_keys(a, b, f"{path}[{i}]")
        ]
    return []


def _datasource_uid() -> str:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def _exported_names() -> set[str]:
    """Every metric name the services and our lag exporter export (sample names)."""
    engine, settlement, gateway, watchdog = (new_registry() for _ in range(4))
    EngineMetrics(engine).watch(EngineStats())
    SettlementMetrics(settlement).watch(SettlementStats())
    GatewayMetrics(gateway)
    WatchdogMetrics(watchdog)
    names: set[str] = set()
    for registry in (engine, settlement, gateway, watchdog):
        for m in registry.collect():
            names |= {s.name for s in m.samples}
            # Labelled counters and histograms show no sample until first used.
            if m.type == "gauge":
                names.add(m.name)
            elif m.type == "counter":
                names.add(m.name + "_total")
            elif m.type == "histogram":
                names |= {m.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    lag = LagCollector(cast(Any, None))  # describe() never touches the monitor
    names |= {m.name for m in lag.describe()}
    return names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_when_round_tripped_through_grafanas_schema_keeps_every_key(path: Any) -> None:
    raw = json.loads(path.read_text())
    model = schema.Dashboard.from_json(raw)
    assert _lost_keys(raw, _plain(model.to_json())) == []
    for p in panels(raw):
        assert _lost_keys(p, _plain(schema.Panel.from_json(p).to_json())) == [], p["title"]
        plugin = PLUGINS[p["type"]]  # only panel types whose schema we can check
        options = _plain(plugin.Options.from_json(p["options"]).to_json())
        assert _lost_keys(p["options"], options) == [], p["title"]
        custom = p["fieldConfig"]["defaults"].get("custom")
        if custom is not None:
            assert (
                _lost_keys(custom, _plain(plugin.FieldConfig.from_json(custom).to_json())) == []
            ), p["title"]
        for t in p["targets"]:
            assert _lost_keys(t, _plain(prometheus.Dataquery.from_json(t).to_json())) == [], (
                p["title"],
                t["refId"],
            )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_when_read_uses_only_the_provisioned_datasource(path: Any) -> None:
    uid = _datasource_uid()
    dash = dashboard(path)
    refs = [p["datasource"] for p in panels(dash)]
    refs += [t["datasource"] for p in panels(dash) for t in p["targets"]]
    refs += [v["datasource"] for v in dash["templating"]["list"] if "datasource" in v]
    assert refs and all(r == {"type": "prometheus", "uid": uid} for r in refs)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_when_laid_out_has_unique_ids_and_fits_the_grid(path: Any) -> None:
    dash = dashboard(path)
    everything = dash["panels"] + [q for p in dash["panels"] for q in p.get("panels", [])]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    for p in everything:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    for p in panels(dash):
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_when_read_has_every_panel_the_issue_asks_for() -> None:
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries()))
    wanted = {
        "kafka_consumergroup_lag",  # lag per group, topic and partition (dashboard 7589)
        "kafka_consumergroup_lag_sum",
        "kafka_topic_partition_current_offset",  # records in per topic (7589)
        "kafka_consumergroup_current_offset",  # records out per group and topic (7589)
        "exchange_engine_commands_total",
        "exchange_engine_rejections_total",
        "exchange_settlement_events_total",
        "exchange_settlement_batch_size_bucket",
        "exchange_store_write_seconds_bucket",
        "exchange_pipeline_freshness_seconds_bucket",
        "exchange_engine_publish_latency_seconds_bucket",
        "exchange_gateway_requests_total",
        "exchange_gateway_request_seconds_bucket",
        "exchange_dlq_records_total",
    }
    assert wanted <= used, sorted(wanted - used)
    by_status = [
        q.expr for q in dashboard_queries() if "exchange_gateway_request_seconds_bucket" in q.expr
    ]
    assert by_status and all("status" in e for e in by_status)


def test_dashboard_and_alert_queries_when_read_name_only_exported_metrics() -> None:
    exported = _exported_names()
    queries = [q.expr for q in dashboard_queries()] + [r["expr"] for r in alert_rules()]
    for expr in queries:
        assert metric_names(expr) <= exported, (expr, sorted(metric_names(expr) - exported))


def test_dashboard_variables_when_substituted_leave_no_variable() -> None:
    for path in DASHBOARDS:
        values = variable_values(dashboard(path))
        assert values["lag_exporter"] == "exchange-lag"  # ours by default: right on Tansu too
        for q in dashboard_queries():
            assert "$" not in q.expr, q
        with pytest.raises(KeyError):
            substitute('up{job=~"$nope"}', values)
