"""Hand-built engine outputs for the store tests (no dependency on the engine implementation).

``Sim`` is a deliberately naive exchange: it keeps each order's absolute state and emits the
same kinds of events the engine contract promises (OrderPlaced + OrderUpdated on placement,
TradeExecuted + OrderUpdated for both sides on a fill, OrderCompleted on a terminal status,
BalanceUpdated with absolute post-state, CommandRejected + a REJECTED OrderUpdated for a
refused order, UserCreated + ApiKeyUpdated for a new user, ApiKeyUpdated for a key added or
revoked). Ids and timestamps are fixed, so failures reproduce.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    TimeInForce,
)
from engine.events import (
    ApiKeyUpdated,
    BalanceUpdated,
    CommandRejected,
    EngineOutput,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
    UserCreated,
)

T0 = 1_700_000_000_000  # epoch ms of sequence 0; each sequence adds one second
BASE = {"BTC-USDT": ("BTC", "USDT"), "ETH-USDT": ("ETH", "USDT")}
TERMINAL = {
    OrderStatus.FILLED,
    OrderStatus.CANCELLED,
    OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
}


@dataclass
class _Order:
    update: OrderUpdated  # the latest state


class Sim:
    """Builds a consistent stream of EngineOutputs, one per command, sequence 1, 2, 3, ..."""

    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []
        self.orders: dict[int, _Order] = {}
        self.balances: dict[tuple[int, str], tuple[int, int]] = {}
        self.trade_id = 0
        self.users: dict[int, Role] = {}
        self.keys: dict[str, ApiKeyUpdated] = {}  # the latest state of every key

    # ---- plumbing ----

    @property
    def seq(self) -> int:
        return len(self.outputs) + 1

    def now(self) -> int:
        return T0 + self.seq * 1000

    def _emit(self, kind: CommandKind, **lists: object) -> EngineOutput:
        seq = self.seq
        out = EngineOutput(
            sequence=seq,
            command_id=100 + seq,  # the command's offset in the orders log
            command_kind=kind,
            timestamp_ms=self.now(),
            **lists,  # type: ignore[arg-type]
        )
        self.outputs.append(out)
        return out

    def _balance(self, user: int, asset: str, d_avail: int, d_locked: int) -> BalanceUpdated:
        avail, locked = self.balances.get((user, asset), (0, 0))
        avail, locked = avail + d_avail, locked + d_locked
        self.balances[(user, asset)] = (avail, locked)
        return BalanceUpdated(user_id=user, asset=asset, available=avail, locked=locked)

    def order_id(self) -> int:
        return 100 + self.seq  # a new order's id is its command id

    # ---- users and keys ----

    def create_user(
        self, api_key: str, *, role: Role = Role.TRADER, label: str | None = None
    ) -> int:
        """A new user (ids 1, 2, 3, ... as the engine assigns them) with its first key."""
        user = len(self.users) + 1
        self.users[user] = role
        now = self.now()
        key = ApiKeyUpdated(
            api_key=api_key, user_id=user, role=role, public_key=f"pub-{api_key}",
            revoked=False, updated_at=now,
        )  # fmt: skip
        self.keys[api_key] = key
        self._emit(
            CommandKind.CREATE_USER,
            user_creations=(UserCreated(user_id=user, role=role, label=label, created_at=now),),
            api_key_updates=(key,),
        )
        return user

    def add_key(self, user: int, api_key: str) -> None:
        key = ApiKeyUpdated(
            api_key=api_key, user_id=user, role=self.users[user], public_key=f"pub-{api_key}",
            revoked=False, updated_at=self.now(),
        )  # fmt: skip
        self.keys[api_key] = key
        self._emit(CommandKind.ADD_API_KEY, api_key_updates=(key,))

    def revoke_key(self, api_key: str) -> None:
        key = replace(self.keys[api_key], revoked=True, updated_at=self.now())
        self.keys[api_key] = key
        self._emit(CommandKind.REVOKE_API_KEY, api_key_updates=(key,))

    # ---- commands ----

    def deposit(self, user: int, asset: str, amount: int) -> EngineOutput:
        return self._emit(
            CommandKind.DEPOSIT, balance_updates=(self._balance(user, asset, amount, 0),)
        )

    def place(
        self,
        user: int,
        symbol: str,
        side: Side,
        price: int,
        qty: int,
        client_order_id: str | None = None,
    ) -> int:
        """A resting LIMIT GTC order; returns its order id."""
        oid = self.order_id()
        now = self.now()
        base, quote = BASE[symbol]
        upd = OrderUpdated(
            order_id=oid, client_order_id=client_order_id, user_id=user, symbol=symbol,
            side=side, order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC, price=price,
            quantity=qty, status=OrderStatus.NEW, filled_quantity=0, remaining_quantity=qty,
            cumulative_quote=0, avg_fill_price=0, last_fill_price=0, last_fill_quantity=0,
            reject_reason=None, created_at=now, updated_at=now,
        )  # fmt: skip
        placed = OrderPlaced(
            order_id=oid, client_order_id=client_order_id, user_id=user, symbol=symbol,
            side=side, order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC,
            post_only=False, price=price, quantity=qty, created_at=now,
        )  # fmt: skip
        lock = (
            self._balance(user, quote, -price * qty, price * qty)
            if side is Side.BUY
            else self._balance(user, base, -qty, qty)
        )
        self.orders[oid] = _Order(upd)
        self._emit(
            CommandKind.PLACE_ORDER,
            order_placements=(placed,),
            order_updates=(upd,),
            balance_updates=(lock,),
        )
        return oid

    def take(self, user: int, maker_id: int, qty: int) -> int:
        """A taker IOC order that fills ``qty`` of the resting ``maker_id``; returns its id."""
        maker = self.orders[maker_id].update
        assert maker.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
        assert 0 < qty <= maker.remaining_quantity
        assert maker.price is not None
        oid = self.order_id()
        now = self.now()
        price = maker.price
        quote_qty = price * qty
        base, quote = BASE[maker.symbol]
        taker_side = Side.SELL if maker.side is Side.BUY else Side.BUY
        self.trade_id += 1
        trade = TradeExecuted(
            trade_id=self.trade_id, symbol=maker.symbol, price=price, quantity=qty,
            quote_quantity=quote_qty, maker_order_id=maker_id, taker_order_id=oid,
            maker_user_id=maker.user_id, taker_user_id=user, taker_side=taker_side,
            maker_fee=1, maker_fee_asset=base if maker.side is Side.BUY else quote,
            taker_fee=2, taker_fee_asset=quote if maker.side is Side.BUY else base,
            executed_at=now,
        )  # fmt: skip
        filled = maker.filled_quantity + qty
        remaining = maker.quantity - filled
        cum = maker.cumulative_quote + quote_qty
        maker_upd = replace(
            maker,
            status=OrderStatus.FILLED if remaining == 0 else OrderStatus.PARTIALLY_FILLED,
            filled_quantity=filled, remaining_quantity=remaining, cumulative_quote=cum,
            avg_fill_price=cum // filled, last_fill_price=price, last_fill_quantity=qty,
            updated_at=now,
        )  # fmt: skip
        self.orders[maker_id] = _Order(maker_upd)
        taker_upd = OrderUpdated(
            order_id=oid, client_order_id=None, user_id=user, symbol=maker.symbol,
            side=taker_side, order_type=OrderType.LIMIT, time_in_force=TimeInForce.IOC,
            price=price, quantity=qty, status=OrderStatus.FILLED, filled_quantity=qty,
            remaining_quantity=0, cumulative_quote=quote_qty, avg_fill_price=price,
            last_fill_price=price, last_fill_quantity=qty, reject_reason=None,
            created_at=now, updated_at=now,
        )  # fmt: skip
        self.orders[oid] = _Order(taker_upd)
        placed = OrderPlaced(
            order_id=oid, client_order_id=None, user_id=user, symbol=maker.symbol,
            side=taker_side, order_type=OrderType.LIMIT, time_in_force=TimeInForce.IOC,
            post_only=False, price=price, quantity=qty, created_at=now,
        )  # fmt: skip
        completions = [
            OrderCompleted(
                order_id=oid, user_id=user, symbol=maker.symbol,
                reason=CompletionReason.FILLED, completed_at=now,
            )
        ]  # fmt: skip
        if remaining == 0:
            completions.insert(
                0,
                OrderCompleted(
                    order_id=maker_id, user_id=maker.user_id, symbol=maker.symbol,
                    reason=CompletionReason.FILLED, completed_at=now,
                ),
            )  # fmt: skip
        if maker.side is Side.BUY:
            balances = (
                self._balance(maker.user_id, quote, 0, -quote_qty),
                self._balance(maker.user_id, base, qty - 1, 0),
                self._balance(user, base, -qty, 0),
                self._balance(user, quote, quote_qty - 2, 0),
            )
        else:
            balances = (
                self._balance(maker.user_id, base, 0, -qty),
                self._balance(maker.user_id, quote, quote_qty - 1, 0),
                self._balance(user, quote, -quote_qty, 0),
                self._balance(user, base, qty - 2, 0),
            )
        self._emit(
            CommandKind.PLACE_ORDER,
            trades=(trade,),
            order_placements=(placed,),
            order_updates=(taker_upd, maker_upd),
            order_completions=tuple(completions),
            balance_updates=balances,
        )
        return oid

    def cancel(self, order_id: int) -> None:
        o = self.orders[order_id].update
        assert o.price is not None
        now = self.now()
        base, quote = BASE[o.symbol]
        upd = replace(
            o, status=OrderStatus.CANCELLED, remaining_quantity=0, last_fill_price=0,
            last_fill_quantity=0, updated_at=now,
        )  # fmt: skip
        self.orders[order_id] = _Order(upd)
        rest = o.remaining_quantity
        unlock = (
            self._balance(o.user_id, quote, o.price * rest, -o.price * rest)
            if o.side is Side.BUY
            else self._balance(o.user_id, base, rest, -rest)
        )
        self._emit(
            CommandKind.CANCEL_ORDER,
            order_updates=(upd,),
            order_completions=(
                OrderCompleted(
                    order_id=order_id, user_id=o.user_id, symbol=o.symbol,
                    reason=CompletionReason.CANCELLED, completed_at=now,
                ),
            ),
            balance_updates=(unlock,),
        )  # fmt: skip

    def reject(self, user: int, symbol: str, side: Side, price: int, qty: int) -> int:
        """A refused PlaceOrder (insufficient funds): REJECTED update, no OrderPlaced."""
        oid = self.order_id()
        now = self.now()
        upd = OrderUpdated(
            order_id=oid, client_order_id="rej", user_id=user, symbol=symbol, side=side,
            order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC, price=price,
            quantity=qty, status=OrderStatus.REJECTED, filled_quantity=0, remaining_quantity=0,
            cumulative_quote=0, avg_fill_price=0, last_fill_price=0, last_fill_quantity=0,
            reject_reason=RejectReason.INSUFFICIENT_FUNDS, created_at=now, updated_at=now,
        )  # fmt: skip
        self.orders[oid] = _Order(upd)
        self._emit(
            CommandKind.PLACE_ORDER,
            order_updates=(upd,),
            order_completions=(
                OrderCompleted(
                    order_id=oid, user_id=user, symbol=symbol,
                    reason=CompletionReason.REJECTED, completed_at=now,
                ),
            ),
            rejections=(
                CommandRejected(
                    command_id=oid, kind=CommandKind.PLACE_ORDER, user_id=user,
                    reason=RejectReason.INSUFFICIENT_FUNDS, order_id=oid,
                    client_order_id="rej", message="insufficient funds",
                ),
            ),
        )  # fmt: skip
        return oid

    def reject_cancel(self, user: int, order_id: int) -> None:
        """A refused CancelOrder: only a CommandRejected, nothing in the read model changes."""
        self._emit(
            CommandKind.CANCEL_ORDER,
            rejections=(
                CommandRejected(
                    command_id=100 + self.seq, kind=CommandKind.CANCEL_ORDER, user_id=user,
                    reason=RejectReason.ORDER_NOT_FOUND, order_id=order_id,
                    client_order_id=None, message="no such order",
                ),
            ),
        )  # fmt: skip

    # ---- views ----

    def open_orders(self) -> list[int]:
        return sorted(oid for oid, o in self.orders.items() if o.update.status not in TERMINAL)


def random_stream(seed: int, steps: int = 200, users: int = 4) -> list[EngineOutput]:
    """A reproducible mixed stream: user creations, deposits, rests, partial and full fills,
    cancels, rejects, and key additions and revocations."""
    rng = random.Random(seed)
    sim = Sim()
    for u in range(1, users + 1):
        sim.create_user(f"k{u}", role=Role.OPERATOR if u == users else Role.TRADER)
    for u in range(1, users + 1):
        sim.deposit(u, "USDT", 10**12)
        sim.deposit(u, "BTC", 10**9)
        sim.deposit(u, "ETH", 10**9)
    for _ in range(steps):
        r = rng.random()
        open_ids = sim.open_orders()
        if r < 0.4 or not open_ids:
            sim.place(
                rng.randint(1, users),
                rng.choice(("BTC-USDT", "ETH-USDT")),
                rng.choice((Side.BUY, Side.SELL)),
                rng.randint(90, 110),
                rng.randint(1, 20),
            )
        elif r < 0.75:
            maker_id = rng.choice(open_ids)
            maker = sim.orders[maker_id].update
            taker = rng.choice([u for u in range(1, users + 1) if u != maker.user_id])
            sim.take(taker, maker_id, rng.randint(1, maker.remaining_quantity))
        elif r < 0.9:
            sim.cancel(rng.choice(open_ids))
        elif r < 0.95:
            sim.reject(rng.randint(1, users), "BTC-USDT", Side.BUY, 100, 10**9)
        elif r < 0.97:
            sim.reject_cancel(rng.randint(1, users), 999_999)
        elif r < 0.985:
            sim.add_key(rng.randint(1, users), f"k{len(sim.keys) + 1}-{sim.seq}")
        else:
            active = sorted(k for k, v in sim.keys.items() if not v.revoked)
            if active:
                sim.revoke_key(rng.choice(active))
            else:
                sim.reject_cancel(1, 999_999)
    return sim.outputs


def batches(outputs: list[EngineOutput], size: int) -> list[list[EngineOutput]]:
    return [outputs[i : i + size] for i in range(0, len(outputs), size)]


def order_update(
    order_id: int,
    user: int,
    status: OrderStatus = OrderStatus.NEW,
    *,
    symbol: str = "BTC-USDT",
    side: Side = Side.BUY,
    price: int | None = 100,
    qty: int = 10,
    filled: int = 0,
    created_at: int = T0,
    updated_at: int | None = None,
    client_order_id: str | None = None,
    reject_reason: RejectReason | None = None,
) -> OrderUpdated:
    """A hand-made OrderUpdated with consistent quantities."""
    done = status in TERMINAL
    return OrderUpdated(
        order_id=order_id, client_order_id=client_order_id, user_id=user, symbol=symbol,
        side=side, order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        time_in_force=TimeInForce.GTC, price=price, quantity=qty, status=status,
        filled_quantity=filled, remaining_quantity=0 if done else qty - filled,
        cumulative_quote=filled * (price or 0), avg_fill_price=(price or 0) if filled else 0,
        last_fill_price=0, last_fill_quantity=0, reject_reason=reject_reason,
        created_at=created_at, updated_at=created_at if updated_at is None else updated_at,
    )  # fmt: skip


def output(
    seq: int,
    *,
    updates: tuple[OrderUpdated, ...] = (),
    trades: tuple[TradeExecuted, ...] = (),
    balances: tuple[BalanceUpdated, ...] = (),
) -> EngineOutput:
    return EngineOutput(
        sequence=seq,
        command_id=1000 + seq,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=T0 + seq,
        trades=trades,
        order_updates=updates,
        balance_updates=balances,
    )


def trade(
    trade_id: int,
    *,
    maker_user: int = 1,
    taker_user: int = 2,
    maker_order: int = 10,
    taker_order: int = 11,
    taker_side: Side = Side.SELL,
    symbol: str = "BTC-USDT",
    price: int = 100,
    qty: int = 3,
) -> TradeExecuted:
    return TradeExecuted(
        trade_id=trade_id, symbol=symbol, price=price, quantity=qty,
        quote_quantity=price * qty, maker_order_id=maker_order, taker_order_id=taker_order,
        maker_user_id=maker_user, taker_user_id=taker_user, taker_side=taker_side,
        maker_fee=1, maker_fee_asset="BTC", taker_fee=2, taker_fee_asset="USDT",
        executed_at=T0 + trade_id,
    )  # fmt: skip


# ---- the stores under contract ----------------------------------------------------------


@contextlib.contextmanager
def sqlite_stores(directory: Path) -> Iterator[Callable[[], Any]]:
    """A maker of fresh SQLite stores (schema created) in ``directory``; all closed at the end."""
    from settlement.sqlite_store import SqliteStore

    made: list[SqliteStore] = []

    def make() -> SqliteStore:
        s = SqliteStore(directory / f"store-{len(made)}-{time.time_ns()}.db")
        s.init_schema()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@contextlib.contextmanager
def cassandra_keyspace(prefix: str) -> Iterator[Any]:
    """A CassandraStore on a keyspace of its own at ``CASSANDRA_CONTACT_POINTS`` (schema
    created), dropped at the end. The contract classes that use it are marked e2e: only
    `make e2e` selects them, and it sets the variable."""
    import pytest

    hosts = os.environ.get("CASSANDRA_CONTACT_POINTS", "").strip()
    if not hosts:
        pytest.fail(
            "CASSANDRA_CONTACT_POINTS is not set: run the Cassandra contract with `make e2e`"
        )
    from settlement.cassandra_store import CassandraStore

    store = CassandraStore(
        [h.strip() for h in hosts.split(",") if h.strip()],
        port=int(os.environ.get("CASSANDRA_PORT", "9042")),
        keyspace=f"{prefix}_{os.getpid()}_{time.time_ns() % 10**9}",
    )
    store.init_schema()
    yield store
    store.drop_keyspace()
    store.close()
