"""Store rows and engine events -> the JSON objects of the API (plain dicts, scaled).

One :class:`Views` per app, built from the markets: it precomputes each symbol's and asset's
formatters, so a row costs a few dict lookups and Decimal multiplications. A row whose symbol
or asset is no longer configured (the markets file changed) is still shown, with the integers
unscaled, rather than failing the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.commands import PlaceOrder
from engine.enums import OrderStatus, RejectReason
from engine.events import OrderUpdated, TradeExecuted
from engine.markets import AssetSpec, Markets, SymbolSpec
from gateway.convert import average_price, format_lots, format_minor, format_ticks
from settlement.store import BalanceRow, OrderRow, OrderUpdateRow, TradeRow

Json = dict[str, Any]


class _SymbolFormat:
    __slots__ = ("average", "base_amount", "price", "quantity", "quote_amount")

    def __init__(
        self,
        price: Callable[[int], str],
        quantity: Callable[[int], str],
        quote_amount: Callable[[int], str],
        base_amount: Callable[[int], str],
        average: Callable[[int, int], str | None],
    ) -> None:
        self.price = price
        self.quantity = quantity
        self.quote_amount = quote_amount
        self.base_amount = base_amount
        self.average = average


def _raw(value: int) -> str:
    return str(value)


def _raw_average(cumulative_quote: int, lots: int) -> str | None:
    return None if lots <= 0 else str(cumulative_quote // lots)


_RAW = _SymbolFormat(_raw, _raw, _raw, _raw, _raw_average)


def _symbol_format(
    spec: SymbolSpec, base: AssetSpec | None, quote: AssetSpec | None
) -> _SymbolFormat:
    def price(ticks: int) -> str:
        return format_ticks(spec, ticks)

    def quantity(lots: int) -> str:
        return format_lots(spec, lots)

    def average(cumulative_quote: int, lots: int) -> str | None:
        if lots <= 0 or quote is None:
            return None
        return average_price(spec, quote, cumulative_quote, lots)

    return _SymbolFormat(
        price,
        quantity,
        _amount_format(quote),
        _amount_format(base),
        average,
    )


def _amount_format(asset: AssetSpec | None) -> Callable[[int], str]:
    if asset is None:
        return _raw

    def amount(minor: int) -> str:
        return format_minor(asset, minor)

    return amount


class Views:
    """Formatters from integer rows/events to API objects (see the module docstring)."""

    def __init__(self, markets: Markets) -> None:
        assets = markets.assets
        self._symbols = {
            name: _symbol_format(spec, assets.get(spec.base), assets.get(spec.quote))
            for name, spec in markets.symbols.items()
        }
        self._assets = {code: _amount_format(asset) for code, asset in markets.assets.items()}

    def _symbol(self, symbol: str) -> _SymbolFormat:
        return self._symbols.get(symbol, _RAW)

    def asset_amount(self, asset: str, minor: int) -> str:
        return self._assets.get(asset, _raw)(minor)

    def order(self, r: OrderRow) -> Json:
        f = self._symbol(r.symbol)
        return {
            "order_id": str(r.order_id),
            "client_order_id": r.client_order_id,
            "user_id": r.user_id,
            "symbol": r.symbol,
            "side": r.side,
            "order_type": r.order_type,
            "time_in_force": r.time_in_force,
            "price": None if r.price is None else f.price(r.price),
            "quantity": f.quantity(r.quantity),
            "filled_quantity": f.quantity(r.filled_quantity),
            "remaining_quantity": f.quantity(r.remaining_quantity),
            "avg_fill_price": f.average(r.cumulative_quote, r.filled_quantity),
            "status": r.status,
            "reject_reason": r.reject_reason,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }

    def order_from_event(self, u: OrderUpdated) -> Json:
        """The same object as :meth:`order`, from the engine's execution report."""
        f = self._symbol(u.symbol)
        return {
            "order_id": str(u.order_id),
            "client_order_id": u.client_order_id,
            "user_id": u.user_id,
            "symbol": u.symbol,
            "side": u.side,
            "order_type": u.order_type,
            "time_in_force": u.time_in_force,
            "price": None if u.price is None else f.price(u.price),
            "quantity": f.quantity(u.quantity),
            "filled_quantity": f.quantity(u.filled_quantity),
            "remaining_quantity": f.quantity(u.remaining_quantity),
            "avg_fill_price": f.average(u.cumulative_quote, u.filled_quantity),
            "status": u.status,
            "reject_reason": u.reject_reason,
            "created_at": u.created_at,
            "updated_at": u.updated_at,
        }

    def update(self, u: OrderUpdateRow) -> Json:
        f = self._symbol(u.symbol)
        return {
            "command_id": str(u.command_id),
            "sequence": u.version,
            "status": u.status,
            "filled_quantity": f.quantity(u.filled_quantity),
            "remaining_quantity": f.quantity(u.remaining_quantity),
            "avg_fill_price": f.average(u.cumulative_quote, u.filled_quantity),
            "last_fill_price": f.price(u.last_fill_price) if u.last_fill_quantity else None,
            "last_fill_quantity": f.quantity(u.last_fill_quantity),
            "reject_reason": u.reject_reason,
            "updated_at": u.updated_at,
        }

    def trade(self, t: TradeRow) -> Json:
        f = self._symbol(t.symbol)
        return {
            "trade_id": str(t.trade_id),
            "order_id": str(t.order_id),
            "symbol": t.symbol,
            "side": t.side,
            "price": f.price(t.price),
            "quantity": f.quantity(t.quantity),
            "quote_quantity": f.quote_amount(t.quote_quantity),
            "is_maker": t.is_maker,
            "fee": self.asset_amount(t.fee_asset, t.fee),
            "fee_asset": t.fee_asset,
            "executed_at": t.executed_at,
        }

    def fill(self, t: TradeExecuted, order_id: int) -> Json:
        """One trade of ``order_id`` (maker or taker side), for a ``?wait=true`` answer."""
        f = self._symbol(t.symbol)
        is_maker = t.maker_order_id == order_id
        fee, fee_asset = (
            (t.maker_fee, t.maker_fee_asset) if is_maker else (t.taker_fee, t.taker_fee_asset)
        )
        return {
            "trade_id": str(t.trade_id),
            "price": f.price(t.price),
            "quantity": f.quantity(t.quantity),
            "quote_quantity": f.quote_amount(t.quote_quantity),
            "fee": self.asset_amount(fee_asset, fee),
            "fee_asset": fee_asset,
            "is_maker": is_maker,
            "executed_at": t.executed_at,
        }

    def balance(self, b: BalanceRow) -> Json:
        fmt = self._assets.get(b.asset, _raw)
        return {"asset": b.asset, "available": fmt(b.available), "locked": fmt(b.locked)}

    def order_from_command(self, c: PlaceOrder, order_id: int, reason: RejectReason) -> Json:
        """A refused order that has no execution report (the engine refused a duplicate id):
        the order as requested, REJECTED, nothing filled."""
        f = self._symbol(c.symbol)
        return {
            "order_id": str(order_id),
            "client_order_id": c.client_order_id,
            "user_id": c.user_id,
            "symbol": c.symbol,
            "side": c.side,
            "order_type": c.order_type,
            "time_in_force": c.time_in_force,
            "price": None if c.price is None else f.price(c.price),
            "quantity": f.quantity(c.quantity),
            "filled_quantity": f.quantity(0),
            "remaining_quantity": f.quantity(0),
            "avg_fill_price": None,
            "status": OrderStatus.REJECTED,
            "reject_reason": reason,
            "created_at": c.timestamp_ms,
            "updated_at": c.timestamp_ms,
        }
