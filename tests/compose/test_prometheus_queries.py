"""A real Prometheus (Debian's `prometheus`) with compose/prometheus/prometheus.yml, scraping
a running stack: every dashboard panel's and every alert rule's query returns data.

The stack is ``exchange up`` against the real stack when ``make e2e`` exports
KAFKA_BOOTSTRAP_SERVERS / CASSANDRA_* (on its own topics and keyspace, so it shares a
cluster with anything), else the embedded one. Prometheus runs the compose configuration with
the targets rewritten to loopback and nothing else changed (its rules file beside it), while
``exchange loadgen`` drives the gateway; one command is refused on purpose and one undecodable
record is sent to ``orders``, so rejections and the DLQ have data and DeadLetterRecords fires.
There is no danielqsj/kafka-exporter here (no Docker): its target is down, which is what
gives TargetDown's query data; the dashboard's queries run with its variables as it opens
(our lag exporter).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from compose_testkit import (
    ALERT_RULES,
    PROMETHEUS_CONFIG,
    Query,
    alert_queries,
    dashboard_queries,
    load_yaml,
    variable_queries,
)

from exchange.kafka import make_producer
from ops.apiclient import signer_from_file
from ops.broker import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
HERE = Path(__file__).resolve().parent
EXCHANGE = str(Path(sys.executable).with_name("exchange"))  # the console script of the venv


def _need(tool: str | None, name: str) -> str:
    # Not a skip: the e2e tier requires Debian's prometheus package (.ci/run installs it).
    assert tool, f"{name} not found: apt-get install prometheus"
    return tool


@dataclass(frozen=True, slots=True)
class Stack:
    api: str
    ports: dict[str, int]  # Prometheus job -> loopback port
    bootstrap: str
    orders_topic: str
    env: dict[str, str]  # what `exchange up` ran with: loadgen finds the stack through it


def _wait(
    what: str, proc: subprocess.Popen[bytes], log: Path, probe: Any, timeout_s: float = 180
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-4000:]}"
        try:
            if probe():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} not ready:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    ports = {
        "gateway": free_port(),
        "engine": free_port(),
        "settlement": free_port(),
        "exchange-lag": free_port(),
    }
    run = uuid.uuid4().hex[:8]
    env.update(
        {
            "EXCHANGE_DATA_DIR": str(data),
            "EXCHANGE_PORT": str(ports["gateway"]),
            "EXCHANGE_ENGINE_METRICS_PORT": str(ports["engine"]),
            "EXCHANGE_SETTLEMENT_METRICS_PORT": str(ports["settlement"]),
            "EXCHANGE_LAG_METRICS_PORT": str(ports["exchange-lag"]),
        }
    )
    orders = "orders"
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):  # a shared cluster: topics of our own
        orders = f"prom-{run}-orders"
        env.update(
            {
                "EXCHANGE_TOPIC_ORDERS": orders,
                "EXCHANGE_TOPIC_ENGINE_OUTPUT": f"prom-{run}-engine-output",
                "EXCHANGE_TOPIC_ORDERS_DLQ": f"prom-{run}-orders.dlq",
                "EXCHANGE_TOPIC_ENGINE_OUTPUT_DLQ": f"prom-{run}-engine-output.dlq",
                "EXCHANGE_TOPIC_ENGINE_SNAPSHOTS": f"prom-{run}-engine-snapshots",
            }
        )
    if env.get("CASSANDRA_CONTACT_POINTS"):
        env["CASSANDRA_KEYSPACE"] = f"prom_{run}"
    log = data / "stack.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([EXCHANGE, "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{ports['gateway']}"
    try:
        _wait(
            "exchange up",
            proc,
            log,
            lambda: httpx.get(f"{api}/ready", timeout=5).status_code == 200,
        )
        info = json.loads((data / "stack.json").read_text())
        yield Stack(
            api=api,
            ports=ports,
            bootstrap=str(info["bootstrap_servers"]),
            orders_topic=orders,
            env=env,
        )
    finally:
        code = _stop(proc)
        assert code == 0, log.read_text()[-4000:]


def _loopback_config(ports: dict[str, int]) -> dict[str, Any]:
    """compose/prometheus/prometheus.yml with each job's targets on loopback; nothing else
    changes."""
    config = load_yaml(PROMETHEUS_CONFIG)
    for job in config["scrape_configs"]:
        name = job["job_name"]
        for sd in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[sd]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
    return dict(config)


def _without_targets(config: dict[str, Any]) -> dict[str, Any]:
    def targets(key: str) -> bool:
        return key == "static_configs" or key.endswith("_sd_configs")

    jobs = [{k: v for k, v in job.items() if not targets(k)} for job in config["scrape_configs"]]
    return {**config, "scrape_configs": jobs}


def test_loopback_config_when_built_changes_only_the_targets() -> None:
    ports = {job["job_name"]: 1 for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    rewritten = _loopback_config(ports)
    assert _without_targets(rewritten) == _without_targets(load_yaml(PROMETHEUS_CONFIG))
    assert all(
        job["static_configs"] == [{"targets": ["127.0.0.1:1"]}]
        for job in rewritten["scrape_configs"]
    )


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _need(PROMETHEUS, "prometheus")
    home = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    # kafka-exporter: a loopback port nothing listens on (no Docker here, see the module doc).
    ports = {**stack.ports, "prometheus": port, "kafka-exporter": free_port()}
    config = _loopback_config(ports)
    (home / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ALERT_RULES, home / ALERT_RULES.name)
    log = home / "prometheus.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(
            "prometheus",
            proc,
            log,
            lambda: httpx.get(f"{url}/-/ready", timeout=5).status_code == 200,
            60,
        )
        yield url
    finally:
        _stop(proc, signal.SIGTERM)


def _series(prometheus: str, expr: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


@pytest.fixture(scope="module")
def loaded(stack: Stack, prometheus: str) -> str:
    """The stack after a short load, a rejection and one dead letter, scraped meanwhile."""
    time.sleep(6)  # a first scrape of every target before the load
    load = subprocess.run(
        [
            EXCHANGE,
            "loadgen",
            "--via",
            "http",
            "--url",
            stack.api,
            "--rate",
            "200",
            "--duration",
            "15",
            "--users",
            "20",
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert load.returncode == 0, load.stdout + load.stderr
    # A command the engine refuses (a deposit to a user it does not know), signed by the
    # stack's operator (`exchange up` wrote its key file).
    operator = signer_from_file(Path(stack.env["EXCHANGE_DATA_DIR"]) / "operator.key")
    rejected = httpx.post(
        f"{stack.api}/api/v1/deposit",
        params={"wait": "true"},
        json={"user_id": 987_654_321, "asset": "USDT", "amount": "1"},
        timeout=30,
        auth=operator,
    )
    assert rejected.status_code == 404, rejected.text  # USER_NOT_FOUND: refused by the engine
    producer = make_producer(stack.bootstrap)
    producer.produce(stack.orders_topic, value=b"\x00 not an OrderCommand")
    assert producer.flush(10) == 0
    return prometheus


def test_promtool_when_checking_the_compose_config_and_rules_passes() -> None:
    promtool = _need(PROMTOOL, "promtool")
    for args in (
        ["check", "config", str(PROMETHEUS_CONFIG)],
        ["check", "rules", str(ALERT_RULES)],
        ["test", "rules", str(HERE / "alerts_test.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)


def test_every_dashboard_and_alert_query_when_the_stack_ran_a_load_returns_series(
    loaded: str,
) -> None:
    queries: list[Query] = dashboard_queries() + variable_queries() + alert_queries()
    empty = list(queries)
    deadline = time.monotonic() + 120
    while empty and time.monotonic() < deadline:
        empty = [q for q in empty if not _series(loaded, q.expr)]
        if empty:
            time.sleep(2)
    assert not empty, "no data:\n" + "\n".join(f"{q.where}: {q.expr}" for q in empty)


def test_dead_letter_alert_when_a_record_is_undecodable_fires(loaded: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        resp = httpx.get(f"{loaded}/api/v1/alerts", timeout=10).json()
        firing = {
            a["labels"]["alertname"] for a in resp["data"]["alerts"] if a["state"] == "firing"
        }
        if "DeadLetterRecords" in firing:
            break
        assert time.monotonic() < deadline, resp
        time.sleep(2)
    dlq = _series(loaded, 'exchange_dlq_records_total{service="engine"}')
    assert float(dlq[0]["value"][1]) >= 1
