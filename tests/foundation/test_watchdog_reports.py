"""The consumer watchdog reports a healthy consumer as such: the stalled gauge is 0, not absent
(compose/grafana's "Consumers stalled" panel and the ConsumerStalled alert need the series)."""

from __future__ import annotations

from typing import Any, cast

from exchange.metrics import WatchdogMetrics, new_registry
from exchange.watchdog import ConsumerWatchdog


def _stalled(registry: Any, service: str) -> float | None:
    value = registry.get_sample_value("exchange_consumer_stalled", {"service": service})
    return None if value is None else float(value)


def test_watchdog_when_a_check_finds_nothing_waiting_reports_not_stalled() -> None:
    registry = new_registry()
    watchdog = ConsumerWatchdog("engine", sink=WatchdogMetrics(registry), clock=lambda: 100.0)
    assert _stalled(registry, "engine") is None
    # No assigned partition: nothing waits, and the consumer is not even asked.
    assert watchdog.check(cast(Any, None), {}) is None
    assert _stalled(registry, "engine") == 0.0
    assert registry.get_sample_value("exchange_consumer_lag", {"service": "engine"}) == 0.0


def test_watchdog_when_its_sink_is_attached_late_reports_at_the_next_check() -> None:
    now = [100.0]
    watchdog = ConsumerWatchdog("gateway", clock=lambda: now[0])
    watchdog.check(cast(Any, None), {})
    registry = new_registry()
    watchdog.sink = WatchdogMetrics(registry)  # as the gateway attaches its metrics
    now[0] += 10
    watchdog.check(cast(Any, None), {})
    assert _stalled(registry, "gateway") == 0.0
