"""The public market REST routes and the amend route on the real pipeline (issue #15).

One pipeline for the module (engine service, settlement into SQLite, a gateway); each test
uses its own users and its own price band, so books of different tests do not interact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from gateway_testkit import envelope_data, envelope_error, read_commands
from market_testkit import (
    WAIT,
    MarketGateway,
    Pipeline,
    engine_from_log,
    run_market_gateway,
    run_pipeline,
)

from engine.markets import Markets
from exchange.codec import Codec
from gateway.convert import format_lots, format_ticks
from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka

SYMBOL = "BTC_USDT"


@pytest.fixture(scope="module")
def pipe(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, markets: Markets, codec: Codec
) -> Iterator[Pipeline]:
    with run_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("rest"), markets, codec) as p:
        yield p


@pytest.fixture(scope="module")
def gw(pipe: Pipeline) -> Iterator[MarketGateway]:
    with run_market_gateway(pipe) as g:
        yield g


def _fund(gw: MarketGateway, user: int) -> None:
    for asset, amount in (("BTC", "100"), ("USDT", "10000000"), ("ETH", "1000")):
        r = gw.client.post(
            f"/api/v1/deposit{WAIT}", json={"user_id": user, "asset": asset, "amount": amount}
        )
        envelope_data(r, 200)


def _limit(
    gw: MarketGateway, user: int, side: str, price: str, qty: str, symbol: str = SYMBOL,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    r = gw.client.post(
        f"/api/v1/order/create{WAIT}",
        json={"user_id": user, "symbol": symbol, "side": side, "order_type": "LIMIT",
              "price": price, "quantity": qty, **extra},
    )  # fmt: skip
    data = envelope_data(r, 200)
    assert isinstance(data, dict)
    return data


def _depth(gw: MarketGateway, query: str) -> dict[str, Any]:
    data = envelope_data(gw.client.get(f"/api/v1/depth?{query}"), 200)
    assert isinstance(data, dict)
    return data


def _depth_at(gw: MarketGateway, symbol: str, update_id: int) -> dict[str, Any]:
    """The depth once the gateway's book reached ``update_id`` (the engine's answer to a
    ``?wait=true`` order can come before the book's feed applied it)."""
    deadline = time.monotonic() + 10
    while True:
        data = _depth(gw, f"symbol={symbol}&limit=1000")
        if data["last_update_id"] >= update_id or time.monotonic() > deadline:
            return data
        time.sleep(0.02)


def _amend(gw: MarketGateway, body: dict[str, Any], wait: bool = True) -> Any:
    return gw.client.post("/api/v1/order/amend" + (WAIT if wait else ""), json=body)


# ---- depth --------------------------------------------------------------------------


def test_depth_when_orders_rest_answers_levels_best_first_at_the_engines_update_id(
    gw: MarketGateway, pipe: Pipeline, markets: Markets
) -> None:
    _fund(gw, 11)
    for price, qty in (("30000.00", "0.10000"), ("30001.00", "0.20000"), ("30000.00", "0.05000")):
        _limit(gw, 11, "BUY", price, qty, symbol="ETH_USDT")
    _limit(gw, 11, "SELL", "40000.00", "1.0000", symbol="ETH_USDT")
    engine = engine_from_log(pipe)
    data = _depth_at(gw, "ETH_USDT", engine.update_id("ETH_USDT"))
    assert set(data) == {"symbol", "last_update_id", "sequence", "bids", "asks"}
    assert data["symbol"] == "ETH_USDT"
    assert data["last_update_id"] == engine.update_id("ETH_USDT")
    assert data["bids"] == [["30001.00", "0.2000"], ["30000.00", "0.1500"]]
    assert data["asks"] == [["40000.00", "1.0000"]]
    spec = markets.symbols["ETH_USDT"]
    levels = engine.depth_levels("ETH_USDT")
    assert [[format_ticks(spec, lv.price), format_lots(spec, lv.quantity)] for lv in levels] == [
        *data["bids"], *data["asks"],
    ]  # fmt: skip
    assert data["sequence"] >= 1


def test_depth_when_limit_given_answers_that_many_levels_per_side(gw: MarketGateway) -> None:
    _fund(gw, 12)
    for i in range(5):
        _limit(gw, 12, "BUY", f"{100 + i}.00", "0.00100")
    deadline = time.monotonic() + 10
    while len(full := _depth(gw, f"symbol={SYMBOL}")["bids"]) < 5:  # default limit: 100
        assert time.monotonic() < deadline, full
        time.sleep(0.02)
    data = _depth(gw, f"symbol={SYMBOL}&limit=2")
    assert data["bids"] == full[:2]
    assert Decimal(data["bids"][0][0]) > Decimal(data["bids"][1][0])


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("symbol=BTC_USDT&limit=1001", "INVALID_REQUEST"),
        ("symbol=BTC_USDT&limit=0", "INVALID_REQUEST"),
        ("symbol=BTC_USDT&limit=x", "INVALID_REQUEST"),
        ("symbol=NOPE", "UNKNOWN_SYMBOL"),
        ("", "INVALID_REQUEST"),
    ],
)
def test_depth_when_query_is_bad_answers_400(gw: MarketGateway, query: str, code: str) -> None:
    assert envelope_error(gw.client.get(f"/api/v1/depth?{query}")) == (400, code)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/trades/recent?symbol=BTC_USDT&limit=1001",
        "/api/v1/klines?symbol=BTC_USDT&interval=1m&limit=1001",
        "/api/v1/klines?symbol=BTC_USDT&interval=2m",
        "/api/v1/klines?symbol=BTC_USDT&interval=1m&start=10&end=5",
        "/api/v1/ticker?symbol=NOPE",
    ],
)
def test_market_reads_when_query_is_bad_answer_400(gw: MarketGateway, path: str) -> None:
    status, _ = envelope_error(gw.client.get(path))
    assert status == 400


# ---- amend --------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", ["0", "0.000001", "-1", "abc", 0])
def test_amend_when_quantity_is_malformed_answers_400_and_publishes_nothing(
    gw: MarketGateway, pipe: Pipeline, quantity: Any
) -> None:
    before = len(read_commands(pipe.bootstrap, pipe.topics.orders.name, pipe.codec))
    r = _amend(gw, {"user_id": 21, "symbol": SYMBOL, "order_id": "1", "quantity": quantity})
    assert envelope_error(r) == (400, "INVALID_QUANTITY")
    assert len(read_commands(pipe.bootstrap, pipe.topics.orders.name, pipe.codec)) == before


def test_amend_when_no_wait_answers_202_amend_requested(gw: MarketGateway) -> None:
    _fund(gw, 22)
    order = _limit(gw, 22, "BUY", "200.00", "0.01000")
    r = _amend(
        gw, {"user_id": 22, "symbol": SYMBOL, "order_id": order["order_id"], "quantity": "0.005"},
        wait=False,
    )  # fmt: skip
    data = envelope_data(r, 202)
    assert isinstance(data, dict)
    assert set(data) == {"command_id", "status"}
    assert data["status"] == "AMEND_REQUESTED" and data["command_id"].isdigit()


def test_amend_when_strict_reduction_keeps_priority_and_answers_the_order(
    gw: MarketGateway,
) -> None:
    for u in (23, 24, 25):
        _fund(gw, u)
    first = _limit(gw, 23, "SELL", "90000.00", "0.01000")
    _limit(gw, 24, "SELL", "90000.00", "0.01000")
    r = _amend(gw, {"user_id": 23, "symbol": SYMBOL, "order_id": first["order_id"],
                    "quantity": "0.00400"})  # fmt: skip
    order = envelope_data(r, 200)
    assert isinstance(order, dict)
    assert order["order_id"] == first["order_id"]
    assert order["quantity"] == "0.00400" and order["status"] == "NEW"
    # Priority kept: a taker for 0.004 fills the amended (first) order, not the second.
    taker = _limit(gw, 25, "BUY", "90000.00", "0.00400")
    assert taker["status"] == "FILLED"
    assert [f["quantity"] for f in taker["fills"]] == ["0.00400"]

    def second_untouched() -> None:
        rows = envelope_data(gw.client.get(f"/api/v1/order/active?user_id=24&symbol={SYMBOL}"), 200)
        assert isinstance(rows, list)
        assert [(o["quantity"], o["filled_quantity"]) for o in rows] == [("0.01000", "0.00000")]
        mine = envelope_data(gw.client.get(f"/api/v1/order/active?user_id=23&symbol={SYMBOL}"), 200)
        assert mine == []  # the amended order filled

    eventually(second_untouched, what="the store shows the fill")


def test_amend_when_client_order_id_names_the_order_amends_it(gw: MarketGateway) -> None:
    _fund(gw, 26)
    _limit(gw, 26, "BUY", "300.00", "0.01000", client_order_id="amend-me")
    r = _amend(gw, {"user_id": 26, "symbol": SYMBOL, "client_order_id": "amend-me",
                    "quantity": "0.00700"})  # fmt: skip
    order = envelope_data(r, 200)
    assert isinstance(order, dict)
    assert (order["client_order_id"], order["quantity"]) == ("amend-me", "0.00700")


@pytest.mark.parametrize("quantity", ["0.01000", "0.02000"])
def test_amend_when_not_a_strict_reduction_answers_400_invalid_amend(
    gw: MarketGateway, quantity: str
) -> None:
    _fund(gw, 27)
    order = _limit(gw, 27, "BUY", "400.00", "0.01000")
    r = _amend(gw, {"user_id": 27, "symbol": SYMBOL, "order_id": order["order_id"],
                    "quantity": quantity})  # fmt: skip
    assert envelope_error(r) == (400, "INVALID_AMEND")


def test_amend_when_order_is_unknown_or_another_users_answers_404(gw: MarketGateway) -> None:
    _fund(gw, 28)
    order = _limit(gw, 28, "BUY", "500.00", "0.01000")
    for body in (
        {"user_id": 29, "symbol": SYMBOL, "order_id": order["order_id"], "quantity": "0.005"},
        {"user_id": 28, "symbol": SYMBOL, "order_id": "999999999", "quantity": "0.005"},
        {"user_id": 28, "symbol": "ETH_USDT", "order_id": order["order_id"], "quantity": "0.005"},
    ):
        assert envelope_error(_amend(gw, body)) == (404, "ORDER_NOT_FOUND"), body


def test_amend_when_order_is_completed_answers_404(gw: MarketGateway) -> None:
    _fund(gw, 30)
    order = _limit(gw, 30, "BUY", "600.00", "0.01000")
    r = gw.client.post(
        f"/api/v1/order/cancel{WAIT}",
        json={"user_id": 30, "symbol": SYMBOL, "order_id": order["order_id"]},
    )
    envelope_data(r, 200)
    r = _amend(gw, {"user_id": 30, "symbol": SYMBOL, "order_id": order["order_id"],
                    "quantity": "0.005"})  # fmt: skip
    assert envelope_error(r) == (404, "ORDER_NOT_FOUND")


# ---- a gateway that starts from the engine's snapshot --------------------------------


def test_books_when_gateway_starts_from_a_snapshot_equal_the_engines(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, markets: Markets, codec: Codec
) -> None:
    tmp = tmp_path_factory.mktemp("snap")
    with run_pipeline(kafka_bootstrap, tmp, markets, codec, snapshot_every=20) as pipe:
        with run_market_gateway(pipe) as first:
            _fund(first, 41)
            for i in range(30):
                _limit(first, 41, "BUY", f"{700 + i}.00", "0.00100")
                _limit(first, 41, "SELL", f"{800 + i}.00", "0.00200", symbol="ETH_USDT")
        deadline = time.monotonic() + 20
        while not list(pipe.snapshots_dir.glob("snapshot-*.bin")):
            assert time.monotonic() < deadline, "the engine took no snapshot"
            time.sleep(0.1)
        with run_market_gateway(pipe, snapshots=True) as second:
            _limit(second, 41, "BUY", "650.00", "0.00100")  # after the snapshot
            engine = engine_from_log(pipe)
            assert second.app.state.market.feed.start_source.startswith("snapshot ")
            for symbol in ("BTC_USDT", "ETH_USDT"):
                data = _depth_at(second, symbol, engine.update_id(symbol))
                spec = markets.symbols[symbol]
                levels = [
                    [format_ticks(spec, lv.price), format_lots(spec, lv.quantity)]
                    for lv in engine.depth_levels(symbol)
                ]
                assert data["last_update_id"] == engine.update_id(symbol)
                assert [*data["bids"], *data["asks"]] == levels


# ---- trades, ticker, klines -----------------------------------------------------------


def test_market_reads_when_trades_happened_answer_the_issues_shapes(gw: MarketGateway) -> None:
    for u in (51, 52):
        _fund(gw, u)
    sym = "ETH_USDT"
    # A band no other test of the module trades in (ETH bids <= 30001, asks >= 40000).
    _limit(gw, 51, "SELL", "35000.00", "0.3000", symbol=sym)
    _limit(gw, 51, "SELL", "35001.00", "0.2000", symbol=sym)
    _limit(gw, 52, "BUY", "35001.00", "0.5000", symbol=sym)  # two trades, BUY taker
    _limit(gw, 52, "BUY", "34000.00", "1.0000", symbol=sym)  # a best bid

    def trades() -> list[dict[str, Any]]:
        data = envelope_data(gw.client.get(f"/api/v1/trades/recent?symbol={sym}&limit=2"), 200)
        assert isinstance(data, list) and len(data) == 2
        return data

    newest, older = eventually(trades, what="the trades in the store")
    assert set(newest) == {
        "trade_id", "price", "quantity", "quote_quantity", "taker_side", "executed_at",
    }  # fmt: skip
    assert (newest["price"], newest["quantity"], newest["taker_side"]) == (
        "35001.00", "0.2000", "BUY",
    )  # fmt: skip
    assert newest["quote_quantity"] == "7000.20000000"
    assert (older["price"], older["quantity"]) == ("35000.00", "0.3000")
    assert int(newest["trade_id"]) > int(older["trade_id"])

    def ticker_now() -> dict[str, Any]:
        data = envelope_data(gw.client.get(f"/api/v1/ticker?symbol={sym}"), 200)
        assert isinstance(data, dict) and data["best_bid"] == "34000.00", data
        return data

    ticker = eventually(ticker_now, what="the book's best bid")
    assert set(ticker) == {
        "symbol", "last_price", "best_bid", "best_ask", "open_24h", "high_24h", "low_24h",
        "volume_24h", "quote_volume_24h", "trade_count_24h",
    }  # fmt: skip
    assert ticker["symbol"] == sym and ticker["last_price"] == "35001.00"
    assert ticker["best_ask"] is None or Decimal(ticker["best_ask"]) > Decimal("35001.00")
    assert ticker["trade_count_24h"] >= 2
    assert ticker["high_24h"] == "35001.00"
    everyone = envelope_data(gw.client.get("/api/v1/ticker"), 200)
    assert isinstance(everyone, list)
    assert [t["symbol"] for t in everyone] == ["BTC_USDT", "ETH_USDT"]

    def klines() -> list[dict[str, Any]]:
        data = envelope_data(gw.client.get(f"/api/v1/klines?symbol={sym}&interval=1m"), 200)
        assert isinstance(data, list) and data
        assert data[-1]["close"] == "35001.00"
        return data

    rows = eventually(klines, what="the klines in the store")
    assert set(rows[-1]) == {
        "open_time", "close_time", "open", "high", "low", "close", "volume", "quote_volume",
        "trade_count",
    }  # fmt: skip
    assert rows[-1]["close_time"] == rows[-1]["open_time"] + 59_999
    assert [k["open_time"] for k in rows] == sorted(k["open_time"] for k in rows)
    day = envelope_data(
        gw.client.get(f"/api/v1/klines?symbol={sym}&interval=1d&start=0&limit=5"), 200
    )
    assert isinstance(day, list) and len(day) == 1
    assert day[0]["trade_count"] >= 2
