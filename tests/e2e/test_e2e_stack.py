"""End to end through the stack started by `exchange up`: embedded, and real under `make e2e`.

Broker (Tansu or Apache Kafka), engine, settlement (SQLite or Cassandra) and gateway run as
the supervisor's child processes, exactly as `make run` starts them; the test talks HTTP only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from stack_testkit import running_stack, stack_env

from tests.support.eventually import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """`exchange up` on the embedded stack (Tansu + SQLite, `make test`) or, under `make e2e`,
    on the real one (Apache Kafka + Cassandra from KAFKA_BOOTSTRAP_SERVERS and
    CASSANDRA_CONTACT_POINTS), with topics and keyspace of its own."""
    data = tmp_path_factory.mktemp("stack")
    env = stack_env(data, real=request.param == "real")
    with running_stack(env, data, users=12) as client:  # users 1..12, signed as each
        yield client


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    body = resp.json()
    assert resp.status_code == status, body
    assert body["success"] is True, body
    return body["data"]


def _error(resp: httpx.Response, status: int, code: str) -> None:
    body = resp.json()
    assert resp.status_code == status, body
    assert body == {"success": False, "error": {"code": code, "message": body["error"]["message"]}}


def _deposit(api: httpx.Client, user: int, asset: str, amount: str) -> None:
    data = _ok(
        api.post(
            "/api/v1/deposit?wait=true", json={"user_id": user, "asset": asset, "amount": amount}
        )
    )
    assert data["status"] == "COMPLETED", data


def _order(api: httpx.Client, **fields: Any) -> Any:
    body = {"symbol": "BTC_USDT", "order_type": "LIMIT", **fields}
    return _ok(api.post("/api/v1/order/create?wait=true", json=body))


def _balances(api: httpx.Client, user: int) -> dict[str, tuple[str, str]]:
    rows = _ok(api.get("/api/v1/balances", params={"user_id": user}))
    return {r["asset"]: (r["available"], r["locked"]) for r in rows}


def _balance(api: httpx.Client, user: int, asset: str) -> tuple[str, str]:
    """One asset's (available, locked); an AssertionError (retried by eventually) until
    settlement has written it: balances and orders settle in separate partitions, so a
    visible order says nothing about whether its balance row is there yet."""
    balances = _balances(api, user)
    assert balances.get(asset) is not None, f"no {asset} balance for user {user} yet"
    return balances[asset]


def _active_ids(api: httpx.Client, user: int) -> list[str]:
    return [o["order_id"] for o in _ok(api.get("/api/v1/order/active", params={"user_id": user}))]


def _history(api: httpx.Client, user: int) -> dict[str, Any]:
    data = _ok(api.get("/api/v1/order/history", params={"user_id": user}))
    return {o["order_id"]: o for o in data["orders"]}


def _in_history(api: httpx.Client, user: int, order_id: str) -> dict[str, Any]:
    """The order's history row; an AssertionError (retried by eventually) until it is
    there: ?wait=true can answer before settlement has written the row."""
    history = _history(api, user)
    assert order_id in history, f"order {order_id} not in history yet: {sorted(history)}"
    return history[order_id]


def test_order_lifecycle_when_placed_then_cancelled_moves_from_active_to_history(
    api: httpx.Client,
) -> None:
    _deposit(api, 1, "USDT", "100000")
    placed = _order(api, user_id=1, side="BUY", price="50000.00", quantity="0.01000")
    assert placed["status"] == "NEW"
    order_id = placed["order_id"]

    def visible() -> None:
        assert _active_ids(api, 1) == [order_id]

    eventually(visible)
    eventually(lambda: _assert_equal(_balance(api, 1, "USDT"), ("99500.00000000", "500.00000000")))

    cancel = api.post(
        "/api/v1/order/cancel", json={"user_id": 1, "symbol": "BTC_USDT", "order_id": order_id}
    )
    accepted = _ok(cancel, 202)
    assert accepted == {"command_id": accepted["command_id"], "status": "CANCEL_REQUESTED"}

    def gone() -> None:
        assert _active_ids(api, 1) == []
        assert _in_history(api, 1, order_id)["status"] == "CANCELLED"

    eventually(gone)
    eventually(lambda: _assert_equal(_balance(api, 1, "USDT"), ("100000.00000000", "0.00000000")))


def test_fill_when_buyer_limit_above_maker_price_trades_at_maker_price_and_refunds(
    api: httpx.Client,
) -> None:
    seller, buyer = 2, 3
    _deposit(api, seller, "BTC", "1")
    _deposit(api, buyer, "USDT", "1000")
    ask = _order(api, user_id=seller, side="SELL", price="50000.00", quantity="0.01000")
    assert ask["status"] == "NEW"

    bid = _order(api, user_id=buyer, side="BUY", price="50100.00", quantity="0.01000")

    assert bid["status"] == "FILLED"
    assert [(f["price"], f["quantity"]) for f in bid["fills"]] == [("50000.00", "0.01000")]

    def settled() -> None:
        assert _balances(api, buyer) == {
            "USDT": ("500.00000000", "0.00000000"),
            "BTC": ("0.01000000", "0.00000000"),
        }
        assert _balances(api, seller) == {
            "BTC": ("0.99000000", "0.00000000"),
            "USDT": ("500.00000000", "0.00000000"),
        }

    eventually(settled)
    trades = _ok(api.get("/api/v1/trades", params={"user_id": buyer}))
    assert [(t["side"], t["price"], t["quantity"], t["is_maker"]) for t in trades] == [
        ("BUY", "50000.00", "0.01000", False)
    ]


def test_resting_order_when_filled_in_two_steps_goes_partial_then_filled(
    api: httpx.Client,
) -> None:
    maker, taker = 4, 5
    _deposit(api, maker, "BTC", "1")
    _deposit(api, taker, "USDT", "10000")
    ask = _order(api, user_id=maker, side="SELL", price="30000.00", quantity="0.02000")
    order_id = ask["order_id"]

    _order(api, user_id=taker, side="BUY", price="30000.00", quantity="0.01000")

    def partial() -> None:
        active = _ok(api.get("/api/v1/order/active", params={"user_id": maker}))
        assert [
            (o["order_id"], o["status"], o["filled_quantity"], o["remaining_quantity"])
            for o in active
        ] == [(order_id, "PARTIALLY_FILLED", "0.01000", "0.01000")]

    eventually(partial)

    _order(api, user_id=taker, side="BUY", price="30000.00", quantity="0.01000")

    def filled() -> None:
        assert _active_ids(api, maker) == []
        order = _in_history(api, maker, order_id)
        assert (order["status"], order["filled_quantity"]) == ("FILLED", "0.02000")
        assert order["avg_fill_price"] == "30000.00"
        # The updates table is written alongside, not atomically with, the history row.
        detail = _ok(api.get(f"/api/v1/order/{order_id}", params={"user_id": maker}))
        assert [u["status"] for u in detail["updates"]] == ["NEW", "PARTIALLY_FILLED", "FILLED"]

    eventually(filled)


def test_order_when_funds_are_insufficient_is_rejected_and_never_active(
    api: httpx.Client,
) -> None:
    placed = _order(api, user_id=6, side="BUY", price="50000.00", quantity="0.01000")

    assert (placed["status"], placed["reject_reason"]) == ("REJECTED", "INSUFFICIENT_FUNDS")

    def in_history() -> None:
        assert _in_history(api, 6, placed["order_id"])["status"] == "REJECTED"

    eventually(in_history)
    assert _active_ids(api, 6) == []


def test_market_order_when_book_is_thin_fills_what_exists_and_expires_the_rest(
    api: httpx.Client,
) -> None:
    maker, taker = 7, 8
    _deposit(api, maker, "USDT", "100000")
    _deposit(api, taker, "BTC", "1")
    _order(api, user_id=maker, side="BUY", symbol="BTC_USDT", price="20000.00", quantity="0.01000")

    market = _ok(
        api.post(
            "/api/v1/order/create?wait=true",
            json={
                "user_id": taker,
                "symbol": "BTC_USDT",
                "side": "SELL",
                "order_type": "MARKET",
                "quantity": "0.03000",
            },
        )
    )

    assert market["status"] == "EXPIRED"
    assert market["filled_quantity"] == "0.01000"
    assert [f["price"] for f in market["fills"]] == ["20000.00"]


def test_ioc_order_when_nothing_matches_expires_without_fills(api: httpx.Client) -> None:
    _deposit(api, 9, "USDT", "1000")

    ioc = _order(api, user_id=9, side="BUY", price="1.00", quantity="0.01000", time_in_force="IOC")

    assert (ioc["status"], ioc["filled_quantity"], ioc["fills"]) == ("EXPIRED", "0.00000", [])
    eventually(lambda: _assert_equal(_balance(api, 9, "USDT"), ("1000.00000000", "0.00000000")))


def test_cancel_when_order_belongs_to_another_user_is_refused_with_404(
    api: httpx.Client,
) -> None:
    _deposit(api, 10, "USDT", "1000")
    placed = _order(api, user_id=10, side="BUY", price="100.00", quantity="0.01000")
    eventually(lambda: _assert_equal(_active_ids(api, 10), [placed["order_id"]]))

    resp = api.post(  # signed by user 11: the engine refuses it like an unknown order
        "/api/v1/order/cancel?wait=true",
        json={"user_id": 11, "symbol": "BTC_USDT", "order_id": placed["order_id"]},
    )

    _error(resp, 404, "ORDER_NOT_FOUND")
    _error(
        api.get(f"/api/v1/order/{placed['order_id']}", params={"user_id": 11}),
        404,
        "ORDER_NOT_FOUND",
    )
    assert _active_ids(api, 10) == [placed["order_id"]]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"symbol": "DOGE_USDT"}, "UNKNOWN_SYMBOL"),
        ({"price": "50000.001"}, "INVALID_PRICE"),
        ({"price": "-1"}, "INVALID_PRICE"),
        ({"quantity": "0.000001"}, "INVALID_QUANTITY"),
        ({"quantity": "NaN"}, "INVALID_QUANTITY"),
        ({"quantity": "1e999999"}, "INVALID_QUANTITY"),
        ({"order_type": "MARKET"}, "INVALID_ORDER"),
        ({"side": "HOLD"}, "INVALID_REQUEST"),
        ({"user_id": 2**63}, "INVALID_REQUEST"),
    ],
)
def test_create_order_when_input_is_bad_answers_400_with_its_code(
    api: httpx.Client,
    body: dict[str, Any],
    code: str,
) -> None:
    base = {
        "user_id": 12,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "price": "50000.00",
        "quantity": "0.01000",
    }

    _error(api.post("/api/v1/order/create", json={**base, **body}), 400, code)


def test_create_order_when_json_is_malformed_answers_400(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/order/create", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(resp, 400, "MALFORMED_JSON")


def _assert_equal(a: object, b: object) -> None:
    assert a == b
