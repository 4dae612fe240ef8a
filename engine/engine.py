"""The matching engine: a deterministic, synchronous ``apply(command) -> EngineOutput``.

Sans-I/O and single-writer: no clock, no randomness, no threads, no environment. Time and ids
arrive on the command, so the same command log always yields byte-identical outputs. One
engine owns every symbol of its partition.

Each command is validated completely before anything is mutated. A business refusal is an
event (``CommandRejected``, plus the order's own REJECTED report and completion for a
``PlaceOrder``) and leaves :meth:`Engine.state_hash` unchanged; a bug raises an
:class:`~engine.errors.ExchangeError` subclass and the owning service crashes and replays.

Rules where the spec leaves a choice (the tests pin every one of them):

* Validation order for a place: DUPLICATE_ORDER_ID, UNKNOWN_SYMBOL, INVALID_ORDER,
  INVALID_PRICE, INVALID_QUANTITY, DUPLICATE_CLIENT_ORDER_ID, INSUFFICIENT_FUNDS,
  POST_ONLY_WOULD_TAKE; the first failing check is the reason.
* DUPLICATE_ORDER_ID is refused with a ``CommandRejected`` only: an OrderUpdated/OrderCompleted
  for that id would overwrite the real order's history downstream and give it a second
  completion. Duplicates are detected among open orders plus a bounded FIFO memory of the most
  recently completed *accepted* orders (``completed_order_memory``, default 100 000; in the
  snapshot and the state hash). Order ids are command offsets, so a duplicate can only come from
  a repeated command; a rejected order is not remembered, which is what keeps a rejection from
  changing the state hash.
* MARKET orders: a price is INVALID_ORDER; FOK or post_only is INVALID_ORDER; GTC and IOC both
  behave as IOC and are reported as IOC. post_only with IOC or FOK is INVALID_ORDER (it could
  never rest). A MARKET BUY is never refused for funds: it spends available quote maker by
  maker (self-trade prevention is applied first, then affordability) and expires once the next
  lot is unaffordable. A MARKET SELL needs the whole quantity available in base, else
  INSUFFICIENT_FUNDS (it does not sell "what is available").
* A taker is checked for funds up front (LIMIT BUY: ``quantity * price`` in quote; SELL:
  ``quantity`` in base) but pays straight from ``available`` as it fills; only the remainder
  that rests is moved to ``locked``. Seen from outside this equals lock-then-fill, without a
  lock/unlock churn for IOC/FOK.
* Post-only compares with the best opposite price whoever owns it (no STP exemption).
* FOK pre-checks the fillable quantity within its limit: the user's own resting orders count as
  no liquidity; under EXPIRE_TAKER/EXPIRE_BOTH the walk stops at the first of them. A FOK that
  cannot fill is accepted and EXPIRED with nothing else changed (not even STP cancellations).
* client_order_id, when given, is a non-empty string of at most 64 characters, unique among the
  user's *open* orders. Cancel by client_order_id finds open orders only.
* Cancel of an order that is unknown, of another user, or on another symbol is ORDER_NOT_FOUND;
  of one of the user's own orders still in the completed memory, ORDER_ALREADY_COMPLETED.
* A deposit that would take the asset's total supply past a signed int64 is INVALID_AMOUNT.
* Self-trade prevention (taker's ``stp_mode``, None = EXPIRE_TAKER) ends a GTC taker too: under
  EXPIRE_TAKER or EXPIRE_BOTH its remainder is EXPIRED, never rested.
* Enum fields must be the enum members themselves (a plain "BUY" string is INVALID_ORDER), and
  prices/quantities/amounts exact ``int`` (a bool or float is INVALID_PRICE/QUANTITY/AMOUNT).
* The fee account (``Markets.fee_account``) is an ordinary user: it may trade and withdraw.
* Event order inside an output: trades and maker reports/completions in match order, then the
  taker's report/completion; balance updates in first-touched order (the taker's paying then
  receiving balance, then the makers' and the fee account's as trades reach them), and only
  for balances whose value changed.
* Rejection messages are built only from plain values of the command and the state, so they
  are identical on every replay.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from operator import attrgetter
from typing import Any, Final, TypeVar, cast

from engine import snapshot as _snapshot
from engine.balances import Balance, Ledger
from engine.book import Level, OrderBook
from engine.commands import CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)
from engine.errors import ConfigError, InvariantError
from engine.events import (
    BalanceUpdated,
    CommandRejected,
    EngineOutput,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
)
from engine.markets import INT64_MAX, Markets, SymbolSpec
from engine.order_state import COMPLETION_REASON, Trigger, next_status
from engine.orders import Order, OrderView
from engine.validation import MAX_CLIENT_ORDER_ID_LENGTH, order_shape_error

DEFAULT_COMPLETED_ORDER_MEMORY: Final = 100_000
_BPS: Final = 10_000

_E = TypeVar("_E")


def _positional_constructor(cls: type[_E], names: tuple[str, ...]) -> Callable[..., _E]:
    """A constructor for a frozen slotted dataclass that takes its fields positionally.

    Why: a frozen dataclass's ``__init__`` pays one ``object.__setattr__`` call per field
    (about 3.8 us for OrderUpdated on the reference machine), which alone would cap the
    engine far below its throughput target. The generated function allocates an instance of
    a plain class with the identical slot layout, assigns the slots directly, and relabels it
    as ``cls`` (CPython allows ``__class__`` assignment between layout-identical classes): about
    0.5 us. The result *is* a ``cls`` instance, equal to one built the normal way (a test checks
    every event type).

    ``names`` is the parameter order the engine's call sites use; it must equal the
    dataclass's field order, or the import fails loudly instead of mislabelling fields.
    """
    fields = tuple(f.name for f in dataclasses.fields(cast(Any, cls)))
    if fields != names or getattr(cls, "__slots__", None) != names:
        raise InvariantError(
            f"{cls.__name__} fields are {fields}, the engine builds {names}: update engine.engine"
        )
    twin = type(f"_{cls.__name__}Layout", (), {"__slots__": names})
    source = (
        f"def build_{cls.__name__}({', '.join(names)}):\n"
        "    obj = _allocate(_twin)\n"
        + "".join(f"    obj.{name} = {name}\n" for name in names)
        + "    obj.__class__ = _target\n"
        "    return obj\n"
    )
    namespace: dict[str, Any] = {"_allocate": object.__new__, "_twin": twin, "_target": cls}
    exec(source, namespace)  # the same technique dataclasses itself uses to build __init__
    return cast(Callable[..., _E], namespace[f"build_{cls.__name__}"])


_new_trade = _positional_constructor(
    TradeExecuted,
    (
        "trade_id",
        "symbol",
        "price",
        "quantity",
        "quote_quantity",
        "maker_order_id",
        "taker_order_id",
        "maker_user_id",
        "taker_user_id",
        "taker_side",
        "maker_fee",
        "maker_fee_asset",
        "taker_fee",
        "taker_fee_asset",
        "executed_at",
    ),
)
_new_placed = _positional_constructor(
    OrderPlaced,
    (
        "order_id",
        "client_order_id",
        "user_id",
        "symbol",
        "side",
        "order_type",
        "time_in_force",
        "post_only",
        "price",
        "quantity",
        "created_at",
    ),
)
_new_updated = _positional_constructor(
    OrderUpdated,
    (
        "order_id",
        "client_order_id",
        "user_id",
        "symbol",
        "side",
        "order_type",
        "time_in_force",
        "price",
        "quantity",
        "status",
        "filled_quantity",
        "remaining_quantity",
        "cumulative_quote",
        "avg_fill_price",
        "last_fill_price",
        "last_fill_quantity",
        "reject_reason",
        "created_at",
        "updated_at",
    ),
)
_new_completed = _positional_constructor(
    OrderCompleted, ("order_id", "user_id", "symbol", "reason", "completed_at")
)
_new_balance = _positional_constructor(BalanceUpdated, ("user_id", "asset", "available", "locked"))
_new_rejected = _positional_constructor(
    CommandRejected,
    ("command_id", "kind", "user_id", "reason", "order_id", "client_order_id", "message"),
)
_new_output = _positional_constructor(
    EngineOutput,
    (
        "sequence",
        "command_id",
        "command_kind",
        "timestamp_ms",
        "trades",
        "order_placements",
        "order_updates",
        "order_completions",
        "balance_updates",
        "rejections",
    ),
)

_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_EXPIRE_TAKER = StpMode.EXPIRE_TAKER
_EXPIRE_MAKER = StpMode.EXPIRE_MAKER
_EXPIRE_BOTH = StpMode.EXPIRE_BOTH
_PLACE = CommandKind.PLACE_ORDER
_CANCEL = CommandKind.CANCEL_ORDER
_DEPOSIT = CommandKind.DEPOSIT
_WITHDRAW = CommandKind.WITHDRAW
_R = RejectReason
_REJECTED = next_status(OrderStatus.NEW, Trigger.REJECT)
_PARTIAL_FILL = Trigger.PARTIAL_FILL
_FILL = Trigger.FILL
_CANCEL_T = Trigger.CANCEL
_EXPIRE_T = Trigger.EXPIRE
_C_FILLED = CompletionReason.FILLED
_C_CANCELLED = CompletionReason.CANCELLED
_C_EXPIRED = CompletionReason.EXPIRED

_Touched = dict[Balance, tuple[int, int]]


def _report(order: Order, qptl: int, last_price: int, last_quantity: int) -> OrderUpdated:
    """The order's absolute state as an execution report."""
    filled = order.filled
    return _new_updated(
        order.order_id,
        order.client_order_id,
        order.user_id,
        order.symbol,
        order.side,
        order.order_type,
        order.time_in_force,
        order.price,
        order.quantity,
        order.status,
        filled,
        order.remaining,
        order.cumulative_quote,
        order.cumulative_quote // (filled * qptl) if filled else 0,
        last_price,
        last_quantity,
        None,
        order.created_at,
        order.updated_at,
    )


def _shown(value: object) -> str:
    """A value for a rejection message. Only plain values are shown: the repr of an arbitrary
    object may hold its memory address, and messages must be identical on every replay."""
    if value is None or type(value) in (str, int, bool) or isinstance(value, StrEnum):
        return repr(str(value) if isinstance(value, StrEnum) else value)
    return f"a {type(value).__name__}"


def _typed(value: object) -> str:
    return f"{_shown(value)} of type {type(value).__name__}"


def _balance_updates(touched: _Touched) -> tuple[BalanceUpdated, ...]:
    return tuple(
        [
            _new_balance(b.user_id, b.asset, b.available, b.locked)
            for b, before in touched.items()
            if before != (b.available, b.locked)
        ]
    )


class _Market:
    """One symbol's spec, book and the integers the hot path reads, flattened for speed."""

    __slots__ = (
        "base",
        "book",
        "bpl",
        "maker_fee_bps",
        "max_price",
        "max_quantity",
        "min_quantity",
        "name",
        "qptl",
        "quote",
        "spec",
        "taker_fee_bps",
    )

    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.base = spec.base
        self.quote = spec.quote
        self.qptl = spec.quote_per_tick_lot
        self.bpl = spec.base_per_lot
        self.maker_fee_bps = spec.maker_fee_bps
        self.taker_fee_bps = spec.taker_fee_bps
        self.min_quantity = spec.min_quantity
        self.max_quantity = spec.max_quantity
        self.max_price = spec.max_price
        self.book = OrderBook(spec.name)


class Engine:
    """The deterministic matching engine for every symbol of a :class:`Markets`."""

    def __init__(
        self, markets: Markets, *, completed_order_memory: int = DEFAULT_COMPLETED_ORDER_MEMORY
    ) -> None:
        if completed_order_memory < 0:
            raise ConfigError("completed_order_memory must be >= 0")
        self._markets_config = markets
        self._fee_account = markets.fee_account
        self._assets = {code: spec for code, spec in sorted(markets.assets.items())}
        self._markets = {name: _Market(markets.symbols[name]) for name in sorted(markets.symbols)}
        self._ledger = Ledger(list(self._assets))
        self._orders: dict[int, Order] = {}  # every open (resting) order
        self._client_ids: dict[tuple[int, str], Order] = {}  # (user_id, client_order_id)
        # order_id -> (user_id, symbol) of recently completed accepted orders, oldest first.
        self._completed: OrderedDict[int, tuple[int, str]] = OrderedDict()
        self._completed_capacity = completed_order_memory
        self._sequence = 0
        self._next_trade_id = 1
        self._handlers: dict[type, Callable[[Any, int], EngineOutput]] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            Deposit: self._deposit,
            Withdraw: self._withdraw,
        }

    # ------------------------------------------------------------------ commands

    def apply(self, command: Command) -> EngineOutput:
        """Apply one command; exactly one output, with the next sequence number."""
        sequence = self._sequence + 1
        handler = self._handlers.get(type(command))
        if handler is None:
            raise InvariantError(f"not a command: {type(command).__name__}")
        output = handler(command, sequence)
        self._sequence = sequence
        return output

    # ------------------------------------------------------------------ place

    def _place(self, cmd: PlaceOrder, sequence: int) -> EngineOutput:
        order_id = cmd.order_id
        if order_id in self._orders or order_id in self._completed:
            return self._reject(
                cmd.command_id,
                cmd.timestamp_ms,
                sequence,
                _PLACE,
                cmd.user_id,
                _R.DUPLICATE_ORDER_ID,
                order_id,
                cmd.client_order_id,
                f"order id {order_id} is already in use",
            )
        market = self._markets.get(cmd.symbol)
        if market is None:
            return self._reject_place(
                cmd, sequence, _R.UNKNOWN_SYMBOL, f"unknown symbol {_shown(cmd.symbol)}"
            )
        refusal = self._check_place(cmd, market)
        if refusal is not None:
            return self._reject_place(cmd, sequence, refusal[0], refusal[1])

        # Accepted: from here on every step mutates.
        ts = cmd.timestamp_ms
        user_id = cmd.user_id
        side = cmd.side
        is_buy = side is _BUY
        order_type = cmd.order_type
        is_market = order_type is _MARKET
        price = cmd.price
        ledger = self._ledger
        base_balance = ledger.get_or_create(user_id, market.base)
        quote_balance = ledger.get_or_create(user_id, market.quote)
        taker = Order(
            order_id,
            cmd.client_order_id,
            user_id,
            market.name,
            side,
            order_type,
            _IOC if is_market else cmd.time_in_force,
            cmd.post_only,
            price,
            cmd.quantity,
            cmd.stp_mode or _EXPIRE_TAKER,
            ts,
            base_balance,
            quote_balance,
            (0 if price is None else price * market.qptl) if is_buy else market.bpl,
        )
        placed = _new_placed(
            order_id,
            taker.client_order_id,
            user_id,
            taker.symbol,
            side,
            order_type,
            taker.time_in_force,
            taker.post_only,
            price,
            taker.quantity,
            ts,
        )
        tif = taker.time_in_force
        book = market.book
        opposite = book.asks if is_buy else book.bids
        crosses = bool(opposite) and (
            price is None
            or (opposite.peekitem(0)[0] <= price if is_buy else opposite.peekitem(-1)[0] >= price)
        )
        if not crosses and tif is _GTC:
            # The common case, kept short: a limit order that cannot trade simply rests.
            self._rest(taker, market)
            balance = taker.lock_balance
            return _new_output(
                sequence,
                cmd.command_id,
                _PLACE,
                ts,
                (),
                (placed,),
                (_report(taker, market.qptl, 0, 0),),
                (),
                (_new_balance(user_id, balance.asset, balance.available, balance.locked),),
                (),
            )

        trades: list[TradeExecuted] = []
        updates: list[OrderUpdated] = []
        completions: list[OrderCompleted] = []
        touched: _Touched = {}
        if not crosses or (tif is _FOK and not self._fok_can_fill(taker, market)):
            last_price = 0
            stopped = True
        else:
            last_price, stopped = self._match(
                taker, market, ts, trades, updates, completions, touched
            )

        if taker.remaining:
            if stopped or tif is not _GTC:
                taker.transition(_EXPIRE_T)
                taker.remaining = 0
                self._remember(taker)
                completions.append(_new_completed(order_id, user_id, taker.symbol, _C_EXPIRED, ts))
            else:
                balance = taker.lock_balance
                if balance not in touched:
                    touched[balance] = (balance.available, balance.locked)
                self._rest(taker, market)
        else:
            self._remember(taker)
            completions.append(_new_completed(order_id, user_id, taker.symbol, _C_FILLED, ts))
        updates.append(_report(taker, market.qptl, last_price, taker.filled))

        return _new_output(
            sequence,
            cmd.command_id,
            _PLACE,
            ts,
            tuple(trades),
            (placed,),
            tuple(updates),
            tuple(completions),
            _balance_updates(touched),
            (),
        )

    def _check_place(self, cmd: PlaceOrder, market: _Market) -> tuple[RejectReason, str] | None:
        """Every validation of a place, in the documented order; None when acceptable."""
        side = cmd.side
        if side is not _BUY and side is not _SELL:
            return _R.INVALID_ORDER, f"side must be a Side member, got {_typed(side)}"
        tif = cmd.time_in_force
        if tif is not _GTC and tif is not _IOC and tif is not _FOK:
            return _R.INVALID_ORDER, f"time_in_force must be a TimeInForce, got {_typed(tif)}"
        stp = cmd.stp_mode
        # Identity, not equality: a plain "EXPIRE_MAKER" string would compare equal to the
        # member yet fail every ``is`` test in the matching loop.
        if stp is not None and type(stp) is not StpMode:
            return _R.INVALID_ORDER, f"stp_mode must be a StpMode or None, got {_typed(stp)}"
        post_only = cmd.post_only
        if post_only is not True and post_only is not False:
            return _R.INVALID_ORDER, "post_only must be a bool"
        client_order_id = cmd.client_order_id
        if client_order_id is not None and (
            type(client_order_id) is not str
            or not client_order_id
            or len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH
        ):
            return _R.INVALID_ORDER, (
                f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LENGTH} characters"
            )
        order_type = cmd.order_type
        price = cmd.price
        if order_type is not _LIMIT and order_type is not _MARKET:
            return _R.INVALID_ORDER, f"order_type must be an OrderType, got {_typed(order_type)}"
        shape_error = order_shape_error(order_type, tif, post_only, price is not None)
        if shape_error is not None:
            return _R.INVALID_ORDER, shape_error
        if price is not None and (type(price) is not int or not 0 < price <= market.max_price):
            return _R.INVALID_PRICE, (
                f"price {price} ticks is outside 1..{market.max_price} for {market.name}"
            )
        quantity = cmd.quantity
        if type(quantity) is not int or not (
            market.min_quantity <= quantity <= market.max_quantity
        ):
            return _R.INVALID_QUANTITY, (
                f"quantity {quantity} lots is outside "
                f"{market.min_quantity}..{market.max_quantity} for {market.name}"
            )
        user_id = cmd.user_id
        if client_order_id is not None and (user_id, client_order_id) in self._client_ids:
            return _R.DUPLICATE_CLIENT_ORDER_ID, (
                f"client_order_id {client_order_id!r} is already used by an open order"
            )
        if side is _BUY:
            if order_type is _LIMIT:
                needed = quantity * cast(int, price) * market.qptl
                available = self._ledger.available(user_id, market.quote)
                if available < needed:
                    return _R.INSUFFICIENT_FUNDS, (
                        f"needs {needed} {market.quote}, {available} available"
                    )
        else:
            needed = quantity * market.bpl
            available = self._ledger.available(user_id, market.base)
            if available < needed:
                return _R.INSUFFICIENT_FUNDS, f"needs {needed} {market.base}, {available} available"
        if post_only and market.book.would_take(side is _BUY, cast(int, price)):
            return _R.POST_ONLY_WOULD_TAKE, "a post-only order would take liquidity"
        return None

    def _fok_can_fill(self, taker: Order, market: _Market) -> bool:
        """Could ``taker`` fill completely right now? Reads the book, changes nothing."""
        book = market.book
        is_buy = taker.is_buy
        limit = cast(int, taker.price)
        user_id = taker.user_id
        skip_own = taker.stp_mode is _EXPIRE_MAKER
        wanted = taker.remaining
        levels = book.asks.values() if is_buy else reversed(book.bids.values())
        for level in levels:
            if level.price > limit if is_buy else level.price < limit:
                return False
            for maker in level.orders.values():
                if maker.user_id == user_id:
                    if skip_own:
                        continue
                    return False
                wanted -= maker.remaining
                if wanted <= 0:
                    return True
        return False

    def _match(
        self,
        taker: Order,
        market: _Market,
        ts: int,
        trades: list[TradeExecuted],
        updates: list[OrderUpdated],
        completions: list[OrderCompleted],
        touched: _Touched,
    ) -> tuple[int, bool]:
        """Walk the opposite side in price-time priority; returns (last trade price, whether
        matching was stopped by self-trade prevention or a market buyer's funds)."""
        book = market.book
        is_buy = taker.is_buy
        opposite = book.asks if is_buy else book.bids
        best = 0 if is_buy else -1
        limit = taker.price
        market_buy = is_buy and limit is None
        if not opposite:
            return 0, False
        qptl = market.qptl
        bpl = market.bpl
        maker_bps = market.maker_fee_bps
        taker_bps = market.taker_fee_bps
        base_asset = market.base
        quote_asset = market.quote
        symbol = market.name
        side = taker.side
        taker_id = taker.order_id
        taker_user = taker.user_id
        stp = taker.stp_mode
        taker_base = taker.base_balance
        taker_quote = taker.quote_balance
        # The taker's balances are touched first: it pays, then receives.
        pay, receive = (taker_quote, taker_base) if is_buy else (taker_base, taker_quote)
        touched[pay] = (pay.available, pay.locked)
        if receive not in touched:
            touched[receive] = (receive.available, receive.locked)
        fee_base: Balance | None = None
        fee_quote: Balance | None = None
        orders = self._orders
        client_ids = self._client_ids
        remember = self._remember
        trade_id = self._next_trade_id
        remaining = taker.remaining
        filled = 0
        cumulative = 0
        last_price = 0
        stopped = False
        unit_cost = 0

        while remaining and opposite:
            price, level = opposite.peekitem(best)
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            if market_buy:
                unit_cost = price * qptl
            level_orders = level.orders
            gone: list[Order] = []  # makers leaving this level; removed after the scan
            for maker in level_orders.values():
                if maker.user_id == taker_user:
                    if stp is _EXPIRE_TAKER:
                        stopped = True
                        break
                    # EXPIRE_MAKER or EXPIRE_BOTH: the resting order goes first.
                    self._cancel_resting(maker, level, ts, market, updates, completions, touched)
                    gone.append(maker)
                    if stp is _EXPIRE_BOTH:
                        stopped = True
                        break
                    continue
                maker_remaining = maker.remaining
                quantity = remaining if remaining < maker_remaining else maker_remaining
                if market_buy:
                    affordable = taker_quote.available // unit_cost
                    if affordable < quantity:
                        quantity = affordable
                        if not quantity:
                            stopped = True
                            break
                quote_amount = quantity * price * qptl
                base_amount = quantity * bpl
                maker_base = maker.base_balance
                maker_quote = maker.quote_balance
                if maker_base not in touched:
                    touched[maker_base] = (maker_base.available, maker_base.locked)
                if maker_quote not in touched:
                    touched[maker_quote] = (maker_quote.available, maker_quote.locked)
                if is_buy:
                    # Taker buys base with available quote; the maker's base was locked.
                    taker_fee = base_amount * taker_bps // _BPS
                    maker_fee = quote_amount * maker_bps // _BPS
                    taker_quote.available -= quote_amount
                    taker_base.available += base_amount - taker_fee
                    maker_base.locked -= base_amount
                    maker_quote.available += quote_amount - maker_fee
                    taker_fee_asset = base_asset
                    maker_fee_asset = quote_asset
                    if taker_fee:
                        if fee_base is None:
                            fee_base = self._fee_balance(base_asset, touched)
                        fee_base.available += taker_fee
                    if maker_fee:
                        if fee_quote is None:
                            fee_quote = self._fee_balance(quote_asset, touched)
                        fee_quote.available += maker_fee
                else:
                    # Taker sells available base; the maker's quote was locked at this price.
                    taker_fee = quote_amount * taker_bps // _BPS
                    maker_fee = base_amount * maker_bps // _BPS
                    taker_base.available -= base_amount
                    taker_quote.available += quote_amount - taker_fee
                    maker_quote.locked -= quote_amount
                    maker_base.available += base_amount - maker_fee
                    taker_fee_asset = quote_asset
                    maker_fee_asset = base_asset
                    if taker_fee:
                        if fee_quote is None:
                            fee_quote = self._fee_balance(quote_asset, touched)
                        fee_quote.available += taker_fee
                    if maker_fee:
                        if fee_base is None:
                            fee_base = self._fee_balance(base_asset, touched)
                        fee_base.available += maker_fee

                remaining -= quantity
                filled += quantity
                cumulative += quote_amount
                maker_remaining -= quantity
                maker.remaining = maker_remaining
                maker.filled += quantity
                maker.cumulative_quote += quote_amount
                maker.updated_at = ts
                level.total -= quantity
                trades.append(
                    _new_trade(
                        trade_id,
                        symbol,
                        price,
                        quantity,
                        quote_amount,
                        maker.order_id,
                        taker_id,
                        maker.user_id,
                        taker_user,
                        side,
                        maker_fee,
                        maker_fee_asset,
                        taker_fee,
                        taker_fee_asset,
                        ts,
                    )
                )
                trade_id += 1
                last_price = price
                if maker_remaining:
                    maker.transition(_PARTIAL_FILL)
                    updates.append(_report(maker, qptl, price, quantity))
                    break  # the taker is done (or out of funds) with a maker still resting
                maker.transition(_FILL)
                updates.append(_report(maker, qptl, price, quantity))
                completions.append(
                    _new_completed(maker.order_id, maker.user_id, symbol, _C_FILLED, ts)
                )
                gone.append(maker)
                if not remaining:
                    break

            for maker in gone:
                del level_orders[maker.order_id]
                del orders[maker.order_id]
                if maker.client_order_id is not None:
                    del client_ids[(maker.user_id, maker.client_order_id)]
                remember(maker)
            if level_orders:
                break  # the scan stopped inside this level, so matching is over
            del opposite[price]
            if stopped:
                break

        self._next_trade_id = trade_id
        if filled:
            # One transition for all of this command's fills: PARTIAL_FILL loops on
            # PARTIALLY_FILLED, so the table gives the same status as one step per trade.
            taker.transition(_PARTIAL_FILL if remaining else _FILL)
        taker.remaining = remaining
        taker.filled += filled
        taker.cumulative_quote += cumulative
        taker.updated_at = ts
        return last_price, stopped

    def _cancel_resting(
        self,
        order: Order,
        level: Level,
        ts: int,
        market: _Market,
        updates: list[OrderUpdated],
        completions: list[OrderCompleted],
        touched: _Touched,
    ) -> None:
        """Cancel a resting order in place; the caller removes it from its level and indexes."""
        order.transition(_CANCEL_T)
        balance = order.lock_balance
        if balance not in touched:
            touched[balance] = (balance.available, balance.locked)
        released = order.remaining * order.lock_per_lot
        balance.locked -= released
        balance.available += released
        level.total -= order.remaining
        order.remaining = 0
        order.updated_at = ts
        updates.append(_report(order, market.qptl, 0, 0))
        completions.append(
            _new_completed(order.order_id, order.user_id, order.symbol, _C_CANCELLED, ts)
        )

    def _rest(self, order: Order, market: _Market) -> None:
        """Lock what the remainder could spend and put it in the book and the indexes."""
        balance = order.lock_balance
        amount = order.remaining * order.lock_per_lot
        if balance.available < amount:
            raise InvariantError(
                f"order {order.order_id} passed the funds check but cannot lock {amount}"
            )
        balance.available -= amount
        balance.locked += amount
        market.book.add(order)
        self._orders[order.order_id] = order
        if order.client_order_id is not None:
            self._client_ids[(order.user_id, order.client_order_id)] = order

    def _fee_balance(self, asset: str, touched: _Touched) -> Balance:
        balance = self._ledger.get_or_create(self._fee_account, asset)
        if balance not in touched:
            touched[balance] = (balance.available, balance.locked)
        return balance

    def _remember(self, order: Order) -> None:
        """Record a completed accepted order in the bounded duplicate/cancel memory."""
        capacity = self._completed_capacity
        if not capacity:
            return
        completed = self._completed
        completed[order.order_id] = (order.user_id, order.symbol)
        if len(completed) > capacity:
            completed.popitem(last=False)

    # ------------------------------------------------------------------ cancel

    def _cancel(self, cmd: CancelOrder, sequence: int) -> EngineOutput:
        user_id = cmd.user_id
        order_id = cmd.order_id
        client_order_id = cmd.client_order_id
        market = self._markets.get(cmd.symbol)
        reason: RejectReason | None = None
        message = ""
        order: Order | None = None
        if market is None:
            reason, message = _R.UNKNOWN_SYMBOL, f"unknown symbol {_shown(cmd.symbol)}"
        elif (order_id is None) == (client_order_id is None):
            reason = _R.INVALID_ORDER
            message = "a cancel names exactly one of order_id and client_order_id"
        elif order_id is not None:
            order = self._orders.get(order_id)
            if order is None or order.user_id != user_id or order.symbol != market.name:
                order = None
                if self._completed.get(order_id) == (user_id, market.name):
                    reason = _R.ORDER_ALREADY_COMPLETED
                    message = f"order {order_id} is already completed"
                else:
                    reason, message = _R.ORDER_NOT_FOUND, f"order {order_id} not found"
        else:
            order = self._client_ids.get((user_id, cast(str, client_order_id)))
            if order is None or order.symbol != market.name:
                order = None
                reason = _R.ORDER_NOT_FOUND
                message = f"no open order with client_order_id {client_order_id!r}"
        if reason is not None or order is None or market is None:
            return self._reject(
                cmd.command_id,
                cmd.timestamp_ms,
                sequence,
                _CANCEL,
                user_id,
                reason or _R.ORDER_NOT_FOUND,
                order_id,
                client_order_id,
                message,
            )

        ts = cmd.timestamp_ms
        order.transition(_CANCEL_T)  # first: an illegal transition must change nothing
        market.book.remove(order)
        del self._orders[order.order_id]
        if order.client_order_id is not None:
            del self._client_ids[(user_id, order.client_order_id)]
        balance = order.lock_balance
        released = order.remaining * order.lock_per_lot
        balance.locked -= released
        balance.available += released
        order.remaining = 0
        order.updated_at = ts
        self._remember(order)
        return _new_output(
            sequence,
            cmd.command_id,
            _CANCEL,
            ts,
            (),
            (),
            (_report(order, market.qptl, 0, 0),),
            (_new_completed(order.order_id, user_id, order.symbol, _C_CANCELLED, ts),),
            (_new_balance(user_id, balance.asset, balance.available, balance.locked),),
            (),
        )

    # ------------------------------------------------------------------ funds

    def _check_amount(self, asset: str, amount: int) -> tuple[RejectReason, str] | None:
        if asset not in self._assets:
            return _R.UNKNOWN_ASSET, f"unknown asset {_shown(asset)}"
        if type(amount) is not int or amount <= 0:
            return _R.INVALID_AMOUNT, f"amount must be a positive integer, got {_shown(amount)}"
        return None

    def _deposit(self, cmd: Deposit, sequence: int) -> EngineOutput:
        asset = cmd.asset
        amount = cmd.amount
        refusal = self._check_amount(asset, amount)
        if refusal is None and self._ledger.supply[asset] + amount > INT64_MAX:
            refusal = _R.INVALID_AMOUNT, f"total {asset} would exceed a signed 64-bit integer"
        if refusal is not None:
            return self._reject(
                cmd.command_id,
                cmd.timestamp_ms,
                sequence,
                _DEPOSIT,
                cmd.user_id,
                refusal[0],
                None,
                None,
                refusal[1],
            )
        balance = self._ledger.get_or_create(cmd.user_id, asset)
        balance.available += amount
        self._ledger.supply[asset] += amount
        return self._funds_output(cmd, sequence, _DEPOSIT, balance)

    def _withdraw(self, cmd: Withdraw, sequence: int) -> EngineOutput:
        asset = cmd.asset
        amount = cmd.amount
        refusal = self._check_amount(asset, amount)
        if refusal is None:
            available = self._ledger.available(cmd.user_id, asset)
            if available < amount:
                refusal = _R.INSUFFICIENT_FUNDS, f"needs {amount} {asset}, {available} available"
        if refusal is not None:
            return self._reject(
                cmd.command_id,
                cmd.timestamp_ms,
                sequence,
                _WITHDRAW,
                cmd.user_id,
                refusal[0],
                None,
                None,
                refusal[1],
            )
        balance = self._ledger.get_or_create(cmd.user_id, asset)
        balance.available -= amount
        self._ledger.supply[asset] -= amount
        return self._funds_output(cmd, sequence, _WITHDRAW, balance)

    @staticmethod
    def _funds_output(
        cmd: Deposit | Withdraw, sequence: int, kind: CommandKind, balance: Balance
    ) -> EngineOutput:
        return _new_output(
            sequence,
            cmd.command_id,
            kind,
            cmd.timestamp_ms,
            (),
            (),
            (),
            (),
            (_new_balance(balance.user_id, balance.asset, balance.available, balance.locked),),
            (),
        )

    # ------------------------------------------------------------------ rejections

    @staticmethod
    def _reject(
        command_id: int,
        ts: int,
        sequence: int,
        kind: CommandKind,
        user_id: int,
        reason: RejectReason,
        order_id: int | None,
        client_order_id: str | None,
        message: str,
        order_updates: tuple[OrderUpdated, ...] = (),
        order_completions: tuple[OrderCompleted, ...] = (),
    ) -> EngineOutput:
        rejection = _new_rejected(
            command_id, kind, user_id, reason, order_id, client_order_id, message
        )
        return _new_output(
            sequence,
            command_id,
            kind,
            ts,
            (),
            (),
            order_updates,
            order_completions,
            (),
            (rejection,),
        )

    def _reject_place(
        self, cmd: PlaceOrder, sequence: int, reason: RejectReason, message: str
    ) -> EngineOutput:
        """A refused order: CommandRejected plus its own REJECTED report and completion."""
        ts = cmd.timestamp_ms
        report = _new_updated(
            cmd.order_id,
            cmd.client_order_id,
            cmd.user_id,
            cmd.symbol,
            cmd.side,
            cmd.order_type,
            cmd.time_in_force,
            cmd.price,
            cmd.quantity,
            _REJECTED,
            0,
            0,
            0,
            0,
            0,
            0,
            reason,
            ts,
            ts,
        )
        completion = _new_completed(
            cmd.order_id, cmd.user_id, cmd.symbol, COMPLETION_REASON[_REJECTED], ts
        )
        return self._reject(
            cmd.command_id,
            ts,
            sequence,
            _PLACE,
            cmd.user_id,
            reason,
            cmd.order_id,
            cmd.client_order_id,
            message,
            (report,),
            (completion,),
        )

    # ------------------------------------------------------------------ reads

    @property
    def sequence(self) -> int:
        """The sequence of the last applied command (0 before the first)."""
        return self._sequence

    @property
    def markets(self) -> Markets:
        return self._markets_config

    @property
    def next_trade_id(self) -> int:
        return self._next_trade_id

    def balance(self, user_id: int, asset: str) -> tuple[int, int]:
        """(available, locked) in minor units; (0, 0) for a user or asset never seen."""
        balance = self._ledger.get(user_id, asset)
        return (0, 0) if balance is None else (balance.available, balance.locked)

    def balances(self) -> list[tuple[int, str, int, int]]:
        """Every non-zero balance as (user_id, asset, available, locked), sorted."""
        return [
            (b.user_id, b.asset, b.available, b.locked)
            for b in self._ledger
            if b.available or b.locked
        ]

    def supply(self, asset: str) -> int:
        """Deposits minus withdrawals of ``asset``."""
        return self._ledger.supply[asset]

    def open_order(self, order_id: int) -> OrderView | None:
        order = self._orders.get(order_id)
        return None if order is None else order.view()

    def open_orders(self) -> list[OrderView]:
        """Every open order, by order id."""
        return [self._orders[order_id].view() for order_id in sorted(self._orders)]

    def book_orders(self, symbol: str, side: Side) -> list[OrderView]:
        """One side of a book in priority order: best price first, then time."""
        book = self._market(symbol).book
        return [o.view() for level in book.levels(side is _BUY) for o in level.orders.values()]

    def depth(self, symbol: str, side: Side) -> list[tuple[int, int]]:
        """(price, total lots) per level, best first."""
        book = self._market(symbol).book
        return [(level.price, level.total) for level in book.levels(side is _BUY)]

    def best_bid(self, symbol: str) -> tuple[int, int] | None:
        """(price, total lots) of the best bid, or None."""
        level = self._market(symbol).book.best_bid()
        return None if level is None else (level.price, level.total)

    def best_ask(self, symbol: str) -> tuple[int, int] | None:
        """(price, total lots) of the best ask, or None."""
        level = self._market(symbol).book.best_ask()
        return None if level is None else (level.price, level.total)

    def is_completed(self, order_id: int) -> bool:
        """Whether ``order_id`` is in the bounded memory of completed accepted orders."""
        return order_id in self._completed

    def _market(self, symbol: str) -> _Market:
        market = self._markets.get(symbol)
        if market is None:
            raise KeyError(symbol)
        return market

    # ------------------------------------------------------------------ snapshot

    def state_hash(self) -> str:
        """SHA-256 hex digest of the business state.

        Covered: books (every open order, in priority order, with all its fields), balances
        (non-zero ones), per-asset supply, the next trade id and the completed-order memory.
        Not covered: the output sequence, which every command advances, rejected ones
        included; leaving it out is what lets a test assert "a rejection changes nothing".
        """
        return _snapshot.digest(self._export_business())

    def snapshot(self) -> bytes:
        """The whole engine state as deterministic bytes (see :mod:`engine.snapshot`)."""
        return _snapshot.dump((self._sequence, self._scales(), self._export_business()))

    @classmethod
    def restore(cls, data: bytes, markets: Markets) -> Engine:
        """An engine equal to the one that took ``snapshot()``: same hash, same behaviour.

        ``markets`` may change fees and limits, not the scales (assets, decimals, ticks, lots).
        """
        state = _snapshot.load(data)
        try:
            sequence, scales, business = state
        except ValueError as e:
            raise _snapshot.SnapshotError("snapshot body has the wrong shape") from e
        engine = cls(markets)
        if scales != engine._scales():
            raise ConfigError("the markets config does not match the snapshot's assets and scales")
        engine._import_business(business)
        engine._sequence = sequence
        return engine

    def _scales(self) -> tuple[Any, ...]:
        return (
            self._fee_account,
            [(code, spec.decimals) for code, spec in self._assets.items()],
            [
                (m.name, m.base, m.quote, m.qptl, m.bpl, str(m.spec.tick_size))
                for m in self._markets.values()
            ],
        )

    # One row per resting order. Only LIMIT GTC orders rest (an invariant the checker
    # enforces) and their status follows from ``filled``, so neither is stored; stp_mode is
    # stored by its value, the same name the wire uses. (Columns load faster but cost a
    # transpose on the way out; rows keep both directions under 3 s for a million orders.)
    _ORDER_ROW: Final = (
        "order_id",
        "client_order_id",
        "user_id",
        "post_only",
        "price",
        "quantity",
        "filled",
        "cumulative_quote",
        "created_at",
        "updated_at",
        "stp_mode._value_",
    )

    def _export_business(self) -> tuple[Any, ...]:
        side_code = _snapshot.SIDE_CODE
        # One C-level getter per order: with a million orders scattered in memory, touching
        # each order only once is what matters.
        row_of = attrgetter(*self._ORDER_ROW)
        books = []
        for market in self._markets.values():
            for side, side_book in ((_BUY, market.book.bids), (_SELL, market.book.asks)):
                # Ascending price, FIFO within a level: rebuilding in this order restores
                # every level's time priority.
                orders = (o for level in side_book.values() for o in level.orders.values())
                books.append((market.name, side_code[side], list(map(row_of, orders))))
        return (
            self._next_trade_id,
            self._completed_capacity,
            sorted(self._ledger.supply.items()),
            self.balances(),
            books,
            [(oid, user, symbol) for oid, (user, symbol) in self._completed.items()],
        )

    def _import_business(self, business: tuple[Any, ...]) -> None:
        try:
            next_trade_id, capacity, supply, balances, books, completed = business
        except ValueError as e:
            raise _snapshot.SnapshotError("snapshot business state has the wrong shape") from e
        self._next_trade_id = next_trade_id
        self._completed_capacity = capacity
        ledger = self._ledger
        for asset, amount in supply:
            ledger.supply[asset] = amount
        for user_id, asset, available, locked in balances:
            balance = ledger.get_or_create(user_id, asset)
            balance.available = available
            balance.locked = locked
        stp_of = {mode.value: mode for mode in StpMode}
        orders = self._orders
        client_ids = self._client_ids
        get_or_create = ledger.get_or_create
        partially_filled = OrderStatus.PARTIALLY_FILLED
        for symbol, side_code, rows in books:
            market = self._markets.get(symbol)
            if market is None:
                raise ConfigError(f"the snapshot has orders for unknown symbol {symbol!r}")
            side = _snapshot.SIDE_FROM_CODE[side_code]
            is_buy = side is _BUY
            qptl = market.qptl
            bpl = market.bpl
            base_asset = market.base
            quote_asset = market.quote
            user_balances: dict[int, tuple[Balance, Balance]] = {}
            levels: dict[int, Level] = {}
            level = Level(0)
            for (
                order_id,
                client_order_id,
                user_id,
                post_only,
                price,
                quantity,
                filled,
                cumulative_quote,
                created_at,
                updated_at,
                stp,
            ) in rows:
                pair = user_balances.get(user_id)
                if pair is None:
                    pair = user_balances[user_id] = (
                        get_or_create(user_id, base_asset),
                        get_or_create(user_id, quote_asset),
                    )
                order = Order(
                    order_id,
                    client_order_id,
                    user_id,
                    symbol,
                    side,
                    _LIMIT,
                    _GTC,
                    post_only,
                    price,
                    quantity,
                    stp_of[stp],
                    created_at,
                    pair[0],
                    pair[1],
                    price * qptl if is_buy else bpl,
                )
                if filled:
                    order.filled = filled
                    order.remaining = quantity - filled
                    order.cumulative_quote = cumulative_quote
                    order.status = partially_filled
                order.updated_at = updated_at
                if price != level.price:  # rows come sorted by price
                    level = levels[price] = Level(price)
                level.orders[order_id] = order
                level.total += order.remaining
                orders[order_id] = order
                if client_order_id is not None:
                    client_ids[(user_id, client_order_id)] = order
            if levels:
                (market.book.bids if is_buy else market.book.asks).update(levels)
        self._completed = OrderedDict(
            (order_id, (user_id, symbol)) for order_id, user_id, symbol in completed
        )

    # ------------------------------------------------------------------ invariants

    def _check_invariants(self) -> None:
        """Every structural and money invariant; for tests after each step, never the hot path.

        Raises InvariantError describing the first violation found.
        """

        def fail(message: str) -> None:
            raise InvariantError(message)

        expected_locked: dict[tuple[int, str], int] = {}
        seen_ids: set[int] = set()
        with_client_id = 0
        for name, market in self._markets.items():
            book = market.book
            for is_buy, side_book in ((True, book.bids), (False, book.asks)):
                keys = list(side_book.keys())
                if keys != sorted(keys):
                    fail(f"{name}: price levels out of order")
                for price, level in side_book.items():
                    if level.price != price:
                        fail(f"{name}: level {level.price} filed under {price}")
                    if not level.orders:
                        fail(f"{name}: empty level {price}")
                    total = 0
                    for order_id, o in level.orders.items():
                        if o.order_id != order_id or self._orders.get(order_id) is not o:
                            fail(f"{name}: order {order_id} missing from the index")
                        if order_id in seen_ids:
                            fail(f"order {order_id} rests twice")
                        seen_ids.add(order_id)
                        if o.symbol != name or o.is_buy is not is_buy or o.price != price:
                            fail(f"order {order_id} is on the wrong book, side or level")
                        if o.is_buy is not (o.side is _BUY):
                            fail(f"order {order_id}: is_buy disagrees with side")
                        if o.remaining <= 0 or o.filled < 0:
                            fail(f"order {order_id}: remaining {o.remaining}, filled {o.filled}")
                        if o.filled + o.remaining != o.quantity:
                            fail(f"order {order_id}: filled + remaining != quantity")
                        expected_status = (
                            OrderStatus.PARTIALLY_FILLED if o.filled else OrderStatus.NEW
                        )
                        if o.status is not expected_status:
                            fail(f"order {order_id}: status {o.status} with filled {o.filled}")
                        if o.order_type is not _LIMIT or o.time_in_force is not _GTC:
                            fail(f"order {order_id}: only LIMIT GTC orders rest")
                        if o.cumulative_quote < o.filled * market.qptl:
                            fail(f"order {order_id}: cumulative quote below one tick per lot")
                        lock_per_lot = price * market.qptl if is_buy else market.bpl
                        asset = market.quote if is_buy else market.base
                        if o.lock_per_lot != lock_per_lot:
                            fail(f"order {order_id}: lock per lot {o.lock_per_lot}")
                        if o.lock_balance is not self._ledger.get(o.user_id, asset):
                            fail(f"order {order_id}: lock balance is not the ledger's")
                        if o.base_balance is not self._ledger.get(
                            o.user_id, market.base
                        ) or o.quote_balance is not self._ledger.get(o.user_id, market.quote):
                            fail(f"order {order_id}: balance references are stale")
                        key = (o.user_id, asset)
                        expected_locked[key] = expected_locked.get(key, 0) + o.remaining * (
                            lock_per_lot
                        )
                        if o.client_order_id is not None:
                            with_client_id += 1
                            if self._client_ids.get((o.user_id, o.client_order_id)) is not o:
                                fail(f"order {order_id}: client order id not indexed")
                        if order_id in self._completed:
                            fail(f"order {order_id} is both open and completed")
                        total += o.remaining
                    if total != level.total:
                        fail(f"{name}: level {price} total {level.total}, orders sum to {total}")
            if book.bids and book.asks and book.bids.peekitem(-1)[0] >= book.asks.peekitem(0)[0]:
                fail(f"{name}: book is crossed")
        if len(seen_ids) != len(self._orders):
            fail("the order index holds orders that are not in any book")
        if with_client_id != len(self._client_ids):
            fail("the client order id index holds stale entries")
        if len(self._completed) > self._completed_capacity:
            fail("the completed-order memory is over capacity")

        totals: dict[str, int] = {asset: 0 for asset in self._assets}
        for b in self._ledger:
            if b.asset not in totals:
                fail(f"balance in unknown asset {b.asset!r}")
            if b.available < 0 or b.locked < 0:
                fail(f"negative balance: {b!r}")
            if b.locked != expected_locked.get((b.user_id, b.asset), 0):
                fail(
                    f"{b!r}: locked should be {expected_locked.get((b.user_id, b.asset), 0)}, "
                    "what its open orders need"
                )
            totals[b.asset] += b.available + b.locked
        for key in expected_locked:
            if self._ledger.get(*key) is None:
                fail(f"open orders lock funds of a missing balance {key}")
        for asset, total in totals.items():
            supply = self._ledger.supply[asset]
            if total != supply:
                fail(f"{asset}: balances sum to {total}, deposits - withdrawals is {supply}")
            if not 0 <= supply <= INT64_MAX:
                fail(f"{asset}: supply {supply} outside int64")
        if self._next_trade_id < 1:
            fail("trade ids start at 1")
