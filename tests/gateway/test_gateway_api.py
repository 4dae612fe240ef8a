"""The REST API over the real broker and a real SQLite store filled by the real engine core.

Store contents come from :class:`gateway_testkit.Script`: commands applied to the engine
in-process, outputs written with ``SqliteStore.apply`` exactly as settlement writes them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from gateway_testkit import SEED_BASE, TS, Gateway, Script, envelope_data, envelope_error

from engine.commands import CancelOrder, Deposit, PlaceOrder, Withdraw
from engine.enums import OrderType, Side, TimeInForce
from engine.markets import Markets
from exchange.codec import Codec

pytestmark = pytest.mark.kafka

BUYER, SELLER, OTHER = 11, 12, 13
USDT = 10**8  # minor units per USDT (8 decimals)
BTC = 10**8


@pytest.fixture
def seeded(gateway: Gateway, markets: Markets) -> dict[str, int]:
    """BUYER rests A (partly filled by SELLER) and cancels B; returns the order ids."""
    s = Script(markets)
    s.deposit(BUYER, "USDT", 100_000 * USDT)
    s.deposit(SELLER, "BTC", 2 * BTC)
    a = s.place(BUYER, Side.BUY, 5_000_000, 1000, client_order_id="buy-a")  # 0.01 @ 50000
    b = s.place(BUYER, Side.BUY, 4_900_000, 2000)  # 0.02 @ 49000
    c = s.place(SELLER, Side.SELL, 4_900_000, 500)  # 0.005: fills against A at 50000
    s.cancel(BUYER, b)
    s.flush_to(gateway.store)
    return {"a": a, "b": b, "c": c}


def _order_a(order_id: int) -> dict[str, Any]:
    created = TS + order_id - SEED_BASE
    return {
        "order_id": str(order_id),
        "client_order_id": "buy-a",
        "user_id": BUYER,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "time_in_force": "GTC",
        "price": "50000.00",
        "quantity": "0.01000",
        "filled_quantity": "0.00500",
        "remaining_quantity": "0.00500",
        "avg_fill_price": "50000.00",
        "status": "PARTIALLY_FILLED",
        "reject_reason": None,
        "created_at": created,
        "updated_at": created + 2,  # the fill came two commands later
    }


# ---- commands ------------------------------------------------------------------------


def test_create_order_when_valid_returns_202_and_its_order_id_is_the_log_offset(
    gateway: Gateway, codec: Codec
) -> None:
    body = {
        "user_id": 5,
        "symbol": "BTC_USDT",
        "side": "SELL",
        "order_type": "LIMIT",
        "price": "50123.45",
        "quantity": "0.25",
        "time_in_force": "IOC",
        "client_order_id": "my_order-1",
        "stp_mode": "EXPIRE_BOTH",
    }
    before = int(time.time() * 1000)
    first = envelope_data(gateway.client.post("/api/v1/order/create", json=body), 202)
    second = envelope_data(gateway.client.post("/api/v1/order/create", json=body), 202)
    after = int(time.time() * 1000)

    assert first == {"order_id": "0", "client_order_id": "my_order-1", "status": "ACCEPTED"}
    assert second == {"order_id": "1", "client_order_id": "my_order-1", "status": "ACCEPTED"}
    log = gateway.orders_log(codec)
    assert [offset for offset, _ in log] == [0, 1]
    command = log[0][1]
    assert isinstance(command, PlaceOrder)
    assert command.order_id == 0 and command.command_id == 0
    assert (command.user_id, command.symbol, command.side, command.order_type) == (
        5,
        "BTC_USDT",
        Side.SELL,
        OrderType.LIMIT,
    )
    assert (command.price, command.quantity) == (5_012_345, 25_000)  # ticks, lots
    assert command.time_in_force is TimeInForce.IOC and command.post_only is False
    assert command.client_order_id == "my_order-1"
    assert before <= command.timestamp_ms <= after  # stamped by the gateway


def test_create_order_when_market_order_publishes_it_without_a_price(
    gateway: Gateway, codec: Codec
) -> None:
    body = {
        "user_id": 5,
        "symbol": "ETH_USDT",
        "side": "BUY",
        "order_type": "MARKET",
        "quantity": 2,
    }
    envelope_data(gateway.client.post("/api/v1/order/create", json=body), 202)
    [(_, command)] = gateway.orders_log(codec)
    assert isinstance(command, PlaceOrder)
    assert command.price is None and command.quantity == 20_000  # 2 ETH in 0.0001 lots
    assert command.time_in_force is TimeInForce.GTC  # the default


def test_deposit_and_withdraw_when_valid_return_202_and_publish_minor_units(
    gateway: Gateway, codec: Codec
) -> None:
    dep = envelope_data(
        gateway.client.post(
            "/api/v1/deposit", json={"user_id": 3, "asset": "USDT", "amount": "1000.5"}
        ),
        202,
    )
    wd = envelope_data(
        gateway.client.post("/api/v1/withdraw", json={"user_id": 3, "asset": "USDT", "amount": 2}),
        202,
    )
    assert dep == {"command_id": "0", "status": "ACCEPTED"}
    assert wd == {"command_id": "1", "status": "ACCEPTED"}
    log = dict(gateway.orders_log(codec))
    assert isinstance(log[0], Deposit) and log[0].amount == 100_050_000_000
    assert isinstance(log[1], Withdraw) and log[1].amount == 200_000_000


def test_cancel_when_own_open_order_returns_202_and_publishes_the_cancel(
    gateway: Gateway, seeded: dict[str, int], codec: Codec
) -> None:
    body = {"user_id": BUYER, "symbol": "BTC_USDT", "order_id": str(seeded["a"])}
    data = envelope_data(gateway.client.post("/api/v1/order/cancel", json=body), 202)
    assert data == {"command_id": "0", "status": "CANCEL_REQUESTED"}
    [(_, command)] = gateway.orders_log(codec)
    assert isinstance(command, CancelOrder)
    assert (command.user_id, command.symbol, command.order_id) == (BUYER, "BTC_USDT", seeded["a"])


def test_cancel_when_named_by_client_order_id_publishes_it_for_the_engine_to_resolve(
    gateway: Gateway, seeded: dict[str, int], codec: Codec
) -> None:
    body = {"symbol": "BTC_USDT", "client_order_id": "buy-a"}  # no user_id: the key's user
    with gateway.signed(gateway.keys.trader(BUYER)) as client:
        data = envelope_data(client.post("/api/v1/order/cancel", json=body), 202)
    assert data == {"command_id": "0", "status": "CANCEL_REQUESTED"}
    [(_, command)] = gateway.orders_log(codec)
    assert isinstance(command, CancelOrder)
    assert (command.user_id, command.order_id, command.client_order_id) == (BUYER, None, "buy-a")


@pytest.mark.parametrize("which", ["a", "b", None])  # open, cancelled, unknown to the store
def test_cancel_when_store_shows_any_state_publishes_it_without_asking_the_store(
    gateway: Gateway, seeded: dict[str, int], codec: Codec, which: str | None
) -> None:
    order_id = seeded[which] if which else 999_999_999
    body = {"user_id": BUYER, "symbol": "BTC_USDT", "order_id": str(order_id)}
    assert envelope_data(gateway.client.post("/api/v1/order/cancel", json=body), 202) == {
        "command_id": "0",
        "status": "CANCEL_REQUESTED",
    }
    [(_, command)] = gateway.orders_log(codec)
    assert isinstance(command, CancelOrder) and command.order_id == order_id


def test_cancel_when_body_names_another_user_returns_403_and_publishes_nothing(
    gateway: Gateway, seeded: dict[str, int], codec: Codec
) -> None:
    body = {"user_id": BUYER, "symbol": "BTC_USDT", "order_id": str(seeded["a"])}
    with gateway.signed(gateway.keys.trader(OTHER)) as client:
        assert envelope_error(client.post("/api/v1/order/cancel", json=body)) == (
            403,
            "FORBIDDEN",
        )
    assert gateway.orders_log(codec) == []


def test_create_order_when_user_id_omitted_acts_as_the_keys_user(
    gateway: Gateway, codec: Codec
) -> None:
    body = {"symbol": "BTC_USDT", "side": "BUY", "order_type": "LIMIT", "price": "1.00",
            "quantity": "1"}  # fmt: skip
    with gateway.signed(gateway.keys.trader(OTHER)) as client:
        envelope_data(client.post("/api/v1/order/create", json=body), 202)
        assert envelope_error(
            client.post("/api/v1/order/create", json={**body, "user_id": BUYER})
        ) == (403, "FORBIDDEN")
        assert (
            envelope_error(client.post("/api/v1/order/create", json={**body, "user_id": 0}))[0]
            == 400
        )  # malformed: 400 like any bad field
    [(_, command)] = gateway.orders_log(codec)
    assert isinstance(command, PlaceOrder) and command.user_id == OTHER


# ---- reads ---------------------------------------------------------------------------


def test_active_orders_when_user_has_open_orders_returns_them_scaled_as_decimal_strings(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    data = envelope_data(gateway.client.get(f"/api/v1/order/active?user_id={BUYER}"), 200)
    assert data == [_order_a(seeded["a"])]
    by_symbol = gateway.client.get(f"/api/v1/order/active?user_id={BUYER}&symbol=ETH_USDT")
    assert envelope_data(by_symbol, 200) == []
    assert envelope_data(gateway.client.get("/api/v1/order/active?user_id=999"), 200) == []


def test_order_history_when_orders_span_pages_returns_newest_first_with_a_cursor(
    gateway: Gateway, markets: Markets
) -> None:
    s = Script(markets)
    s.deposit(OTHER, "USDT", 1000 * USDT)
    ids = [s.place(OTHER, Side.BUY, 100 + i, 1) for i in range(5)]
    s.flush_to(gateway.store)

    pages: list[list[str]] = []
    cursor = None
    for _ in range(5):
        query = f"/api/v1/order/history?user_id={OTHER}&limit=2"
        if cursor is not None:
            query += f"&before={cursor}"
        data = envelope_data(gateway.client.get(query), 200)
        assert isinstance(data, dict)
        pages.append([o["order_id"] for o in data["orders"]])
        cursor = data["next_cursor"]
        if cursor is None:
            break
    newest_first = [str(i) for i in reversed(ids)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]


def test_order_history_when_orders_completed_includes_every_status(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    data = envelope_data(gateway.client.get(f"/api/v1/order/history?user_id={BUYER}"), 200)
    assert isinstance(data, dict)
    assert [(o["order_id"], o["status"]) for o in data["orders"]] == [
        (str(seeded["b"]), "CANCELLED"),
        (str(seeded["a"]), "PARTIALLY_FILLED"),
    ]
    assert data["next_cursor"] is None
    assert data["orders"][1] == _order_a(seeded["a"])


def test_get_order_when_own_order_returns_it_with_its_update_trail(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    a = seeded["a"]
    data = envelope_data(gateway.client.get(f"/api/v1/order/{a}?user_id={BUYER}"), 200)
    assert isinstance(data, dict)
    updates = data.pop("updates")
    assert data == _order_a(a)
    assert [
        (u["status"], u["filled_quantity"], u["last_fill_price"], u["command_id"]) for u in updates
    ] == [
        ("NEW", "0.00000", None, str(a)),
        ("PARTIALLY_FILLED", "0.00500", "50000.00", str(seeded["c"])),
    ]
    assert updates[1]["avg_fill_price"] == "50000.00"
    assert updates[1]["last_fill_quantity"] == "0.00500"


@pytest.mark.parametrize("order", ["a", "missing", "huge"])
def test_get_order_when_not_the_users_returns_404_order_not_found(
    gateway: Gateway, seeded: dict[str, int], order: str
) -> None:
    order_id = {"a": str(seeded["a"]), "missing": "424242", "huge": "9" * 40}[order]
    response = gateway.client.get(f"/api/v1/order/{order_id}?user_id={OTHER}")
    assert envelope_error(response) == (404, "ORDER_NOT_FOUND")


def test_get_order_when_id_has_leading_zeros_finds_the_same_order(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    padded = "0" * 30 + str(seeded["a"])
    data = envelope_data(gateway.client.get(f"/api/v1/order/{padded}?user_id={BUYER}"), 200)
    assert isinstance(data, dict) and data["order_id"] == str(seeded["a"])


def test_trades_when_orders_matched_returns_each_users_side(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    buyer = envelope_data(gateway.client.get(f"/api/v1/trades?user_id={BUYER}"), 200)
    seller = envelope_data(
        gateway.client.get(f"/api/v1/trades?user_id={SELLER}&symbol=BTC_USDT&limit=1"), 200
    )
    common = {
        "trade_id": "1",
        "symbol": "BTC_USDT",
        "price": "50000.00",
        "quantity": "0.00500",
        "quote_quantity": "250.00000000",
        "executed_at": TS + seeded["c"] - SEED_BASE,
    }
    assert buyer == [
        {
            **common,
            "order_id": str(seeded["a"]),
            "side": "BUY",
            "is_maker": True,
            "fee": "0.00000000",
            "fee_asset": "BTC",
        }
    ]
    assert seller == [
        {
            **common,
            "order_id": str(seeded["c"]),
            "side": "SELL",
            "is_maker": False,
            "fee": "0.00000000",
            "fee_asset": "USDT",
        }
    ]


def test_balances_when_funds_deposited_traded_and_locked_returns_decimal_strings(
    gateway: Gateway, seeded: dict[str, int]
) -> None:
    data = envelope_data(gateway.client.get(f"/api/v1/balances?user_id={BUYER}"), 200)
    assert data == [
        {"asset": "BTC", "available": "0.00500000", "locked": "0.00000000"},
        # 100000 - 500 locked for A (250 of it spent on the fill); B's lock was released
        {"asset": "USDT", "available": "99500.00000000", "locked": "250.00000000"},
    ]
    assert envelope_data(gateway.client.get("/api/v1/balances?user_id=4242"), 200) == []


# ---- envelope on the framework's own errors, health, docs -----------------------------


@pytest.mark.parametrize("path", ["/", "/api/v1/nope", "/api/v2/balances", "/api/v1/order/x/y"])
def test_unknown_route_returns_404_not_found_envelope(gateway: Gateway, path: str) -> None:
    assert envelope_error(gateway.client.get(path)) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/order/create"),
        ("PUT", "/api/v1/order/cancel"),
        ("DELETE", "/api/v1/balances"),
        ("POST", "/api/v1/trades"),
        ("PATCH", "/health"),
    ],
)
def test_wrong_method_returns_405_envelope_with_allow_header(
    gateway: Gateway, method: str, path: str
) -> None:
    response = gateway.client.request(method, path)
    assert envelope_error(response) == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"]


def test_health_when_process_serves_returns_ok(gateway: Gateway) -> None:
    assert envelope_data(gateway.client.get("/health"), 200) == {"status": "ok"}


def test_ready_when_broker_and_store_reachable_returns_200(gateway: Gateway) -> None:
    assert envelope_data(gateway.client.get("/ready"), 200) == {"broker": "ok", "store": "ok"}


def test_openapi_when_served_documents_every_route_without_422(gateway: Gateway) -> None:
    spec = gateway.client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/v1/order/create",
        "/api/v1/order/cancel",
        "/api/v1/order/cancel-all",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{user_id}/keys",
        "/api/v1/admin/keys/{api_key}",
        "/api/v1/deposit",
        "/api/v1/withdraw",
        "/api/v1/order/active",
        "/api/v1/order/history",
        "/api/v1/order/{order_id}",
        "/api/v1/trades",
        "/api/v1/balances",
        "/health",
        "/ready",
        # issue #15 (market data, amend)
        "/api/v1/order/amend",
        "/api/v1/depth",
        "/api/v1/trades/recent",
        "/api/v1/ticker",
        "/api/v1/klines",
    }
    for path in spec["paths"].values():
        for op in path.values():
            assert op["summary"] and op["description"]
            assert "422" not in op["responses"]
    create = spec["paths"]["/api/v1/order/create"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PlaceOrderRequest"
    }
    assert {"PlaceOrderRequest", "CancelOrderRequest", "FundsRequest"} <= set(
        spec["components"]["schemas"]
    )
    assert gateway.client.get("/docs").status_code == 200


def test_create_order_when_wait_and_no_engine_answers_falls_back_to_202_after_timeout(
    gateway: Gateway,
) -> None:
    body = {
        "user_id": 5,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "price": "1.00",
        "quantity": "1",
    }
    started = time.monotonic()
    response = gateway.client.post("/api/v1/order/create?wait=true&timeout_ms=300", json=body)
    elapsed = time.monotonic() - started
    assert envelope_data(response, 202) == {
        "order_id": "0",
        "client_order_id": None,
        "status": "ACCEPTED",
    }
    assert elapsed >= 0.3  # only once the wait timed out (a lower bound: see above)


def test_create_order_when_served_by_the_fastapi_route_answers_as_the_fast_path(
    gateway: Gateway, codec: Codec
) -> None:
    body = {
        "user_id": 5,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "price": "10.00",
        "quantity": "1",
        "client_order_id": "x",
    }
    answers = []
    for fast in (True, False):
        gateway.app.fast_path = fast
        answers.append(envelope_data(gateway.client.post("/api/v1/order/create", json=body), 202))
    gateway.app.fast_path = True
    assert answers == [
        {"order_id": "0", "client_order_id": "x", "status": "ACCEPTED"},
        {"order_id": "1", "client_order_id": "x", "status": "ACCEPTED"},
    ]
    log = gateway.orders_log(codec)
    assert [type(c) for _, c in log] == [PlaceOrder, PlaceOrder]
    assert log[0][1].timestamp_ms <= log[1][1].timestamp_ms
