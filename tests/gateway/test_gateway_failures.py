"""Outages: an unreachable or vanished broker is a bounded 503, never a hang or a 202; an
unreachable store is a 503 on reads; readiness says which."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from gateway_testkit import Gateway, envelope_data, envelope_error, run_gateway

from engine.markets import Markets
from exchange.codec import Codec
from exchange.kafka import make_admin, make_producer
from exchange.topics import Topics, ensure_topics
from gateway.errors import BrokerUnavailable
from gateway.publisher import CommandPublisher
from ops.broker import EmbeddedBroker, free_port
from tests.support.eventually import eventually

pytestmark = pytest.mark.kafka

# The messages of the two time bounds of a command: librdkafka's delivery timeout and the
# publisher's acknowledgement watchdog (gateway.publisher).
_BOUNDED = re.compile(r"timed out|did not acknowledge within")

ORDER = {
    "user_id": 1,
    "symbol": "BTC_USDT",
    "side": "BUY",
    "order_type": "LIMIT",
    "price": "100.00",
    "quantity": "1",
}


def test_create_order_when_broker_unreachable_returns_503_within_the_delivery_bound(
    tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with run_gateway(
        bootstrap=closed,
        topics=Topics.with_prefix("down-"),
        store_path=tmp_path / "s.sqlite3",
        markets=markets,
        codec=codec,
        wait_follower=False,
    ) as gw:  # production delivery timeout (5 s)
        response = gw.client.post("/api/v1/order/create?wait=true", json=ORDER)
        assert envelope_error(response) == (503, "BROKER_UNAVAILABLE")
        # The answer came from one of the two time bounds (the producer's delivery timeout
        # or the publisher's acknowledgement watchdog), not from anything unbounded.
        assert _BOUNDED.search(response.json()["error"]["message"]), response.json()

        ready = gw.client.get("/ready")
        assert envelope_error(ready) == (503, "NOT_READY")
        assert "broker" in ready.json()["error"]["message"]


def test_create_order_when_broker_dies_after_start_returns_503_not_202(
    tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    broker = EmbeddedBroker().start()
    try:
        topics = Topics.with_prefix(f"die{uuid.uuid4().hex[:6]}-")
        ensure_topics(make_admin(broker.bootstrap_servers), topics.all())
        with run_gateway(
            bootstrap=broker.bootstrap_servers,
            topics=topics,
            store_path=tmp_path / "s.sqlite3",
            markets=markets,
            codec=codec,
            delivery_timeout_ms=2000,
        ) as gw:
            envelope_data(gw.client.post("/api/v1/order/create", json=ORDER), 202)
            broker.stop()
            response = gw.client.post("/api/v1/order/create", json=ORDER)
            assert envelope_error(response) == (503, "BROKER_UNAVAILABLE")
            assert _BOUNDED.search(response.json()["error"]["message"]), response.json()
    finally:
        broker.stop()


def test_publish_when_producer_queue_full_refuses_at_once() -> None:
    closed = f"127.0.0.1:{free_port()}"
    publisher = CommandPublisher(
        lambda: make_producer(
            closed, **{"message.timeout.ms": 3000, "queue.buffering.max.messages": 1}
        ),
        "orders",
        ack_timeout_s=4.0,
    )

    async def scenario() -> tuple[BaseException | int, BaseException | int, bool]:
        publisher.start(asyncio.get_running_loop())
        first = asyncio.ensure_future(publisher.publish(b"one"))
        await asyncio.sleep(0)  # one loop turn: the first record is produced and fills the queue
        try:
            second: BaseException | int = await publisher.publish(b"two")
        except BrokerUnavailable as e:
            second = e
        # "At once": refused while the first is still waiting for its acknowledgement (which
        # can only end by its 3-4 s timeout), not after waiting for room in the queue.
        first_pending = not first.done()
        try:
            result: BaseException | int = await first
        except BrokerUnavailable as e:
            result = e
        return result, second, first_pending

    try:
        first, second, first_pending = asyncio.run(scenario())
    finally:
        publisher.close(1.0)
    assert isinstance(second, BrokerUnavailable) and "queue is full" in str(second)
    assert first_pending
    assert isinstance(first, BrokerUnavailable)  # timed out: never a fake acknowledgement


def test_reads_when_store_file_missing_return_503_store_unavailable(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
    markets: Markets,
    codec: Codec,
) -> None:
    with run_gateway(
        bootstrap=kafka_bootstrap,
        topics=fresh_topics,
        store_path=tmp_path / "no-such-dir" / "s.sqlite3",
        markets=markets,
        codec=codec,
        init_schema=False,
        wait_follower=False,  # it loads the keys from the store first: it retries until then
    ) as gw:
        _assert_store_down(gw)


def test_reads_when_store_has_no_schema_yet_return_503_store_unavailable(
    kafka_bootstrap: str,
    fresh_topics: Topics,
    tmp_path: Path,
    markets: Markets,
    codec: Codec,
) -> None:
    path = tmp_path / "empty.sqlite3"
    path.write_bytes(b"")  # settlement has not created its tables yet
    with run_gateway(
        bootstrap=kafka_bootstrap,
        topics=fresh_topics,
        store_path=path,
        markets=markets,
        codec=codec,
        init_schema=False,
        wait_follower=False,
    ) as gw:
        _assert_store_down(gw)


def _assert_store_down(gw: Gateway) -> None:
    for path in (
        "/api/v1/balances?user_id=1",
        "/api/v1/order/active?user_id=1",
        "/api/v1/order/history?user_id=1",
        "/api/v1/trades?user_id=1",
        "/api/v1/order/5?user_id=1",
    ):
        assert envelope_error(gw.client.get(path)) == (503, "STORE_UNAVAILABLE"), path
    ready = gw.client.get("/ready")
    assert envelope_error(ready) == (503, "NOT_READY")
    assert "store" in ready.json()["error"]["message"]
    # Commands do not need the store (a cancel neither: the engine decides): they go through.
    envelope_data(gw.client.post("/api/v1/order/create", json=ORDER), 202)
    cancel = {"user_id": 1, "symbol": "BTC_USDT", "order_id": "5"}
    envelope_data(gw.client.post("/api/v1/order/cancel", json=cancel), 202)


def test_ready_when_output_follower_has_no_topic_yet_is_503_until_it_follows(
    tmp_path: Path, markets: Markets, codec: Codec, kafka_bootstrap: str
) -> None:
    # The broker answers, the store answers, but engine-output does not exist yet: ?wait=true
    # could only answer 202 at once, so the gateway is not ready.
    topics = Topics.with_prefix(f"late{uuid.uuid4().hex[:6]}-")
    with run_gateway(
        bootstrap=kafka_bootstrap,
        topics=topics,
        store_path=tmp_path / "s.sqlite3",
        markets=markets,
        codec=codec,
        wait_follower=False,
    ) as gw:
        ready = gw.client.get("/ready")
        assert envelope_error(ready) == (503, "NOT_READY")
        assert "follower" in ready.json()["error"]["message"]

        ensure_topics(make_admin(kafka_bootstrap), topics.all())
        eventually(lambda: gw.client.get("/ready").status_code == 200, what="/ready to be 200")
        assert gw.app.state.follower.assigned.is_set()
