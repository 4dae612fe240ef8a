"""Access (issue #14): every route x every way a request can lack the right to it.

The table has one row per route of the app (method, path template). A route added to the
app without a row here fails ``test_routes_when_listed_by_the_app_each_has_a_row``; each
scenario test sends every row's request with that scenario's key and checks the code, and
that no answer carries any of the victim's data.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from gateway_testkit import Gateway, Script, envelope_data, envelope_error, run_gateway
from prometheus_client import CollectorRegistry

from engine.enums import Side
from engine.markets import Markets
from exchange.codec import Codec
from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from gateway.app import GatewayConfig
from gateway.auth.gate import AuthFailureCollector, iter_routes
from gateway.auth.policy import Access, access_of
from gateway.auth.principal import Role
from gateway.auth.ratelimit import RateLimits
from gateway.auth.signing import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from gateway.dashboard import dashboard_router
from gateway.metrics import metrics_router
from tests.support.signing import Signer, new_signer, now_ms, sign_request

pytestmark = pytest.mark.kafka

ATTACKER, VICTIM = 2, 3
SECRET = "victim-secret"  # the victim's client order id: no answer may contain it
USDT = 10**8


@dataclass(frozen=True)
class Row:
    """A request to one route. ``other_trader``: the code when the attacker's valid key
    asks for the victim's data (None: the route takes no user)."""

    method: str
    target: Callable[[dict[str, int]], str]
    body: Callable[[dict[str, int]], dict[str, Any] | None] = lambda ids: None
    other_trader: tuple[int, str] | None = (403, "FORBIDDEN")


def _static(text: str) -> Callable[[dict[str, int]], str]:
    return lambda ids: text


FORBIDDEN = (403, "FORBIDDEN")
ORDER = {"symbol": "BTC_USDT", "side": "BUY", "order_type": "LIMIT", "price": "1.00",
         "quantity": "1"}  # fmt: skip

# (method, route template) -> the request. Every route of the app needs a row.
ROWS: dict[tuple[str, str], Row] = {
    ("POST", "/api/v1/order/create"): Row(
        "POST", _static("/api/v1/order/create"), lambda ids: {**ORDER, "user_id": VICTIM}
    ),
    ("POST", "/api/v1/order/cancel"): Row(
        "POST",
        _static("/api/v1/order/cancel"),
        lambda ids: {"user_id": VICTIM, "symbol": "BTC_USDT", "order_id": str(ids["order"])},
    ),
    ("POST", "/api/v1/order/cancel-all"): Row(
        "POST",
        _static("/api/v1/order/cancel-all"),
        lambda ids: {"user_id": VICTIM, "symbol": "BTC_USDT"},
    ),
    ("POST", "/api/v1/order/amend"): Row(
        "POST",
        _static("/api/v1/order/amend"),
        lambda ids: {
            "user_id": VICTIM,
            "symbol": "BTC_USDT",
            "order_id": str(ids["order"]),
            "quantity": "0.001",
        },
    ),
    ("POST", "/api/v1/deposit"): Row(
        "POST",
        _static("/api/v1/deposit"),
        lambda ids: {"user_id": VICTIM, "asset": "USDT", "amount": "1"},
    ),
    ("POST", "/api/v1/withdraw"): Row(
        "POST",
        _static("/api/v1/withdraw"),
        lambda ids: {"user_id": VICTIM, "asset": "USDT", "amount": "1"},
    ),
    ("GET", "/api/v1/order/active"): Row("GET", _static(f"/api/v1/order/active?user_id={VICTIM}")),
    ("GET", "/api/v1/order/history"): Row(
        "GET", _static(f"/api/v1/order/history?user_id={VICTIM}")
    ),
    ("GET", "/api/v1/order/{order_id:digits}"): Row(
        "GET", lambda ids: f"/api/v1/order/{ids['order']}", other_trader=(404, "ORDER_NOT_FOUND")
    ),
    ("GET", "/api/v1/trades"): Row("GET", _static(f"/api/v1/trades?user_id={VICTIM}")),
    ("GET", "/api/v1/balances"): Row("GET", _static(f"/api/v1/balances?user_id={VICTIM}")),
    ("POST", "/api/v1/admin/users"): Row(
        "POST",
        _static("/api/v1/admin/users"),
        lambda ids: {"public_key": new_signer().public_key},
    ),
    ("POST", "/api/v1/admin/users/{user_id}/keys"): Row(
        "POST",
        _static(f"/api/v1/admin/users/{VICTIM}/keys"),
        lambda ids: {"public_key": new_signer().public_key},
    ),
    ("DELETE", "/api/v1/admin/keys/{api_key}"): Row(
        "DELETE",
        _static("/api/v1/admin/keys/kvictim"),
    ),
    # Public: market data (issue #15) and everything outside /api/.
    ("GET", "/api/v1/depth"): Row(
        "GET", _static("/api/v1/depth?symbol=BTC_USDT"), other_trader=None
    ),
    ("GET", "/api/v1/trades/recent"): Row(
        "GET", _static("/api/v1/trades/recent?symbol=BTC_USDT"), other_trader=None
    ),
    ("GET", "/api/v1/ticker"): Row("GET", _static("/api/v1/ticker"), other_trader=None),
    ("GET", "/api/v1/klines"): Row(
        "GET", _static("/api/v1/klines?symbol=BTC_USDT&interval=1m"), other_trader=None
    ),
    ("GET", "/health"): Row("GET", _static("/health"), other_trader=None),
    ("GET", "/ready"): Row("GET", _static("/ready"), other_trader=None),
    ("GET", "/openapi.json"): Row("GET", _static("/openapi.json"), other_trader=None),
    ("GET", "/docs"): Row("GET", _static("/docs"), other_trader=None),
    ("GET", "/docs/oauth2-redirect"): Row(
        "GET", _static("/docs/oauth2-redirect"), other_trader=None
    ),
    ("GET", "/metrics"): Row("GET", _static("/metrics"), other_trader=None),
    ("GET", "/dashboard"): Row("GET", _static("/dashboard"), other_trader=None),
    ("GET", "/dashboard/data"): Row("GET", _static("/dashboard/data"), other_trader=None),
    ("GET", "/dashboard/assets/{name}"): Row(
        "GET", _static("/dashboard/assets/dashboard.js"), other_trader=None
    ),
}


@pytest.fixture(scope="module")
def gw(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, markets: Markets, codec: Codec
) -> Iterator[Gateway]:
    topics = Topics.with_prefix(f"a{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    path: Path = tmp_path_factory.mktemp("auth") / "exchange.sqlite3"
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=topics, store_path=path, markets=markets, codec=codec
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def ids(gw: Gateway, markets: Markets) -> dict[str, int]:
    """The victim's data in the store: a deposit and an open order named SECRET."""
    s = Script(markets)
    s.deposit(VICTIM, "USDT", 1000 * USDT)
    order = s.place(VICTIM, Side.BUY, 100, 1, client_order_id=SECRET)
    s.flush_to(gw.store)
    return {"order": order}


def _app_routes(gw: Gateway) -> set[tuple[str, str]]:
    routes = set()
    for route in iter_routes(gw.app.routes):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                routes.add((method, route.path))
    return routes


def _rows(gw: Gateway) -> list[tuple[tuple[str, str], Row]]:
    """The rows of the routes this app serves (market data rows wait for their routes)."""
    served = _app_routes(gw)
    return [(key, row) for key, row in ROWS.items() if key in served]


def _send(
    gw: Gateway, row: Row, ids: dict[str, int], signer: Signer | None,
    *, tamper: Callable[[httpx.Request], None] | None = None, clock: int | None = None,
) -> httpx.Response:  # fmt: skip
    body = row.body(ids)
    request = gw.client.build_request(row.method, row.target(ids), json=body)
    if signer is not None:
        sign_request(request, signer.key, signer.api_key, now_ms() if clock is None else clock)
    if tamper is not None:
        tamper(request)
    with httpx.Client(base_url=gw.url, timeout=30) as raw:  # no auth: as built here
        response = raw.send(request)
    assert SECRET not in response.text and f'"user_id":{VICTIM}' not in response.text
    return response


def _signed_rows(gw: Gateway) -> list[tuple[tuple[str, str], Row]]:
    return [(k, r) for k, r in _rows(gw) if access_of(*k) is not Access.PUBLIC]


def test_routes_when_listed_by_the_app_each_has_a_row(gw: Gateway) -> None:
    # As `exchange gateway` serves it: with the dashboard and /metrics.
    gw.app.include_router(dashboard_router(()))
    gw.app.include_router(metrics_router(CollectorRegistry()))
    gw.app.gate.bind(gw.app.routes)  # type: ignore[union-attr]
    missing = _app_routes(gw) - set(ROWS)
    assert not missing, (
        f"routes without a row in ROWS (and maybe in gateway.auth.policy): {missing}"
    )
    assert len(_signed_rows(gw)) >= 13


@pytest.mark.parametrize(
    "scenario", ["no key", "unknown key", "bad signature", "stale timestamp", "revoked key"]
)
def test_signed_route_when_request_lacks_a_valid_signature_answers_401(
    gw: Gateway, ids: dict[str, int], scenario: str
) -> None:
    attacker = gw.keys.trader(ATTACKER)
    revoked = gw.keys.trader(ATTACKER + 50)
    gw.keys.revoke(revoked)
    window = gw.app.gate.window_ms  # type: ignore[union-attr]
    expected = {
        "no key": "UNAUTHENTICATED",
        "unknown key": "UNAUTHENTICATED",
        "bad signature": "INVALID_SIGNATURE",
        "stale timestamp": "TIMESTAMP_OUT_OF_WINDOW",
        "revoked key": "UNAUTHENTICATED",
    }[scenario]
    impostor = Signer(new_signer().key, api_key=attacker.api_key)  # right id, wrong key
    failures = []
    for key, row in _signed_rows(gw):
        if scenario == "no key":
            response = _send(gw, row, ids, None)
        elif scenario == "unknown key":
            response = _send(gw, row, ids, new_signer())
        elif scenario == "bad signature":
            response = _send(gw, row, ids, impostor)
        elif scenario == "stale timestamp":
            response = _send(gw, row, ids, attacker, clock=now_ms() - window - 1_000)
        else:
            response = _send(gw, row, ids, revoked)
        if envelope_error(response) != (401, expected):
            failures.append((key, response.status_code, response.text))
    assert not failures


def test_signed_route_when_another_traders_key_asks_for_the_victim_answers_no_data(
    gw: Gateway, ids: dict[str, int], codec: Codec
) -> None:
    attacker = gw.keys.trader(ATTACKER)
    failures = []
    for key, row in _signed_rows(gw):
        expected = row.other_trader if access_of(*key) is not Access.OPERATOR else FORBIDDEN
        response = _send(gw, row, ids, attacker)
        if envelope_error(response) != expected:
            failures.append((key, response.status_code, response.text))
    assert not failures
    assert gw.orders_log(codec) == []  # nothing published for the victim


def test_route_when_key_has_the_wrong_role_answers_403(gw: Gateway, ids: dict[str, int]) -> None:
    trader, operator = gw.keys.trader(ATTACKER), gw.keys.operator
    failures = []
    checked = 0
    for key, row in _signed_rows(gw):
        access = access_of(*key)
        if access is Access.READ:
            continue  # both roles read (traders their own data, operators anyone's)
        signer = trader if access is Access.OPERATOR else operator  # operators do not trade
        response = _send(gw, row, ids, signer)
        checked += 1
        if envelope_error(response) != FORBIDDEN:
            failures.append((key, response.status_code, response.text))
    assert not failures and checked >= 8


def test_public_route_when_signature_headers_are_garbage_ignores_them(
    gw: Gateway, ids: dict[str, int]
) -> None:
    headers = {HEADER_KEY: "nope", HEADER_TIMESTAMP: "x", HEADER_SIGNATURE: "!!"}
    for key, row in _rows(gw):
        if access_of(*key) is Access.PUBLIC:
            response = gw.client.request(row.method, row.target(ids), headers=headers)
            assert response.status_code not in (401, 403), (key, response.text)


def test_signed_request_when_replayed_outside_the_window_is_refused(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    config = GatewayConfig(rate_limits=None, auth_window_ms=400)
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=fresh_topics, store_path=tmp_path / "s.sqlite3",
        markets=markets, codec=codec, config=config,
    ) as g:  # fmt: skip
        signer = g.keys.trader(7)
        request = g.client.build_request("GET", "/api/v1/balances")
        sign_request(request, signer.key, signer.api_key, now_ms())
        with httpx.Client(base_url=g.url) as raw:
            envelope_data(raw.send(request), 200)  # within the window: served
            time.sleep(0.5)
            assert envelope_error(raw.send(request)) == (401, "TIMESTAMP_OUT_OF_WINDOW")


def test_signed_request_when_body_or_target_changed_after_signing_is_refused(
    gw: Gateway, ids: dict[str, int], codec: Codec
) -> None:
    signer = gw.keys.trader(ATTACKER)
    before = len(gw.orders_log(codec))

    def more(request: httpx.Request) -> None:  # same length, another quantity
        request._content = request.content.replace(b'"quantity":"1"', b'"quantity":"9"')
        request.stream = httpx.ByteStream(request._content)

    row = Row("POST", _static("/api/v1/order/create"), lambda ids: ORDER)
    assert envelope_error(_send(gw, row, ids, signer, tamper=more)) == (401, "INVALID_SIGNATURE")
    # The raw target is signed byte for byte: %41 is "A" decoded, but not the same bytes.
    ts = now_ms()
    signed = sign(signer.key, ts, "GET", "/api/v1/balances?asset=USDT")
    headers = {HEADER_KEY: signer.api_key, HEADER_TIMESTAMP: str(ts), HEADER_SIGNATURE: signed}
    wrong = httpx.get(f"{gw.url}/api/v1/balances?asset=%55SDT", headers=headers)
    assert envelope_error(wrong) == (401, "INVALID_SIGNATURE")
    headers[HEADER_SIGNATURE] = sign(signer.key, ts, "GET", "/api/v1/balances?asset=%55SDT")
    envelope_data(httpx.get(f"{gw.url}/api/v1/balances?asset=%55SDT", headers=headers), 200)
    assert len(gw.orders_log(codec)) == before


def test_gate_when_requests_are_refused_counts_them_by_code(gw: Gateway) -> None:
    failures = gw.app.gate.failures  # type: ignore[union-attr]
    before = dict(failures)
    httpx.get(f"{gw.url}/api/v1/balances")
    assert failures["UNAUTHENTICATED"] == before.get("UNAUTHENTICATED", 0) + 1
    [family] = AuthFailureCollector(gw.app.gate).collect()  # type: ignore[arg-type]
    exported = {s.labels["code"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert exported["UNAUTHENTICATED"] == failures["UNAUTHENTICATED"]
    assert set(exported) >= {"TIMESTAMP_OUT_OF_WINDOW", "INVALID_SIGNATURE", "FORBIDDEN"}


def test_order_rate_limit_when_exceeded_answers_429_with_retry_after_and_operators_are_exempt(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    config = GatewayConfig(rate_limits=RateLimits(orders_per_second=2, requests_per_minute=0))
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=fresh_topics, store_path=tmp_path / "s.sqlite3",
        markets=markets, codec=codec, config=config,
    ) as g:  # fmt: skip
        body = {**ORDER, "user_id": 7}
        answers = [g.client.post("/api/v1/order/create", json=body) for _ in range(10)]
        codes = [r.status_code for r in answers]
        assert codes[:2] == [202, 202] and 429 in codes, codes  # 10 in well under 5 s
        limited = answers[codes.index(429)]
        assert envelope_error(limited) == (429, "RATE_LIMITED")
        assert limited.headers["retry-after"] == "1"  # whole seconds: the order window is 1 s
        reads = [g.client.get("/api/v1/balances?user_id=7").status_code for _ in range(5)]
        assert reads == [200] * 5  # reads are not order commands
        deposits = [
            g.client.post("/api/v1/deposit", json={"user_id": 7, "asset": "USDT", "amount": "1"})
            for _ in range(10)
        ]
        assert {r.status_code for r in deposits} == {202}  # operators are exempt


def test_request_rate_limit_when_exceeded_answers_429_for_every_route_of_that_key(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    config = GatewayConfig(rate_limits=RateLimits(orders_per_second=0, requests_per_minute=5))
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=fresh_topics, store_path=tmp_path / "s.sqlite3",
        markets=markets, codec=codec, config=config,
    ) as g:  # fmt: skip
        reads = [g.client.get("/api/v1/balances?user_id=7").status_code for _ in range(5)]
        assert reads == [200] * 5
        limited = g.client.post("/api/v1/order/create", json={**ORDER, "user_id": 7})
        assert envelope_error(limited) == (429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert g.client.get("/api/v1/balances?user_id=8").status_code == 200  # another key


def test_operator_when_reading_names_the_user_and_may_read_anyones_data(
    gw: Gateway, ids: dict[str, int]
) -> None:
    with gw.signed(gw.keys.operator) as operator:
        balances = envelope_data(operator.get(f"/api/v1/balances?user_id={VICTIM}"), 200)
        assert balances == [{"asset": "USDT", "available": "999.99999000", "locked": "0.00001000"}]
        assert envelope_error(operator.get("/api/v1/balances")) == (400, "INVALID_REQUEST")
        order = envelope_data(operator.get(f"/api/v1/order/{ids['order']}"), 200)
        assert isinstance(order, dict) and order["client_order_id"] == SECRET
    with gw.signed(gw.keys.trader(VICTIM)) as victim:  # the owner, without naming itself
        assert envelope_data(victim.get(f"/api/v1/order/{ids['order']}"), 200)


def test_gate_when_several_checks_fail_answers_the_first_in_the_issues_order(gw: Gateway) -> None:
    trader, stale = gw.keys.trader(ATTACKER), now_ms() - 60_000
    impostor = Signer(new_signer().key, api_key=trader.api_key)
    unknown = new_signer()
    deposit = Row("POST", _static("/api/v1/deposit"), lambda ids: {"user_id": 1, "asset": "USDT",
                                                                    "amount": "1"})  # fmt: skip
    cases = [
        (unknown, stale, "UNAUTHENTICATED"),  # unknown key and stale: the key first
        (impostor, stale, "TIMESTAMP_OUT_OF_WINDOW"),  # stale and a wrong signature
        (impostor, None, "INVALID_SIGNATURE"),  # wrong signature on a route it may not use
        (trader, None, "FORBIDDEN"),  # all valid but the role
    ]
    for signer, clock, code in cases:
        response = _send(gw, deposit, {}, signer, clock=clock)
        assert envelope_error(response)[1] == code, (signer.api_key, clock, response.text)


# The OpenAPI document declares the scheme the gate enforces (machine-readable, for client
# generators): the three header schemes, all required together by exactly the operations the
# gate signs, with the roles that may call them in x-roles.

SIGNED_REQUIREMENT = [{"ApiKey": [], "Timestamp": [], "Signature": []}]


def _spec_operations(gw: Gateway) -> dict[tuple[str, str], tuple[dict[str, Any], Any]]:
    """(method, route template) -> (its operation in the served spec, the route)."""
    spec = gw.client.get("/openapi.json").json()
    found = {}
    for route in iter_routes(gw.app.routes):
        if not getattr(route, "include_in_schema", False):
            continue
        for method in route.methods:
            if method != "HEAD":
                operation = spec["paths"][route.path_format][method.lower()]
                found[(method, route.path)] = (operation, route)
    return found


def test_spec_when_served_declares_the_three_signature_headers_as_api_key_schemes(
    gw: Gateway,
) -> None:
    schemes = gw.client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {name: (s["type"], s["in"], s["name"]) for name, s in schemes.items()} == {
        "ApiKey": ("apiKey", "header", HEADER_KEY),
        "Timestamp": ("apiKey", "header", HEADER_TIMESTAMP),
        "Signature": ("apiKey", "header", HEADER_SIGNATURE),
    }
    assert "epoch milliseconds" in schemes["Timestamp"]["description"]
    assert "Ed25519" in schemes["Signature"]["description"]
    assert "timestamp + METHOD + request_target + body" in schemes["Signature"]["description"]
    assert all(s["description"] for s in schemes.values())


def test_spec_when_the_gate_signs_a_route_requires_all_three_schemes_and_public_ones_none(
    gw: Gateway, ids: dict[str, int]
) -> None:
    # What the gate does, asked by sending each route an unsigned request: 401 UNAUTHENTICATED
    # means signed. The spec must say exactly that, operation by operation.
    operations = _spec_operations(gw)
    rows = dict(_rows(gw))
    assert set(operations) <= set(rows), set(operations) - set(rows)
    failures = []
    signed = public = 0
    for key, (operation, _) in operations.items():
        response = _send(gw, rows[key], ids, None)
        refused = response.status_code == 401 and envelope_error(response)[1] == "UNAUTHENTICATED"
        signed, public = signed + refused, public + (not refused)
        expected = SIGNED_REQUIREMENT if refused else []
        if operation.get("security", []) != expected:
            failures.append((key, refused, operation.get("security")))
    assert not failures
    assert signed >= 13 and public >= 6  # 14 signed; health, ready and 4 market data routes


def test_spec_when_an_operation_is_signed_lists_the_roles_the_gates_table_allows(
    gw: Gateway,
) -> None:
    roles = {}
    for (method, template), (operation, route) in _spec_operations(gw).items():
        access = access_of(method, route.path)  # the gate's table, by the route's template
        if access is Access.PUBLIC:
            assert "x-roles" not in operation, (method, template)
        else:
            roles[(method, route.path_format)] = operation["x-roles"]
            assert operation["x-roles"] == [r.value for r in Role if access.allows(r)]
    # Spec paths drop the route's convertor ({order_id:digits}); the roles must not.
    assert roles[("GET", "/api/v1/order/{order_id}")] == ["TRADER", "OPERATOR"]
    assert roles[("POST", "/api/v1/order/create")] == ["TRADER"]
    assert roles[("POST", "/api/v1/deposit")] == ["OPERATOR"]
    assert roles[("DELETE", "/api/v1/admin/keys/{api_key}")] == ["OPERATOR"]


def test_spec_when_served_validates_against_the_openapi_meta_schema(gw: Gateway) -> None:
    spec = gw.client.get("/openapi.json").json()
    schemathesis.openapi.from_dict(spec).validate()  # raises on an invalid document
    broken = copy.deepcopy(spec)  # the validator does see the schemes: a wrong one fails
    broken["components"]["securitySchemes"]["ApiKey"]["in"] = "body"
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()
