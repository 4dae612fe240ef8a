"""Access through the real engine (issue #14), with settlement *stopped*: the gateway decides
nothing from the read model. Users and keys are made through the admin API, so they travel
the log; cancels are decided by the engine alone.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_testkit import Gateway, envelope_data, envelope_error, run_gateway

from engine.engine import Engine
from engine.markets import Markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from entrypoints import cli
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.settings import load_settings
from exchange.topics import Topics, ensure_topics
from gateway.auth.signing import private_key_b64, public_key_b64, write_key_file
from tests.support.eventually import eventually
from tests.support.signing import new_signer

pytestmark = pytest.mark.kafka

WAIT = "?wait=true&timeout_ms=10000"


@pytest.fixture(scope="module")
def engine_only(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, markets: Markets, codec: Codec
) -> Iterator[tuple[Gateway, Topics, Path]]:
    """A gateway and the engine service, and no settlement: the store stays empty."""
    topics = Topics.with_prefix(f"x{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    tmp: Path = tmp_path_factory.mktemp("access")
    engine = EngineService(
        bootstrap=kafka_bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"engine-{topics.orders.name}",
            snapshot_every_commands=10**9,
            snapshot_every_s=3600.0,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(tmp / "snapshots"),
    )
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with run_gateway(
            bootstrap=kafka_bootstrap, topics=topics, store_path=tmp / "exchange.sqlite3",
            markets=markets, codec=codec,
        ) as gw:  # fmt: skip
            yield gw, topics, tmp
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture
def gw(engine_only: tuple[Gateway, Topics, Path]) -> Gateway:
    return engine_only[0]


def _funded(gw: Gateway) -> int:
    user, _ = gw.create_user()
    body = {"user_id": user, "asset": "USDT", "amount": "10000"}
    assert envelope_data(gw.client.post(f"/api/v1/deposit{WAIT}", json=body), 200)
    return user


def _place(gw: Gateway, user: int, price: str = "10.00", symbol: str = "BTC_USDT") -> str:
    body = {"symbol": symbol, "side": "BUY", "order_type": "LIMIT", "price": price,
            "quantity": "0.1", "user_id": user}  # fmt: skip
    data = envelope_data(gw.client.post(f"/api/v1/order/create{WAIT}", json=body), 200)
    assert isinstance(data, dict) and data["status"] == "NEW", data
    return str(data["order_id"])


def test_cancel_when_placed_and_cancelled_at_once_with_settlement_stopped_succeeds(
    gw: Gateway,
) -> None:
    user = _funded(gw)
    body = {"symbol": "BTC_USDT", "side": "BUY", "order_type": "LIMIT", "price": "10.00",
            "quantity": "0.1", "user_id": user}  # fmt: skip
    placed = envelope_data(gw.client.post("/api/v1/order/create", json=body), 202)
    assert isinstance(placed, dict)
    cancel = {"user_id": user, "symbol": "BTC_USDT", "order_id": placed["order_id"]}
    data = envelope_data(gw.client.post(f"/api/v1/order/cancel{WAIT}", json=cancel), 200)
    assert isinstance(data, dict)
    assert (data["order_id"], data["status"]) == (placed["order_id"], "CANCELLED")
    assert gw.store.max_sequence() == 0  # nothing was settled: the store was never asked


@pytest.mark.parametrize("case", ["another user's", "another market's", "unknown", "completed"])
def test_cancel_when_engine_refuses_it_answers_404_order_not_found(gw: Gateway, case: str) -> None:
    owner, other = _funded(gw), _funded(gw)
    order_id = _place(gw, owner)
    user, symbol = owner, "BTC_USDT"
    if case == "another user's":
        user = other
    elif case == "another market's":
        symbol = "ETH_USDT"
    elif case == "unknown":
        order_id = "987654321"
    else:
        body = {"user_id": owner, "symbol": "BTC_USDT", "order_id": order_id}
        envelope_data(gw.client.post(f"/api/v1/order/cancel{WAIT}", json=body), 200)
    body = {"user_id": user, "symbol": symbol, "order_id": order_id}
    response = gw.client.post(f"/api/v1/order/cancel{WAIT}", json=body)
    assert envelope_error(response) == (404, "ORDER_NOT_FOUND")


def test_cancel_all_when_wait_returns_every_cancelled_order_then_none(gw: Gateway) -> None:
    user = _funded(gw)
    ids = [_place(gw, user, price) for price in ("10.00", "11.00", "12.00")]
    other_market = _place(gw, user, "10.00", symbol="ETH_USDT")
    body = {"symbol": "BTC_USDT", "user_id": user}
    data = envelope_data(gw.client.post(f"/api/v1/order/cancel-all{WAIT}", json=body), 200)
    assert isinstance(data, dict)
    assert [(o["order_id"], o["status"]) for o in data["cancelled"]] == [
        (i, "CANCELLED") for i in ids
    ]
    again = envelope_data(gw.client.post(f"/api/v1/order/cancel-all{WAIT}", json=body), 200)
    assert again == {"cancelled": []}
    accepted = envelope_data(gw.client.post("/api/v1/order/cancel-all", json=body), 202)
    assert isinstance(accepted, dict) and accepted["status"] == "CANCEL_REQUESTED"
    cancel = {"user_id": user, "symbol": "ETH_USDT", "order_id": other_market}
    envelope_data(gw.client.post(f"/api/v1/order/cancel{WAIT}", json=cancel), 200)  # still open


def test_deposit_when_operator_names_an_unknown_user_and_waits_answers_404(gw: Gateway) -> None:
    body = {"user_id": 999_999, "asset": "USDT", "amount": "1"}
    response = gw.client.post(f"/api/v1/deposit{WAIT}", json=body)
    assert envelope_error(response) == (404, "USER_NOT_FOUND")


def test_admin_when_user_created_its_key_works_at_once_and_refusals_have_codes(
    gw: Gateway,
) -> None:
    user, signer = gw.create_user()  # 201 only once this gateway accepts the key
    with gw.signed(signer) as client:
        assert envelope_data(client.get("/api/v1/balances"), 200) == []
    again = gw.client.post("/api/v1/admin/users", json={"public_key": signer.public_key})
    assert envelope_error(again) == (409, "DUPLICATE_API_KEY")
    second = new_signer()
    added = gw.client.post(
        f"/api/v1/admin/users/{user}/keys", json={"public_key": second.public_key}
    )
    assert envelope_data(added, 201) == {"api_key": second.api_key}
    with gw.signed(second) as client:
        envelope_data(client.get("/api/v1/balances"), 200)
    nobody = gw.client.post(
        "/api/v1/admin/users/888888/keys", json={"public_key": new_signer().public_key}
    )
    assert envelope_error(nobody) == (404, "USER_NOT_FOUND")
    bad = gw.client.post("/api/v1/admin/users", json={"public_key": "bm90IGEga2V5"})
    assert envelope_error(bad) == (400, "INVALID_REQUEST")
    unknown = gw.client.delete("/api/v1/admin/keys/k000000000000000000000000")
    assert envelope_error(unknown) == (404, "API_KEY_NOT_FOUND")


def test_revoke_when_answered_the_key_is_refused_here_and_by_another_gateway_within_1s(
    engine_only: tuple[Gateway, Topics, Path], markets: Markets, codec: Codec,
    kafka_bootstrap: str,
) -> None:  # fmt: skip
    gw, topics, tmp = engine_only
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=topics, store_path=tmp / "second.sqlite3",
        markets=markets, codec=codec,
    ) as second:  # fmt: skip
        _, signer = gw.create_user()
        started = time.monotonic()
        with second.signed(signer) as client:  # the other gateway learns it from the stream
            eventually(lambda: client.get("/api/v1/balances").status_code == 200, timeout_s=5)
        learnt = time.monotonic() - started
        revoked = gw.client.delete(f"/api/v1/admin/keys/{signer.api_key}")
        started = time.monotonic()
        assert envelope_data(revoked, 200) == {"api_key": signer.api_key, "revoked": True}
        with gw.signed(signer) as client:  # this gateway: at once
            assert envelope_error(client.get("/api/v1/balances")) == (401, "UNAUTHENTICATED")
        with second.signed(signer) as client:

            def refused() -> Any:
                return client.get("/api/v1/balances").status_code == 401

            eventually(refused, timeout_s=5, interval_s=0.01)
        refused_after = time.monotonic() - started
        assert learnt < 1.0 and refused_after < 1.0, (learnt, refused_after)
        again = gw.client.delete(f"/api/v1/admin/keys/{signer.api_key}")
        assert envelope_data(again, 200) == {"api_key": signer.api_key, "revoked": True}


def test_cli_when_operator_creates_a_user_its_key_file_signs_exchange_call(
    gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("EXCHANGE_")]:
        monkeypatch.delenv(name)
    operator_file = tmp_path / "operator.key"
    write_key_file(operator_file, private_key_b64(gw.keys.operator.key))
    api = ["--url", gw.url]
    alice = tmp_path / "alice.key"
    assert cli.main(["users", "create", "--label", "alice", "--out", str(alice),
                     "--key", str(operator_file), *api]) == 0  # fmt: skip
    printed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[:2])
    user = int(printed["user_id"])
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    deposit = json.dumps({"user_id": user, "asset": "USDT", "amount": "5"})
    assert cli.main(["call", "POST", "/api/v1/deposit?wait=true", deposit,
                     "--key", str(operator_file), *api]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["data"]["available"] == "5.00000000"
    assert cli.main(["call", "GET", "/api/v1/balances", "--key", str(alice), *api]) == 0
    assert json.loads(capsys.readouterr().out) == {"success": True, "data": []}  # no settlement
    # A trader may not deposit; the command fails with the API's answer and exit 1.
    # (the body may also come after the options)
    assert cli.main(["call", "POST", "/api/v1/deposit", "--key", str(alice), *api, deposit]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "FORBIDDEN"


def test_up_when_no_operator_key_configured_generates_one_key_file_and_reuses_it(
    tmp_path: Path,
) -> None:
    settings = load_settings({"EXCHANGE_DATA_DIR": str(tmp_path)})
    first, path = cli.ensure_operator_key(settings)
    assert path == tmp_path / "operator.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [line] = path.read_text().splitlines()
    assert len(base64.b64decode(line, validate=True)) == 32
    assert first.exchange_operator_public_key == public_key_b64(line)
    again, _ = cli.ensure_operator_key(settings)
    assert again.exchange_operator_public_key == first.exchange_operator_public_key
    configured = settings.model_copy(
        update={"exchange_operator_public_key": new_signer().public_key}
    )
    assert cli.ensure_operator_key(configured) == (configured, None)
