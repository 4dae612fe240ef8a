"""Markets config: scales, conversions, and refusal of every inexact or unsafe market."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from engine_testkit import raw_markets

from engine import ConfigError, Markets, load_markets, parse_markets


def modified(**symbol_changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_markets())
    raw["symbols"]["BTC_USDT"].update(symbol_changes)
    return raw


def test_load_markets_when_no_path_given_reads_the_shipped_config() -> None:
    markets = load_markets()
    assert isinstance(markets, Markets)
    assert sorted(markets.assets) == ["BTC", "ETH", "USDT"]
    assert all(a.decimals == 8 for a in markets.assets.values())
    assert markets.fee_account == 0
    btc, eth = markets.symbols["BTC_USDT"], markets.symbols["ETH_USDT"]
    assert (btc.base, btc.quote, btc.tick_size, btc.step_size) == (
        "BTC",
        "USDT",
        Decimal("0.01"),
        Decimal("0.00001"),
    )
    # 0.01 x 0.00001 x 10^8 and 0.00001 x 10^8
    assert (btc.quote_per_tick_lot, btc.base_per_lot) == (10, 1_000)
    assert (btc.min_quantity, btc.max_quantity, btc.max_price) == (1, 100_000_000, 1_000_000_000)
    assert (eth.quote_per_tick_lot, eth.base_per_lot) == (100, 10_000)
    assert (eth.min_quantity, eth.max_quantity) == (1, 1_000_000_000)
    assert (btc.maker_fee_bps, btc.taker_fee_bps) == (0, 0)
    for spec in (btc, eth):
        assert spec.max_price * spec.max_quantity * spec.quote_per_tick_lot < 2**63


def test_load_markets_when_given_a_path_reads_that_file(tmp_path: Path) -> None:
    raw = modified(maker_fee_bps=7)
    path = tmp_path / "markets.json"
    path.write_text(json.dumps(raw))
    assert load_markets(path).symbols["BTC_USDT"].maker_fee_bps == 7
    assert load_markets(str(path)).symbols["BTC_USDT"].maker_fee_bps == 7


def test_load_markets_when_file_is_missing_or_not_json_raises_config_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_markets(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_markets(bad)


def test_load_markets_when_json_has_bare_decimal_numbers_reads_them_exactly(
    tmp_path: Path,
) -> None:
    text = json.dumps(raw_markets()).replace('"0.01"', "0.01")
    path = tmp_path / "m.json"
    path.write_text(text)
    assert load_markets(path).symbols["BTC_USDT"].tick_size == Decimal("0.01")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # 0.001 x 0.000001 x 10^8 = 0.1 USDT minor units for one tick x one lot
        ({"tick_size": "0.001", "step_size": "0.000001"}, "not an integer number of minor"),
        ({"step_size": "0.000000001"}, "not an integer number of minor"),  # 0.1 satoshi
        ({"base": "DOGE"}, "unknown base asset"),
        ({"quote": "EUR"}, "unknown quote asset"),
        ({"quote": "BTC"}, "same asset"),
        ({"tick_size": "0"}, "positive"),
        ({"step_size": "-0.00001"}, "positive"),
        ({"min_quantity": "0"}, "positive"),
        ({"max_price": "-1"}, "positive"),
        ({"min_quantity": "0.000015"}, "not a multiple"),
        ({"max_price": "10.005"}, "not a multiple"),
        ({"min_quantity": "2000"}, "exceeds max_quantity"),
        ({"max_price": "100000000000"}, "beyond a signed 64-bit integer"),
        ({"tick_size": 0.01}, "decimal string"),  # a float is refused outright
        ({"maker_fee_bps": True}, "integer"),
        ({"taker_fee_bps": -1}, "between 0 and"),
        ({"taker_fee_bps": 5000}, "between 0 and"),
        ({"lot": "1"}, "unknown key"),
        ({"tick_size": "abc"}, "not a decimal number"),
    ],
)
def test_parse_markets_when_symbol_is_inexact_or_invalid_raises_config_error(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_markets(modified(**changes))


def test_parse_markets_when_eth_notional_would_overflow_int64_refuses_it() -> None:
    raw = copy.deepcopy(raw_markets())
    # 10 000 000 USDT x 100 000 ETH = 1e9 ticks x 1e9 lots x 100 = 1e20 > 2^63
    raw["symbols"]["ETH_USDT"]["max_price"] = "10000000"
    with pytest.raises(ConfigError, match=r"ETH_USDT.*64-bit"):
        parse_markets(raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["assets"].update({"XRP": {"decimals": 19}}), "decimals"),
        (lambda raw: raw["assets"].update({"XRP": {"decimals": "8"}}), "integer"),
        (lambda raw: raw["assets"].update({"": {"decimals": 8}}), "name"),
        (lambda raw: raw.update({"fee_account": -1}), "fee_account"),
        (lambda raw: raw.update({"version": 2}), "version"),
        (lambda raw: raw.update({"extra": 1}), "unknown key"),
        (lambda raw: raw.update({"symbols": {}}), "no symbols"),
        (lambda raw: raw.update({"assets": []}), "must be an object"),
    ],
)
def test_parse_markets_when_top_level_is_invalid_raises_config_error(
    mutate: Any, message: str
) -> None:
    raw = copy.deepcopy(raw_markets())
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_markets(raw)


def test_price_to_ticks_when_exact_converts_and_when_inexact_raises_value_error() -> None:
    spec = load_markets().symbols["BTC_USDT"]
    assert spec.price_to_ticks(Decimal("123.45")) == 12_345
    assert spec.price_to_ticks(Decimal("50000")) == 5_000_000
    assert spec.price_to_ticks(7) == 700
    with pytest.raises(ValueError):
        spec.price_to_ticks(Decimal("123.456"))
    with pytest.raises(ValueError):
        spec.price_to_ticks(Decimal("NaN"))
    with pytest.raises(TypeError):
        spec.price_to_ticks(1.5)  # type: ignore[arg-type]
    assert spec.ticks_to_price(12_345) == Decimal("123.45")
    assert str(spec.ticks_to_price(100)) == "1.00"


def test_quantity_to_lots_when_exact_converts_and_when_inexact_raises_value_error() -> None:
    spec = load_markets().symbols["BTC_USDT"]
    assert spec.quantity_to_lots(Decimal("0.00123")) == 123
    assert spec.quantity_to_lots(Decimal("1")) == 100_000
    with pytest.raises(ValueError):
        spec.quantity_to_lots(Decimal("0.000001"))
    assert spec.lots_to_quantity(123) == Decimal("0.00123")
    # Huge but exact values convert without rounding.
    assert spec.quantity_to_lots(Decimal("123456789012345678901234.56789")) == (
        12345678901234567890123456789
    )


def test_asset_minor_units_when_exact_convert_both_ways() -> None:
    usdt = load_markets().assets["USDT"]
    assert usdt.to_minor(Decimal("1.5")) == 150_000_000
    assert usdt.from_minor(150_000_000) == Decimal("1.5")
    with pytest.raises(ValueError):
        usdt.to_minor(Decimal("0.000000001"))
