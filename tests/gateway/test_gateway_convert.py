"""Decimal <-> integer conversion at the boundary: ticks, lots, minor units, and back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.markets import AssetSpec, Markets, SymbolSpec
from gateway.bodies import parse_json
from gateway.convert import (
    INT64_MAX,
    amount_to_minor,
    average_price,
    format_lots,
    format_minor,
    format_ticks,
    parse_decimal,
    price_to_ticks,
    quantity_to_lots,
)
from gateway.errors import ApiError, ErrorCode


@pytest.fixture
def btc(markets: Markets) -> SymbolSpec:
    # BTC_USDT: tick 0.01, step 0.00001, min 1 lot, max 1000 BTC, max price 10,000,000
    return markets.symbols["BTC_USDT"]


@pytest.fixture
def usdt(markets: Markets) -> AssetSpec:
    return markets.assets["USDT"]  # 8 decimals


def _code(call: object) -> ErrorCode:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value.code


# ---- parse_decimal: what a client amount may look like --------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("50000.00", Decimal("50000.00")),
        ("0.00001", Decimal("0.00001")),
        ("007.5", Decimal("7.5")),
        (5, Decimal(5)),
        (Decimal("0.1"), Decimal("0.1")),  # a JSON number parsed with parse_float=Decimal
        (Decimal("1E+2"), Decimal("100")),
        ("9" * 30, Decimal("9" * 30)),
    ],
)
def test_parse_decimal_when_value_is_a_positive_decimal_returns_it_exactly(
    raw: object, expected: Decimal
) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "0.00",
        "-1",
        "-0.01",
        "+1",
        " 1",
        "1 ",
        "1.",
        ".5",
        "1e3",
        "1E-2",
        "0x10",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e999999",
        "",
        "1,5",
        "١٢",
        "1" * 65,  # over the length limit
        "9" * 32,  # 10**31 or more
        0,
        -5,
        10**31,
        -(10**40),
        10**4000,
        True,
        False,
        None,
        1.5,
        0.1,
        [],
        {},
        ["1"],
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("-1"),
        Decimal("0"),
        Decimal("1E+999999"),
        Decimal("1E-999999"),
        Decimal("1E+31"),
        Decimal("1E-31"),
    ],
)
def test_parse_decimal_when_value_is_not_a_positive_finite_decimal_raises_value_error(
    raw: object,
) -> None:
    with pytest.raises(ValueError):
        parse_decimal(raw)


def test_parse_json_when_number_has_a_fraction_keeps_it_exact_not_binary_float() -> None:
    data = parse_json(b'{"price": 0.1, "quantity": 0.30000000000000004, "n": 5}')
    assert data == {
        "price": Decimal("0.1"),
        "quantity": Decimal("0.30000000000000004"),
        "n": 5,
    }
    assert type(data["n"]) is int


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b"{'a': 1}",
        b"NaN",
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": 1} x',
    ],
)
def test_parse_json_when_body_is_not_json_raises_malformed_json(body: bytes) -> None:
    assert _code(lambda: parse_json(body)) is ErrorCode.MALFORMED_JSON


def test_parse_json_when_integer_literal_is_gigantic_raises_invalid_request() -> None:
    assert _code(lambda: parse_json(b'{"a": ' + b"9" * 5000 + b"}")) is ErrorCode.INVALID_REQUEST


# ---- prices: ticks of 0.01, 1..max_price ------------------------------------------------


@pytest.mark.parametrize(
    ("price", "ticks"),
    [
        ("0.01", 1),  # one tick: the minimum
        ("50000.00", 5_000_000),
        ("50000", 5_000_000),  # fewer decimals than the tick is still exact
        ("50000.010", 5_000_001),  # trailing zeros beyond the tick are exact too
        ("10000000.00", 1_000_000_000),  # max_price exactly
        (Decimal("0.1"), 10),
    ],
)
def test_price_to_ticks_when_exact_multiple_within_range_converts(
    btc: SymbolSpec, price: object, ticks: int
) -> None:
    assert price_to_ticks(btc, parse_decimal(price)) == ticks


@pytest.mark.parametrize(
    "price",
    [
        "50000.001",  # one digit beyond the tick
        "0.001",
        "0.009",  # below one tick
        "10000000.01",  # one tick above max_price
        "99999999999",
        Decimal("0.30000000000000004"),  # the expansion of a binary float
        "1" + "0" * 29,  # absurdly large
    ],
)
def test_price_to_ticks_when_off_tick_or_out_of_range_raises_invalid_price(
    btc: SymbolSpec, price: object
) -> None:
    assert _code(lambda: price_to_ticks(btc, parse_decimal(price))) is ErrorCode.INVALID_PRICE


# ---- quantities: lots of 0.00001, min 1 lot, max 1000 BTC ---------------------------------


@pytest.mark.parametrize(
    ("quantity", "lots"),
    [
        ("0.00001", 1),  # min_quantity exactly
        ("0.01000", 1000),
        ("1", 100_000),
        ("1000", 100_000_000),  # max_quantity exactly
        ("1000.000000", 100_000_000),
    ],
)
def test_quantity_to_lots_when_exact_multiple_within_range_converts(
    btc: SymbolSpec, quantity: str, lots: int
) -> None:
    assert quantity_to_lots(btc, parse_decimal(quantity)) == lots


@pytest.mark.parametrize(
    "quantity", ["0.000011", "0.000001", "1000.00001", "1000000", "0.123456789"]
)
def test_quantity_to_lots_when_off_step_or_out_of_range_raises_invalid_quantity(
    btc: SymbolSpec, quantity: str
) -> None:
    assert _code(lambda: quantity_to_lots(btc, parse_decimal(quantity))) is (
        ErrorCode.INVALID_QUANTITY
    )


# ---- asset amounts: minor units of 10^-8, up to int64 ------------------------------------


@pytest.mark.parametrize(
    ("amount", "minor"),
    [("0.00000001", 1), ("1", 100_000_000), ("92233720368.54775807", INT64_MAX)],
)
def test_amount_to_minor_when_exact_within_int64_converts(
    usdt: AssetSpec, amount: str, minor: int
) -> None:
    assert amount_to_minor(usdt, parse_decimal(amount)) == minor


@pytest.mark.parametrize("amount", ["0.000000001", "92233720368.54775808", "1" + "0" * 20])
def test_amount_to_minor_when_finer_than_minor_unit_or_beyond_int64_raises_invalid_amount(
    usdt: AssetSpec, amount: str
) -> None:
    assert _code(lambda: amount_to_minor(usdt, parse_decimal(amount))) is (ErrorCode.INVALID_AMOUNT)


# ---- outbound ----------------------------------------------------------------------------


def test_format_when_integers_scaled_uses_the_tick_step_and_asset_scale(
    btc: SymbolSpec, usdt: AssetSpec
) -> None:
    assert format_ticks(btc, 5_000_000) == "50000.00"
    assert format_ticks(btc, 1) == "0.01"
    assert format_lots(btc, 1000) == "0.01000"
    assert format_lots(btc, 0) == "0.00000"
    assert format_minor(usdt, 150_000_000) == "1.50000000"
    assert format_minor(usdt, 1) == "0.00000001"  # plain notation, never 1E-8
    assert format_minor(usdt, INT64_MAX) == "92233720368.54775807"


def test_average_price_when_exact_shows_the_tick_scale_or_the_digits_it_needs(
    btc: SymbolSpec, usdt: AssetSpec
) -> None:
    # 1000 lots (0.01 BTC) for 500 USDT (in 10^-8 units): 50000.00
    assert average_price(btc, usdt, 500 * 10**8, 1000) == "50000.00"
    # 0.01 BTC at 50000.00 plus 0.01 BTC at 50000.01: exactly 50000.005
    total = (50000_00 + 50000_01) * 10**8 // 10**4  # quote minor units of the two fills
    assert average_price(btc, usdt, total, 2000) == "50000.005"


def test_average_price_when_quotient_does_not_terminate_rounds_half_even_at_quote_scale(
    btc: SymbolSpec, usdt: AssetSpec
) -> None:
    # 3 lots for 1.00 + 1.00 + 1.01 per 0.00001 BTC... cumulative 3.01e-5 USDT*1e5 / 3
    # i.e. an average price of 1.00333... USDT
    cumulative = 301 * 10**8 // 10**7  # (1.00 + 1.00 + 1.01) * 0.00001 USDT in 10^-8
    assert average_price(btc, usdt, cumulative, 3) == "1.00333333"
