from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from exchange.settings import load_settings


def test_load_settings_when_environment_empty_uses_embedded_defaults() -> None:
    s = load_settings({})
    assert s.embedded_broker and s.embedded_store
    assert s.exchange_port == 8000
    assert s.exchange_data_dir == Path("./data")
    assert s.exchange_topic_orders == "orders"
    assert s.exchange_engine_output_partitions == 4


def test_load_settings_when_cassandra_hosts_listed_splits_them() -> None:
    s = load_settings({"CASSANDRA_CONTACT_POINTS": "10.0.0.1, cass-2 ,"})
    assert s.cassandra_contact_points == ("10.0.0.1", "cass-2")
    assert not s.embedded_store


def test_load_settings_when_bootstrap_blank_treats_it_as_unset() -> None:
    assert load_settings({"KAFKA_BOOTSTRAP_SERVERS": "  "}).embedded_broker


def test_settings_when_loaded_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        s.exchange_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EXCHANGE_PORT": "eighty"}, "EXCHANGE_PORT='eighty'"),
        ({"EXCHANGE_PORT": "70000"}, "EXCHANGE_PORT='70000'"),
        ({"EXCHANGE_ENGINE_OUTPUT_PARTITIONS": "0"}, "EXCHANGE_ENGINE_OUTPUT_PARTITIONS='0'"),
        ({"EXCHANGE_TOPIC_ORDERS": "has space"}, "EXCHANGE_TOPIC_ORDERS='has space'"),
        ({"EXCHANGE_LOG_LEVEL": "LOUD"}, "EXCHANGE_LOG_LEVEL='LOUD'"),
        ({"CASSANDRA_PORT": "-1"}, "CASSANDRA_PORT='-1'"),
        ({"EXCHANGE_SETTLEMENT_COMMIT_EVERY_MS": "-5"}, "EXCHANGE_SETTLEMENT_COMMIT_EVERY_MS='-5'"),
        (
            {"EXCHANGE_SETTLEMENT_COMMIT_EVERY_MS": "soon"},
            "EXCHANGE_SETTLEMENT_COMMIT_EVERY_MS='soon'",
        ),
        ({"EXCHANGE_PROT": "8000"}, "EXCHANGE_PROT: unknown setting"),
        ({"EXCHANGE_STALL_AFTER_SECONDS": "0"}, "EXCHANGE_STALL_AFTER_SECONDS='0'"),
        ({"EXCHANGE_STALL_AFTER_SECONDS": "never"}, "EXCHANGE_STALL_AFTER_SECONDS='never'"),
        (
            {"EXCHANGE_READY_URLS": "engine:9101/ready"},
            "EXCHANGE_READY_URLS='engine:9101/ready'",
        ),
        # access (issue #14)
        ({"EXCHANGE_OPERATOR_PUBLIC_KEY": "c2hvcnQ="}, "EXCHANGE_OPERATOR_PUBLIC_KEY='c2hvcnQ='"),
        ({"EXCHANGE_OPERATOR_PUBLIC_KEY": "not base64!"}, "EXCHANGE_OPERATOR_PUBLIC_KEY="),
        ({"EXCHANGE_AUTH_WINDOW_MS": "0"}, "EXCHANGE_AUTH_WINDOW_MS='0'"),
        ({"EXCHANGE_AUTH_WINDOW_MS": "5s"}, "EXCHANGE_AUTH_WINDOW_MS='5s'"),
        (
            {"EXCHANGE_RATE_LIMIT_ORDERS_PER_SECOND": "-1"},
            "EXCHANGE_RATE_LIMIT_ORDERS_PER_SECOND='-1'",
        ),
        (
            {"EXCHANGE_RATE_LIMIT_REQUESTS_PER_MINUTE": "lots"},
            "EXCHANGE_RATE_LIMIT_REQUESTS_PER_MINUTE='lots'",
        ),
    ],
)
def test_load_settings_when_value_invalid_raises_one_line_naming_the_variable(
    env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_cli_when_setting_invalid_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "topics"],
        env={
            "PATH": "/usr/bin:/bin",
            "EXCHANGE_PORT": "not-a-port",
            "EXCHANGE_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("exchange: configuration error: EXCHANGE_PORT='not-a-port'")


def test_load_settings_when_commit_interval_given_reads_it_as_milliseconds() -> None:
    assert load_settings({}).exchange_settlement_commit_every_ms == 200
    assert (
        load_settings(
            {"EXCHANGE_SETTLEMENT_COMMIT_EVERY_MS": "0"}
        ).exchange_settlement_commit_every_ms
        == 0
    )


def test_ready_urls_when_unset_are_the_local_engine_and_settlement_ready_endpoints() -> None:
    settings = load_settings(
        {
            "EXCHANGE_HOST": "0.0.0.0",
            "EXCHANGE_ENGINE_METRICS_PORT": "9201",
            "EXCHANGE_SETTLEMENT_METRICS_PORT": "0",
        }
    )
    assert settings.ready_urls == ("http://127.0.0.1:9201/ready",)
    assert load_settings({"EXCHANGE_READY_URLS": ""}).ready_urls == ()
    assert load_settings(
        {"EXCHANGE_READY_URLS": "http://engine:9101/ready, http://settlement:9102/ready"}
    ).ready_urls == ("http://engine:9101/ready", "http://settlement:9102/ready")


def test_load_settings_when_access_settings_given_reads_them() -> None:
    key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    s = load_settings(
        {
            "EXCHANGE_OPERATOR_PUBLIC_KEY": f" {key} ",
            "EXCHANGE_AUTH_WINDOW_MS": "2000",
            "EXCHANGE_RATE_LIMIT_ORDERS_PER_SECOND": "0",
            "EXCHANGE_RATE_LIMIT_REQUESTS_PER_MINUTE": "100",
        }
    )
    assert s.exchange_operator_public_key == key
    assert (s.exchange_auth_window_ms, s.exchange_rate_limit_orders_per_second) == (2000, 0)
    assert s.exchange_rate_limit_requests_per_minute == 100
    defaults = load_settings({})
    assert (
        defaults.exchange_operator_public_key is None and defaults.exchange_auth_window_ms == 5000
    )
    assert (
        defaults.exchange_rate_limit_orders_per_second,
        defaults.exchange_rate_limit_requests_per_minute,
    ) == (50, 6000)
