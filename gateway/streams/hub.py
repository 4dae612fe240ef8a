"""The stream hub: who is subscribed to what, and one bounded send queue per client.

Theory of operation
-------------------
Everything here runs on the event loop thread. :class:`~gateway.market.books.MarketBooks`
hands the hub each ordered batch of engine outputs with the merged depth changes of that
batch (:meth:`StreamHub.publish`). The hub renders each stream message once, as text, and
offers it to every subscribed client:

* ``depth@SYM``: one message per market per batch, ``first_update_id``..``last_update_id``
  (consecutive messages of a market chain: ``first == previous last + 1``);
* ``trades@SYM``: one message per market per batch, ``data`` the list of the batch's trades
  in execution order (the REST shape of ``/api/v1/trades/recent``, oldest first here);
* ``ticker@SYM``: pushed by :class:`~gateway.streams.ticker.TickerPusher` once a second
  while the market changed;
* ``user``: the logged-in user's order reports, fills (its own order only) and balances.

Control answers (subscribed, errors, pong, login) take the same path as data, so a client
sees them in order with it. Two paths, one rule (a client's backlog is bounded):

* with the server's frame extension (:mod:`gateway.streams.frames`, what our uvicorn
  config serves): each message's frame is encoded once; within a batch's fan-out
  (:meth:`StreamHub.publish`) each subscriber's frames are gathered, then written in one
  transport write per subscriber, ``WRITES_PER_SLICE`` subscribers at a time, yielding to
  the loop between slices (REST answers in between); a client whose transport then
  buffers more than ``max_buffer_bytes`` unsent bytes cannot keep up;
* otherwise each client has a queue that its own sender task drains with ``send_text``; a
  client whose queue holds ``max_queue`` messages, or more than ``max_buffer_bytes``
  characters (a trades message carries a whole batch), cannot keep up.

A client that cannot keep up is dropped from every subscription at once and closed with
1008 ``slow consumer``, so the gateway's memory stays bounded whatever the clients do.

Latency: each data message carries the engine's publish time (the Kafka record timestamp
of its earliest output); "now - published" is observed per client at the write (frame
path) or the send (queued path) into :class:`StreamMetrics`
(``exchange_gateway_stream_delivery_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exchange.metrics import FRESHNESS_BUCKETS_MS, IntHistogram
from gateway.market.books import DepthDelta
from gateway.market.feed import Published
from gateway.market.views import MarketViews
from gateway.streams.frames import text_frame
from gateway.views import Views

log = logging.getLogger(__name__)

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"
DEFAULT_MAX_QUEUE = 4096
# Frames gathered, and transport writes made, between two yields of publish() to the event
# loop (each slice a few ms of work), so a batch fanned out to many clients never holds up
# REST answers for long.
YIELD_EVERY = 2000
WRITES_PER_SLICE = 250


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamConfig:
    """Tunables of ``GET /ws`` (the defaults are the production values)."""

    max_queue: int = DEFAULT_MAX_QUEUE  # messages queued per client before it is "slow"
    ping_interval_s: float = 20.0  # the server's {"op": "ping"} to every client
    ping_timeout_s: float = 20.0  # no message at all for interval + timeout: closed 4408
    ticker_interval_s: float = 1.0  # ticker@ pushes, for markets that changed
    # With the server's frame extension (gateway.streams.frames): each message's frame is
    # written to every subscriber's transport, and a client whose transport holds more than
    # this many unsent bytes is the slow one. False: always the queued send_text path.
    raw_frames: bool = True
    max_buffer_bytes: int = 1 << 20


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(message: dict[str, Any]) -> str:
    return _dumps(message)


class Socket(Protocol):
    """What the hub needs of a WebSocket (Starlette's)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class StreamMetrics(Collector):
    """The hub's metrics: delivery latency, clients, slow-consumer closes."""

    def __init__(self) -> None:
        self.delivery = IntHistogram(
            "exchange_gateway_stream_delivery_seconds",
            "From the engine publishing an output (its Kafka record timestamp) to the "
            "gateway writing the stream message built from it to a WebSocket.",
            FRESHNESS_BUCKETS_MS,
        )
        self.clients = 0
        self.slow_closed = 0
        self.sent = 0

    def collect(self) -> Iterator[Metric]:
        yield from self.delivery.collect()
        yield GaugeMetricFamily(
            "exchange_gateway_stream_clients", "Open WebSocket connections.", value=self.clients
        )
        yield GaugeMetricFamily(
            "exchange_gateway_stream_slow_consumers",
            "WebSocket clients closed as slow consumers since start (a counter).",
            value=self.slow_closed,
        )
        yield GaugeMetricFamily(
            "exchange_gateway_stream_messages",
            "Stream messages written to WebSockets since start (a counter).",
            value=self.sent,
        )


class StreamClient:
    """One connection: its subscriptions, its user once logged in, and its queue."""

    __slots__ = (
        "closed", "last_seen", "queue", "queued_chars", "sender", "socket", "streams",
        "user_id", "write",
    )  # fmt: skip

    def __init__(self, socket: Socket, max_queue: int, write: FrameWriter | None) -> None:
        self.socket = socket
        # The frame writer of the server's extension, or None: the queue and sender task.
        self.write = write
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(max_queue)
        self.queued_chars = 0  # of the texts in the queue
        self.streams: set[str] = set()
        self.user_id: int | None = None
        self.closed = False
        self.sender: asyncio.Task[None] | None = None
        self.last_seen = time.monotonic()


FrameWriter = Callable[[bytes], "int | None"]


class StreamHub:
    """Subscriptions and fan-out (see the module docstring)."""

    def __init__(
        self,
        views: Views,
        market_views: MarketViews,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_buffer_bytes: int = 1 << 20,
        raw_frames: bool = True,
    ) -> None:
        self._views = views
        self._market_views = market_views
        self.max_queue = max_queue
        self.max_buffer_bytes = max_buffer_bytes
        self.raw_frames = raw_frames  # use the server's frame writer when it offers one
        self._writes = 0  # frames since publish() last yielded to the loop
        # Inside publish(): each client's frames not written yet, and (published, clients)
        # of the messages they hold (for the latency metric, observed when written).
        self._pending: dict[StreamClient, list[bytes]] | None = None
        self._pending_latency: list[tuple[int, int]] = []
        self.metrics = StreamMetrics()
        self.clients: set[StreamClient] = set()
        self.subscribers: dict[str, set[StreamClient]] = {}
        self.users: dict[int, set[StreamClient]] = {}
        self.dirty: set[str] = set()  # markets whose ticker changed since the last push

    # ---- clients ------------------------------------------------------------------

    def connect(self, socket: Socket, write: FrameWriter | None = None) -> StreamClient:
        client = StreamClient(socket, self.max_queue, write)
        if write is None:
            client.sender = asyncio.get_running_loop().create_task(self._send_forever(client))
        self.clients.add(client)
        self.metrics.clients = len(self.clients)
        return client

    def disconnect(self, client: StreamClient) -> None:
        client.closed = True
        self._forget(client)
        if client.sender is not None and client.sender is not asyncio.current_task():
            client.sender.cancel()

    def _forget(self, client: StreamClient) -> None:
        for name in client.streams:
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self.subscribers[name]
        client.streams.clear()
        if client.user_id is not None:
            mine = self.users.get(client.user_id)
            if mine is not None:
                mine.discard(client)
                if not mine:
                    del self.users[client.user_id]
        self.clients.discard(client)
        self.metrics.clients = len(self.clients)

    def subscribe(self, client: StreamClient, names: list[str]) -> None:
        for name in names:
            client.streams.add(name)
            self.subscribers.setdefault(name, set()).add(client)

    def unsubscribe(self, client: StreamClient, names: list[str]) -> None:
        for name in names:
            client.streams.discard(name)
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self.subscribers[name]

    def login(self, client: StreamClient, user_id: int) -> None:
        client.user_id = user_id
        self.users.setdefault(user_id, set()).add(client)

    # ---- sending ------------------------------------------------------------------

    def reply(self, client: StreamClient, message: dict[str, Any]) -> None:
        """A control answer, in order with the client's data."""
        self.offer(client, encode(message), 0)

    def offer(self, client: StreamClient, text: str, published_ms: int) -> None:
        self.broadcast((client,), text, published_ms)

    def fan_out(self, name: str, text: str, published_ms: int) -> None:
        subs = self.subscribers.get(name)
        if subs:
            self.broadcast(list(subs), text, published_ms)

    def broadcast(self, clients: Iterable[StreamClient], text: str, published_ms: int) -> None:
        """One message to each of ``clients``: its frame (encoded once) for those with a
        frame writer, written at once or, inside :meth:`publish`, gathered per client and
        written with the batch's other frames in one write; queued for the others. A
        client that cannot take it is closed as a slow consumer."""
        frame: bytes | None = None
        written = 0
        pending = self._pending
        for client in clients:
            if client.closed:
                continue
            if client.write is None:
                if client.queued_chars + len(text) > self.max_buffer_bytes:
                    self._close_slow(client)
                    continue
                try:
                    client.queue.put_nowait((text, published_ms))
                except asyncio.QueueFull:
                    self._close_slow(client)
                    continue
                client.queued_chars += len(text)
                continue
            if frame is None:
                frame = text_frame(text.encode())
            if pending is not None:
                frames = pending.get(client)
                if frames is None:
                    pending[client] = [frame]
                else:
                    frames.append(frame)
            else:
                self._write(client, frame)
            written += 1
        if written:
            self._writes += written
            self.metrics.sent += written
            if published_ms:
                if pending is not None:
                    self._pending_latency.append((published_ms, written))
                else:
                    self.metrics.delivery.observe_count(
                        time.time_ns() // 1_000_000 - published_ms, written
                    )

    def _write(self, client: StreamClient, data: bytes) -> None:
        assert client.write is not None
        buffered = client.write(data)
        if buffered is None:  # the connection is closing: the receive side cleans up
            client.closed = True
            self._forget(client)
        elif buffered > self.max_buffer_bytes:
            self._close_slow(client)

    def _flush(self, limit: int | None = None) -> bool:
        """Write each client's gathered frames in one write (one syscall, not one each), at
        most ``limit`` clients' worth; True when every gathered frame was written.

        Each client's frames are taken out as they are written, so a message offered while
        the caller yields between slices joins that client's list (or a new one) in order.
        """
        pending = self._pending
        if not pending:
            return True
        n = 0
        while pending:
            if limit is not None and n >= limit:
                return False
            client, frames = pending.popitem()
            n += 1
            if not client.closed:
                self._write(client, frames[0] if len(frames) == 1 else b"".join(frames))
        now = time.time_ns() // 1_000_000
        observe = self.metrics.delivery.observe_count
        for published_ms, count in self._pending_latency:
            observe(now - published_ms, count)
        self._pending_latency.clear()
        return True

    def _close_slow(self, client: StreamClient) -> None:
        client.closed = True
        self._forget(client)
        self.metrics.slow_closed += 1
        log.info("closing a slow WebSocket consumer")
        if client.sender is not None:
            client.sender.cancel()
        # Drop what it never read: its memory goes now, not when the socket finally closes.
        client.queue = asyncio.Queue(1)
        client.queued_chars = 0
        asyncio.get_running_loop().create_task(
            self.close(client, SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON)
        )

    async def close(self, client: StreamClient, code: int, reason: str) -> None:
        client.closed = True
        self._forget(client)
        with contextlib.suppress(Exception):  # already gone: nothing to close
            async with asyncio.timeout(5.0):
                await client.socket.close(code, reason)

    async def _send_forever(self, client: StreamClient) -> None:
        socket = client.socket
        observe = self.metrics.delivery.observe_many
        metrics = self.metrics
        try:
            while True:
                text, published = await client.queue.get()
                items = [(text, published)]
                queue = client.queue
                while not queue.empty() and len(items) < 256:
                    items.append(queue.get_nowait())
                client.queued_chars -= sum(len(t) for t, _ in items)
                latencies: list[int] = []
                for text, published in items:
                    await socket.send_text(text)
                    if published:
                        latencies.append(time.time_ns() // 1_000_000 - published)
                metrics.sent += len(items)
                if latencies:
                    observe(latencies)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive side cleans up
            client.closed = True
            self._forget(client)

    # ---- the market (from MarketBooks, on the loop) -----------------------------------

    def reset(self) -> None:
        """The books were reinstalled: every market may have changed."""
        self.dirty.update(self._market_views_symbols())

    def _market_views_symbols(self) -> list[str]:
        return [name.split("@", 1)[1] for name in self.subscribers if name.startswith("ticker@")]

    async def publish(self, deltas: dict[str, DepthDelta], batch: list[Published]) -> None:
        """Fan out one batch, yielding to the loop every ``YIELD_EVERY`` frames (each
        client's frames so far written in one go first)."""
        self._pending = {}
        try:
            await self._publish(deltas, batch)
            # The writes are the costly part (a system call each): in slices, so a REST
            # answer waits for one slice at most, never for the whole fan-out.
            while not self._flush(WRITES_PER_SLICE):
                await asyncio.sleep(0)
        finally:
            self._flush()
            self._pending = None

    async def _publish(self, deltas: dict[str, DepthDelta], batch: list[Published]) -> None:
        subscribers = self.subscribers
        mv = self._market_views
        for symbol, delta in deltas.items():
            self.dirty.add(symbol)
            name = "depth@" + symbol
            if name in subscribers:
                data = mv.depth_delta(
                    symbol, delta.first_update_id, delta.last_update_id, delta.sequence,
                    delta.levels.items(),
                )  # fmt: skip
                self.fan_out(name, encode({"stream": name, "data": data}), delta.published_ms)
                await self._pause()
        # One trades message per market per batch: the per-message cost of a fan-out is
        # per client, so a message a trade made 1,000 subscribers unaffordable (BENCHMARKS).
        trades: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        for item in batch:
            for t in item.output.trades:
                self.dirty.add(t.symbol)
                name = "trades@" + t.symbol
                if name in subscribers:
                    data = mv.public_trade(
                        t.symbol, t.trade_id, t.price, t.quantity, t.quote_quantity,
                        t.taker_side, t.executed_at,
                    )  # fmt: skip
                    if name in trades:
                        trades[name][1].append(data)
                    else:
                        trades[name] = (item.published_ms, [data])
        for name, (published, data_list) in trades.items():
            self.fan_out(name, encode({"stream": name, "data": data_list}), published)
            await self._pause()
        users = self.users
        if users:
            for item in batch:
                self._publish_user(item.output, item.published_ms, users)
                await self._pause()

    async def _pause(self) -> None:
        if self._writes >= YIELD_EVERY:
            self._writes = 0
            await asyncio.sleep(0)

    def _publish_user(
        self, output: Any, published: int, users: dict[int, set[StreamClient]]
    ) -> None:
        views = self._views
        for u in output.order_updates:
            mine = users.get(u.user_id)
            if mine:
                data = {"type": "order", **views.order_from_event(u)}
                self._to_user(mine, data, published)
        for t in output.trades:
            for user_id, order_id in (
                (t.maker_user_id, t.maker_order_id),
                (t.taker_user_id, t.taker_order_id),
            ):
                mine = users.get(user_id)
                if mine:
                    fill = views.fill(t, order_id)
                    data = {"type": "fill", "order_id": str(order_id), "symbol": t.symbol, **fill}
                    self._to_user(mine, data, published)
        for b in output.balance_updates:
            mine = users.get(b.user_id)
            if mine:
                data = {
                    "type": "balance",
                    "asset": b.asset,
                    "available": views.asset_amount(b.asset, b.available),
                    "locked": views.asset_amount(b.asset, b.locked),
                }
                self._to_user(mine, data, published)

    def _to_user(self, clients: set[StreamClient], data: dict[str, Any], published: int) -> None:
        self.broadcast(list(clients), encode({"stream": "user", "data": data}), published)
