"""The composition root: settings -> a served gateway, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.errors import ConfigError
from entrypoints.gateway import build_gateway
from exchange.settings import load_settings
from exchange.topics import Topics
from gateway.app import GatewayAPI
from gateway.auth.signing import OPERATOR_KEY_ID
from ops.broker import free_port
from tests.support.eventually import eventually
from tests.support.signing import new_signer

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def _env(bootstrap: str, topics: Topics, data_dir: Path, port: int) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EXCHANGE_DATA_DIR": str(data_dir),
        "EXCHANGE_PORT": str(port),
        "EXCHANGE_TOPIC_ORDERS": topics.orders.name,
        "EXCHANGE_TOPIC_ENGINE_OUTPUT": topics.engine_output.name,
    }


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_build_gateway_when_settings_complete_wires_an_app_on_the_configured_address(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path
) -> None:
    port = free_port()
    settings = load_settings(_env(kafka_bootstrap, fresh_topics, tmp_path, port))
    gateway = build_gateway(settings)
    try:
        assert (gateway.server.config.host, gateway.server.config.port) == ("127.0.0.1", port)
        assert gateway.app.state.publisher.topic == fresh_topics.orders.name
    finally:
        gateway.store.close()


def test_build_gateway_when_wrap_given_serves_the_wrapper_around_the_app(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path
) -> None:
    settings = load_settings(_env(kafka_bootstrap, fresh_topics, tmp_path, free_port()))
    wrapped: list[object] = []

    def wrap(app: GatewayAPI) -> ASGIApp:
        async def outer(scope: Scope, receive: Receive, send: Send) -> None:
            await app(scope, receive, send)

        wrapped.append(app)
        return outer

    gateway = build_gateway(settings, wrap=wrap)
    try:
        assert wrapped == [gateway.app]
        assert gateway.server.config.app is gateway.asgi is not gateway.app
    finally:
        gateway.store.close()


def test_build_gateway_when_no_broker_is_known_stops_with_a_config_error(
    tmp_path: Path,
) -> None:
    settings = load_settings({"EXCHANGE_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        build_gateway(settings)


def test_run_gateway_when_sigterm_serves_until_then_and_exits_0(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path
) -> None:
    port = free_port()
    operator = new_signer()
    operator.api_key = OPERATOR_KEY_ID
    env = {
        **os.environ,
        **_env(kafka_bootstrap, fresh_topics, tmp_path, port),
        "EXCHANGE_OPERATOR_PUBLIC_KEY": operator.public_key,
    }
    code = (
        "import sys; from exchange.settings import load_settings; "
        "from entrypoints.gateway import run_gateway; sys.exit(run_gateway(load_settings()))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _healthy(url), what=f"{url} to answer /health")
        deposit = {"user_id": 1, "asset": "USDT", "amount": "1"}
        # The configured operator's key is accepted (EXCHANGE_OPERATOR_PUBLIC_KEY).
        response = httpx.post(f"{url}/api/v1/deposit", json=deposit, timeout=10, auth=operator)
        assert response.status_code == 202, response.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
