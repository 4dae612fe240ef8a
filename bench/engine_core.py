"""Engine core benchmark: commands per second in-process, against a bare price-time loop.

Workload (seeded, pre-generated as command objects before any timing):

* 1000 users created (CreateUser) and funded by Deposit commands (applied first, timed
  separately);
* a mixed stream over BTC_USDT and ETH_USDT: ~60 % limit places near the touch (resting),
  ~25 % cancels of orders placed earlier (some already filled: those are rejections, as in
  real traffic), ~10 % crossing limits (half GTC, half IOC), ~5 % market orders.

The bare loop is the CPython floor for the same operations: a SortedDict of price -> deque per
side, a dict for cancels, no events, no balances, no validation.

Then a book of ``--resting`` orders is built and ``snapshot()`` / ``Engine.restore()`` are timed.

The last line printed is machine-readable:
``RESULT engine_core cmds_per_s=<n> bare_loop_per_s=<n> ratio=<r>``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import platform
import pstats
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

from sortedcontainers import SortedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import (  # after the sys.path tweak above, so the script runs from a checkout
    BalanceUpdated,
    CancelOrder,
    Command,
    CommandRejected,
    CreateUser,
    Deposit,
    Engine,
    EngineOutput,
    Markets,
    OrderCompleted,
    OrderPlaced,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
    load_markets,
)
from engine import engine as engine_module
from engine.depth import new_depth, new_level
from engine.engine import (  # the engine's private event builders, for the floor measurement
    _new_balance,
    _new_completed,
    _new_output,
    _new_placed,
    _new_rejected,
    _new_trade,
    _new_updated,
)

USERS = 1000
MIDS = {"BTC_USDT": 5_000_000, "ETH_USDT": 300_000}  # ticks: 50 000.00 and 3 000.00 USDT
FUNDING = {"USDT": 10**15, "BTC": 10**12, "ETH": 10**13}  # x1000 users stays in int64


class Stream:
    """Generates the mixed workload; keeps its own list of ids worth cancelling."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_id = 1
        self.cancellable: list[tuple[int, int, str]] = []  # (order_id, user_id, symbol)
        self.ts = 1_700_000_000_000

    def _ids(self) -> tuple[int, int]:
        command_id = self.next_id
        self.next_id += 1
        self.ts += 1
        return command_id, self.ts

    def deposits(self) -> list[Command]:
        """The users' creation (the engine numbers them 1..USERS), then their funding."""
        out: list[Command] = []
        for user in range(1, USERS + 1):
            command_id, ts = self._ids()
            out.append(
                CreateUser(
                    command_id=command_id,
                    timestamp_ms=ts,
                    api_key=f"k{user:024x}",
                    public_key=f"bench-user-{user}",
                )
            )
        for user in range(1, USERS + 1):
            for asset, amount in FUNDING.items():
                command_id, ts = self._ids()
                out.append(
                    Deposit(
                        command_id=command_id,
                        timestamp_ms=ts,
                        user_id=user,
                        asset=asset,
                        amount=amount,
                    )
                )
        return out

    def passive(self, symbol: str | None = None, spread: int = 20) -> PlaceOrder:
        rng = self.rng
        symbol = symbol or rng.choice(("BTC_USDT", "ETH_USDT"))
        mid = MIDS[symbol]
        buy = rng.random() < 0.5
        offset = rng.randint(1, spread)
        command_id, ts = self._ids()
        user = rng.randint(1, USERS)
        self.cancellable.append((command_id, user, symbol))
        return PlaceOrder(
            command_id=command_id,
            timestamp_ms=ts,
            order_id=command_id,
            user_id=user,
            symbol=symbol,
            side=Side.BUY if buy else Side.SELL,
            order_type=OrderType.LIMIT,
            price=mid - offset if buy else mid + offset,
            quantity=rng.randint(1, 100),
        )

    def mixed(self, n: int) -> list[Command]:
        rng = self.rng
        out: list[Command] = []
        for _ in range(n):
            r = rng.random()
            if r < 0.60 or (r < 0.85 and not self.cancellable):
                out.append(self.passive())
            elif r < 0.85:
                cancellable = self.cancellable
                i = rng.randrange(len(cancellable))
                cancellable[i], cancellable[-1] = cancellable[-1], cancellable[i]
                order_id, user, symbol = cancellable.pop()
                command_id, ts = self._ids()
                out.append(
                    CancelOrder(
                        command_id=command_id,
                        timestamp_ms=ts,
                        user_id=user,
                        symbol=symbol,
                        order_id=order_id,
                    )
                )
            else:
                symbol = rng.choice(("BTC_USDT", "ETH_USDT"))
                buy = rng.random() < 0.5
                command_id, ts = self._ids()
                user = rng.randint(1, USERS)
                side = Side.BUY if buy else Side.SELL
                if r < 0.95:
                    through = rng.randint(1, 10)
                    mid = MIDS[symbol]
                    gtc = rng.random() < 0.5
                    if gtc:
                        self.cancellable.append((command_id, user, symbol))
                    out.append(
                        PlaceOrder(
                            command_id=command_id,
                            timestamp_ms=ts,
                            order_id=command_id,
                            user_id=user,
                            symbol=symbol,
                            side=side,
                            order_type=OrderType.LIMIT,
                            time_in_force=TimeInForce.GTC if gtc else TimeInForce.IOC,
                            price=mid + through if buy else mid - through,
                            quantity=rng.randint(1, 150),
                        )
                    )
                else:
                    out.append(
                        PlaceOrder(
                            command_id=command_id,
                            timestamp_ms=ts,
                            order_id=command_id,
                            user_id=user,
                            symbol=symbol,
                            side=side,
                            order_type=OrderType.MARKET,
                            quantity=rng.randint(1, 100),
                        )
                    )
        return out


def bare_loop(commands: list[Command]) -> None:
    """Price-time matching with nothing else: the floor CPython sets for this workload."""
    books: dict[str, tuple[Any, Any]] = {s: (SortedDict(), SortedDict()) for s in MIDS}
    index: dict[int, list[Any]] = {}  # order_id -> [remaining, price, is_buy, symbol]
    buy_side = Side.BUY
    for c in commands:
        if type(c) is CancelOrder:
            entry = index.pop(c.order_id, None)  # type: ignore[arg-type]
            if entry is not None:
                # Lazy deletion: a cancelled order stays in its deque with nothing left.
                entry[0] = 0
            continue
        if type(c) is not PlaceOrder:
            continue
        bids, asks = books[c.symbol]
        is_buy = c.side is buy_side
        opposite = asks if is_buy else bids
        best = 0 if is_buy else -1
        limit = c.price
        remaining = c.quantity
        while remaining and opposite:
            price, queue = opposite.peekitem(best)
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            while queue and remaining:
                maker = queue[0]
                if maker[0] == 0:
                    queue.popleft()
                    continue
                q = min(remaining, maker[0])
                remaining -= q
                maker[0] -= q
                if maker[0] == 0:
                    queue.popleft()
                    index.pop(maker[4], None)
            if not queue:
                del opposite[price]
        if remaining and limit is not None and c.time_in_force is TimeInForce.GTC:
            own = bids if is_buy else asks
            queue = own.get(limit)
            if queue is None:
                queue = own[limit] = deque()
            entry = [remaining, limit, is_buy, c.symbol, c.order_id]
            queue.append(entry)
            index[c.order_id] = entry


KEEP_GC = False  # --gc: leave the cyclic collector running during timed sections
LAST_CPU = 0.0  # CPU seconds of the last timed() call: steadier than wall time on a busy box


def timed(fn: Any, *args: Any, collect: bool = True) -> float:
    if collect:
        gc.collect()
    if not KEEP_GC:
        # Collector pauses are out of the measurement, for both contenders alike; a service
        # would gc.freeze() after start-up and raise the thresholds (see --gc for the cost).
        gc.disable()
    try:
        cpu_start = time.process_time()
        start = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - start
        global LAST_CPU
        LAST_CPU = time.process_time() - cpu_start
        return elapsed
    finally:
        gc.enable()


def collect_outputs(engine: Engine, commands: Sequence[Command]) -> list[EngineOutput]:
    return [engine.apply(c) for c in commands]


def event_floor(outputs: list[EngineOutput], repeat: int) -> float:
    """Best seconds to merely build the same output objects again with the engine's own fast
    constructors: a floor for any engine that honours the event contract in CPython."""
    builders: dict[type, Any] = {
        TradeExecuted: _new_trade,
        OrderPlaced: _new_placed,
        OrderUpdated: _new_updated,
        OrderCompleted: _new_completed,
        BalanceUpdated: _new_balance,
        CommandRejected: _new_rejected,
    }
    groups = ("trades", "order_placements", "order_updates", "order_completions",
              "balance_updates", "rejections")  # fmt: skip
    fields_of = {cls: attrgetter(*(f.name for f in dataclasses.fields(cls))) for cls in builders}
    level_fields = attrgetter("side", "price", "quantity", "order_count")
    plan = [
        (
            (o.sequence, o.command_id, o.command_kind, o.timestamp_ms),
            [
                [(builders[type(e)], fields_of[type(e)](e)) for e in getattr(o, group)]
                for group in groups
            ],
            [
                (d.symbol, d.update_id, [level_fields(lv) for lv in d.levels])
                for d in o.depth_updates
            ],
        )
        for o in outputs
    ]

    def build() -> None:
        for head, parts, depth in plan:
            _new_output(
                *head,
                *[tuple([b(*args) for b, args in part]) for part in parts],
                tuple(
                    [
                        new_depth(symbol, uid, tuple([new_level(*lv) for lv in levels]))
                        for symbol, uid, levels in depth
                    ]
                ),
            )

    return min(timed(build) for _ in range(repeat))


def run_engine(engine: Engine, commands: Sequence[Command]) -> None:
    apply = engine.apply
    for command in commands:
        apply(command)


def warmed_engine(
    markets: Markets, deposits: Sequence[Command], warmup: Sequence[Command]
) -> Engine:
    """A fresh engine with the users funded and the books warmed, ready for the workload."""
    engine = Engine(markets)
    run_engine(engine, deposits)
    run_engine(engine, warmup)
    return engine


def best_with_tuple_events(
    markets: Markets,
    deposits: Sequence[Command],
    warmup: Sequence[Command],
    workload: Sequence[Command],
    repeat: int,
) -> float:
    """The engine with every event builder swapped for a plain ``tuple`` of its arguments.

    Why: it bounds what any cheaper event representation could gain. The calls and their
    arguments stay; only the object built changes, to the cheapest one CPython has.
    """
    names = [n for n in vars(engine_module) if n.startswith("_new_")]
    saved = {n: getattr(engine_module, n) for n in names}

    def as_tuple(*fields: object) -> tuple[object, ...]:
        return fields

    best = 0.0
    try:
        for n in names:
            setattr(engine_module, n, as_tuple)
        for _ in range(repeat):
            engine = warmed_engine(markets, deposits, warmup)
            best = max(best, len(workload) / timed(run_engine, engine, workload))
    finally:
        for n, builder in saved.items():
            setattr(engine_module, n, builder)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300_000, help="mixed commands to time")
    parser.add_argument("--resting", type=int, default=500_000, help="orders for snapshot")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--profile", action="store_true", help="cProfile one engine run")
    parser.add_argument("--gc", action="store_true", help="keep the garbage collector on")
    parser.add_argument(
        "--tuple-events",
        action="store_true",
        help="diagnostic: also time the engine building plain tuples instead of event objects",
    )
    args = parser.parse_args()
    global KEEP_GC
    KEEP_GC = args.gc

    markets = load_markets()
    print(f"python {platform.python_version()} on {platform.machine()}, cmd: {' '.join(sys.argv)}")

    stream = Stream(args.seed)
    deposits = stream.deposits()
    warmup = [stream.passive() for _ in range(20_000)]
    workload = stream.mixed(args.commands)
    kinds: dict[str, int] = {}
    for c in workload:
        name = type(c).__name__
        if isinstance(c, PlaceOrder):
            name = f"{name}:{c.order_type}:{c.time_in_force}"
        kinds[name] = kinds.get(name, 0) + 1
    print("workload:", ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))

    engine_best = 0.0
    stats: dict[str, int] = {}
    for _ in range(args.repeat):
        engine = Engine(markets)
        t_dep = timed(run_engine, engine, deposits)
        run_engine(engine, warmup)
        start_seq = engine.sequence
        t = timed(run_engine, engine, workload)
        rate = len(workload) / t
        engine_best = max(engine_best, rate)
        stats = {
            "trades": engine.next_trade_id - 1,
            "resting": len(engine.open_orders()),
            "sequence": engine.sequence - start_seq,
        }
        print(
            f"engine: {rate:,.0f} cmds/s ({t:.3f} s wall; by CPU time "
            f"{len(workload) / LAST_CPU:,.0f}/s); deposits {len(deposits) / t_dep:,.0f}/s; {stats}"
        )
    floor_engine = warmed_engine(markets, deposits, warmup)
    outputs = collect_outputs(floor_engine, workload)
    floor_best = len(outputs) / event_floor(outputs, args.repeat)
    events = sum(
        len(o.trades) + len(o.order_placements) + len(o.order_updates)
        + len(o.order_completions) + len(o.balance_updates) + len(o.rejections) + 1
        + sum(1 + len(d.levels) for d in o.depth_updates)
        for o in outputs
    )  # fmt: skip
    del outputs
    print(
        f"event construction alone: {floor_best:,.0f} outputs/s "
        f"({events / len(workload):.1f} event objects per command)"
    )
    bare_best = 0.0
    for _ in range(args.repeat):
        t = timed(bare_loop, warmup + workload)
        rate = (len(warmup) + len(workload)) / t
        bare_best = max(bare_best, rate)
        print(
            f"bare loop: {rate:,.0f} ops/s ({t:.3f} s wall; by CPU time "
            f"{(len(warmup) + len(workload)) / LAST_CPU:,.0f}/s)"
        )

    if args.tuple_events:
        tuple_best = best_with_tuple_events(markets, deposits, warmup, workload, args.repeat)
        print(
            f"engine building plain tuples instead of events (diagnostic, outputs not valid): "
            f"{tuple_best:,.0f} cmds/s, {tuple_best / engine_best:.2f}x the engine"
        )

    if args.profile:
        engine = warmed_engine(markets, deposits, warmup)
        profiler = cProfile.Profile()
        profiler.runcall(run_engine, engine, workload)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    if args.resting:
        # Free the mixed-workload state first: it only adds collector and cache pressure.
        del engine, floor_engine, workload, warmup
        gc.collect()
        resting_stream = Stream(args.seed + 1)
        engine = Engine(markets)
        run_engine(engine, resting_stream.deposits())
        t_build = 0.0
        for start in range(0, args.resting, 100_000):
            # Wide enough that the passive orders never cross: they all rest.
            chunk = [
                resting_stream.passive(spread=50_000)
                for _ in range(min(100_000, args.resting - start))
            ]
            t_build += timed(run_engine, engine, chunk, collect=False)
        resting = len(engine.open_orders())
        gc.collect()
        snapshots: list[bytes] = []
        t_snap = timed(lambda: snapshots.append(engine.snapshot()), collect=False)
        cpu_snap = LAST_CPU
        data = snapshots[0]
        restored: list[Engine] = []
        t_restore = timed(lambda: restored.append(Engine.restore(data, markets)), collect=False)
        cpu_restore = LAST_CPU
        same = restored[0].snapshot() == data  # byte-identical, hence the same state hash
        print(
            f"snapshot of {resting:,} resting orders: {len(data) / 1e6:.1f} MB, "
            f"snapshot() {t_snap:.2f} s (CPU {cpu_snap:.2f} s), restore() {t_restore:.2f} s "
            f"(CPU {cpu_restore:.2f} s), round trip identical: "
            f"{same} (building the book: {args.resting / t_build:,.0f} places/s)"
        )
        if not same:
            raise SystemExit("restore() did not reproduce the snapshot")

    ratio = engine_best / bare_best
    print(
        f"RESULT engine_core cmds_per_s={engine_best:.0f} bare_loop_per_s={bare_best:.0f} "
        f"ratio={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
