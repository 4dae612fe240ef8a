"""The key registry's feed (gateway.auth.keyfeed): the store at start, then the output stream
from the settlement group's committed offsets, so no key falls between the two."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from gateway_testkit import Script, envelope_data, envelope_error, run_gateway

from engine.markets import Markets
from engine.service.output_log import sequence_key
from exchange.codec import Codec
from exchange.kafka import make_consumer, make_producer
from exchange.topics import Topics
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually
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
        codec=codec, init_schema=False,
    ) as gw:  # fmt: skip
        feed = gw.app.state.key_feed
        assert feed.loaded == 3  # the store's rows (stored, revoked, settled)
        eventually(lambda: feed.decoded == 2, timeout_s=10)  # from the committed offset on
        for signer in (stored, settled, unsettled):
            with gw.signed(signer) as client:
                envelope_data(client.get("/api/v1/balances"), 200)
        with gw.signed(revoked) as client:  # in the store as live, revoked on the log
            assert envelope_error(client.get("/api/v1/balances")) == (401, "UNAUTHENTICATED")
