"""``?wait=true`` through the real pipeline: gateway -> orders -> engine service -> engine-output
-> gateway follower (and settlement -> SQLite for the reads), all on the real broker.

One pipeline for the module; each test uses its own users.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testkit import Gateway, envelope_data, envelope_error, run_gateway

from engine.engine import Engine
from engine.markets import Markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka

WAIT = "?wait=true&timeout_ms=10000"


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    markets: Markets,
    codec: Codec,
) -> Iterator[Gateway]:
    topics = Topics.with_prefix(f"p{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    tmp: Path = tmp_path_factory.mktemp("pipeline")
    store_path = tmp / "exchange.sqlite3"
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
    settlement_store = SqliteStore(store_path)
    settlement_store.init_schema()
    settlement = SettlementService(
        bootstrap=kafka_bootstrap,
        config=SettlementConfig(
            output_topic=topics.engine_output.name,
            output_dlq_topic=topics.engine_output_dlq.name,
            group_id=f"settlement-{topics.orders.name}",
            batch_max_ms=10,
        ),
        codec=codec,
        store=settlement_store,
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=engine.run, args=(stop,), daemon=True),
        threading.Thread(target=settlement.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        with run_gateway(
            bootstrap=kafka_bootstrap,
            topics=topics,
            store_path=store_path,
            markets=markets,
            codec=codec,
            init_schema=False,
        ) as gw:
            yield gw
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        settlement_store.close()


def _deposit(gw: Gateway, user: int, asset: str, amount: str) -> dict[str, Any]:
    data = envelope_data(
        gw.client.post(
            f"/api/v1/deposit{WAIT}", json={"user_id": user, "asset": asset, "amount": amount}
        ),
        200,
    )
    assert isinstance(data, dict)
    return data


def _order(
    gw: Gateway, user: int, side: str, price: str | None, quantity: str, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "user_id": user,
        "symbol": "BTC_USDT",
        "side": side,
        "order_type": "LIMIT" if price else "MARKET",
        "quantity": quantity,
        **extra,
    }
    if price:
        body["price"] = price
    return gw.client.post(f"/api/v1/order/create{WAIT}", json=body)


def test_deposit_when_wait_returns_200_with_the_balance_after_it(pipeline: Gateway) -> None:
    user, _ = pipeline.create_user()
    first = _deposit(pipeline, user, "USDT", "1000.50")
    second = _deposit(pipeline, user, "USDT", "0.5")
    assert first["status"] == "COMPLETED" and first["asset"] == "USDT"
    assert (first["available"], first["locked"]) == ("1000.50000000", "0.00000000")
    assert second["available"] == "1001.00000000"
    assert int(second["command_id"]) > int(first["command_id"])
    assert first["reject_reason"] is None


def test_withdraw_when_wait_and_funds_short_returns_200_rejected_with_reason(
    pipeline: Gateway,
) -> None:
    user, _ = pipeline.create_user()
    _deposit(pipeline, user, "BTC", "1")
    data = envelope_data(
        pipeline.client.post(
            f"/api/v1/withdraw{WAIT}",
            json={"user_id": user, "asset": "BTC", "amount": "1.00000001"},
        ),
        200,
    )
    assert data == {
        "command_id": data["command_id"],
        "status": "REJECTED",  # type: ignore[index]
        "asset": "BTC",
        "available": None,
        "locked": None,
        "reject_reason": "INSUFFICIENT_FUNDS",
    }
    ok = envelope_data(
        pipeline.client.post(
            f"/api/v1/withdraw{WAIT}", json={"user_id": user, "asset": "BTC", "amount": "0.25"}
        ),
        200,
    )
    assert isinstance(ok, dict) and ok["available"] == "0.75000000"


def test_create_order_when_wait_and_it_rests_returns_200_new_without_fills(
    pipeline: Gateway,
) -> None:
    user, _ = pipeline.create_user()
    _deposit(pipeline, user, "USDT", "10000")
    response = _order(pipeline, user, "BUY", "100.00", "0.5", client_order_id="rest-1")
    data = envelope_data(response, 200)
    assert isinstance(data, dict)
    assert data["status"] == "NEW" and data["fills"] == []
    assert (
        data["price"],
        data["quantity"],
        data["filled_quantity"],
        data["remaining_quantity"],
    ) == ("100.00", "0.50000", "0.00000", "0.50000")
    assert data["avg_fill_price"] is None and data["client_order_id"] == "rest-1"
    assert data["user_id"] == user and data["reject_reason"] is None


def test_create_order_when_wait_and_it_takes_liquidity_returns_200_with_its_fills(
    pipeline: Gateway,
) -> None:
    maker, taker = pipeline.create_user()[0], pipeline.create_user()[0]
    _deposit(pipeline, maker, "BTC", "1")
    _deposit(pipeline, taker, "USDT", "100000")
    a = envelope_data(_order(pipeline, maker, "SELL", "30000.00", "0.1"), 200)
    b = envelope_data(_order(pipeline, maker, "SELL", "30000.02", "0.1"), 200)
    assert isinstance(a, dict) and isinstance(b, dict)
    data = envelope_data(_order(pipeline, taker, "BUY", "30000.02", "0.15"), 200)
    assert isinstance(data, dict)
    assert data["status"] == "FILLED"
    assert data["filled_quantity"] == "0.15000" and data["remaining_quantity"] == "0.00000"
    # 0.1 @ 30000.00 + 0.05 @ 30000.02 = 4500.001 / 0.15 = 30000.00666...
    assert data["avg_fill_price"] == "30000.00666667"
    fills = data["fills"]
    assert [(f["price"], f["quantity"], f["quote_quantity"], f["is_maker"]) for f in fills] == [
        ("30000.00", "0.10000", "3000.00000000", False),
        ("30000.02", "0.05000", "1500.00100000", False),
    ]
    assert all(f["fee_asset"] == "BTC" and f["fee"] == "0.00000000" for f in fills)
    assert int(fills[1]["trade_id"]) == int(fills[0]["trade_id"]) + 1


def test_create_order_when_wait_and_engine_refuses_returns_200_rejected_with_reason(
    pipeline: Gateway,
) -> None:
    user, _ = pipeline.create_user()
    data = envelope_data(_order(pipeline, user, "BUY", "100.00", "1"), 200)
    assert isinstance(data, dict)
    assert (data["status"], data["reject_reason"]) == ("REJECTED", "INSUFFICIENT_FUNDS")
    assert data["fills"] == [] and data["filled_quantity"] == "0.00000"


def test_cancel_when_wait_returns_200_with_the_cancelled_order_and_reads_follow(
    pipeline: Gateway,
) -> None:
    user, _ = pipeline.create_user()
    _deposit(pipeline, user, "USDT", "1000")
    placed = envelope_data(_order(pipeline, user, "BUY", "10.00", "1"), 200)
    assert isinstance(placed, dict)
    order_id = placed["order_id"]
    # At once: the engine decides, whatever the store shows yet.
    data = envelope_data(
        pipeline.client.post(
            f"/api/v1/order/cancel{WAIT}",
            json={"user_id": user, "symbol": "BTC_USDT", "order_id": order_id},
        ),
        200,
    )
    assert isinstance(data, dict)
    assert data["order_id"] == order_id and data["status"] == "CANCELLED"
    assert data["remaining_quantity"] == "0.00000"

    def settled() -> None:
        got = pipeline.client.get(f"/api/v1/order/{order_id}?user_id={user}").json()
        assert got["success"] and got["data"]["status"] == "CANCELLED", got
        # The place and the cancel are outputs in different partitions, settled by
        # different workers: the cancel's rows may land before the place's update row.
        assert [u["status"] for u in got["data"]["updates"]] == ["NEW", "CANCELLED"], got

    eventually(settled)
    again = pipeline.client.post(
        f"/api/v1/order/cancel{WAIT}",
        json={"user_id": user, "symbol": "BTC_USDT", "order_id": order_id},
    )
    assert envelope_error(again) == (404, "ORDER_NOT_FOUND")
    balances = envelope_data(pipeline.client.get(f"/api/v1/balances?user_id={user}"), 200)
    assert balances == [{"asset": "USDT", "available": "1000.00000000", "locked": "0.00000000"}]


def test_create_order_when_many_wait_at_once_each_gets_its_own_result(
    pipeline: Gateway,
) -> None:
    user, _ = pipeline.create_user()
    _deposit(pipeline, user, "USDT", "1000000")

    def place(i: int) -> dict[str, Any]:
        data = envelope_data(
            _order(pipeline, user, "BUY", f"{1 + i}.00", "0.001", client_order_id=f"c{i}"), 200
        )
        assert isinstance(data, dict)
        return data

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(place, range(64)))
    assert [r["client_order_id"] for r in results] == [f"c{i}" for i in range(64)]
    assert [r["price"] for r in results] == [f"{1 + i}.00" for i in range(64)]
    assert all(r["status"] == "NEW" for r in results)
    assert len({r["order_id"] for r in results}) == 64
