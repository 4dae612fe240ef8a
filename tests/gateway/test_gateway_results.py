"""The engine-output follower: matching by command id, the early-output race, the bounds, and
a ``?wait=true`` answered from an output fed onto the topic by hand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from gateway_testkit import Gateway, envelope_data, read_commands

from engine.enums import CommandKind, OrderStatus, OrderType, Side, TimeInForce
from engine.events import EngineOutput, OrderUpdated
from engine.service.output_log import sequence_key
from exchange.codec import Codec
from exchange.kafka import BrokerFlavour, broker_flavour, make_consumer, make_producer
from exchange.topics import Topics
from gateway.results import CONSUMER_OVERRIDES, OutputFollower
from tests.support.eventually import eventually, eventually_async

pytestmark = pytest.mark.kafka

T = TypeVar("T")


def _output(command_id: int, sequence: int = 1) -> EngineOutput:
    return EngineOutput(
        sequence=sequence,
        command_id=command_id,
        command_kind=CommandKind.DEPOSIT,
        timestamp_ms=1_700_000_000_000,
    )


def _publish(bootstrap: str, topics: Topics, codec: Codec, output: EngineOutput) -> None:
    producer = make_producer(bootstrap)
    producer.produce(
        topics.engine_output.name,
        codec.encode_output(output),
        key=sequence_key(output.sequence),
        partition=output.sequence % topics.engine_output.partitions,
    )
    assert producer.flush(10) == 0


def _follow(
    bootstrap: str,
    topics: Topics,
    codec: Codec,
    scenario: Callable[[OutputFollower], Awaitable[T]],
    **kwargs: Any,
) -> T:
    follower = OutputFollower(
        lambda **extra: make_consumer(
            bootstrap, "gateway-follower-test", **CONSUMER_OVERRIDES, **extra
        ),
        topics.engine_output.name,
        codec,
        **kwargs,
    )

    async def run() -> T:
        follower.start(asyncio.get_running_loop())
        await asyncio.to_thread(follower.assigned.wait, 30)
        return await scenario(follower)

    try:
        return asyncio.run(run())
    finally:
        follower.stop()


def test_wait_when_output_arrived_before_the_waiter_returns_it_from_the_cache(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> EngineOutput | None:
        assert f.try_begin()
        try:
            _publish(kafka_bootstrap, fresh_topics, codec, _output(4242))
            await eventually_async(lambda: f.cached == 1)  # cached before anyone waits for it
            # A zero timeout: only an output already in the cache can be returned.
            return await f.wait(4242, 0)
        finally:
            f.end()

    assert _follow(kafka_bootstrap, fresh_topics, codec, scenario) == _output(4242)


def test_wait_when_output_arrives_later_resolves_the_waiter(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> list[EngineOutput | None]:
        assert f.try_begin() and f.try_begin()
        try:
            waits = [asyncio.ensure_future(f.wait(cid, 10)) for cid in (7, 8)]
            # One turn of the loop runs both wait() calls up to their await: both waiters
            # are registered before anything is published.
            await asyncio.sleep(0)
            assert f.cached == 0 and not any(w.done() for w in waits)
            for seq, cid in enumerate((8, 9, 7), start=1):
                _publish(kafka_bootstrap, fresh_topics, codec, _output(cid, seq))
            return list(await asyncio.gather(*waits))
        finally:
            f.end()
            f.end()

    got = _follow(kafka_bootstrap, fresh_topics, codec, scenario)
    assert [o.command_id if o else None for o in got] == [7, 8]


def test_wait_when_output_never_comes_returns_none_after_the_timeout(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> tuple[EngineOutput | None, float]:
        assert f.try_begin()
        try:
            started = time.monotonic()
            got = await f.wait(1, 0.2)
            return got, time.monotonic() - started
        finally:
            f.end()

    got, elapsed = _follow(kafka_bootstrap, fresh_topics, codec, scenario)
    assert got is None and elapsed >= 0.2  # not before the timeout (a lower bound only)


def test_follower_when_nobody_waits_skips_outputs_without_caching_them(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> EngineOutput | None:
        _publish(kafka_bootstrap, fresh_topics, codec, _output(5))
        await eventually_async(lambda: f.consumed == 1)  # consumed while nobody waited
        assert f.decoded == 0 and f.cached == 0
        assert f.try_begin()
        try:
            return await f.wait(5, 0.2)
        finally:
            f.end()

    assert _follow(kafka_bootstrap, fresh_topics, codec, scenario) is None


def test_follower_when_its_consumer_stalls_rebuilds_it_and_answers_waits_again(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    if broker_flavour(kafka_bootstrap) is not BrokerFlavour.TANSU:
        pytest.skip("the 1 ms fetch wait stalls only the embedded broker (Tansu)")
    outputs = 10_000  # single-record batches: listing them outlasts a 1 ms fetch wait

    async def scenario(f: OutputFollower) -> EngineOutput | None:
        producer = make_producer(kafka_bootstrap, **{"batch.num.messages": 1, "linger.ms": 0})
        parts = fresh_topics.engine_output.partitions
        for seq in range(1, outputs + 1):
            producer.produce(
                fresh_topics.engine_output.name,
                codec.encode_output(_output(seq, seq)),
                partition=seq % parts,
            )
            producer.poll(0)
        assert producer.flush(30) == 0
        await eventually_async(lambda: f.watchdog.stalls == 1, 30)
        await eventually_async(lambda: f.ready() is None, 30)
        assert f.try_begin()
        try:
            waiting = asyncio.ensure_future(f.wait(outputs + 1, 10))
            await asyncio.sleep(0.2)
            _publish(kafka_bootstrap, fresh_topics, codec, _output(outputs + 1, outputs + 1))
            return await waiting
        finally:
            f.end()

    got = _follow(
        kafka_bootstrap, fresh_topics, codec, scenario, stall_after_s=1.0, fetch_wait=lambda: 1
    )
    assert got is not None and got.command_id == outputs + 1


def test_try_begin_when_waiters_at_capacity_refuses_until_one_ends(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> list[bool]:
        got = [f.try_begin(), f.try_begin(), f.try_begin()]
        f.end()
        got.append(f.try_begin())
        return got

    assert _follow(kafka_bootstrap, fresh_topics, codec, scenario, max_waiters=2) == [
        True,
        True,
        False,
        True,
    ]


def test_cache_when_more_outputs_than_its_size_keeps_only_the_newest(
    kafka_bootstrap: str, fresh_topics: Topics, codec: Codec
) -> None:
    async def scenario(f: OutputFollower) -> list[int]:
        assert f.try_begin()
        try:
            for seq in range(1, 8):
                _publish(kafka_bootstrap, fresh_topics, codec, _output(100 + seq, seq))
            await eventually_async(lambda: f.delivered == 7)  # every batch reached the loop
            assert f.cached == 3
            found = []
            for cid in range(101, 108):
                if await f.wait(cid, 0.01) is not None:
                    found.append(cid)
            return found
        finally:
            f.end()

    # Seven outputs over four partitions arrive in no global order; three fit the cache.
    found = _follow(kafka_bootstrap, fresh_topics, codec, scenario, cache_size=3)
    assert len(found) == 3


def test_create_order_when_wait_and_output_fed_by_hand_returns_the_engines_answer(
    gateway: Gateway, codec: Codec
) -> None:
    body = {
        "user_id": 9,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "price": "123.45",
        "quantity": "0.5",
        "client_order_id": "fed",
    }
    result: dict[str, Any] = {}

    def call() -> None:
        result["response"] = gateway.client.post(
            "/api/v1/order/create?wait=true&timeout_ms=15000", json=body
        )

    caller = threading.Thread(target=call)
    caller.start()
    [(offset, command)] = eventually(
        lambda: read_commands(gateway.bootstrap, gateway.topics.orders.name, codec) or False,
        what="the order on the log",
    )
    update = OrderUpdated(
        order_id=offset,
        client_order_id="fed",
        user_id=9,
        symbol="BTC_USDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        price=12_345,
        quantity=50_000,
        status=OrderStatus.NEW,
        filled_quantity=0,
        remaining_quantity=50_000,
        cumulative_quote=0,
        avg_fill_price=0,
        last_fill_price=0,
        last_fill_quantity=0,
        reject_reason=None,
        created_at=command.timestamp_ms,
        updated_at=command.timestamp_ms,
    )
    output = EngineOutput(
        sequence=1,
        command_id=offset,
        command_kind=CommandKind.PLACE_ORDER,
        timestamp_ms=command.timestamp_ms,
        order_updates=(update,),
    )
    _publish(gateway.bootstrap, gateway.topics, codec, output)
    caller.join(20)

    data = envelope_data(result["response"], 200)
    assert data == {
        "order_id": str(offset),
        "client_order_id": "fed",
        "user_id": 9,
        "symbol": "BTC_USDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "time_in_force": "GTC",
        "price": "123.45",
        "quantity": "0.50000",
        "filled_quantity": "0.00000",
        "remaining_quantity": "0.50000",
        "avg_fill_price": None,
        "status": "NEW",
        "reject_reason": None,
        "created_at": command.timestamp_ms,
        "updated_at": command.timestamp_ms,
        "fills": [],
    }
