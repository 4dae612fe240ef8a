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
* Amend (``AmendOrder``) reduces a resting order's total quantity to ``quantity`` when
  ``filled < quantity < quantity now``, in place, so the order keeps its queue position; the
  released lots' funds are unlocked. Refusals, in this order: UNKNOWN_SYMBOL, INVALID_ORDER
  (not exactly one of order_id and client_order_id), ORDER_NOT_FOUND (unknown, completed,
  another user's or another market's order: one answer for all), INVALID_QUANTITY (not an
  ``int``), INVALID_AMEND (not a strict reduction above the filled quantity). The market's
  minimum quantity does not apply: a remainder below it is normal after partial fills.
* Every command that changes a book raises that book's update id by one and carries one
  ``DepthUpdated`` with the changed levels' post-state (see :mod:`engine.depth`).
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
* Users (see :mod:`engine.users`): every user-scoped command (place, cancel, cancel-all,
  deposit, withdraw, add key) naming a user the engine never created is UNKNOWN_USER; the fee
  account is always known. For a place, UNKNOWN_USER comes right after DUPLICATE_ORDER_ID and,
  like every refused order, with the order's REJECTED report and completion. CreateUser and
  RevokeApiKey name no user: their rejections carry user_id 0. AddApiKey checks UNKNOWN_USER,
  then DUPLICATE_API_KEY. Revoking a revoked key is accepted with no events.
* Cancel-all cancels the user's open orders in one market in order id order, each with its
  report and completion as a single cancel has; balance updates follow the rule above (one per
  changed balance, final values). None open is an output with no events, not a rejection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, cast

from engine import snapshot as _snapshot
from engine import state_io
from engine.balances import Balance, Ledger
from engine.book import Level
from engine.commands import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
    Withdraw,
)
from engine.depth import after_match, book_levels, changed_levels, one_level
from engine.depth import new_depth as _new_depth
from engine.depth import new_level as _new_level
from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    StpMode,
    TimeInForce,
)
from engine.errors import ConfigError, InvariantError
from engine.events import (
    ApiKeyUpdated,
    BalanceUpdated,
    CommandRejected,
    EngineOutput,
    LevelUpdated,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
    UserCreated,
)
from engine.fastbuild import positional_constructor
from engine.market_state import MarketState
from engine.markets import INT64_MAX, Markets
from engine.order_state import COMPLETION_REASON, Trigger, next_status
from engine.orders import Order, OrderView
from engine.users import ApiKey, Users
from engine.validation import check_amount, check_place, shown

DEFAULT_COMPLETED_ORDER_MEMORY: Final = 100_000
_BPS: Final = 10_000

_new_trade = positional_constructor(
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
_new_placed = positional_constructor(
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
_new_updated = positional_constructor(
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
_new_completed = positional_constructor(
    OrderCompleted, ("order_id", "user_id", "symbol", "reason", "completed_at")
)
_new_balance = positional_constructor(BalanceUpdated, ("user_id", "asset", "available", "locked"))
_new_rejected = positional_constructor(
    CommandRejected,
    ("command_id", "kind", "user_id", "reason", "order_id", "client_order_id", "message"),
)
_new_user_created = positional_constructor(UserCreated, ("user_id", "role", "label", "created_at"))
_new_key_updated = positional_constructor(
    ApiKeyUpdated, ("api_key", "user_id", "role", "public_key", "revoked", "updated_at")
)
_new_output = positional_constructor(
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
        "depth_updates",
        "user_creations",
        "api_key_updates",
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
_CREATE_USER = CommandKind.CREATE_USER
_ADD_API_KEY = CommandKind.ADD_API_KEY
_REVOKE_API_KEY = CommandKind.REVOKE_API_KEY
_CANCEL_ALL = CommandKind.CANCEL_ALL_ORDERS
_AMEND = CommandKind.AMEND_ORDER
_NO_USER: Final = 0  # the user_id of a rejection of a command that names no user
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


def _order_id(order: Order) -> int:
    return order.order_id


def _balance_updates(touched: _Touched) -> tuple[BalanceUpdated, ...]:
    return tuple(
        [
            _new_balance(b.user_id, b.asset, b.available, b.locked)
            for b, before in touched.items()
            if before != (b.available, b.locked)
        ]
    )


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
        self._markets = {
            name: MarketState(markets.symbols[name]) for name in sorted(markets.symbols)
        }
        self._ledger = Ledger(list(self._assets))
        self._orders: dict[int, Order] = {}  # every open (resting) order
        self._client_ids: dict[tuple[int, str], Order] = {}  # (user_id, client_order_id)
        # order_id -> (user_id, symbol) of recently completed accepted orders, oldest first.
        self._completed: OrderedDict[int, tuple[int, str]] = OrderedDict()
        self._completed_capacity = completed_order_memory
        self._sequence = 0
        self._next_trade_id = 1
        self._users = Users(markets.fee_account)
        # The registry's set of known user ids, bound once: one membership test per command.
        self._known_users = self._users.known
        self._handlers: dict[type, Callable[[Any, int], EngineOutput]] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            CreateUser: self._create_user,
            AddApiKey: self._add_api_key,
            RevokeApiKey: self._revoke_api_key,
            CancelAllOrders: self._cancel_all,
            AmendOrder: self._amend,
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
        if type(cmd.user_id) is not int or cmd.user_id not in self._known_users:
            return self._reject_place(
                cmd, sequence, _R.UNKNOWN_USER, f"unknown user {shown(cmd.user_id)}"
            )
        market = self._markets.get(cmd.symbol)
        if market is None:
            return self._reject_place(
                cmd, sequence, _R.UNKNOWN_SYMBOL, f"unknown symbol {shown(cmd.symbol)}"
            )
        refusal = check_place(cmd, market, self._client_ids, self._ledger)
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
            level = self._rest(taker, market)
            balance = taker.lock_balance
            update_id = market.update_id + 1  # the depth update, inlined (see engine.depth)
            market.update_id = update_id
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
                (
                    _new_depth(
                        market.name,
                        update_id,
                        (_new_level(side, price, level.total, len(level.orders)),),
                    ),
                ),
            )

        trades: list[TradeExecuted] = []
        updates: list[OrderUpdated] = []
        completions: list[OrderCompleted] = []
        touched: _Touched = {}
        walked: list[tuple[int, int]] = []  # (price, total before) of the levels reached
        rested_price: int | None = None
        if not crosses or (tif is _FOK and not self._fok_can_fill(taker, market)):
            last_price = 0
            stopped = True
        else:
            last_price, stopped = self._match(
                taker, market, ts, trades, updates, completions, touched, walked
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
                rested_price = price
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
            after_match(market, is_buy, walked, rested_price) if walked or rested_price else (),
        )

    def _fok_can_fill(self, taker: Order, market: MarketState) -> bool:
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
        market: MarketState,
        ts: int,
        trades: list[TradeExecuted],
        updates: list[OrderUpdated],
        completions: list[OrderCompleted],
        touched: _Touched,
        walked: list[tuple[int, int]],
    ) -> tuple[int, bool]:
        """Walk the opposite side in price-time priority; returns (last trade price, whether
        matching was stopped by self-trade prevention or a market buyer's funds). Every level
        reached is appended to ``walked`` as (price, total before), for the depth update."""
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
            walked.append((price, level.total))
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
        market: MarketState,
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

    def _rest(self, order: Order, market: MarketState) -> Level:
        """Lock what the remainder could spend and put it in the book and the indexes;
        returns the level it rests in."""
        balance = order.lock_balance
        amount = order.remaining * order.lock_per_lot
        if balance.available < amount:
            raise InvariantError(
                f"order {order.order_id} passed the funds check but cannot lock {amount}"
            )
        balance.available -= amount
        balance.locked += amount
        level = market.book.add(order)
        self._orders[order.order_id] = order
        if order.client_order_id is not None:
            self._client_ids[(order.user_id, order.client_order_id)] = order
        return level

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
        if not self._users.is_known(user_id):
            reason, message = _R.UNKNOWN_USER, f"unknown user {shown(user_id)}"
        elif market is None:
            reason, message = _R.UNKNOWN_SYMBOL, f"unknown symbol {shown(cmd.symbol)}"
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
            one_level(market, order.is_buy, cast(int, order.price)),
        )

    # ------------------------------------------------------------------ amend

    def _amend(self, cmd: AmendOrder, sequence: int) -> EngineOutput:
        """Reduce a resting order's quantity in place: it keeps its place in its level's
        queue (the level is an insertion-ordered dict and the order stays where it is)."""
        user_id = cmd.user_id
        order_id = cmd.order_id
        client_order_id = cmd.client_order_id
        quantity = cmd.quantity
        market = self._markets.get(cmd.symbol)
        reason: RejectReason | None = None
        message = ""
        order: Order | None = None
        if not self._users.is_known(user_id):
            reason, message = _R.UNKNOWN_USER, f"unknown user {shown(user_id)}"
        elif market is None:
            reason, message = _R.UNKNOWN_SYMBOL, f"unknown symbol {shown(cmd.symbol)}"
        elif (order_id is None) == (client_order_id is None):
            reason = _R.INVALID_ORDER
            message = "an amend names exactly one of order_id and client_order_id"
        else:
            if order_id is not None:
                order = self._orders.get(order_id)
            else:
                order = self._client_ids.get((user_id, cast(str, client_order_id)))
            if order is None or order.user_id != user_id or order.symbol != market.name:
                # Unknown, completed, another user's or another market's: all the same answer.
                order = None
                named = shown(order_id if order_id is not None else client_order_id)
                reason, message = _R.ORDER_NOT_FOUND, f"no open order {named}"
            elif type(quantity) is not int:
                reason = _R.INVALID_QUANTITY
                message = f"quantity must be an integer number of lots, not {shown(quantity)}"
            elif not order.filled < quantity < order.quantity:
                reason = _R.INVALID_AMEND
                message = (
                    f"amend quantity {quantity} must be below the order's quantity "
                    f"{order.quantity} and above its filled quantity {order.filled}"
                )
        if reason is not None or order is None or market is None:
            return self._reject(
                cmd.command_id,
                cmd.timestamp_ms,
                sequence,
                _AMEND,
                user_id,
                reason or _R.ORDER_NOT_FOUND,
                order_id,
                client_order_id,
                message,
            )

        ts = cmd.timestamp_ms
        released_lots = order.quantity - quantity
        level = (market.book.bids if order.is_buy else market.book.asks)[order.price]
        level.total -= released_lots
        order.quantity = quantity
        order.remaining -= released_lots
        order.updated_at = ts
        balance = order.lock_balance
        released = released_lots * order.lock_per_lot
        balance.locked -= released
        balance.available += released
        return _new_output(
            sequence,
            cmd.command_id,
            _AMEND,
            ts,
            (),
            (),
            (_report(order, market.qptl, 0, 0),),
            (),
            (_new_balance(user_id, balance.asset, balance.available, balance.locked),),
            (),
            one_level(market, order.is_buy, cast(int, order.price)),
        )

    # ------------------------------------------------------------------ funds

    def _deposit(self, cmd: Deposit, sequence: int) -> EngineOutput:
        asset = cmd.asset
        amount = cmd.amount
        refusal = self._check_user(cmd.user_id) or check_amount(asset, amount, self._assets)
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
        refusal = self._check_user(cmd.user_id) or check_amount(asset, amount, self._assets)
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
            (),
        )

    # ------------------------------------------------------------------ users and keys

    def _check_user(self, user_id: int) -> tuple[RejectReason, str] | None:
        """UNKNOWN_USER unless ``user_id`` is a created user or the fee account."""
        if self._users.is_known(user_id):
            return None
        return _R.UNKNOWN_USER, f"unknown user {shown(user_id)}"

    def _create_user(self, cmd: CreateUser, sequence: int) -> EngineOutput:
        api_key = cmd.api_key
        ts = cmd.timestamp_ms
        if type(cmd.role) is not Role or type(api_key) is not str:
            # The codec only ever builds these from the Avro enum and string: anything else is
            # a caller's bug, and it must not reach the registry (a snapshot stores roles by
            # value). Raised before anything changes.
            raise InvariantError(f"CreateUser needs a Role and a str key id, got {cmd!r}")
        if self._users.key(api_key) is not None:
            return self._reject(
                cmd.command_id,
                ts,
                sequence,
                _CREATE_USER,
                _NO_USER,
                _R.DUPLICATE_API_KEY,
                None,
                None,
                f"api key {shown(api_key)} is already registered",
            )
        role = cmd.role
        user_id = self._users.create(role, api_key, cmd.public_key)
        return _new_output(
            sequence,
            cmd.command_id,
            _CREATE_USER,
            ts,
            (),
            (),
            (),
            (),
            (),
            (),
            (),
            (_new_user_created(user_id, role, cmd.label, ts),),
            (_new_key_updated(api_key, user_id, role, cmd.public_key, False, ts),),
        )

    def _add_api_key(self, cmd: AddApiKey, sequence: int) -> EngineOutput:
        user_id = cmd.user_id
        api_key = cmd.api_key
        ts = cmd.timestamp_ms
        role = self._users.role(user_id) if type(user_id) is int else None
        refusal: tuple[RejectReason, str] | None = None
        if role is None:  # the fee account holds no keys: it is configuration, not a user
            refusal = _R.UNKNOWN_USER, f"unknown user {shown(user_id)}"
        elif self._users.key(api_key) is not None:
            refusal = _R.DUPLICATE_API_KEY, f"api key {shown(api_key)} is already registered"
        if refusal is not None or role is None:
            reason, message = refusal or (_R.UNKNOWN_USER, "")
            return self._reject(
                cmd.command_id, ts, sequence, _ADD_API_KEY, user_id, reason, None, None, message
            )
        self._users.add_key(user_id, api_key, cmd.public_key)
        return self._keys_output(
            cmd.command_id,
            sequence,
            _ADD_API_KEY,
            ts,
            _new_key_updated(api_key, user_id, role, cmd.public_key, False, ts),
        )

    def _revoke_api_key(self, cmd: RevokeApiKey, sequence: int) -> EngineOutput:
        api_key = cmd.api_key
        ts = cmd.timestamp_ms
        key = self._users.key(api_key)
        if key is None:
            return self._reject(
                cmd.command_id,
                ts,
                sequence,
                _REVOKE_API_KEY,
                _NO_USER,
                _R.UNKNOWN_API_KEY,
                None,
                None,
                f"unknown api key {shown(api_key)}",
            )
        if key.revoked:  # accepted, and nothing changes
            return _new_output(sequence, cmd.command_id, _REVOKE_API_KEY, ts)
        revoked: ApiKey = self._users.revoke(api_key)
        role = self._users.role(revoked.user_id)
        if role is None:
            raise InvariantError(f"api key {api_key!r} belongs to unknown user {revoked.user_id}")
        return self._keys_output(
            cmd.command_id,
            sequence,
            _REVOKE_API_KEY,
            ts,
            _new_key_updated(api_key, revoked.user_id, role, revoked.public_key, True, ts),
        )

    @staticmethod
    def _keys_output(
        command_id: int, sequence: int, kind: CommandKind, ts: int, update: ApiKeyUpdated
    ) -> EngineOutput:
        return _new_output(
            sequence, command_id, kind, ts, (), (), (), (), (), (), (), (), (update,)
        )

    # ------------------------------------------------------------------ cancel all

    def _cancel_all(self, cmd: CancelAllOrders, sequence: int) -> EngineOutput:
        user_id = cmd.user_id
        ts = cmd.timestamp_ms
        market = self._markets.get(cmd.symbol)
        refusal = self._check_user(user_id)
        if refusal is None and market is None:
            refusal = _R.UNKNOWN_SYMBOL, f"unknown symbol {shown(cmd.symbol)}"
        if refusal is not None or market is None:
            reason, message = refusal or (_R.UNKNOWN_SYMBOL, "")
            return self._reject(
                cmd.command_id, ts, sequence, _CANCEL_ALL, user_id, reason, None, None, message
            )
        # A scan of the open orders: cancel-all is rare, and a per-user index would cost every
        # place and fill on the hot path. Order id order, whatever order the dict holds.
        symbol = market.name
        mine = sorted(
            [o for o in self._orders.values() if o.user_id == user_id and o.symbol == symbol],
            key=_order_id,
        )
        if not mine:
            return _new_output(sequence, cmd.command_id, _CANCEL_ALL, ts)
        updates: list[OrderUpdated] = []
        completions: list[OrderCompleted] = []
        touched: _Touched = {}
        bid_prices: list[int] = []
        ask_prices: list[int] = []
        for order in mine:
            order.transition(_CANCEL_T)  # an open order can always be cancelled
            (bid_prices if order.is_buy else ask_prices).append(cast(int, order.price))
            market.book.remove(order)
            del self._orders[order.order_id]
            if order.client_order_id is not None:
                del self._client_ids[(user_id, order.client_order_id)]
            balance = order.lock_balance
            if balance not in touched:
                touched[balance] = (balance.available, balance.locked)
            released = order.remaining * order.lock_per_lot
            balance.locked -= released
            balance.available += released
            order.remaining = 0
            order.updated_at = ts
            self._remember(order)
            updates.append(_report(order, market.qptl, 0, 0))
            completions.append(_new_completed(order.order_id, user_id, symbol, _C_CANCELLED, ts))
        return _new_output(
            sequence,
            cmd.command_id,
            _CANCEL_ALL,
            ts,
            (),
            (),
            tuple(updates),
            tuple(completions),
            _balance_updates(touched),
            (),
            changed_levels(market, bid_prices, ask_prices),
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
            (),
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

    @property
    def next_user_id(self) -> int:
        """The user id the next CreateUser will get."""
        return self._users.next_user_id

    def user_role(self, user_id: int) -> Role | None:
        """A created user's role; None for an unknown user (and for the fee account)."""
        return self._users.role(user_id)

    def is_known_user(self, user_id: int) -> bool:
        """Whether user-scoped commands for ``user_id`` are accepted (created, or the fee
        account)."""
        return self._users.is_known(user_id)

    def api_key(self, api_key: str) -> ApiKey | None:
        """A key's (user_id, public_key, revoked); None for a key never added."""
        return self._users.key(api_key)

    def users(self) -> list[tuple[int, Role]]:
        """Every created user as (user_id, role), by id."""
        return self._users.users()

    def api_keys(self) -> list[tuple[str, ApiKey]]:
        """Every key ever added, revoked ones included, by key id."""
        return self._users.api_keys()

    def update_id(self, symbol: str) -> int:
        """The book's update id: how many commands have changed ``symbol``'s book."""
        return self._market(symbol).update_id

    def depth_levels(self, symbol: str) -> list[LevelUpdated]:
        """Every level of the book now (bids then asks, best first), as depth update levels."""
        return book_levels(self._market(symbol))

    def is_completed(self, order_id: int) -> bool:
        """Whether ``order_id`` is in the bounded memory of completed accepted orders."""
        return order_id in self._completed

    def _market(self, symbol: str) -> MarketState:
        market = self._markets.get(symbol)
        if market is None:
            raise KeyError(symbol)
        return market

    # ------------------------------------------------------------------ snapshot

    def state_hash(self) -> str:
        """SHA-256 hex digest of the business state.

        Covered: books (every open order, in priority order, with all its fields), balances
        (non-zero ones), per-asset supply, the next trade id, the completed-order memory and
        the user registry (next user id, users and their roles, every key) and each book's
        update id.
        Not covered: the output sequence, which every command advances, rejected ones
        included; leaving it out is what lets a test assert "a rejection changes nothing".
        """
        return _snapshot.digest(self._export_business())

    def snapshot(self) -> bytes:
        """The whole engine state as deterministic bytes (see :mod:`engine.snapshot`)."""
        return _snapshot.frame(self.snapshot_body())

    def snapshot_body(self) -> bytes:
        """The snapshot without its header: ``engine.snapshot.frame(body)`` is
        :meth:`snapshot`. Plain Python and ``marshal`` only (no hashing), so a forked child
        can run it (see :mod:`engine.service.forked_snapshot`)."""
        return _snapshot.encode_body((self._sequence, self._scales(), self._export_business()))

    @classmethod
    def restore(cls, data: bytes, markets: Markets) -> Engine:
        """An engine equal to the one that took ``snapshot()``: same hash, same behaviour.

        ``markets`` may change fees and limits, not the scales (assets, decimals, ticks, lots).
        """
        state = _snapshot.load(data)
        try:
            sequence, scales, business = state
        except ValueError as e:
            raise _snapshot.SnapshotFormatError("snapshot body has the wrong shape") from e
        engine = cls(markets)
        if scales != engine._scales():
            raise ConfigError("the markets config does not match the snapshot's assets and scales")
        engine._import_business(business)
        engine._sequence = sequence
        return engine

    def _scales(self) -> tuple[Any, ...]:
        return state_io.scales(self._fee_account, self._assets, self._markets)

    def _export_business(self) -> tuple[Any, ...]:
        # The user registry travels as one extra element after state_io's business tuple:
        # it exports itself (engine.users), and the books and ledger format stays as it was.
        return (
            *state_io.export_business(
                self._markets, self._ledger, self._completed, self._next_trade_id,
                self._completed_capacity,
            ),
            self._users.export(),
        )  # fmt: skip

    def _import_business(self, business: tuple[Any, ...]) -> None:
        if not isinstance(business, tuple) or not business:
            raise _snapshot.SnapshotFormatError("snapshot business state has the wrong shape")
        *books_and_ledger, users = business
        self._next_trade_id, self._completed_capacity, self._completed = state_io.import_business(
            tuple(books_and_ledger), self._markets, self._ledger, self._orders, self._client_ids
        )
        self._users.load(users)
