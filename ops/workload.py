"""A seeded, realistic command stream for tests, benchmarks and the load generator.

Commands come out with ``command_id`` = their position (plus ``first_offset``), which is
what they become when produced, in order, to an empty single-partition ``orders`` topic; a
cancel names an order id placed earlier in the same stream. The mix (by default) is about
60% resting limits near the touch, 25% cancels, 10% crossing limits and 5% market orders,
over many users and both default symbols, after one ``CreateUser`` per user and one deposit
per user and asset.

Users: the engine refuses commands for users it never created and numbers users 1, 2, 3, ...
in creation order, so the stream creates users 1..``users`` first; its user ids are the
engine's only when it starts on an engine without users (a fresh log). Their keys are
deterministic stand-ins (:func:`user_key`): 32 bytes from a hash, not an Ed25519 key anyone
holds the private half of, so they identify the users but sign nothing.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from engine.commands import CancelOrder, Command, CreateUser, Deposit, PlaceOrder
from engine.enums import OrderType, Side, TimeInForce


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolProfile:
    symbol: str
    base: str
    quote: str
    mid_ticks: int
    max_lots: int
    spread_ticks: int = 50


DEFAULT_PROFILES = (
    SymbolProfile(symbol="BTC_USDT", base="BTC", quote="USDT", mid_ticks=5_000_000, max_lots=200),
    SymbolProfile(symbol="ETH_USDT", base="ETH", quote="USDT", mid_ticks=300_000, max_lots=200),
)

# Generous funding so the stream mostly trades rather than being rejected.
DEFAULT_FUNDING = {"USDT": 10**14, "BTC": 10**10, "ETH": 10**11}


@dataclass(frozen=True, slots=True, kw_only=True)
class Mix:
    resting: float = 0.60
    cancel: float = 0.25
    crossing: float = 0.10
    market: float = 0.05


def user_key(user: int) -> tuple[str, str]:
    """(api_key, public_key) of the workload's user ``user``, shaped like the gateway's: the
    base64 of 32 raw bytes, and "k" + the first 24 hex digits of their SHA-256."""
    raw = hashlib.sha256(f"workload user {user}".encode()).digest()
    return "k" + hashlib.sha256(raw).hexdigest()[:24], base64.b64encode(raw).decode()


def user_commands(
    users: int,
    *,
    first_offset: int = 0,
    timestamp_ms: int = 1_700_000_000_000,
    first_user: int = 1,
) -> list[Command]:
    """``CreateUser`` for the workload's users ``first_user``.. (``users`` of them).

    On an engine whose next user id is ``first_user`` they get exactly those ids. Applied
    again (a second run on the same log), each is refused as DUPLICATE_API_KEY and the users
    from the first run stay the workload's.
    """
    out: list[Command] = []
    for u in range(first_user, first_user + users):
        api_key, public_key = user_key(u)
        out.append(
            CreateUser(
                command_id=first_offset + len(out),
                timestamp_ms=timestamp_ms,
                api_key=api_key,
                public_key=public_key,
                label=f"workload user {u}",
            )
        )
    return out


def funding_commands(
    users: int,
    *,
    first_offset: int = 0,
    timestamp_ms: int = 1_700_000_000_000,
    funding: dict[str, int] | None = None,
    first_user: int = 1,
    create_users: bool = True,
) -> list[Command]:
    """The users' creation (unless ``create_users`` is False), then one deposit per user and
    asset."""
    out: list[Command] = []
    if create_users:
        out += user_commands(
            users, first_offset=first_offset, timestamp_ms=timestamp_ms, first_user=first_user
        )
    amounts = funding or DEFAULT_FUNDING
    for u in range(first_user, first_user + users):
        for asset, amount in amounts.items():
            out.append(
                Deposit(
                    command_id=first_offset + len(out),
                    timestamp_ms=timestamp_ms,
                    user_id=u,
                    asset=asset,
                    amount=amount,
                )
            )
    return out


_T = TypeVar("_T")


def _take(items: list[_T], i: int) -> _T:
    """Remove and return ``items[i]`` in O(1) by moving the last item into its place.

    ``list.pop(i)`` shifts everything after ``i``: with 50k placed orders that cost the
    load generator ~20 us a command, a third of its CPU at 5k commands/s.
    """
    item = items[i]
    last = items.pop()
    if i < len(items):
        items[i] = last
    return item


def command_stream(
    seed: int,
    count: int,
    *,
    users: int = 100,
    first_offset: int = 0,
    start_ms: int = 1_700_000_000_000,
    mix: Mix = Mix(),
    profiles: tuple[SymbolProfile, ...] = DEFAULT_PROFILES,
    fund: bool = True,
) -> Iterator[Command]:
    """``count`` trading commands (after the users' creation and the funding deposits when
    ``fund``)."""
    rng = random.Random(seed)
    offset = first_offset
    if fund:
        for c in funding_commands(users, first_offset=offset, timestamp_ms=start_ms):
            yield c
            offset += 1
    placed: list[tuple[int, int, str]] = []  # (order_id, user, symbol)
    t_resting = mix.resting
    t_cancel = t_resting + mix.cancel
    t_crossing = t_cancel + mix.crossing
    for i in range(count):
        ts = start_ms + i
        user = rng.randint(1, users)
        prof = profiles[rng.randrange(len(profiles))]
        r = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = rng.randint(1, prof.max_lots)
        if r < t_cancel and r >= t_resting and placed:
            order_id, owner, symbol = _take(placed, rng.randrange(len(placed)))
            yield CancelOrder(
                command_id=offset, timestamp_ms=ts, user_id=owner, symbol=symbol, order_id=order_id
            )
        elif r < t_crossing:
            away = rng.randint(1, prof.spread_ticks)
            if r < t_resting or (r < t_cancel and not placed):
                price = prof.mid_ticks - away if side is Side.BUY else prof.mid_ticks + away
            else:
                price = prof.mid_ticks + away if side is Side.BUY else prof.mid_ticks - away
            yield PlaceOrder(
                command_id=offset,
                timestamp_ms=ts,
                order_id=offset,
                user_id=user,
                symbol=prof.symbol,
                side=side,
                order_type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC,
                price=price,
                quantity=qty,
            )
            placed.append((offset, user, prof.symbol))
            if len(placed) > 50_000:
                _take(placed, 0)  # forget one of the oldest: bounded memory
        else:
            yield PlaceOrder(
                command_id=offset,
                timestamp_ms=ts,
                order_id=offset,
                user_id=user,
                symbol=prof.symbol,
                side=side,
                order_type=OrderType.MARKET,
                time_in_force=TimeInForce.IOC,
                price=None,
                quantity=qty,
            )
        offset += 1
