"""Engine-made outputs for the market-data store tests (book levels, public trades, klines).

Unlike ``store_testkit.Sim`` these come from the real engine: depth updates are the engine's
own post-state of each level, and the book they must add up to is the engine's. The flow is
seeded, and command timestamps advance by a fixed step (with an occasional jump of hours), so
trades spread over many minutes, hours and a few days.
"""

from __future__ import annotations

import random
from collections import defaultdict

from engine import (
    AmendOrder,
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    Engine,
    EngineOutput,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
    load_markets,
)
from settlement.market_data import INTERVAL_MS

T0 = 1_700_000_000_000
SYMBOLS = ("BTC_USDT", "ETH_USDT")


def engine_flow(
    seed: int, steps: int, *, users: int = 4, step_ms: int = 7_000
) -> tuple[Engine, list[EngineOutput]]:
    """A random place/cancel/amend flow through a real engine; the engine and its outputs."""
    rng = random.Random(seed)
    engine = Engine(load_markets())
    outputs: list[EngineOutput] = []
    now = T0
    next_id = 1

    def run(make: type, **fields: object) -> None:
        nonlocal next_id
        command: Command = make(command_id=next_id, timestamp_ms=now, **fields)
        next_id += 1
        outputs.append(engine.apply(command))

    for user in range(1, users + 1):  # the engine assigns ids 1, 2, 3, ... in this order
        run(CreateUser, api_key=f"k{user}", public_key=f"pk{user}")
    for user in range(1, users + 1):
        for asset in ("BTC", "ETH", "USDT"):
            run(Deposit, user_id=user, asset=asset, amount=10**15)
    assert not any(o.rejections for o in outputs), "the flow's users and funds were refused"
    placed: list[tuple[int, int, str]] = []
    for _ in range(steps):
        now += step_ms if rng.random() < 0.97 else rng.randint(1, 30) * 3_600_000
        r = rng.random()
        user = rng.randint(1, users)
        symbol = rng.choice(SYMBOLS)
        if r < 0.6 or not placed:
            placed.append((next_id, user, symbol))
            market = rng.random() < 0.1
            run(
                PlaceOrder,
                order_id=next_id,
                user_id=user,
                symbol=symbol,
                side=rng.choice((Side.BUY, Side.SELL)),
                order_type=OrderType.MARKET if market else OrderType.LIMIT,
                time_in_force=rng.choice((TimeInForce.GTC,) * 4 + (TimeInForce.IOC,)),
                price=None if market else rng.randint(98_00, 102_00),
                quantity=rng.randint(1, 30),
            )
        else:
            order_id, owner, on = placed[-1 - rng.randrange(min(6, len(placed)))]
            if r < 0.8:
                run(CancelOrder, user_id=owner, symbol=on, order_id=order_id)
            else:
                run(
                    AmendOrder,
                    user_id=owner,
                    symbol=on,
                    order_id=order_id,
                    quantity=rng.randint(1, 30),
                )
    return engine, outputs


def engine_levels(engine: Engine, symbol: str) -> list[tuple[Side, int, int, int]]:
    """The engine's book aggregated per level from its open orders, bids then asks, best
    first: (side, price, total remaining lots, order count)."""
    totals: dict[tuple[Side, int], list[int]] = defaultdict(lambda: [0, 0])
    for o in engine.open_orders():
        if o.symbol == symbol:
            level = totals[(o.side, o.price or 0)]
            level[0] += o.remaining_quantity
            level[1] += 1
    bids = sorted((k for k in totals if k[0] is Side.BUY), key=lambda k: -k[1])
    asks = sorted((k for k in totals if k[0] is Side.SELL), key=lambda k: k[1])
    return [(side, price, *totals[(side, price)]) for side, price in bids + asks]


def naive_klines(
    outputs: list[EngineOutput], symbol: str, interval: str
) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """(open_time, open, high, low, close, volume, quote_volume, trade_count) per bucket,
    oldest first, straight from every trade of the outputs."""
    ms = INTERVAL_MS[interval]
    buckets: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for out in outputs:
        for t in out.trades:
            if t.symbol == symbol:
                buckets[t.executed_at - t.executed_at % ms].append(
                    (t.trade_id, t.price, t.quantity, t.quote_quantity)
                )
    rows = []
    for open_time in sorted(buckets):
        trades = sorted(buckets[open_time])
        prices = [t[1] for t in trades]
        rows.append(
            (
                open_time, prices[0], max(prices), min(prices), prices[-1],
                sum(t[2] for t in trades), sum(t[3] for t in trades), len(trades),
            )
        )  # fmt: skip
    return rows
