"""Same commands, same bytes: replays, snapshot/restore midway, and a golden digest.

The golden digest pins the engine's observable behaviour on a fixed stream. If a change is
*meant* to alter behaviour, regenerate it with ``ENGINE_GOLDEN_UPDATE=1`` and say so in the
commit; otherwise a failure here is a regression.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_testkit import (
    BUY,
    KIT_USERS,
    SELL,
    Kit,
    canonical,
    digest_outputs,
    key_id,
    make_markets,
    public_key,
    random_commands,
)

from engine import Command, ConfigError, Engine, SnapshotFormatError, parse_markets
from engine import snapshot as snapshot_format
from engine.invariants import check_invariants

GOLDEN = Path(__file__).with_name("golden_engine_core.txt")
GOLDEN_SEED = 20_240_601
GOLDEN_COMMANDS = 3_000


def replay(engine: Engine, commands: list[Command]) -> list[str]:
    return [canonical(engine.apply(c)) for c in commands]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_when_same_stream_is_applied_twice_outputs_are_byte_identical(seed: int) -> None:
    commands = random_commands(seed, 1_500)
    first = Engine(make_markets(maker_bps=5, taker_bps=15))
    second = Engine(make_markets(maker_bps=5, taker_bps=15))
    assert replay(first, commands) == replay(second, commands)
    assert first.state_hash() == second.state_hash()
    assert first.snapshot() == second.snapshot()


@pytest.mark.parametrize("seed", [4, 5])
def test_restore_when_taken_midway_continues_byte_identically(seed: int) -> None:
    markets = make_markets(maker_bps=5, taker_bps=15)
    commands = random_commands(seed, 1_500)
    middle = len(commands) // 2
    straight = Engine(markets)
    expected = replay(straight, commands)

    first_half = Engine(markets)
    got = replay(first_half, commands[:middle])
    data = first_half.snapshot()
    restored = Engine.restore(data, markets)
    check_invariants(restored)
    assert restored.state_hash() == first_half.state_hash()
    assert restored.sequence == first_half.sequence == middle
    assert restored.snapshot() == data
    got += replay(restored, commands[middle:])

    assert got == expected
    assert restored.state_hash() == straight.state_hash()


def test_golden_when_fixed_stream_is_replayed_matches_the_stored_digest() -> None:
    engine = Engine(make_markets(maker_bps=10, taker_bps=20))
    outputs = [engine.apply(c) for c in random_commands(GOLDEN_SEED, GOLDEN_COMMANDS)]
    check_invariants(engine)
    actual = f"outputs {digest_outputs(outputs)}\nstate {engine.state_hash()}\n"
    if os.environ.get("ENGINE_GOLDEN_UPDATE") == "1":
        GOLDEN.write_text(actual)
    assert sum(len(o.trades) for o in outputs) > 500, "the golden stream should trade a lot"
    assert GOLDEN.read_text() == actual, (
        "engine behaviour changed on the golden stream; if intended, rerun with "
        "ENGINE_GOLDEN_UPDATE=1 and explain why in the commit"
    )


def test_state_hash_when_command_is_rejected_is_unchanged(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    before = kit.engine.state_hash()
    sequence = kit.engine.sequence
    commands: list[Command] = [
        kit.withdraw(1, "USDT", 5_000),
        kit.limit(1, BUY, 100, 50),
        kit.cancel(1, 12_345),
        kit.deposit(1, "XYZ", 5),
        kit.deposit(KIT_USERS + 1, "USDT", 5),
        kit.create_user(key_id(1), public_key(1)),
        kit.add_key(KIT_USERS + 1, "k-new", "p"),
        kit.add_key(1, key_id(2), "p"),
        kit.revoke_key("k-never-added"),
        kit.cancel_all(KIT_USERS + 1),
        kit.cancel_all(1, symbol="DOGE_USDT"),
    ]
    for command in commands:
        out = kit.engine.apply(command)
        assert out.rejections
        assert kit.engine.state_hash() == before
    # The output sequence moved on; the hash ignores it.
    assert kit.engine.sequence == sequence + len(commands)


def test_restore_when_snapshot_is_corrupt_raises_snapshot_error(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    data = bytearray(kit.engine.snapshot())
    markets = kit.engine.markets
    flipped = bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SnapshotFormatError, match="checksum"):
        Engine.restore(flipped, markets)
    with pytest.raises(SnapshotFormatError, match="magic"):
        Engine.restore(b"NOTSNAPS" + bytes(data[8:]), markets)
    with pytest.raises(SnapshotFormatError, match="truncated"):
        Engine.restore(bytes(data[:10]), markets)
    newer = bytes(data[:8]) + (snapshot_format.FORMAT_VERSION + 1).to_bytes(2, "big")
    with pytest.raises(SnapshotFormatError, match="version"):
        Engine.restore(newer + bytes(data[10:]), markets)


def test_restore_when_markets_change_scales_raises_config_error(kit: Kit) -> None:
    data = kit.engine.snapshot()
    raw = {
        "assets": {"BTC": {"decimals": 8}, "ETH": {"decimals": 8}, "USDT": {"decimals": 6}},
        "symbols": {
            "BTC_USDT": {
                "base": "BTC",
                "quote": "USDT",
                "tick_size": "0.01",
                "step_size": "0.0001",
                "min_quantity": "0.0001",
                "max_quantity": "1000",
                "max_price": "10000000",
            },
        },
    }
    with pytest.raises(ConfigError):
        Engine.restore(data, parse_markets(raw))


def test_restore_when_only_fees_change_accepts_the_new_fees(kit: Kit) -> None:
    kit.fund(1, USDT=1_000)
    restored = Engine.restore(kit.engine.snapshot(), make_markets(maker_bps=3, taker_bps=4))
    assert restored.markets.symbols["BTC_USDT"].maker_fee_bps == 3
    assert restored.balance(1, "USDT") == (1_000, 0)


def test_restore_when_state_has_memory_and_client_ids_keeps_answering_the_same(
    kit: Kit,
) -> None:
    kit.fund(1, USDT=10_000, BTC=2_000)
    resting = kit.limit(1, BUY, 100, 1, client_order_id="keep")
    done = kit.limit(1, SELL, 200, 1)
    kit.apply(resting)
    kit.apply(done)
    kit.apply(kit.cancel(1, done.order_id))
    restored = Engine.restore(kit.engine.snapshot(), kit.engine.markets)
    twin = Kit(restored, first_id=kit.next_id)
    out = twin.apply(twin.cancel(1, done.order_id))
    assert out.rejections[0].reason == "ORDER_ALREADY_COMPLETED"
    out = twin.apply(twin.limit(1, BUY, 99, 1, client_order_id="keep"))
    assert out.rejections[0].reason == "DUPLICATE_CLIENT_ORDER_ID"
    out = twin.apply(twin.cancel(1, client_order_id="keep"))
    assert out.order_updates[0].order_id == resting.order_id
