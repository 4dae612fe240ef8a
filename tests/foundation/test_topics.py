from __future__ import annotations

import uuid

import pytest

from exchange.kafka import make_admin
from exchange.topics import TopicError, TopicOutcome, Topics, TopicSpec, ensure_topics

pytestmark = pytest.mark.kafka


def test_ensure_topics_when_run_twice_creates_then_changes_nothing(kafka_bootstrap: str) -> None:
    admin = make_admin(kafka_bootstrap)
    topics = Topics.with_prefix(f"idem{uuid.uuid4().hex[:8]}-", engine_output_partitions=4)

    first = ensure_topics(admin, topics.all())
    second = ensure_topics(admin, topics.all())

    assert set(first.values()) == {TopicOutcome.CREATED}
    assert set(second.values()) == {TopicOutcome.UNCHANGED}
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[topics.orders.name].partitions) == 1
    assert len(meta[topics.engine_output.name].partitions) == 4
    assert len(meta[topics.engine_snapshots.name].partitions) == 1


def test_ensure_topics_when_partition_count_differs_raises_instead_of_using_it(
    kafka_bootstrap: str,
) -> None:
    admin = make_admin(kafka_bootstrap)
    name = f"wrong{uuid.uuid4().hex[:8]}-orders"
    ensure_topics(admin, (TopicSpec(name=name, partitions=3),))

    with pytest.raises(TopicError, match="has 3 partition"):
        ensure_topics(admin, (TopicSpec(name=name, partitions=1),))


def test_topics_layout_when_built_from_defaults_gives_orders_one_partition() -> None:
    topics = Topics.named()
    assert topics.orders.partitions == 1
    assert topics.engine_output.partitions == 4
    assert topics.engine_snapshots.config == {"cleanup.policy": "compact"}
    assert [t.name for t in topics.all()] == [
        "orders",
        "engine-output",
        "orders.dlq",
        "engine-output.dlq",
        "engine-snapshots",
    ]
