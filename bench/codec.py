"""Throughput of the Avro codec on a typical engine output.

A taker buy that fully fills against one resting sell: one trade, two order updates, one
completion and four balance updates. Prints encode and decode operations per second; the last
line is ``RESULT codec encode_per_s=<n> decode_per_s=<n>``.

Run: ``.venv/bin/python bench/codec.py [--seconds S]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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
    OrderUpdated,
    TradeExecuted,
)
from exchange.codec import Codec

TS = 1_700_000_000_000


def typical_output() -> EngineOutput:
    """Order 42 (user 7, taker BUY 5 lots) fills resting order 17 (user 3) at 30000 ticks."""
    trade = TradeExecuted(
        trade_id=1001,
        symbol="BTC-USDT",
        price=30_000_00,
        quantity=5,
        quote_quantity=150_000_00,
        maker_order_id=17,
        taker_order_id=42,
        maker_user_id=3,
        taker_user_id=7,
        taker_side=Side.BUY,
        maker_fee=15_000,
        maker_fee_asset="USDT",
        taker_fee=5,
        taker_fee_asset="BTC",
        executed_at=TS,
    )

    def update(order_id: int, user_id: int, side: Side, status: OrderStatus) -> OrderUpdated:
        return OrderUpdated(
            order_id=order_id,
            client_order_id=f"c-{order_id}",
            user_id=user_id,
            symbol="BTC-USDT",
            side=side,
            order_type=OrderType.LIMIT,
            time_in_force=TimeInForce.GTC,
            price=30_000_00,
            quantity=10 if side is Side.SELL else 5,
            status=status,
            filled_quantity=5,
            remaining_quantity=5 if side is Side.SELL else 0,
            cumulative_quote=150_000_00,
            avg_fill_price=30_000_00,
            last_fill_price=30_000_00,
            last_fill_quantity=5,
            reject_reason=None,
            created_at=TS - 1_000,
            updated_at=TS,
        )

    return EngineOutput(
        sequence=123_456,
        command_id=42,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=TS,
        trades=(trade,),
        order_updates=(
            update(17, 3, Side.SELL, OrderStatus.PARTIALLY_FILLED),
            update(42, 7, Side.BUY, OrderStatus.FILLED),
        ),
        order_completions=(
            OrderCompleted(
                order_id=42,
                user_id=7,
                symbol="BTC-USDT",
                reason=CompletionReason.FILLED,
                completed_at=TS,
            ),
        ),
        balance_updates=(
            BalanceUpdated(user_id=7, asset="USDT", available=850_000_00, locked=0),
            BalanceUpdated(user_id=7, asset="BTC", available=4_999_995, locked=0),
            BalanceUpdated(user_id=3, asset="BTC", available=0, locked=5_000_000),
            BalanceUpdated(user_id=3, asset="USDT", available=149_985_000, locked=0),
        ),
    )


def ops_per_second(operation: Callable[[], object], seconds: float) -> float:
    """Best of three timed runs of ``operation``, each about ``seconds / 3`` long."""
    batch = 1_000
    best = 0.0
    for _ in range(3):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(batch):
                operation()
            done += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    codec = Codec()
    output = typical_output()
    data = codec.encode_output(output)
    if codec.decode_output(data) != output:
        raise SystemExit("round trip failed: the benchmark would measure a broken codec")

    encode = codec.encode_output
    decode = codec.decode_output
    encode_per_s = ops_per_second(lambda: encode(output), args.seconds)
    decode_per_s = ops_per_second(lambda: decode(data), args.seconds)
    print(f"record size: {len(data)} bytes (10-byte single-object header included)")
    print(f"encode: {encode_per_s:,.0f} ops/s ({1e6 / encode_per_s:.1f} us/op)")
    print(f"decode: {decode_per_s:,.0f} ops/s ({1e6 / decode_per_s:.1f} us/op)")
    print(f"RESULT codec encode_per_s={encode_per_s:.0f} decode_per_s={decode_per_s:.0f}")


if __name__ == "__main__":
    main()
