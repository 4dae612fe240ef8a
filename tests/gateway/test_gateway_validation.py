"""Every bad request is a 400 (or 413) envelope with its code, and reaches no log.

"Nothing reaches Kafka" is checked on the real orders topic: each case is bracketed by two
valid deposits, and the second one's offset (from the broker's acknowledgement) must follow
the first one's directly. The orders topic has one partition, so a command published by the
bad request would sit between them.

Each command case also runs through both transports of the command routes (the
framework-free fast path and the FastAPI route) and must get the same answer from both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_testkit import Gateway, envelope_error, run_gateway

from engine.markets import Markets
from engine.validation import MAX_CLIENT_ORDER_ID_LENGTH
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from gateway.schemas import PlaceOrderRequest

pytestmark = pytest.mark.kafka

ORDER: dict[str, Any] = {
    "user_id": 7,
    "symbol": "BTC_USDT",
    "side": "BUY",
    "order_type": "LIMIT",
    "price": "50000.00",
    "quantity": "0.01000",
}
CANCEL: dict[str, Any] = {"user_id": 7, "symbol": "BTC_USDT", "order_id": "12"}
FUNDS: dict[str, Any] = {"user_id": 7, "asset": "USDT", "amount": "100.00"}
_DROP = object()


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    body = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


def _raw(base: dict[str, Any], key: str, literal: str) -> bytes:
    """``base`` with ``key`` set to a raw JSON literal (for numbers json.dumps cannot write)."""
    body = _with(base, **{key: "__X__"}).decode()
    return body.replace('"__X__"', literal).encode()


# (route, query, body, status, code)
CASES: list[tuple[str, str, bytes, int, str]] = [
    # prices
    ("create", "", _with(ORDER, price="50000.001"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="0"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="0.00"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="-1"), 400, "INVALID_PRICE"),
    ("create", "", _raw(ORDER, "price", "-50000"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="NaN"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="Infinity"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="-Infinity"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="1e999999"), 400, "INVALID_PRICE"),
    ("create", "", _raw(ORDER, "price", "1e999999"), 400, "INVALID_PRICE"),
    ("create", "", _raw(ORDER, "price", "1e-999999"), 400, "INVALID_PRICE"),
    ("create", "", _raw(ORDER, "price", "0.30000000000000004"), 400, "INVALID_PRICE"),
    ("create", "", _raw(ORDER, "price", "50000.001"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="10000000.01"), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price="1" * 100), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price=True), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price=["1"]), 400, "INVALID_PRICE"),
    ("create", "", _with(ORDER, price={"v": "1"}), 400, "INVALID_PRICE"),
    # quantities
    ("create", "", _with(ORDER, quantity="0.000011"), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity="0"), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity="1000.00001"), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity="1001"), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity=10**25), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity=-1), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity=None), 400, "INVALID_QUANTITY"),
    ("create", "", _raw(ORDER, "quantity", "1e5"), 400, "INVALID_QUANTITY"),
    ("create", "", _with(ORDER, quantity=_DROP), 400, "INVALID_REQUEST"),
    # inconsistent orders
    ("create", "", _with(ORDER, price=_DROP), 400, "INVALID_ORDER"),
    ("create", "", _with(ORDER, price=None), 400, "INVALID_ORDER"),
    ("create", "", _with(ORDER, order_type="MARKET"), 400, "INVALID_ORDER"),
    (
        "create",
        "",
        _with(ORDER, order_type="MARKET", price=_DROP, time_in_force="FOK"),
        400,
        "INVALID_ORDER",
    ),
    (
        "create",
        "",
        _with(ORDER, order_type="MARKET", price=_DROP, post_only=True),
        400,
        "INVALID_ORDER",
    ),
    ("create", "", _with(ORDER, post_only=True, time_in_force="IOC"), 400, "INVALID_ORDER"),
    # symbols and enums
    ("create", "", _with(ORDER, symbol="DOGE_USDT"), 400, "UNKNOWN_SYMBOL"),
    ("create", "", _with(ORDER, symbol="btc_usdt"), 400, "UNKNOWN_SYMBOL"),
    ("create", "", _with(ORDER, symbol="X" * 5000), 400, "UNKNOWN_SYMBOL"),
    ("create", "", _with(ORDER, symbol=5), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, symbol=_DROP), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, side="HOLD"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, side="buy"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, order_type="STOP"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, time_in_force="GTD"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, stp_mode="NONE"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, post_only="yes"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, post_only=1), 400, "INVALID_REQUEST"),
    # client order ids
    (
        "create",
        "",
        _with(ORDER, client_order_id="a" * (MAX_CLIENT_ORDER_ID_LENGTH + 1)),
        400,
        "INVALID_REQUEST",
    ),
    ("create", "", _with(ORDER, client_order_id=""), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, client_order_id="a b"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, client_order_id="é"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, client_order_id=12), 400, "INVALID_REQUEST"),
    # user ids
    ("create", "", _with(ORDER, user_id=0), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, user_id=-1), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, user_id=2**63), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, user_id=10**40), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, user_id="7"), 400, "INVALID_REQUEST"),
    ("create", "", _with(ORDER, user_id=True), 400, "INVALID_REQUEST"),
    ("create", "", _raw(ORDER, "user_id", "7.0"), 400, "INVALID_REQUEST"),
    # user_id may be left out of an order (the key's user), never out of an operator's deposit
    ("deposit", "", _with(FUNDS, user_id=_DROP), 400, "INVALID_REQUEST"),
    # the body itself
    ("create", "", _with(ORDER, qty="1"), 400, "INVALID_REQUEST"),
    ("create", "", b"[1, 2]", 400, "INVALID_REQUEST"),
    ("create", "", b'"order"', 400, "INVALID_REQUEST"),
    ("create", "", b"null", 400, "INVALID_REQUEST"),
    ("create", "", b'{"user_id": 1,', 400, "MALFORMED_JSON"),
    ("create", "", b"", 400, "MALFORMED_JSON"),
    ("create", "", b'{"user_id": NaN}', 400, "MALFORMED_JSON"),
    ("create", "", b"\xff\xfe{}", 400, "MALFORMED_JSON"),
    ("create", "", b"[" * 50_00 + b"]" * 50_00, 400, "MALFORMED_JSON"),
    ("create", "", b'{"user_id": ' + b"9" * 5000 + b"}", 400, "INVALID_REQUEST"),
    ("create", "", b'{"a": "' + b"x" * 20_000 + b'"}', 413, "REQUEST_TOO_LARGE"),
    # query parameters of a command
    ("create", "?wait=maybe", _with(ORDER), 400, "INVALID_REQUEST"),
    ("create", "?wait=true&timeout_ms=0", _with(ORDER), 400, "INVALID_REQUEST"),
    ("create", "?wait=true&timeout_ms=30001", _with(ORDER), 400, "INVALID_REQUEST"),
    ("create", "?timeout_ms=abc", _with(ORDER), 400, "INVALID_REQUEST"),
    ("create", "?wait=yes&symbol=x", _with(ORDER, price="0.001"), 400, "INVALID_PRICE"),
    # cancel
    ("cancel", "", _with(CANCEL, client_order_id="abc"), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id=_DROP), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id="abc"), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id=-1), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id=2**63), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id="1" * 20), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, order_id=1.5), 400, "INVALID_REQUEST"),
    ("cancel", "", _with(CANCEL, symbol="NOPE"), 400, "UNKNOWN_SYMBOL"),
    ("cancel", "", _with(CANCEL, user_id=0), 400, "INVALID_REQUEST"),
    ("cancel", "", b"{", 400, "MALFORMED_JSON"),
    # deposit and withdraw
    ("deposit", "", _with(FUNDS, asset="XRP"), 400, "UNKNOWN_ASSET"),
    ("deposit", "", _with(FUNDS, amount="0"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _with(FUNDS, amount="-1"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _with(FUNDS, amount="0.000000001"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _with(FUNDS, amount="92233720368.54775808"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _with(FUNDS, amount="NaN"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _raw(FUNDS, "amount", "1e999999"), 400, "INVALID_AMOUNT"),
    ("deposit", "", _with(FUNDS, amount=_DROP), 400, "INVALID_REQUEST"),
    ("deposit", "", _with(FUNDS, user_id=2**63), 400, "INVALID_REQUEST"),
    ("withdraw", "", _with(FUNDS, asset=""), 400, "UNKNOWN_ASSET"),
    ("withdraw", "", _with(FUNDS, amount="1.5.0"), 400, "INVALID_AMOUNT"),
    ("withdraw", "", _with(FUNDS, amount=False), 400, "INVALID_AMOUNT"),
    ("withdraw", "", _with(FUNDS, extra=1), 400, "INVALID_REQUEST"),
]

ROUTES = {
    "create": "/api/v1/order/create",
    "cancel": "/api/v1/order/cancel",
    "deposit": "/api/v1/deposit",
    "withdraw": "/api/v1/withdraw",
}

# (path and query, status, code): bad query and path parameters of the reads
READ_CASES: list[tuple[str, int, str]] = [
    ("/api/v1/balances?user_id=abc", 400, "INVALID_REQUEST"),
    ("/api/v1/balances?user_id=0", 400, "INVALID_REQUEST"),
    ("/api/v1/balances?user_id=-3", 400, "INVALID_REQUEST"),
    ("/api/v1/balances?user_id=9223372036854775808", 400, "INVALID_REQUEST"),
    ("/api/v1/balances?user_id=1.5", 400, "INVALID_REQUEST"),
    ("/api/v1/balances?user_id=" + "9" * 5000, 400, "INVALID_REQUEST"),
    ("/api/v1/order/active?user_id=1&symbol=NOPE", 400, "UNKNOWN_SYMBOL"),
    ("/api/v1/order/active?user_id=1&symbol=" + "X" * 100, 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&limit=0", 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&limit=1001", 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&limit=ten", 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&before=abc", 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&before=-1", 400, "INVALID_REQUEST"),
    ("/api/v1/order/history?user_id=1&before=" + "1" * 20, 400, "INVALID_REQUEST"),
    ("/api/v1/trades?user_id=1&limit=5000", 400, "INVALID_REQUEST"),
    ("/api/v1/trades?user_id=1&symbol=NOPE", 400, "UNKNOWN_SYMBOL"),
    ("/api/v1/order/1?user_id=x", 400, "INVALID_REQUEST"),
]


@pytest.fixture(scope="module")
def gw(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    markets: Markets,
    codec: Codec,
) -> Iterator[Gateway]:
    topics = Topics.with_prefix(f"v{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    path: Path = tmp_path_factory.mktemp("validation") / "exchange.sqlite3"
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=topics, store_path=path, markets=markets, codec=codec
    ) as gateway:
        yield gateway


def _sentinel(gw: Gateway) -> int:
    response = gw.client.post("/api/v1/deposit", json={"user_id": 1, "asset": "BTC", "amount": "1"})
    assert response.status_code == 202, response.text
    return int(response.json()["data"]["command_id"])


@pytest.mark.parametrize(("route", "query", "body", "status", "code"), CASES)
def test_command_when_input_invalid_returns_its_code_and_publishes_nothing(
    gw: Gateway, route: str, query: str, body: bytes, status: int, code: str
) -> None:
    before = _sentinel(gw)
    answers = []
    for fast in (True, False):
        gw.app.fast_path = fast
        try:
            response = gw.client.post(
                ROUTES[route] + query, content=body, headers={"content-type": "application/json"}
            )
        finally:
            gw.app.fast_path = True
        assert envelope_error(response) == (status, code), response.text
        answers.append(response.json())
    after = _sentinel(gw)

    assert answers[0] == answers[1], "the fast path and the FastAPI route disagree"
    assert after == before + 1, "a refused request reached the orders topic"


@pytest.mark.parametrize(("path", "status", "code"), READ_CASES)
def test_read_when_parameter_invalid_returns_400_envelope(
    gw: Gateway, path: str, status: int, code: str
) -> None:
    assert envelope_error(gw.client.get(path)) == (status, code)


def test_command_when_posted_as_text_plain_is_still_parsed_as_json(gw: Gateway) -> None:
    response = gw.client.post(
        "/api/v1/deposit", content=json.dumps(FUNDS), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 202, response.text


def test_command_when_body_is_chunked_without_length_is_read_and_bounded(gw: Gateway) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        data = json.dumps(FUNDS).encode() if total == 0 else b" " * total
        yield data

    ok = gw.client.post("/api/v1/deposit", content=chunks(0))
    assert ok.status_code == 202, ok.text
    too_big = gw.client.post("/api/v1/deposit", content=chunks(100_000))
    assert envelope_error(too_big) == (413, "REQUEST_TOO_LARGE")


def test_place_request_when_client_order_id_is_the_engines_longest_is_accepted() -> None:
    """One rule on both sides: the gateway takes exactly the ids the engine takes (64)."""
    body = {**ORDER, "client_order_id": "a" * MAX_CLIENT_ORDER_ID_LENGTH}
    assert PlaceOrderRequest.model_validate(body).client_order_id == body["client_order_id"]
    assert MAX_CLIENT_ORDER_ID_LENGTH == 64
