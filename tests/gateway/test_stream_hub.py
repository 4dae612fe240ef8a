"""The stream hub's fan-out of one feed batch, without a server: a real engine makes the
outputs, a frame writer stands in for each client's transport."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

from engine.commands import CreateUser, Deposit, PlaceOrder
from engine.engine import Engine
from engine.enums import OrderType, Side
from engine.events import EngineOutput
from engine.markets import Markets
from exchange.codec import Codec
from gateway.market.feed import MarketFeed, Published, Start, books_from_engine
from gateway.market.service import MarketData
from gateway.market.views import MarketViews
from gateway.streams.hub import StreamHub
from gateway.views import Views
from settlement.sqlite_store import SqliteStore
from tests.support.eventually import eventually_async


class Transport:
    """A client's transport: the writes it was given, each a run of text frames."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return 0

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for data in self.writes:
            i = 0
            while i < len(data):  # unmasked server frames; payloads here are < 64 KiB
                n = data[i + 1] & 0x7F
                start = i + 2
                if n == 126:
                    n, start = int.from_bytes(data[i + 2 : i + 4], "big"), i + 4
                out.append(json.loads(data[start : start + n]))
                i = start + n
        return out


class Socket:
    async def send_text(self, data: str) -> None:
        raise AssertionError("the frame path never uses send_text")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


def _outputs(markets: Markets) -> tuple[Start, list[EngineOutput]]:
    """Two sellers rest at two prices; one buy sweeps both; a second buy takes the rest."""
    engine = Engine(markets)
    ids = count(1)
    btc = markets.symbols["BTC_USDT"]

    def place(user: int, side: Side, price: str, qty: str) -> PlaceOrder:
        n = next(ids)
        return PlaceOrder(
            command_id=n, timestamp_ms=n, order_id=n, user_id=user, symbol="BTC_USDT",
            side=side, order_type=OrderType.LIMIT, price=btc.price_to_ticks(Decimal(price)),
            quantity=btc.quantity_to_lots(Decimal(qty)),
        )  # fmt: skip

    for user in (1, 2, 3):
        n = next(ids)
        engine.apply(CreateUser(command_id=n, timestamp_ms=n, api_key=f"k{user}", public_key="p"))
    for user, asset, amount in ((1, "BTC", "1"), (2, "BTC", "1"), (3, "USDT", "100000")):
        n = next(ids)
        minor = markets.assets[asset].to_minor(Decimal(amount))
        engine.apply(Deposit(command_id=n, timestamp_ms=n, user_id=user, asset=asset, amount=minor))
    engine.apply(place(1, Side.SELL, "30000.00", "0.01000"))
    engine.apply(place(2, Side.SELL, "30001.00", "0.03000"))
    books = books_from_engine(engine, markets)
    start = Start(sequence=engine.sequence, books=books, offsets={}, source="test")
    outputs = [
        engine.apply(place(3, Side.BUY, "30001.00", "0.02000")),
        engine.apply(place(3, Side.BUY, "30001.00", "0.02000")),
    ]
    return start, outputs


def test_publish_when_batch_holds_trades_of_two_outputs_sends_one_trades_message_in_order(
    markets: Markets,
) -> None:
    _, outputs = _outputs(markets)
    assert [len(o.trades) for o in outputs] == [2, 1]
    hub = StreamHub(Views(markets), MarketViews(markets))
    transports = [Transport() for _ in range(3)]

    async def fan_out() -> None:
        for transport in transports:
            client = hub.connect(Socket(), transport.write)
            hub.subscribe(client, ["trades@BTC_USDT"])
        batch = [Published(o, 1_000 + i) for i, o in enumerate(outputs)]
        await hub.publish({}, batch)

    asyncio.run(fan_out())

    for transport in transports:
        assert len(transport.writes) == 1  # one transport write per client per batch
        [message] = transport.messages()
        assert message["stream"] == "trades@BTC_USDT"
        assert [(t["price"], t["quantity"]) for t in message["data"]] == [
            ("30000.00", "0.01000"), ("30001.00", "0.01000"), ("30001.00", "0.02000"),
        ]  # fmt: skip
        trade_ids = [int(t["trade_id"]) for t in message["data"]]
        assert trade_ids == sorted(trade_ids) and len(set(trade_ids)) == 3
    assert hub.metrics.sent == 3  # one message per client, not one per trade


def test_apply_when_batches_queued_up_meanwhile_fans_them_out_together(
    markets: Markets, tmp_path: Path
) -> None:
    # A loop that fell behind catches up: what queued while it was busy costs one write
    # per subscriber, not one per batch.
    start, outputs = _outputs(markets)
    store = SqliteStore(tmp_path / "exchange.sqlite3")
    store.init_schema()
    feed = MarketFeed(lambda: None, "engine-output", Codec(), markets, None)  # type: ignore[arg-type,return-value]
    market = MarketData(markets=markets, feed=feed, store=store)
    transport = Transport()

    async def scenario() -> None:
        client = market.hub.connect(Socket(), transport.write)
        market.hub.subscribe(client, ["trades@BTC_USDT"])
        inbox: asyncio.Queue[Start | list[Published]] = asyncio.Queue()
        inbox.put_nowait(start)
        for i, output in enumerate(outputs):  # two batches, both queued before it runs
            inbox.put_nowait([Published(output, 1_000 + i)])
        task = asyncio.create_task(market._apply_forever(inbox))
        await eventually_async(lambda: len(transport.writes) > 0, timeout_s=5)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    assert len(transport.writes) == 1
    [message] = transport.messages()
    assert len(message["data"]) == 3  # both batches' trades
