"""`exchange infra` without the JVMs: what it writes and how it fails (make test tier)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.infra import (
    InfraConfig,
    InfraError,
    InfraState,
    cassandra_yaml,
    ensure_jars,
    kafka_properties,
    new_cluster_id,
)
from ops.versions import CASSANDRA_VERSION, KAFKA_VERSION


def _config(tmp_path: Path) -> InfraConfig:
    return InfraConfig(
        data_dir=tmp_path / "infra",
        cache_dir=tmp_path / "cache",
        pom=tmp_path / "pom.xml",
        kafka_port=19092,
        kafka_controller_port=19093,
        cassandra_port=19042,
        cassandra_storage_port=17000,
    )


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kafka_properties_when_rendered_are_single_node_kraft_without_auto_create(
    tmp_path: Path,
) -> None:
    props = dict(line.split("=", 1) for line in kafka_properties(_config(tmp_path)).splitlines())

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["auto.create.topics.enable"] == "false"
    assert int(props["log.retention.hours"]) > 0
    assert props["log.dirs"] == str(tmp_path / "infra" / "kafka" / "log")


def test_cassandra_yaml_when_rendered_listens_on_loopback_ports_under_data_dir(
    tmp_path: Path,
) -> None:
    yaml = cassandra_yaml(_config(tmp_path))

    assert "native_transport_port: 19042\n" in yaml
    assert "storage_port: 17000\n" in yaml
    assert "listen_address: 127.0.0.1\n" in yaml
    assert f"data_file_directories: [{tmp_path / 'infra' / 'cassandra' / 'data'}]" in yaml


def test_env_when_state_has_both_prints_the_three_exports() -> None:
    state = InfraState(
        keeper_pid=1, ready=True, host="127.0.0.1", kafka_port=9092, cassandra_port=9042
    )

    assert state.exports() == [
        "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092",
        "export CASSANDRA_CONTACT_POINTS=127.0.0.1",
        "export CASSANDRA_PORT=9042",
    ]


def test_versions_when_read_are_the_pinned_releases() -> None:
    assert (KAFKA_VERSION, CASSANDRA_VERSION) == ("4.1.1", "5.0.6")


def test_infra_up_when_java_is_missing_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        "PATH": str(empty),
        "EXCHANGE_DATA_DIR": str(tmp_path / "data"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }

    done = _cli(["infra", "up"], env)

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "`java` not found on PATH: install a Java 17 runtime" in done.stderr


def test_infra_jars_when_mvn_is_missing_and_not_cached_says_what_to_install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(InfraError) as e:
        ensure_jars(_config(tmp_path), "kafka")

    assert str(e.value) == "`mvn` not found on PATH: install Maven (Debian: apt-get install maven)"


def test_infra_env_when_not_running_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "EXCHANGE_DATA_DIR": str(tmp_path)}

    done = _cli(["infra", "env"], env)

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "exchange: infra is not running: `exchange infra up` first\n"


def test_infra_down_when_not_running_stops_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "EXCHANGE_DATA_DIR": str(tmp_path)}

    done = _cli(["infra", "down"], env)

    assert (done.returncode, done.stdout) == (0, "infra: stopped nothing (not running)\n")


def test_cluster_id_when_generated_never_starts_with_a_dash_and_is_22_chars() -> None:
    ids = [new_cluster_id() for _ in range(2000)]  # ~1 in 64 raw ids starts with "-"

    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
