"""Throughput of the Avro codec: the generated fast paths against fastavro.

Engine outputs, two workloads, both timed for the codec (``Codec.encode_output`` /
``decode_output``, which take the generated fast path) and for the general fastavro path it
replaced (domain -> dict -> ``schemaless_writer`` and back), in the same run:

* typical: one output over and over, a taker buy that fully fills against one resting sell
  (one trade, two order updates, one completion and four balance updates). Every value is
  seen again at once, so the fast path's memo dicts always hit: a best case.
* stream: the engine applies a seeded workload (``ops.workload``: resting limits,
  cancels, crossing orders, market orders over many users) and each batch of 100 outputs is
  encoded, then decoded, as it comes out, as in the engine service: the objects are fresh in
  the CPU caches, ids, timestamps and balances are new, and the memos miss whenever real
  traffic would. Only the codec calls are timed, never the engine.

Commands: the seeded workload itself (``command_stream``: the funding deposits, then N
trading commands), encoded once, then every record decoded as the engine service does
(``Codec.decode_command(value, command_id=offset)``) and every command encoded as the load
generator does, against the general path (fastavro and the dict mapping) in the same run. Each
command carries a new timestamp (one millisecond apart) and every cancel a new order id.

Rates are best of three timed passes, in process CPU time. The last line is machine-readable
(outputs: the typical workload):
``RESULT codec encode_per_s=<n> decode_per_s=<n> fastavro_encode_per_s=<n>
fastavro_decode_per_s=<n> cmd_decode_per_s=<n> fastavro_cmd_decode_per_s=<n>
cmd_encode_per_s=<n> fastavro_cmd_encode_per_s=<n>``.

Run: ``.venv/bin/python bench/codec.py [--seconds S] [--stream N] [--commands N]``
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from functools import partial

from engine import Engine, load_markets
from engine.commands import Command
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
from ops.workload import command_stream, funding_commands

TS = 1_700_000_000_000
PASSES = 3
BATCH = 100  # outputs applied, then encoded and decoded, at a time
STREAM_USERS = 1_000

# CPU time of this process, not wall time: what one codec costs its process, and much less
# disturbed by whatever else runs on the machine (a shared CI box or laptop).
clock = time.process_time


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
    for _ in range(PASSES):
        done = 0
        start = clock()
        deadline = start + seconds / PASSES
        while True:
            for _ in range(batch):
                operation()
            done += batch
            now = clock()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def stream_rates(
    encode: Callable[[EngineOutput], bytes],
    decode: Callable[[bytes], object],
    count: int,
) -> tuple[float, float, float]:
    """Best encode and decode rates over the passes of ``count`` commands, and the average
    record size. A fresh engine and the same seeded stream for every contender."""
    engine = Engine(load_markets())
    funding = funding_commands(STREAM_USERS)
    for command in funding:
        engine.apply(command)
    commands = list(
        command_stream(7, count * PASSES, users=STREAM_USERS, first_offset=len(funding), fund=False)
    )
    best_encode = best_decode = 0.0
    size = 0
    for start in range(0, len(commands), count):
        encoding = decoding = 0.0
        for first in range(start, start + count, BATCH):
            outputs = [engine.apply(command) for command in commands[first : first + BATCH]]
            began = clock()
            encoded = [encode(output) for output in outputs]
            encoded_at = clock()
            for data in encoded:
                decode(data)
            decoding += clock() - encoded_at
            encoding += encoded_at - began
            size += sum(len(data) for data in encoded)
        best_encode = max(best_encode, count / encoding)
        best_decode = max(best_decode, count / decoding)
    return best_encode, best_decode, size / len(commands)


def command_rates(codec: Codec, count: int) -> tuple[dict[str, tuple[float, float]], float, int]:
    """{contender: (decode rate, encode rate)} over the seeded command stream, the average
    record size and the number of commands. The passes alternate between the contenders."""
    commands: list[Command] = list(command_stream(7, count, users=STREAM_USERS))
    records = [(codec.encode_command(c), c.command_id) for c in commands]
    for (data, offset), command in zip(records, commands, strict=True):
        general = codec._decode_command_general(data, offset)
        if codec.decode_command(data, command_id=offset) != general or general != command:
            raise SystemExit("fast and general command paths disagree: the bench would mislead")
        if codec._encode_command_general(command) != data:
            raise SystemExit("fast and general command encoders disagree")

    def decode_fast() -> None:
        decode = codec.decode_command
        for data, offset in records:
            decode(data, command_id=offset)

    def decode_general() -> None:
        decode = codec._decode_command_general
        for data, offset in records:
            decode(data, offset)

    def encode_all(encode: Callable[[Command], bytes]) -> Callable[[], None]:
        def run() -> None:
            for command in commands:
                encode(command)

        return run

    contenders = {
        "codec": (decode_fast, encode_all(codec.encode_command)),
        "fastavro": (decode_general, encode_all(codec._encode_command_general)),
    }
    best = {name: [0.0, 0.0] for name in contenders}
    for _ in range(PASSES):
        for name, runs in contenders.items():
            for which, run in enumerate(runs):
                gc.collect()
                began = clock()
                run()
                best[name][which] = max(best[name][which], len(records) / (clock() - began))
    rates = {name: (decode, encode) for name, (decode, encode) in best.items()}
    return rates, sum(len(data) for data, _ in records) / len(records), len(records)


def report(label: str, rate: float, reference: float) -> None:
    ratio = rate / reference
    print(f"  {label:<16} {rate:>10,.0f} /s {1e6 / rate:6.1f} us/op ({ratio:.1f}x fastavro)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument(
        "--stream", type=int, default=20_000, help="commands per stream pass (a multiple of 100)"
    )
    parser.add_argument(
        "--commands", type=int, default=100_000, help="trading commands in the command workload"
    )
    args = parser.parse_args()
    if args.stream <= 0 or args.stream % BATCH:
        parser.error(f"--stream must be a positive multiple of {BATCH}")
    if args.commands <= 0:
        parser.error("--commands must be positive")

    codec = Codec()
    if codec._output_encode is None:  # a private check: the bench must time the fast path
        raise SystemExit("the output schema did not compile: the codec runs on fastavro only")
    if codec._command_decode is None:
        raise SystemExit("the command schema did not compile: commands run on fastavro only")
    output = typical_output()
    data = codec.encode_output(output)
    if data != codec._encode_output_general(output) or codec.decode_output(data) != output:
        raise SystemExit("fast and general paths disagree: the benchmark would mislead")

    # The general path is what the codec ran before the generated code existed.
    contenders: dict[str, tuple[Callable[[EngineOutput], bytes], Callable[[bytes], object]]] = {
        "codec": (codec.encode_output, codec.decode_output),
        "fastavro": (codec._encode_output_general, codec._decode_output_general),
    }
    gc.collect()
    typical = {
        name: (
            ops_per_second(partial(encode, output), args.seconds),
            ops_per_second(partial(decode, data), args.seconds),
        )
        for name, (encode, decode) in contenders.items()
    }

    gc.collect()
    stream = {
        name: stream_rates(encode, decode, args.stream)
        for name, (encode, decode) in contenders.items()
    }

    commands, command_size, command_count = command_rates(codec, args.commands)

    print(f"typical output: {len(data)} bytes (10-byte single-object header included)")
    report("encode", typical["codec"][0], typical["fastavro"][0])
    report("decode", typical["codec"][1], typical["fastavro"][1])
    report("fastavro encode", typical["fastavro"][0], typical["fastavro"][0])
    report("fastavro decode", typical["fastavro"][1], typical["fastavro"][1])
    average = stream["codec"][2]
    print(f"engine stream: {args.stream:,} outputs per pass, {average:.0f} bytes on average")
    report("encode", stream["codec"][0], stream["fastavro"][0])
    report("decode", stream["codec"][1], stream["fastavro"][1])
    report("fastavro encode", stream["fastavro"][0], stream["fastavro"][0])
    report("fastavro decode", stream["fastavro"][1], stream["fastavro"][1])
    print(
        f"command stream: {command_count:,} commands (seed 7, {STREAM_USERS:,} users, funding "
        f"first), {command_size:.0f} bytes on average"
    )
    report("cmd decode", commands["codec"][0], commands["fastavro"][0])
    report("cmd encode", commands["codec"][1], commands["fastavro"][1])
    report("fastavro decode", commands["fastavro"][0], commands["fastavro"][0])
    report("fastavro encode", commands["fastavro"][1], commands["fastavro"][1])
    print(
        f"RESULT codec encode_per_s={typical['codec'][0]:.0f} "
        f"decode_per_s={typical['codec'][1]:.0f} "
        f"fastavro_encode_per_s={typical['fastavro'][0]:.0f} "
        f"fastavro_decode_per_s={typical['fastavro'][1]:.0f} "
        f"cmd_decode_per_s={commands['codec'][0]:.0f} "
        f"fastavro_cmd_decode_per_s={commands['fastavro'][0]:.0f} "
        f"cmd_encode_per_s={commands['codec'][1]:.0f} "
        f"fastavro_cmd_encode_per_s={commands['fastavro'][1]:.0f}"
    )


if __name__ == "__main__":
    main()
