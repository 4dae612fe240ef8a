"""Fixtures of the gateway tests: markets, codec, and a gateway on the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_testkit import Gateway, run_gateway

from engine.markets import Markets, load_markets
from exchange.codec import Codec
from exchange.topics import Topics


@pytest.fixture(scope="session")
def markets() -> Markets:
    return load_markets()


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def gateway(
    kafka_bootstrap: str, fresh_topics: Topics, tmp_path: Path, markets: Markets, codec: Codec
) -> Iterator[Gateway]:
    """A gateway served on a free port, on fresh topics, over an empty SQLite store."""
    with run_gateway(
        bootstrap=kafka_bootstrap,
        topics=fresh_topics,
        store_path=tmp_path / "exchange.sqlite3",
        markets=markets,
        codec=codec,
    ) as gw:
        yield gw
