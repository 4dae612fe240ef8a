"""bench/lobster_flow.py turns LOBSTER messages into the REST calls a trading bot would send."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lobster_flow import (
    DEFAULT_FIRST_USER,
    DEFAULT_MESSAGES,
    LobsterMessage,
    by_order_id,
    funding_calls,
    order_calls,
    price_text,
    quantity_text,
    read_messages,
)


def msg(index: int, kind: int, order_id: int, size: int = 21, price: int = 2238100,
        direction: int = 1) -> LobsterMessage:  # fmt: skip
    return LobsterMessage(
        index=index, time_s=34200.0 + index, kind=kind, order_id=order_id, size=size,
        price=price, direction=direction,
    )  # fmt: skip


def test_price_text_when_dollars_times_10000_gives_two_decimals() -> None:
    assert price_text(2238100) == "223.81"
    assert price_text(2240000) == "224.00"


def test_quantity_text_when_shares_gives_btc_with_five_decimals() -> None:
    assert quantity_text(21) == "0.02100"
    assert quantity_text(1) == "0.00100"
    assert quantity_text(33570) == "33.57000"


def test_order_calls_when_new_then_deletion_creates_then_cancels_by_client_order_id() -> None:
    calls = list(order_calls([msg(0, 1, 77, direction=-1), msg(1, 4, 77), msg(2, 3, 77)],
                             users=10, prefix="t"))  # fmt: skip
    assert [(c.kind, c.path, c.message_index) for c in calls] == [
        ("create", "/api/v1/order/create", 0),
        ("cancel", "/api/v1/order/cancel", 2),
    ]
    user = DEFAULT_FIRST_USER + 77 % 10
    assert calls[0].body == {
        "user_id": user, "symbol": "BTC_USDT", "side": "SELL", "order_type": "LIMIT",
        "price": "223.81", "quantity": "0.02100", "time_in_force": "GTC",
        "client_order_id": "t-77",
    }  # fmt: skip
    assert calls[1].body == {"user_id": user, "symbol": "BTC_USDT", "client_order_id": "t-77"}


def test_by_order_id_when_the_create_was_answered_names_the_order_by_that_id() -> None:
    create, cancel = order_calls([msg(0, 1, 77), msg(1, 3, 77)], prefix="t")
    rewritten = by_order_id(cancel, "4242")
    assert rewritten.body == {"user_id": cancel.body["user_id"], "symbol": "BTC_USDT",
                              "order_id": "4242"}  # fmt: skip
    assert (rewritten.path, rewritten.message_index) == (cancel.path, 1)
    with pytest.raises(ValueError):
        by_order_id(create, "4242")


def test_order_calls_when_deleting_an_order_from_before_the_file_skips_it() -> None:
    calls = list(order_calls([msg(0, 3, 5), msg(1, 2, 6), msg(2, 5, 0), msg(3, 3, 6)]))
    assert calls == []


def test_funding_calls_when_ten_users_deposit_both_assets_each() -> None:
    calls = funding_calls(10)
    assert len(calls) == 20
    assert {c.body["user_id"] for c in calls} == set(range(DEFAULT_FIRST_USER,
                                                          DEFAULT_FIRST_USER + 10))  # fmt: skip
    assert {c.body["asset"] for c in calls} == {"USDT", "BTC"}


@pytest.mark.skipif(not Path(DEFAULT_MESSAGES).is_file(), reason="the LOBSTER data is not here")
def test_order_calls_when_replaying_the_amzn_day_sends_every_new_order_and_known_deletion() -> None:
    calls = list(order_calls(read_messages()))
    assert sum(c.kind == "create" for c in calls) == 27_845  # every type-1 row (README)
    assert sum(c.kind == "cancel" for c in calls) == 13_843  # deletions of orders in the file
