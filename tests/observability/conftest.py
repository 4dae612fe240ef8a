"""Fixtures of the observability tests (helpers are in obs_testkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.markets import Markets, load_markets
from exchange.codec import Codec
from settlement.sqlite_store import SqliteStore


@pytest.fixture(scope="module")
def markets() -> Markets:
    return load_markets()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite3", synchronous="NORMAL")
    s.init_schema()
    yield s
    s.close()
