"""The market feed on the real broker: every output once, in sequence order, and "caught up"
once every partition was read to its end, even when nothing arrives after that."""

from __future__ import annotations

import asyncio

import pytest
from gateway_testkit import Script

from engine.markets import Markets
from engine.service.output_log import sequence_key
from exchange.codec import Codec
from exchange.kafka import make_consumer, make_producer
from exchange.topics import Topics
from gateway.market.feed import CONSUMER_OVERRIDES, MarketFeed, Published, Start
from tests.support.eventually import eventually_async

pytestmark = pytest.mark.kafka


def test_feed_when_the_log_is_quiet_after_a_backlog_catches_up_with_every_output_in_order(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec, markets: Markets
) -> None:
    # Records and the partitions' end-of-log events come in the same reads: the last end
    # arrives while that read's records still wait to be ordered, and no later read comes.
    spec = fresh_topics.engine_output
    s = Script(markets)
    for _ in range(3000):
        s.deposit(1, "USDT", 1)
    outputs = s.outputs  # the users it created first, then the deposits: sequences 1, 2, ...
    producer = make_producer(kafka_bootstrap)
    for output in outputs:
        producer.produce(
            spec.name, codec.encode_output(output), sequence_key(output.sequence),
            output.sequence % spec.partitions,
        )  # fmt: skip
    assert producer.flush(30) == 0
    feed = MarketFeed(
        lambda: make_consumer(kafka_bootstrap, "feed-test", **CONSUMER_OVERRIDES),
        spec.name, codec, markets, None,
    )  # fmt: skip
    got: list[int] = []

    def on_batch(batch: list[Published]) -> None:
        got.extend(p.output.sequence for p in batch)
        feed.done()

    def on_start(start: Start) -> None:
        assert start.sequence == 0

    async def scenario() -> None:
        feed.start(asyncio.get_running_loop(), on_start, on_batch)
        await eventually_async(lambda: len(got) == len(outputs), timeout_s=30)
        await eventually_async(feed.caught_up.is_set, timeout_s=10, what="caught up")

    try:
        asyncio.run(scenario())
    finally:
        feed.stop()
    assert got == [o.sequence for o in outputs]
    assert feed.ready() is None
