"""The gateway's level book and the WebSocket request parser (no I/O)."""

from __future__ import annotations

import pytest

from engine.enums import Side
from engine.events import DepthUpdated, LevelUpdated
from gateway.market.book import BookGapError, LevelBook
from gateway.streams.protocol import (
    Login,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    parse,
)

SYMBOLS = frozenset({"BTC_USDT", "ETH_USDT"})


def _update(update_id: int, *levels: tuple[Side, int, int, int]) -> DepthUpdated:
    return DepthUpdated(
        symbol="BTC_USDT",
        update_id=update_id,
        levels=tuple(
            LevelUpdated(side=s, price=p, quantity=q, order_count=n) for s, p, q, n in levels
        ),
    )


def _state(book: LevelBook) -> tuple[object, ...]:
    return (book.update_id, book.sequence, dict(book.bids), dict(book.asks))


def test_apply_when_updates_follow_keeps_levels_best_first() -> None:
    book = LevelBook("BTC_USDT")
    book.apply(_update(1, (Side.BUY, 100, 5, 1), (Side.BUY, 101, 2, 1), (Side.SELL, 105, 3, 2)), 7)
    book.apply(_update(2, (Side.BUY, 101, 0, 0), (Side.SELL, 104, 1, 1)), 9)
    snap = book.snapshot(10)
    assert (snap.last_update_id, snap.sequence) == (2, 9)
    assert snap.bids == [(100, 5)]
    assert snap.asks == [(104, 1), (105, 3)]
    assert book.levels(Side.SELL) == [(104, 1, 1), (105, 3, 2)]
    assert book.snapshot(1).asks == [(104, 1)]


@pytest.mark.parametrize("update_id", [1, 3, 0])
def test_apply_when_update_id_is_not_the_next_raises_and_changes_nothing(update_id: int) -> None:
    book = LevelBook.from_levels("BTC_USDT", 1, 5, [(Side.BUY, 100, 5, 1)])
    before = _state(book)
    with pytest.raises(BookGapError):
        book.apply(_update(update_id, (Side.BUY, 100, 0, 0)), 6)
    assert _state(book) == before


def test_parse_when_requests_are_valid_gives_them() -> None:
    assert parse('{"op":"subscribe","streams":["depth@BTC_USDT","depth@BTC_USDT",'
                 '"trades@ETH_USDT"]}', SYMBOLS) == Subscribe(
        streams=["depth@BTC_USDT", "trades@ETH_USDT"]
    )  # fmt: skip
    assert parse('{"op":"unsubscribe","streams":["ticker@BTC_USDT"]}', SYMBOLS) == Unsubscribe(
        streams=["ticker@BTC_USDT"]
    )
    assert parse('{"op":"login","api_key":"k1","timestamp":5,"signature":"s"}', SYMBOLS) == (
        Login(api_key="k1", timestamp_ms=5, signature="s")
    )
    assert parse('{"op":"ping"}', SYMBOLS) == Ping()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[]", "INVALID_REQUEST"),
        ('{"op":"subscribe","streams":"depth@BTC_USDT"}', "INVALID_REQUEST"),
        ('{"op":"subscribe","streams":["depth@DOGE_USDT"]}', "UNKNOWN_STREAM"),
        ('{"op":"subscribe","streams":["book@BTC_USDT"]}', "UNKNOWN_STREAM"),
        ('{"op":"subscribe","streams":["depthBTC_USDT"]}', "UNKNOWN_STREAM"),
        ('{"op":"subscribe","streams":[1]}', "INVALID_REQUEST"),
        ('{"op":"subscribe","streams":[' + ",".join(['"depth@BTC_USDT"'] * 65) + "]}",
         "TOO_MANY_STREAMS"),
        ('{"op":"login","api_key":"k","timestamp":"5","signature":"s"}', "INVALID_REQUEST"),
        ('{"op":"login","api_key":"k","timestamp":true,"signature":"s"}', "INVALID_REQUEST"),
        ('{"op":"login","api_key":"","timestamp":5,"signature":"s"}', "INVALID_REQUEST"),
        ('{"op":"hello"}', "INVALID_REQUEST"),
        ("x" * 5000, "INVALID_REQUEST"),
    ],
)  # fmt: skip
def test_parse_when_request_is_bad_raises_with_code(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parse(text, SYMBOLS)
    assert e.value.code == code
    assert set(e.value.reply()) == {"op", "code", "message"}
