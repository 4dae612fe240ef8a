"""The key registry's feed (gateway.auth.keyfeed): the store at start, then the output stream
from the settlement group's committed offsets, so no key falls between the two."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
from gateway_testkit import Script, envelope_data, envelope_error, run_gateway

from engine.markets import Markets
from engine.service.output_log import sequence_key
from exchange.codec import Codec
from exchange.kafka import make_consumer, make_producer
from exchange.topics import Topics
from gateway.results import CONSUMER_OVERRIDES, OutputFollower
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually, eventually_async
from tests.support.signing import new_signer

pytestmark = pytest.mark.kafka


def test_gateway_when_started_accepts_keys_from_the_store_and_the_unsettled_stream(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    stored, settled, unsettled, revoked = (new_signer() for _ in range(4))
    s = Script(markets)
    in_store = [s.create_user(stored), s.create_user(revoked)]
    on_log_settled = s.create_user(settled)
    on_log_unsettled = [s.create_user(unsettled), s.revoke(revoked)]
    # The store holds what settlement wrote (the first outputs are no longer on the log, as
    # after retention); the log holds the rest; settlement committed past `settled` only.
    path = tmp_path / "exchange.sqlite3"
    writer = SqliteStore(path)
    writer.init_schema()
    writer.apply([*in_store, on_log_settled])
    writer.close()
    topic = fresh_topics.engine_output.name
    producer = make_producer(kafka_bootstrap)
    for output in (on_log_settled, *on_log_unsettled):
        producer.produce(topic, codec.encode_output(output), sequence_key(output.sequence), 0)
    assert producer.flush(30) == 0
    group = make_consumer(kafka_bootstrap, "settlement", **{"enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    group.close()

    with run_gateway(
        bootstrap=kafka_bootstrap, topics=fresh_topics, store_path=path, markets=markets,
        codec=codec, init_schema=False, wait_market=False,
    ) as gw:  # fmt: skip
        feed = gw.app.state.key_feed
        assert feed.loaded == 3  # the store's rows (stored, revoked, settled)
        eventually(lambda: feed.decoded == 2, timeout_s=10)  # from the committed offset on
        for signer in (stored, settled, unsettled):
            with gw.signed(signer) as client:
                envelope_data(client.get("/api/v1/balances"), 200)
        with gw.signed(revoked) as client:  # in the store as live, revoked on the log
            assert envelope_error(client.get("/api/v1/balances")) == (401, "UNAUTHENTICATED")


def test_follower_with_start_positions_when_behind_its_start_end_is_not_ready_until_there(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec, markets: Markets
) -> None:
    # What the store lacks lies between the start positions and the log's end at the start:
    # the gateway is not ready (keys there unknown) until the follower has read that far.
    s = Script(markets)
    backlog = [s.deposit(1, "USDT", 1) for _ in range(50)]
    topic = fresh_topics.engine_output.name
    producer = make_producer(kafka_bootstrap)
    for output in backlog:
        producer.produce(topic, codec.encode_output(output), sequence_key(output.sequence), 0)
    assert producer.flush(30) == 0
    release = threading.Event()
    taps: list[int] = []

    def slow_tap(messages: list[Message]) -> None:  # holds the follower after two batches
        taps.append(len(messages))
        if len(taps) > 2:
            release.wait(30)

    follower = OutputFollower(
        lambda **extra: make_consumer(
            kafka_bootstrap, "keyfeed-test", **CONSUMER_OVERRIDES,
            **{**extra, "max.partition.fetch.bytes": 1024},
        ),
        topic, codec, batch_size=1,
        start_positions=lambda _topic, parts: {p: OFFSET_BEGINNING for p in parts},
    )  # fmt: skip
    follower.taps.append(slow_tap)

    async def scenario() -> tuple[str | None, str | None]:
        follower.start(asyncio.get_running_loop())
        await asyncio.to_thread(follower.assigned.wait, 30)
        await eventually_async(lambda: len(taps) > 2, timeout_s=30)  # now held
        held = follower.ready()
        release.set()
        await eventually_async(lambda: follower.ready() is None, timeout_s=30)
        return held, follower.ready()

    try:
        held, after = asyncio.run(scenario())
    finally:
        release.set()
        follower.stop()
    assert held is not None and "reading" in held
    assert after is None


def test_ready_when_answered_the_keys_before_the_start_are_all_accepted(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> None:
    # A long unsettled stretch of the log (settlement committed nothing), a key at its end:
    # /ready says 200 only once the follower has read up to where the log ended at its start.
    s = Script(markets)
    backlog = [s.deposit(1, "USDT", 1) for _ in range(3_000)]
    last = new_signer()
    backlog.append(s.create_user(last))
    topic = fresh_topics.engine_output.name
    producer = make_producer(kafka_bootstrap, **{"linger.ms": 20})
    for output in backlog:
        producer.produce(topic, codec.encode_output(output), sequence_key(output.sequence), 0)
    assert producer.flush(30) == 0
    with run_gateway(
        bootstrap=kafka_bootstrap, topics=fresh_topics, store_path=tmp_path / "s.sqlite3",
        markets=markets, codec=codec, wait_market=False,
    ) as gw:  # fmt: skip
        # What /ready asks of the follower (the market books of issue #15 need a real log).
        eventually(lambda: gw.app.state.follower.ready() is None, timeout_s=60)
        with gw.signed(last) as client:
            envelope_data(client.get("/api/v1/balances"), 200)


def test_follower_with_start_positions_when_they_are_the_logs_end_is_ready_without_records(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec, markets: Markets
) -> None:
    # A gateway restarted in a quiet market: settlement committed everything, nothing new
    # arrives, so there is nothing to read before being ready (and nothing will come).
    s = Script(markets)
    topic = fresh_topics.engine_output.name
    producer = make_producer(kafka_bootstrap)
    for output in [s.deposit(1, "USDT", 1) for _ in range(5)]:
        producer.produce(topic, codec.encode_output(output), sequence_key(output.sequence), 0)
    assert producer.flush(30) == 0
    follower = OutputFollower(
        lambda **extra: make_consumer(
            kafka_bootstrap, "keyfeed-test", **CONSUMER_OVERRIDES, **extra
        ),
        topic, codec,
        start_positions=lambda _topic, parts: {p: (5 if p == 0 else 0) for p in parts},
    )  # fmt: skip

    async def scenario() -> str | None:
        follower.start(asyncio.get_running_loop())
        await asyncio.to_thread(follower.assigned.wait, 30)
        with contextlib.suppress(AssertionError):
            await eventually_async(lambda: follower.ready() is None, timeout_s=10)
        return follower.ready()

    try:
        assert asyncio.run(scenario()) is None
    finally:
        follower.stop()
