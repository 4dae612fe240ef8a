"""``GET /ws`` and the gateway's books on the real pipeline (issue #15): a client keeps an
exact local book from the depth stream, private streams are isolated, slow consumers are
closed, and the protocol answers what it should.

One pipeline (engine service, settlement, gateway) for the module; each test uses its own
users, so tests do not see each other's orders except in the shared book, which only the
client-sync test checks as a whole.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from gateway_testkit import envelope_data
from market_testkit import (
    WAIT,
    MarketGateway,
    Pipeline,
    StalledClient,
    StreamReader,
    engine_from_log,
    engine_levels,
    open_stream,
    run_market_gateway,
    run_pipeline,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.commands import PlaceOrder
from engine.enums import OrderType, Side, TimeInForce
from engine.markets import Markets
from exchange.codec import Codec
from exchange.kafka import make_producer
from exchange.metrics import new_registry
from gateway.convert import format_lots, format_ticks
from gateway.streams.auth import SignedLogin, registry_lookup
from gateway.streams.hub import StreamConfig
from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka

SYMBOL = "BTC_USDT"


@pytest.fixture(scope="module")
def pipe(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, markets: Markets, codec: Codec
) -> Iterator[Pipeline]:
    with run_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("market"), markets, codec) as p:
        yield p


@pytest.fixture(scope="module")
def gw(pipe: Pipeline) -> Iterator[MarketGateway]:
    with run_market_gateway(pipe) as g:
        yield g


def _fund(gw: MarketGateway, user: int) -> None:
    for asset, amount in (("BTC", "1000"), ("USDT", "100000000"), ("ETH", "100000")):
        r = gw.client.post(
            f"/api/v1/deposit{WAIT}", json={"user_id": user, "asset": asset, "amount": amount}
        )
        envelope_data(r, 200)


def _order(
    gw: MarketGateway, user: int, side: str, price: str | None, qty: str, *, wait: bool = False,
    symbol: str = SYMBOL,
) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "user_id": user, "symbol": symbol, "side": side,
        "order_type": "LIMIT" if price else "MARKET", "quantity": qty,
    }  # fmt: skip
    if price:
        body["price"] = price
    r = gw.client.post("/api/v1/order/create" + (WAIT if wait else ""), json=body)
    data = envelope_data(r, 200 if wait else 202)
    assert isinstance(data, dict)
    assert data.get("status") != "REJECTED", data
    return data


def _depth(gw: MarketGateway, symbol: str = SYMBOL, limit: int = 1000) -> dict[str, Any]:
    data = envelope_data(gw.client.get(f"/api/v1/depth?symbol={symbol}&limit={limit}"), 200)
    assert isinstance(data, dict)
    return data


def _subscribe(reader: StreamReader, streams: list[str]) -> None:
    reader.send({"op": "subscribe", "streams": streams})
    reader.wait_for(lambda m: m.get("op") == "subscribed" and m["streams"] == streams)


class LocalBook:
    """A client's book kept by the README's procedure (exact decimal strings)."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.sides: dict[str, dict[str, str]] = {
            "bids": {p: q for p, q in snapshot["bids"]},
            "asks": {p: q for p, q in snapshot["asks"]},
        }
        self.last_update_id: int = snapshot["last_update_id"]
        self.first_applied = False

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one depth event; False if it is older than the book (dropped)."""
        if event["last_update_id"] <= self.last_update_id:
            return False
        if self.first_applied:
            assert event["first_update_id"] == self.last_update_id + 1, ("gap", event)
        else:
            assert event["first_update_id"] <= self.last_update_id + 1, ("gap", event)
            self.first_applied = True
        for side in ("bids", "asks"):
            levels = self.sides[side]
            for price, qty in event[side]:
                if Decimal(qty) == 0:
                    levels.pop(price, None)
                else:
                    levels[price] = qty
        self.last_update_id = event["last_update_id"]
        return True

    def levels(self) -> dict[str, list[list[str]]]:
        return {
            "bids": sorted(([p, q] for p, q in self.sides["bids"].items()),
                           key=lambda x: -Decimal(x[0])),
            "asks": sorted(([p, q] for p, q in self.sides["asks"].items()),
                           key=lambda x: Decimal(x[0])),
        }  # fmt: skip


def _random_flow(gw: MarketGateway, users: list[int], n: int, seed: int) -> None:
    rng = random.Random(seed)
    placed: dict[int, list[str]] = {u: [] for u in users}
    for _ in range(n):
        user = rng.choice(users)
        roll = rng.random()
        if roll < 0.6 or not placed[user]:
            side = rng.choice(["BUY", "SELL"])
            offset = rng.randint(1, 30) * (1 if side == "SELL" else -1)
            if rng.random() < 0.2:
                offset = -offset  # crosses: trades
            price = f"{50000 + offset}.00"
            qty = f"0.{rng.randint(1, 300):05d}"
            data = _order(gw, user, side, price, qty)
            placed[user].append(data["order_id"])
        elif roll < 0.7:
            _order(gw, user, rng.choice(["BUY", "SELL"]), None, f"0.{rng.randint(1, 200):05d}")
        elif roll < 0.85:
            order_id = rng.choice(placed[user])
            gw.client.post(
                "/api/v1/order/cancel",
                json={"user_id": user, "symbol": SYMBOL, "order_id": order_id},
            )
        else:
            order_id = rng.choice(placed[user])
            gw.client.post(
                "/api/v1/order/amend",
                json={"user_id": user, "symbol": SYMBOL, "order_id": order_id,
                      "quantity": f"0.{rng.randint(1, 100):05d}"},
            )  # fmt: skip


def test_keep_local_book_when_random_flow_streams_depth_equals_rest_and_engine(
    gw: MarketGateway, pipe: Pipeline, markets: Markets
) -> None:
    users = [101, 102, 103, 104]
    for u in users:
        _fund(gw, u)
    reader = open_stream(gw.ws_url)
    try:
        _subscribe(reader, [f"depth@{SYMBOL}"])
        flow = threading.Thread(target=_random_flow, args=(gw, users, 400, 15), daemon=True)
        flow.start()
        # Mid-flow, as a client joining a live market: the buffered stream, then the snapshot.
        reader.wait_for(lambda m: m.get("stream") == f"depth@{SYMBOL}")
        time.sleep(0.5)
        book = LocalBook(_depth(gw))
        applied = 0
        seen = 0

        def catch_up() -> None:
            nonlocal applied, seen
            msgs = reader.snapshot()
            for m in msgs[seen:]:
                if m.get("stream") == f"depth@{SYMBOL}":
                    applied += book.apply(m["data"])
            seen = len(msgs)

        flow.join(120)
        assert not flow.is_alive()
        engine = engine_from_log(pipe)
        target = engine.update_id(SYMBOL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            catch_up()
            if book.last_update_id == target:
                break
            time.sleep(0.05)
        assert book.last_update_id == target, (book.last_update_id, target)
        assert applied > 0  # the stream, not only the snapshot, built the book
        rest = _depth(gw)
        assert rest["last_update_id"] == target
        assert book.levels() == {"bids": rest["bids"], "asks": rest["asks"]}
        spec = markets.symbols[SYMBOL]
        bids, asks = engine_levels(engine, SYMBOL)
        assert rest["bids"] == [[format_ticks(spec, p), format_lots(spec, q)] for p, q in bids]
        assert rest["asks"] == [[format_ticks(spec, p), format_lots(spec, q)] for p, q in asks]
        assert rest["bids"] or rest["asks"]
    finally:
        reader.close()


def test_depth_stream_when_market_changes_chains_update_ids(gw: MarketGateway) -> None:
    _fund(gw, 201)
    reader = open_stream(gw.ws_url)
    try:
        _subscribe(reader, ["depth@ETH_USDT"])
        for i in range(5):
            _order(gw, 201, "BUY", f"{1000 + i}.00", "1.0000", symbol="ETH_USDT", wait=True)
        events = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            events = [m["data"] for m in reader.snapshot() if m.get("stream") == "depth@ETH_USDT"]
            if events and events[-1]["bids"] and any(p == "1004.00" for p, _ in events[-1]["bids"]):
                break
            time.sleep(0.02)
        assert events
        for before, after in itertools.pairwise(events):
            assert after["first_update_id"] == before["last_update_id"] + 1
            assert after["sequence"] > before["sequence"]
        assert set(events[-1]) == {
            "symbol", "first_update_id", "last_update_id", "sequence", "bids", "asks",
        }  # fmt: skip
        assert ["1004.00", "1.0000"] in events[-1]["bids"]
    finally:
        reader.close()


@dataclass(frozen=True)
class _Principal:
    user_id: int | None


@dataclass(frozen=True)
class _Entry:
    principal: _Principal
    key: str


class _Registry:
    """The access layer's key registry as login reads it (``entry(api_key)``; issue #14's
    ``gateway.auth.registry.KeyRegistry`` is not on this branch). Its signature check below
    stands in for Ed25519 over the same message: ``timestamp + "GET" + "/ws"``."""

    def __init__(self, keys: dict[str, tuple[int | None, str]]) -> None:
        self._keys = keys

    def entry(self, api_key: str) -> _Entry | None:
        found = self._keys.get(api_key)
        return None if found is None else _Entry(_Principal(found[0]), found[1])


def _verify(pub: Any, ts: int, method: str, target: str, body: bytes, sig: str) -> bool:
    return sig == f"{pub}|{ts}|{method}|{target}|{body.decode()}"


def test_private_stream_when_two_users_trade_each_sees_only_own_events(
    pipe: Pipeline, markets: Markets
) -> None:
    keys = {"key-a": (301, "pub-a"), "key-b": (302, "pub-b"), "operator": (None, "pub-o")}

    with run_market_gateway(pipe) as gw:
        gw.app.state.stream_auth = SignedLogin(registry_lookup(_Registry(keys)), _verify)
        for u in (301, 302):
            _fund(gw, u)
        readers: dict[int, StreamReader] = {}
        try:
            for key, (user, pub) in keys.items():
                if user is None:
                    continue
                r = open_stream(gw.ws_url)
                ts = int(time.time() * 1000)
                r.send({"op": "login", "api_key": key, "timestamp": ts,
                        "signature": f"{pub}|{ts}|GET|/ws|"})  # fmt: skip
                ok = r.wait_for(lambda m: m.get("op") == "login")
                assert ok == {"op": "login", "success": True, "user_id": user}
                readers[user] = r
            maker = _order(gw, 301, "SELL", "3000.00", "0.1000", symbol="ETH_USDT", wait=True)
            taker = _order(gw, 302, "BUY", "3000.00", "0.1000", symbol="ETH_USDT", wait=True)
            for user, own, other in ((301, maker, taker), (302, taker, maker)):
                r = readers[user]
                fill = r.wait_for(lambda m: m.get("data", {}).get("type") == "fill")
                assert fill["stream"] == "user"
                assert fill["data"]["order_id"] == own["order_id"]
                r.wait_for(
                    lambda m, o=own: (
                        m.get("data", {}).get("type") == "order"
                        and m["data"]["order_id"] == o["order_id"]
                        and m["data"]["status"] == "FILLED"
                    )
                )
                r.wait_for(lambda m: m.get("data", {}).get("type") == "balance")
                time.sleep(0.3)
                for m in r.snapshot():
                    data = m.get("data", {})
                    if m.get("stream") != "user":
                        continue
                    assert data.get("user_id", user) == user, m
                    assert data.get("order_id") != other["order_id"], m
                    if data["type"] == "fill":
                        assert data["order_id"] == own["order_id"]
        finally:
            for r in readers.values():
                r.close()


@pytest.mark.parametrize(
    ("api_key", "age_ms", "signature"),
    [
        ("key-a", 0, "bad"),  # wrong signature
        ("key-z", 0, None),  # unknown key
        ("operator", 0, None),  # a key without a user has no user stream
        ("key-a", 60_000, None),  # stale timestamp: outside the window
    ],
)
def test_login_when_it_fails_answers_error_and_closes_4401(
    pipe: Pipeline, api_key: str, age_ms: int, signature: str | None
) -> None:
    keys = {"key-a": (401, "pub-a"), "operator": (None, "pub-o")}
    with run_market_gateway(pipe) as gw:
        gw.app.state.stream_auth = SignedLogin(registry_lookup(_Registry(keys)), _verify)
        r = open_stream(gw.ws_url)
        try:
            ts = int(time.time() * 1000) - age_ms
            pub = keys.get(api_key, (None, "none"))[1]
            r.send({"op": "login", "api_key": api_key, "timestamp": ts,
                    "signature": signature or f"{pub}|{ts}|GET|/ws|"})  # fmt: skip
            err = r.wait_for(lambda m: m.get("op") == "error")
            assert err["code"] == "UNAUTHORIZED"
            assert r.thread is not None
            r.thread.join(10)
            assert r.closed_code == 4401
            assert not any(m.get("op") == "login" for m in r.snapshot())
        finally:
            r.close()


def test_subscribe_when_request_is_bad_answers_error_and_stays_open(gw: MarketGateway) -> None:
    r = open_stream(gw.ws_url)
    try:
        for n, (bad, code) in enumerate(
            (
                ("not json", "INVALID_REQUEST"),
                ('{"op": "subscribe", "streams": ["depth@NOPE"]}', "UNKNOWN_STREAM"),
                ('{"op": "subscribe", "streams": ["candles@BTC_USDT"]}', "UNKNOWN_STREAM"),
                ('{"op": "subscribe", "streams": []}', "INVALID_REQUEST"),
                ('{"op": "dance"}', "INVALID_REQUEST"),
            ),
            start=1,
        ):
            r.ws.send(bad)
            deadline = time.monotonic() + 10
            errors: list[dict[str, Any]] = []
            while len(errors) < n and time.monotonic() < deadline:
                errors = [m for m in r.snapshot() if m.get("op") == "error"]
                time.sleep(0.01)
            assert len(errors) == n, (bad, r.snapshot())
            assert set(errors[-1]) == {"op", "code", "message"}
            assert errors[-1]["code"] == code and errors[-1]["message"], (bad, errors[-1])
        r.send({"op": "ping"})
        r.wait_for(lambda m: m == {"op": "pong"})
        r.send({"op": "subscribe", "streams": ["trades@BTC_USDT", "ticker@BTC_USDT"]})
        r.wait_for(lambda m: m.get("op") == "subscribed")
        r.send({"op": "unsubscribe", "streams": ["ticker@BTC_USDT"]})
        ack = r.wait_for(lambda m: m.get("op") == "unsubscribed")
        assert ack["streams"] == ["ticker@BTC_USDT"]
        assert r.closed_code is None
    finally:
        r.close()


def test_trades_stream_when_orders_cross_sends_public_trade(gw: MarketGateway) -> None:
    _fund(gw, 501)
    _fund(gw, 502)
    r = open_stream(gw.ws_url)
    try:
        _subscribe(r, ["trades@ETH_USDT"])
        _order(gw, 501, "SELL", "2500.00", "0.5000", symbol="ETH_USDT", wait=True)
        _order(gw, 502, "BUY", "2500.00", "0.5000", symbol="ETH_USDT", wait=True)
        msg = r.wait_for(lambda m: m.get("stream") == "trades@ETH_USDT")
        [data] = msg["data"]
        assert set(data) == {
            "trade_id", "price", "quantity", "quote_quantity", "taker_side", "executed_at",
        }  # fmt: skip
        assert (data["price"], data["quantity"], data["taker_side"]) == (
            "2500.00", "0.5000", "BUY",
        )  # fmt: skip
    finally:
        r.close()


def test_trades_stream_when_one_order_sweeps_levels_sends_its_trades_in_one_message_in_order(
    gw: MarketGateway,
) -> None:
    for user in (503, 504, 505):
        _fund(gw, user)
    r = open_stream(gw.ws_url)
    try:
        _subscribe(r, ["trades@ETH_USDT"])
        _order(gw, 503, "SELL", "2500.00", "0.1000", symbol="ETH_USDT", wait=True)
        _order(gw, 504, "SELL", "2501.00", "0.2000", symbol="ETH_USDT", wait=True)
        _order(gw, 505, "BUY", "2501.00", "0.3000", symbol="ETH_USDT", wait=True)

        def message() -> list[dict[str, Any]]:
            got = [m["data"] for m in r.snapshot() if m.get("stream") == "trades@ETH_USDT"]
            assert got, "no trades message yet"
            [trades] = got  # the sweep is one engine output: one message
            return trades

        trades = eventually(message)
        assert [(t["price"], t["quantity"]) for t in trades] == [
            ("2500.00", "0.1000"), ("2501.00", "0.2000"),
        ]  # fmt: skip
        ids = [int(t["trade_id"]) for t in trades]
        assert ids == sorted(ids) and len(set(ids)) == 2
    finally:
        r.close()


def test_heartbeat_when_client_never_answers_pings_closes_4408(pipe: Pipeline) -> None:
    config = StreamConfig(ping_interval_s=0.5, ping_timeout_s=1.0)
    with run_market_gateway(pipe, streams=config) as gw:
        live = open_stream(gw.ws_url)
        mute = open_stream(gw.ws_url)
        stop = threading.Event()

        def answer() -> None:  # the live client answers every ping (and more often)
            while not stop.wait(0.1):
                live.send({"op": "pong"})

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        try:
            ping = mute.wait_for(lambda m: m.get("op") == "ping")
            assert isinstance(ping["ts"], int)
            assert mute.thread is not None
            mute.thread.join(15)
            assert mute.closed_code == 4408
            assert live.closed_code is None
            assert any(m.get("op") == "ping" for m in live.snapshot())
        finally:
            stop.set()
            t.join(5)
            live.close()
            mute.close()


def test_ticker_stream_when_market_trades_pushes_the_rest_shape(gw: MarketGateway) -> None:
    _fund(gw, 701)
    _fund(gw, 702)
    r = open_stream(gw.ws_url)
    try:
        _subscribe(r, ["ticker@ETH_USDT"])
        _order(gw, 701, "SELL", "4100.00", "0.2000", symbol="ETH_USDT", wait=True)
        _order(gw, 702, "BUY", "4100.00", "0.2000", symbol="ETH_USDT", wait=True)
        msg = r.wait_for(
            lambda m: m.get("stream") == "ticker@ETH_USDT" and m["data"]["last_price"] == "4100.00"
        )
        rest = envelope_data(gw.client.get("/api/v1/ticker?symbol=ETH_USDT"), 200)
        assert isinstance(rest, dict)
        assert set(msg["data"]) == set(rest)
        assert msg["data"]["symbol"] == "ETH_USDT"
    finally:
        r.close()


def test_delivery_metric_when_stream_messages_are_sent_observes_their_latency(
    gw: MarketGateway,
) -> None:
    _fund(gw, 799)
    r = open_stream(gw.ws_url)
    try:
        _subscribe(r, ["depth@ETH_USDT"])
        registry = new_registry()
        registry.register(gw.app.state.streams.metrics)

        def count() -> float:
            text = generate_latest(registry).decode()
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "exchange_gateway_stream_delivery_seconds_count":
                        return float(s.value)
            raise AssertionError("no delivery histogram")

        before = count()
        _order(gw, 799, "BUY", "900.00", "0.1000", symbol="ETH_USDT", wait=True)
        r.wait_for(lambda m: m.get("stream") == "depth@ETH_USDT")
        eventually(lambda: count() > before, what="a delivery observed")
        text = generate_latest(registry).decode()
        assert "exchange_gateway_stream_clients" in text
    finally:
        r.close()


def _publish_orders(pipe: Pipeline, commands: list[PlaceOrder]) -> None:
    producer = make_producer(pipe.bootstrap)
    for command in commands:
        producer.produce(pipe.topics.orders.name, pipe.codec.encode_command(command), partition=0)
    assert producer.flush(30) == 0


@pytest.mark.parametrize("raw_frames", [True, False], ids=["frame-writer", "send-queue"])
def test_slow_consumer_when_backlog_overflows_is_closed_1008(
    kafka_bootstrap: str, tmp_path: Path, markets: Markets, codec: Codec, raw_frames: bool
) -> None:
    config = StreamConfig(max_queue=4000, max_buffer_bytes=200_000, raw_frames=raw_frames)
    # A pipeline of its own: the flood would make any later gateway's replay long.
    with (
        run_pipeline(kafka_bootstrap, tmp_path, markets, codec) as pipe,
        run_market_gateway(pipe, streams=config) as gw,
    ):
        _fund(gw, 601)
        _fund(gw, 602)
        fast = open_stream(gw.ws_url)
        slow = StalledClient(gw.url, gw.ws_url)
        try:
            _subscribe(fast, ["trades@BTC_USDT", "depth@BTC_USDT"])
            slow.send({"op": "subscribe", "streams": ["trades@BTC_USDT", "depth@BTC_USDT"]})
            hub = gw.app.state.streams
            deadline = time.monotonic() + 10
            while len(hub.subscribers.get("trades@BTC_USDT", ())) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)

            def place(user: int, side: Side, price: int | None, lots: int) -> PlaceOrder:
                return PlaceOrder(
                    command_id=0, order_id=0, timestamp_ms=int(time.time() * 1000),
                    user_id=user, symbol=SYMBOL, side=side,
                    order_type=OrderType.LIMIT if price else OrderType.MARKET,
                    time_in_force=TimeInForce.GTC if price else TimeInForce.IOC,
                    post_only=False, price=price, quantity=lots, client_order_id=None,
                )  # fmt: skip

            # Rounds of 1,000 resting sells swept by one market buy: ~180 kB of stream each,
            # in batches far below the queue bound, until the stalled client's socket and
            # then its queue are full.
            for _round in range(60):
                sells = [place(601, Side.SELL, 8_000_000 + i, 100) for i in range(1000)]
                _publish_orders(pipe, [*sells, place(602, Side.BUY, None, 1000 * 100)])
                time.sleep(0.2)
                if hub.metrics.slow_closed:
                    break
            assert hub.metrics.slow_closed == 1
            assert slow.read_to_close() == (1008, "slow consumer")
            assert fast.closed_code is None  # the client that keeps up stays
            assert len(hub.clients) == 1
        finally:
            fast.close()
            slow.close()
