"""Session-wide fixtures: one real Kafka-compatible broker for the whole test run.

With ``KAFKA_BOOTSTRAP_SERVERS`` set the tests use that cluster (the compose e2e does);
otherwise one embedded Tansu broker is started for the session and stopped at the end.
Tests that need isolation take fresh topic names from ``fresh_topics``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from exchange.kafka import make_admin
from exchange.topics import Topics, ensure_topics
from ops.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def fresh_topics(kafka_bootstrap: str) -> Topics:
    """The project's topic layout under names no other test uses, already created."""
    topics = Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(kafka_bootstrap), topics.all())
    return topics
