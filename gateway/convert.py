"""Decimal <-> integer conversion at the API boundary: the only place the gateway scales.

Inbound, a client amount (a decimal string such as ``"50000.00"``, or a JSON number) becomes
an exact :class:`~decimal.Decimal`, then ticks, lots or minor units through the market's own
helpers (:meth:`engine.markets.SymbolSpec.price_to_ticks` and friends), which refuse anything
that is not an exact multiple. Nothing is ever rounded on the way in.

JSON numbers: the gateway parses request bodies with ``json.loads(parse_float=Decimal)``, so a
number arrives as the exact decimal the client wrote (``0.1`` is exactly one tenth, never the
binary float 0.1000000000000000055...). It is then held to the same rules as a string.

Outbound, integers become decimal strings with the scale of the tick, the step or the asset
(``5000000`` ticks of ``0.01`` -> ``"50000.00"``), always in plain notation.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from engine.markets import INT64_MAX, AssetSpec, SymbolSpec
from gateway.errors import ApiError, ErrorCode, clip

MAX_DECIMAL_CHARS = 64
# A decimal exponent (``Decimal.adjusted()``) beyond +-MAX_MAGNITUDE cannot be a valid amount
# in any sane market; refusing it first keeps "1e999999" from reaching any arithmetic.
MAX_MAGNITUDE = 30
_INT_BOUND = 10 ** (MAX_MAGNITUDE + 1)

_DECIMAL_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Exact arithmetic for outbound formatting (int64 x a short tick coefficient fits easily);
# an explicit context, so no thread's default context can change a result.
_CTX = Context(prec=60)


def parse_decimal(value: object) -> Decimal:
    """A client amount as an exact, positive, finite Decimal; ValueError (the reason) if not.

    Accepts a plain decimal string (digits, optionally a point and digits; at most
    ``MAX_DECIMAL_CHARS``), a JSON integer, or a JSON number already parsed as Decimal.
    Refuses booleans, floats, exponents in strings, signs, NaN, Infinity, zero, negatives
    and magnitudes of ``10**(MAX_MAGNITUDE + 1)`` or more, or below ``10**-MAX_MAGNITUDE``.
    """
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if len(text) > MAX_DECIMAL_CHARS:
            raise ValueError(f"must be at most {MAX_DECIMAL_CHARS} characters")
        if _DECIMAL_TEXT.fullmatch(text) is None:
            raise ValueError('must be a positive decimal string such as "1.25"')
        number = Decimal(text)
    elif kind is Decimal:
        number = value  # type: ignore[assignment]
        if not number.is_finite():
            raise ValueError("must be a finite number")
    elif kind is int:  # type() is exact: a bool is refused below, not taken as 0 or 1
        integer: int = value  # type: ignore[assignment]
        if not -_INT_BOUND < integer < _INT_BOUND:
            raise ValueError("is out of range")
        number = Decimal(integer)
    elif kind is float:  # only when a caller parsed JSON without parse_float=Decimal
        raise ValueError("must be a decimal string (a binary float is not exact)")
    else:
        raise ValueError('must be a decimal string such as "1.25"')
    if number <= 0:
        raise ValueError("must be positive")
    if not -MAX_MAGNITUDE <= number.adjusted() <= MAX_MAGNITUDE:
        raise ValueError("is out of range")
    return number


def price_to_ticks(spec: SymbolSpec, price: Decimal) -> int:
    """Price -> ticks within ``1..max_price``; ApiError(INVALID_PRICE) otherwise."""
    try:
        ticks = spec.price_to_ticks(price)
    except (ValueError, InvalidOperation) as e:
        raise ApiError(
            ErrorCode.INVALID_PRICE,
            f"price {clip(_plain(price))} is not a multiple of the tick size "
            f"{_plain(spec.tick_size)} of {spec.name}",
        ) from e
    if not 0 < ticks <= spec.max_price:
        raise ApiError(
            ErrorCode.INVALID_PRICE,
            f"price {clip(_plain(price))} is outside {_plain(spec.tick_size)}.."
            f"{format_ticks(spec, spec.max_price)} for {spec.name}",
        )
    return ticks


def quantity_to_lots(spec: SymbolSpec, quantity: Decimal) -> int:
    """Quantity -> lots within ``min_quantity..max_quantity``; ApiError(INVALID_QUANTITY)."""
    try:
        lots = spec.quantity_to_lots(quantity)
    except (ValueError, InvalidOperation) as e:
        raise ApiError(
            ErrorCode.INVALID_QUANTITY,
            f"quantity {clip(_plain(quantity))} is not a multiple of the step size "
            f"{_plain(spec.step_size)} of {spec.name}",
        ) from e
    if not spec.min_quantity <= lots <= spec.max_quantity:
        raise ApiError(
            ErrorCode.INVALID_QUANTITY,
            f"quantity {clip(_plain(quantity))} is outside "
            f"{format_lots(spec, spec.min_quantity)}..{format_lots(spec, spec.max_quantity)} "
            f"for {spec.name}",
        )
    return lots


def amount_to_minor(asset: AssetSpec, amount: Decimal) -> int:
    """Asset amount -> minor units within ``1..INT64_MAX``; ApiError(INVALID_AMOUNT)."""
    try:
        minor = asset.to_minor(amount)
    except (ValueError, InvalidOperation) as e:
        raise ApiError(
            ErrorCode.INVALID_AMOUNT,
            f"amount {clip(_plain(amount))} has more than {asset.decimals} decimals ({asset.code})",
        ) from e
    if not 0 < minor <= INT64_MAX:
        raise ApiError(ErrorCode.INVALID_AMOUNT, f"amount {clip(_plain(amount))} is too large")
    return minor


# ----------------------------------------------------------------------------- outbound


def format_ticks(spec: SymbolSpec, ticks: int) -> str:
    """Ticks -> price string with the tick's scale (``5000000`` x ``0.01`` -> ``"50000.00"``)."""
    return format(_CTX.multiply(spec.tick_size, ticks), "f")


def format_lots(spec: SymbolSpec, lots: int) -> str:
    """Lots -> quantity string with the step's scale."""
    return format(_CTX.multiply(spec.step_size, lots), "f")


def format_minor(asset: AssetSpec, minor: int) -> str:
    """Minor units -> amount string with the asset's decimals (``150`` of 2 dp -> ``"1.50"``)."""
    return format(_CTX.scaleb(Decimal(minor), -asset.decimals), "f")


def average_price(spec: SymbolSpec, quote: AssetSpec, cumulative_quote: int, lots: int) -> str:
    """Exact average fill price, ``cumulative_quote / filled quantity``, as a decimal string.

    Shown at the tick's scale when it is a whole number of ticks, otherwise with as many
    decimals as it needs, up to the finer of the tick's and the quote asset's scales; only a
    quotient that does not terminate within those (e.g. thirds) is rounded, half-even, there.
    """
    if lots <= 0:
        raise ValueError("no fill: no average price")
    value = _CTX.divide(
        _CTX.scaleb(Decimal(cumulative_quote), -quote.decimals),
        _CTX.multiply(spec.step_size, lots),
    )
    tick_exp = int(spec.tick_size.as_tuple().exponent)
    places = max(-tick_exp, quote.decimals)
    rounded = value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN, _CTX)
    if rounded != value:
        return format(rounded, "f")  # inexact: rounded at ``places`` decimals
    shortest = rounded.normalize(_CTX)
    if int(shortest.as_tuple().exponent) > tick_exp:
        shortest = shortest.quantize(spec.tick_size, context=_CTX)
    return format(shortest, "f")


def _plain(number: Decimal) -> str:
    """A Decimal for a message: plain notation unless the exponent is absurd."""
    if -MAX_MAGNITUDE <= number.adjusted() <= MAX_MAGNITUDE:
        return format(number, "f")
    return str(number)
