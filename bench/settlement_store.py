"""Settlement store benchmark: apply() throughput, then query latency at 1M orders.

    .venv/bin/python bench/settlement_store.py            # defaults: 1M orders, < 3 minutes
    .venv/bin/python bench/settlement_store.py --orders 200000 --batch 200
    # Cassandra (CASSANDRA_CONTACT_POINTS / CASSANDRA_PORT, e.g. from `exchange infra env`),
    # one or two writer processes, a keyspace of its own (dropped at the end):
    .venv/bin/python bench/settlement_store.py --store cassandra --workers 2 --orders 100000

With ``--store cassandra`` there is no untimed bulk build (every order is written by the
timed phase) and ``--workers N`` starts N processes, each with its own ``CassandraStore``,
applying every N-th batch of the same stream, as N settlement workers on N partitions do
(writes are versioned by sequence, so their order across workers does not matter). The rate
is all workers' events over the wall time from the first apply() to the last.

Phase 1 writes a synthetic engine-output stream through ``SqliteStore.apply`` in batches of
``--batch`` outputs (what one settlement poll hands the store) until ``--orders`` orders exist,
and reports events/s over the time spent inside ``apply`` (projection + SQLite transaction,
synchronous=FULL). An *event* is one item of an output's lists, as counted by
``settlement.projection.count_events``. Stream generation is not timed.

Phase 2 times ``active_orders(user)`` and one 100-row ``order_history`` page (first page or a
random deeper page by cursor) for random users, on a separate read connection, and reports
p50/p99.

The stream: users place resting LIMIT orders (OrderPlaced + OrderUpdated NEW + a lock); a
resting order is later either filled by a taker order of another user (trade, both orders'
updates, two completions, four balance updates) or cancelled. About 5% of orders stay open,
so a user has a few dozen open orders among hundreds in history.

The last line is machine-readable:
    RESULT settlement events_per_s=<n> active_p99_ms=<n> history_p99_ms=<n>
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import multiprocessing.synchronize
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from engine.events import (
    BalanceUpdated,
    EngineOutput,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
)
from settlement.cassandra_store import CassandraStore
from settlement.projection import count_events
from settlement.sqlite_store import SqliteStore

T0 = 1_700_000_000_000
SYMBOLS = (("BTC-USDT", "BTC", "USDT"), ("ETH-USDT", "ETH", "USDT"), ("SOL-USDT", "SOL", "USDT"))
_BUY, _SELL = Side.BUY, Side.SELL
_LIMIT, _GTC, _IOC = OrderType.LIMIT, TimeInForce.GTC, TimeInForce.IOC
_NEW, _FILLED, _CANCELLED = OrderStatus.NEW, OrderStatus.FILLED, OrderStatus.CANCELLED
_PLACE, _CANCEL = CommandKind.PLACE_ORDER, CommandKind.CANCEL_ORDER


class Mode:
    """Switch of a running stream: ``lean`` drops the events the store does not read."""

    lean = False


def stream(
    users: int, seed: int, mode: Mode, p_place: float = 0.525
) -> Iterator[tuple[EngineOutput, int]]:
    """Endless synthetic outputs with their count of new orders (0 or 1 each).

    In lean mode an output keeps only its trades and order updates (the rows the queries
    read): OrderPlaced / OrderCompleted are not projected and balances are not queried here,
    so the bulk of the 1M-order store is built at a fraction of the cost.
    """
    rng = random.Random(seed)
    rand = rng.random
    resting: list[OrderUpdated] = []
    seq = 0
    trade_id = 0
    while True:
        seq += 1
        now = T0 + seq * 10
        if rand() < p_place or len(resting) < 1000:
            oid = seq  # a new order's id is its command id (the log offset)
            user = 1 + int(rand() * users)
            symbol, base, quote = SYMBOLS[seq % 3]
            side = _BUY if rand() < 0.5 else _SELL
            price = 9_900 + int(rand() * 201)
            qty = 1 + int(rand() * 50)
            upd = OrderUpdated(
                order_id=oid, client_order_id=None, user_id=user, symbol=symbol, side=side,
                order_type=_LIMIT, time_in_force=_GTC, price=price, quantity=qty, status=_NEW,
                filled_quantity=0, remaining_quantity=qty, cumulative_quote=0,
                avg_fill_price=0, last_fill_price=0, last_fill_quantity=0,
                reject_reason=None, created_at=now, updated_at=now,
            )  # fmt: skip
            resting.append(upd)
            if mode.lean:
                out = EngineOutput(
                    sequence=seq, command_id=seq, command_kind=_PLACE, timestamp_ms=now,
                    order_updates=(upd,),
                )  # fmt: skip
                yield out, 1
                continue
            placed = OrderPlaced(
                order_id=oid, client_order_id=None, user_id=user, symbol=symbol, side=side,
                order_type=_LIMIT, time_in_force=_GTC, post_only=False, price=price,
                quantity=qty, created_at=now,
            )  # fmt: skip
            lock = BalanceUpdated(
                user_id=user, asset=quote if side is _BUY else base,
                available=10**12 - seq, locked=seq,
            )  # fmt: skip
            out = EngineOutput(
                sequence=seq, command_id=seq, command_kind=_PLACE, timestamp_ms=now,
                order_placements=(placed,), order_updates=(upd,), balance_updates=(lock,),
            )  # fmt: skip
            yield out, 1
            continue
        # Take a random resting order off the book (swap-remove: O(1)).
        i = int(rand() * len(resting))
        maker = resting[i]
        resting[i] = resting[-1]
        resting.pop()
        symbol, base, quote = SYMBOLS[maker.order_id % 3]
        if rand() < 0.15:  # cancelled
            upd = OrderUpdated(
                order_id=maker.order_id, client_order_id=None, user_id=maker.user_id,
                symbol=symbol, side=maker.side, order_type=_LIMIT, time_in_force=_GTC,
                price=maker.price, quantity=maker.quantity, status=_CANCELLED,
                filled_quantity=0, remaining_quantity=0, cumulative_quote=0,
                avg_fill_price=0, last_fill_price=0, last_fill_quantity=0,
                reject_reason=None, created_at=maker.created_at, updated_at=now,
            )  # fmt: skip
            if mode.lean:
                out = EngineOutput(
                    sequence=seq, command_id=seq, command_kind=_CANCEL, timestamp_ms=now,
                    order_updates=(upd,),
                )  # fmt: skip
                yield out, 0
                continue
            done = OrderCompleted(
                order_id=maker.order_id, user_id=maker.user_id, symbol=symbol,
                reason=CompletionReason.CANCELLED, completed_at=now,
            )  # fmt: skip
            unlock = BalanceUpdated(
                user_id=maker.user_id, asset=quote if maker.side is _BUY else base,
                available=10**12, locked=0,
            )  # fmt: skip
            out = EngineOutput(
                sequence=seq, command_id=seq, command_kind=_CANCEL, timestamp_ms=now,
                order_updates=(upd,), order_completions=(done,), balance_updates=(unlock,),
            )  # fmt: skip
            yield out, 0
            continue
        oid = seq
        user = 1 + int(rand() * users)
        assert maker.price is not None
        price, qty = maker.price, maker.quantity
        quote_qty = price * qty
        taker_side = _SELL if maker.side is _BUY else _BUY
        trade_id += 1
        trade = TradeExecuted(
            trade_id=trade_id, symbol=symbol, price=price, quantity=qty,
            quote_quantity=quote_qty, maker_order_id=maker.order_id, taker_order_id=oid,
            maker_user_id=maker.user_id, taker_user_id=user, taker_side=taker_side,
            maker_fee=1, maker_fee_asset=base if maker.side is _BUY else quote,
            taker_fee=2, taker_fee_asset=quote if maker.side is _BUY else base,
            executed_at=now,
        )  # fmt: skip
        placed = OrderPlaced(
            order_id=oid, client_order_id=None, user_id=user, symbol=symbol, side=taker_side,
            order_type=_LIMIT, time_in_force=_IOC, post_only=False, price=price,
            quantity=qty, created_at=now,
        )  # fmt: skip
        taker_upd = OrderUpdated(
            order_id=oid, client_order_id=None, user_id=user, symbol=symbol, side=taker_side,
            order_type=_LIMIT, time_in_force=_IOC, price=price, quantity=qty, status=_FILLED,
            filled_quantity=qty, remaining_quantity=0, cumulative_quote=quote_qty,
            avg_fill_price=price, last_fill_price=price, last_fill_quantity=qty,
            reject_reason=None, created_at=now, updated_at=now,
        )  # fmt: skip
        maker_upd = OrderUpdated(
            order_id=maker.order_id, client_order_id=None, user_id=maker.user_id,
            symbol=symbol, side=maker.side, order_type=_LIMIT, time_in_force=_GTC,
            price=price, quantity=qty, status=_FILLED, filled_quantity=qty,
            remaining_quantity=0, cumulative_quote=quote_qty, avg_fill_price=price,
            last_fill_price=price, last_fill_quantity=qty, reject_reason=None,
            created_at=maker.created_at, updated_at=now,
        )  # fmt: skip
        if mode.lean:
            out = EngineOutput(
                sequence=seq, command_id=seq, command_kind=_PLACE, timestamp_ms=now,
                trades=(trade,), order_updates=(taker_upd, maker_upd),
            )  # fmt: skip
            yield out, 1
            continue
        completions = (
            OrderCompleted(
                order_id=maker.order_id, user_id=maker.user_id, symbol=symbol,
                reason=CompletionReason.FILLED, completed_at=now,
            ),
            OrderCompleted(
                order_id=oid, user_id=user, symbol=symbol, reason=CompletionReason.FILLED,
                completed_at=now,
            ),
        )  # fmt: skip
        balances = (
            BalanceUpdated(user_id=maker.user_id, asset=base, available=seq, locked=0),
            BalanceUpdated(user_id=maker.user_id, asset=quote, available=seq, locked=0),
            BalanceUpdated(user_id=user, asset=base, available=seq, locked=0),
            BalanceUpdated(user_id=user, asset=quote, available=seq, locked=0),
        )
        out = EngineOutput(
            sequence=seq, command_id=seq, command_kind=_PLACE, timestamp_ms=now,
            trades=(trade,), order_placements=(placed,), order_updates=(taker_upd, maker_upd),
            order_completions=completions, balance_updates=balances,
        )  # fmt: skip
        yield out, 1


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--orders", type=int, default=1_000_000, help="orders to store")
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument(
        "--batch", type=int, default=2000, help="outputs per apply() (the service polls up to 2000)"
    )
    ap.add_argument(
        "--measure-orders",
        type=int,
        default=300_000,
        help="orders written in the timed phase (the rest are built lean, untimed)",
    )
    ap.add_argument("--build-batch", type=int, default=20_000, help="outputs per bulk apply()")
    ap.add_argument("--queries", type=int, default=5_000, help="samples per query kind")
    ap.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL", "OFF"))
    ap.add_argument("--cache-mib", type=int, default=64, help="writer page cache")
    ap.add_argument("--db", type=Path, default=None, help="database file (default: temp)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--store", choices=("sqlite", "cassandra"), default="sqlite")
    ap.add_argument("--workers", type=int, default=1, help="writer processes (cassandra)")
    args = ap.parse_args()
    if args.store == "cassandra":
        return cassandra_main(args)

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="settlement-bench-")
        args.db = Path(tmp.name) / "bench.db"
    store = SqliteStore(args.db, synchronous=args.synchronous, cache_mib=args.cache_mib)
    store.init_schema()

    # ---- untimed bulk build: same stream, lean outputs, big batches ----
    mode = Mode()
    mode.lean = True
    gen = stream(args.users, args.seed, mode)
    orders = outputs = 0
    t0 = time.perf_counter()
    while orders < args.orders - args.measure_orders:
        batch = []
        for _ in range(args.build_batch):
            out, new_orders = next(gen)
            batch.append(out)
            orders += new_orders
        store.apply(batch)
        outputs += len(batch)
    print(f"build: {orders:,} orders stored, lean, untimed ({time.perf_counter() - t0:.1f} s)")
    base_orders = orders

    # ---- timed: the last --measure-orders orders, realistic stream and batches ----
    mode.lean = False
    events = 0
    busy = cpu = gen_s = 0.0
    measured_outputs = 0
    wall0 = time.perf_counter()
    while orders < args.orders:
        g0 = time.perf_counter()
        batch = []
        for _ in range(args.batch):
            out, new_orders = next(gen)
            batch.append(out)
            orders += new_orders
            events += count_events(out)
        g1 = time.perf_counter()
        c0 = time.process_time()
        store.apply(batch)
        busy += time.perf_counter() - g1
        cpu += time.process_time() - c0
        gen_s += g1 - g0
        outputs += len(batch)
        measured_outputs += len(batch)
    wall = time.perf_counter() - wall0
    events_per_s = events / busy
    print(
        f"write: {measured_outputs:,} outputs, {events:,} events, {orders - base_orders:,} "
        f"orders in {busy:.1f} s "
        f"of apply() ({wall:.1f} s wall, {gen_s:.1f} s generating) -> "
        f"{events_per_s:,.0f} events/s, {measured_outputs / busy:,.0f} outputs/s "
        f"(batch={args.batch}, synchronous={args.synchronous})"
    )
    # On a shared machine the wall rate depends on the neighbours; the CPU rate much less.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"write: {events / cpu:,.0f} events per CPU-second of apply(); "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )

    # ---- queries on the 1M-order store ----
    rng = random.Random(args.seed + 1)
    max_id = outputs
    active_ms: list[float] = []
    history_ms: list[float] = []
    rows_active = rows_history = 0
    for _ in range(args.queries):
        user = rng.randint(1, args.users)
        t0 = time.perf_counter()
        rows = store.active_orders(user)
        active_ms.append((time.perf_counter() - t0) * 1000)
        rows_active += len(rows)
        before = None if rng.random() < 0.5 else rng.randint(max_id // 4, max_id)
        t0 = time.perf_counter()
        page, _cursor = store.order_history(user, limit=100, before=before)
        history_ms.append((time.perf_counter() - t0) * 1000)
        rows_history += len(page)
    a50, a99 = statistics.median(active_ms), percentile(active_ms, 0.99)
    h50, h99 = statistics.median(history_ms), percentile(history_ms, 0.99)
    print(
        f"active_orders: p50 {a50:.3f} ms, p99 {a99:.3f} ms "
        f"(avg {rows_active / args.queries:.1f} rows, {args.queries} queries)"
    )
    print(
        f"order_history(limit=100): p50 {h50:.3f} ms, p99 {h99:.3f} ms "
        f"(avg {rows_history / args.queries:.1f} rows)"
    )
    size_mb = sum(p.stat().st_size for p in args.db.parent.glob(args.db.name + "*")) / 1e6
    print(f"store: {args.db} ({size_mb:,.0f} MB with WAL), max_sequence={store.max_sequence()}")
    store.close()
    if tmp is not None:
        tmp.cleanup()
    print(
        f"RESULT settlement events_per_s={events_per_s:.0f} "
        f"active_p99_ms={a99:.3f} history_p99_ms={h99:.3f}"
    )
    return 0


def _cassandra_store(keyspace: str) -> CassandraStore:
    hosts = os.environ.get("CASSANDRA_CONTACT_POINTS", "127.0.0.1").split(",")
    return CassandraStore(
        hosts, port=int(os.environ.get("CASSANDRA_PORT", "9042")), keyspace=keyspace
    )


def _cassandra_worker(
    args: argparse.Namespace,
    keyspace: str,
    index: int,
    start: mp.synchronize.Barrier,
    results: mp.Queue[tuple[int, int, float, float, float]],
) -> None:
    """Generate this worker's batches (untimed), then apply them after the barrier."""
    gen = stream(args.users, args.seed, Mode())
    mine: list[list[EngineOutput]] = []
    events = orders = n = 0
    while orders < args.orders:
        batch = []
        for _ in range(args.batch):
            out, new_orders = next(gen)
            batch.append(out)
            orders += new_orders
        if n % args.workers == index:
            mine.append(batch)
            events += sum(count_events(o) for o in batch)
        n += 1
    store = _cassandra_store(keyspace)
    store.max_sequence()  # connect before the clock starts
    start.wait()
    t0 = time.time()
    c0 = time.process_time()
    for batch in mine:
        store.apply(batch)
    t1 = time.time()
    results.put((index, events, t0, t1, time.process_time() - c0))
    store.close()


def cassandra_main(args: argparse.Namespace) -> int:
    keyspace = f"bench_settlement_{os.getpid()}"
    setup = _cassandra_store(keyspace)
    setup.init_schema()
    ctx = mp.get_context("fork")
    start = ctx.Barrier(args.workers)
    results: mp.Queue[tuple[int, int, float, float, float]] = ctx.Queue()
    procs = [
        ctx.Process(target=_cassandra_worker, args=(args, keyspace, i, start, results))
        for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    done = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    events = sum(d[1] for d in done)
    wall = max(d[3] for d in done) - min(d[2] for d in done)
    events_per_s = events / wall
    print(
        f"write: {events:,} events, {args.orders:,} orders by {args.workers} worker(s) in "
        f"{wall:.1f} s -> {events_per_s:,.0f} events/s (batch={args.batch}); apply() CPU "
        f"per worker {', '.join(f'{d[4]:.1f} s' for d in sorted(done))}; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    rng = random.Random(args.seed + 1)
    active_ms: list[float] = []
    history_ms: list[float] = []
    max_id = setup.max_sequence()
    for _ in range(args.queries):
        user = rng.randint(1, args.users)
        t0 = time.perf_counter()
        setup.active_orders(user)
        active_ms.append((time.perf_counter() - t0) * 1000)
        before = None if rng.random() < 0.5 else rng.randint(max_id // 4, max_id)
        t0 = time.perf_counter()
        setup.order_history(user, limit=100, before=before)
        history_ms.append((time.perf_counter() - t0) * 1000)
    a50, a99 = statistics.median(active_ms), percentile(active_ms, 0.99)
    h50, h99 = statistics.median(history_ms), percentile(history_ms, 0.99)
    print(
        f"active_orders: p50 {a50:.3f} ms, p99 {a99:.3f} ms; order_history(limit=100): "
        f"p50 {h50:.3f} ms, p99 {h99:.3f} ms ({args.queries} queries, {args.orders:,} orders)"
    )
    setup.drop_keyspace()
    setup.close()
    print(
        f"RESULT settlement events_per_s={events_per_s:.0f} active_p99_ms={a99:.3f} "
        f"history_p99_ms={h99:.3f} store=cassandra workers={args.workers}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
