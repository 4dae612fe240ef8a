"""Markets and assets: the one place where decimal amounts meet the engine's integer units.

The engine only ever sees integers: prices in ticks, quantities in lots, balances in asset
minor units. This module turns the human config (decimal strings) into those scales once, at
startup, and refuses any market whose scales do not compose exactly:

* ``base_per_lot = step_size * 10**base_decimals`` must be an integer, so a fill of ``q`` lots
  moves exactly ``q * base_per_lot`` base minor units;
* ``quote_per_tick_lot = tick_size * step_size * 10**quote_decimals`` must be an integer, so a
  fill of ``q`` lots at ``p`` ticks moves exactly ``p * q * quote_per_tick_lot`` quote units;
* the largest notional, ``max_price * max_quantity * quote_per_tick_lot``, fits a signed int64
  (the wire format is Avro ``long``), and so does ``max_quantity * base_per_lot``.

``Decimal`` is allowed here and nowhere else in ``engine/``. Reading the file is the only I/O in
``engine/``; it belongs to the composition root, and the engine itself takes a :class:`Markets`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

INT64_MAX = 2**63 - 1
DEFAULT_MARKETS_PATH = Path(__file__).with_name("markets.json")
MAX_FEE_BPS = 1000  # 10 %; a larger fee is far more likely a typo than a business decision

_ASSET_KEYS = frozenset({"decimals"})
_SYMBOL_KEYS = frozenset(
    {
        "base",
        "quote",
        "tick_size",
        "step_size",
        "min_quantity",
        "max_quantity",
        "max_price",
        "maker_fee_bps",
        "taker_fee_bps",
    }
)
_TOP_KEYS = frozenset({"version", "fee_account", "assets", "symbols"})


def _exact_multiple(value: Decimal | int, unit: Decimal) -> int:
    """``value / unit`` as an int; ValueError unless it is an exact integer."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"expected Decimal or int, got {type(value).__name__}")
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    # A generous precision plus a trap on Inexact: any quotient that needs rounding cannot be
    # an integer, so rounding is an error rather than a silent truncation.
    with localcontext() as ctx:
        ctx.prec = 100
        ctx.traps[Inexact] = True
        try:
            quotient = value / unit
        except (Inexact, InvalidOperation) as e:
            raise ValueError(f"{value} is not a multiple of {unit}") from e
        if quotient != quotient.to_integral_value():
            raise ValueError(f"{value} is not a multiple of {unit}")
        return int(quotient)


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """An asset and the size of its minor unit (``10**-decimals``)."""

    code: str
    decimals: int

    def to_minor(self, amount: Decimal | int) -> int:
        """Decimal amount -> minor units; ValueError if it has more decimals than the asset."""
        return _exact_multiple(amount, Decimal(1).scaleb(-self.decimals))

    def from_minor(self, minor: int) -> Decimal:
        """Minor units -> Decimal amount (exact)."""
        return Decimal(minor).scaleb(-self.decimals)


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A market: its scales in the engine's integer units, its limits and fees."""

    name: str
    base: str
    quote: str
    tick_size: Decimal  # price of one tick, in quote
    step_size: Decimal  # size of one lot, in base
    min_quantity: int  # lots
    max_quantity: int  # lots
    max_price: int  # ticks
    maker_fee_bps: int
    taker_fee_bps: int
    quote_per_tick_lot: int  # quote minor units for 1 tick x 1 lot
    base_per_lot: int  # base minor units per lot

    def price_to_ticks(self, price: Decimal | int) -> int:
        """Decimal price -> ticks; ValueError unless an exact multiple of the tick size."""
        return _exact_multiple(price, self.tick_size)

    def quantity_to_lots(self, quantity: Decimal | int) -> int:
        """Decimal quantity -> lots; ValueError unless an exact multiple of the step size."""
        return _exact_multiple(quantity, self.step_size)

    def ticks_to_price(self, ticks: int) -> Decimal:
        """Ticks -> Decimal price, with the tick size's exponent (100 ticks of 0.01 -> 1.00)."""
        return self.tick_size * ticks

    def lots_to_quantity(self, lots: int) -> Decimal:
        """Lots -> Decimal quantity, with the step size's exponent."""
        return self.step_size * lots


@dataclass(frozen=True, slots=True)
class Markets:
    """Every asset and symbol the engine trades, plus the account that collects fees.

    Treat as read-only: the dicts are shared by the engine and the services.
    """

    assets: dict[str, AssetSpec]
    symbols: dict[str, SymbolSpec]
    fee_account: int = 0


def load_markets(path: str | os.PathLike[str] | None = None) -> Markets:
    """Read and validate a markets file (default: the ``markets.json`` shipped with engine).

    Raises ConfigError with one clear line when the file is unreadable or invalid.
    """
    file = Path(path) if path is not None else DEFAULT_MARKETS_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"markets config {file}: cannot read: {e}") from e
    try:
        # parse_float=Decimal: a number written as 0.01 stays exactly 0.01, never a float.
        raw = json.loads(text, parse_float=Decimal)
    except ValueError as e:
        raise ConfigError(f"markets config {file}: invalid JSON: {e}") from e
    try:
        return parse_markets(raw)
    except ConfigError as e:
        raise ConfigError(f"markets config {file}: {e}") from e


def parse_markets(raw: Mapping[str, Any]) -> Markets:
    """Validate a markets config already decoded from JSON (decimals as strings or Decimal)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("top level must be an object")
    _no_unknown_keys("top level", raw, _TOP_KEYS)
    version = raw.get("version", 1)
    if version != 1:
        raise ConfigError(f"unsupported version {version!r} (expected 1)")
    fee_account = _int(raw.get("fee_account", 0), "fee_account")
    if fee_account < 0:
        raise ConfigError("fee_account must be >= 0")

    raw_assets = _mapping(raw.get("assets"), "assets")
    assets: dict[str, AssetSpec] = {}
    for code, spec in raw_assets.items():
        where = f"asset {code!r}"
        _name(code, where)
        spec = _mapping(spec, where)
        _no_unknown_keys(where, spec, _ASSET_KEYS)
        decimals = _int(spec.get("decimals"), f"{where}: decimals")
        if not 0 <= decimals <= 18:
            raise ConfigError(f"{where}: decimals must be between 0 and 18")
        assets[code] = AssetSpec(code=code, decimals=decimals)
    if not assets:
        raise ConfigError("no assets")

    raw_symbols = _mapping(raw.get("symbols"), "symbols")
    symbols: dict[str, SymbolSpec] = {}
    for name, spec in raw_symbols.items():
        _name(name, f"symbol {name!r}")
        symbols[name] = _parse_symbol(name, _mapping(spec, f"symbol {name!r}"), assets)
    if not symbols:
        raise ConfigError("no symbols")
    return Markets(assets=assets, symbols=symbols, fee_account=fee_account)


def _parse_symbol(name: str, spec: Mapping[str, Any], assets: dict[str, AssetSpec]) -> SymbolSpec:
    where = f"symbol {name!r}"
    _no_unknown_keys(where, spec, _SYMBOL_KEYS)
    base_code = spec.get("base")
    quote_code = spec.get("quote")
    if base_code not in assets:
        raise ConfigError(f"{where}: unknown base asset {base_code!r}")
    if quote_code not in assets:
        raise ConfigError(f"{where}: unknown quote asset {quote_code!r}")
    if base_code == quote_code:
        raise ConfigError(f"{where}: base and quote are the same asset")
    base, quote = assets[base_code], assets[quote_code]

    tick = _positive_decimal(spec.get("tick_size"), f"{where}: tick_size")
    step = _positive_decimal(spec.get("step_size"), f"{where}: step_size")

    base_per_lot = _exact_or_fail(
        step.scaleb(base.decimals), f"{where}: step_size x 10^{base.decimals} ({base.code})"
    )
    quote_per_tick_lot = _exact_or_fail(
        (tick * step).scaleb(quote.decimals),
        f"{where}: tick_size x step_size x 10^{quote.decimals} ({quote.code})",
    )

    def lots(key: str) -> int:
        value = _positive_decimal(spec.get(key), f"{where}: {key}")
        try:
            return _exact_multiple(value, step)
        except ValueError as e:
            raise ConfigError(f"{where}: {key} {value} is not a multiple of {step}") from e

    min_quantity = lots("min_quantity")
    max_quantity = lots("max_quantity")
    if min_quantity > max_quantity:
        raise ConfigError(f"{where}: min_quantity exceeds max_quantity")
    max_price_value = _positive_decimal(spec.get("max_price"), f"{where}: max_price")
    try:
        max_price = _exact_multiple(max_price_value, tick)
    except ValueError as e:
        raise ConfigError(
            f"{where}: max_price {max_price_value} is not a multiple of {tick}"
        ) from e

    if max_price * max_quantity * quote_per_tick_lot > INT64_MAX:
        raise ConfigError(
            f"{where}: max_price x max_quantity is "
            f"{max_price * max_quantity * quote_per_tick_lot} {quote.code} minor units, "
            "beyond a signed 64-bit integer"
        )
    if max_quantity * base_per_lot > INT64_MAX:
        raise ConfigError(f"{where}: max_quantity in {base.code} minor units exceeds int64")

    fees = {}
    for key in ("maker_fee_bps", "taker_fee_bps"):
        fee = _int(spec.get(key, 0), f"{where}: {key}")
        if not 0 <= fee <= MAX_FEE_BPS:
            raise ConfigError(f"{where}: {key} must be between 0 and {MAX_FEE_BPS}")
        fees[key] = fee

    return SymbolSpec(
        name=name,
        base=base.code,
        quote=quote.code,
        tick_size=tick,
        step_size=step,
        min_quantity=min_quantity,
        max_quantity=max_quantity,
        max_price=max_price,
        maker_fee_bps=fees["maker_fee_bps"],
        taker_fee_bps=fees["taker_fee_bps"],
        quote_per_tick_lot=quote_per_tick_lot,
        base_per_lot=base_per_lot,
    )


def _exact_or_fail(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise ConfigError(f"{what} = {value} is not an integer number of minor units")
    return int(value)


def _no_unknown_keys(where: str, raw: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be an object")
    return value


def _name(value: object, where: str) -> None:
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise ConfigError(f"{where}: name must be a non-empty printable ASCII string")


def _int(value: object, where: str) -> int:
    # bool is an int subclass; "true" as a fee is a typo, not 1 bps.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    return value


def _positive_decimal(value: object, where: str) -> Decimal:
    # Floats are refused outright: a binary float cannot say 0.1 exactly.
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ConfigError(f"{where} must be a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as e:
        raise ConfigError(f"{where}: {value!r} is not a decimal number") from e
    if not number.is_finite() or number <= 0:
        raise ConfigError(f"{where} must be a positive number, got {value!r}")
    return number
