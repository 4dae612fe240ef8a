"""EXCHANGE_DASHBOARD_SOURCES: where the gateway's /dashboard scrapes, e.g. under compose."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from exchange.metrics import stack_metrics_urls
from exchange.settings import load_settings

PORTS = {
    "EXCHANGE_ENGINE_METRICS_PORT": "9201",
    "EXCHANGE_SETTLEMENT_METRICS_PORT": "9202",
    "EXCHANGE_LAG_METRICS_PORT": "9203",
}


def test_dashboard_sources_when_unset_are_the_local_stacks_ports() -> None:
    settings = load_settings({**PORTS, "EXCHANGE_HOST": "0.0.0.0"})
    assert stack_metrics_urls(settings) == [
        "http://127.0.0.1:9201/metrics",
        "http://127.0.0.1:9202/metrics",
        "http://127.0.0.1:9203/metrics",
    ]


def test_dashboard_sources_when_set_replace_the_local_ports() -> None:
    settings = load_settings(
        {
            **PORTS,
            "EXCHANGE_DASHBOARD_SOURCES": " http://engine:9101/metrics, http://settlement-1:9102/metrics,",
        }
    )
    assert stack_metrics_urls(settings) == [
        "http://engine:9101/metrics",
        "http://settlement-1:9102/metrics",
    ]


def test_dashboard_sources_when_not_urls_stop_startup_with_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"EXCHANGE_DASHBOARD_SOURCES": "engine:9101/metrics"})
    message = str(e.value)
    assert message.startswith("EXCHANGE_DASHBOARD_SOURCES=") and "\n" not in message
    assert "not an http(s) URL" in message
