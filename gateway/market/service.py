"""The gateway's market data: the feed, the books, the stream hub and their periodic tasks.

One :class:`MarketData` per app, built by the composition root (``gateway.server``) and
handed to :func:`gateway.app.create_app`, which starts it in the app's lifespan and calls
:meth:`MarketData.install` to add its routes (public REST market data and ``GET /ws``).

Threads: the feed's consumer thread decodes and orders outputs; everything else (books,
hub, REST depth answers, WebSocket sends) runs on the event loop, so nothing here takes a
lock. The only blocking work on the loop's behalf (ticker and trade queries on the store)
runs in the threadpool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from engine.markets import Markets
from gateway.market import routes
from gateway.market.books import MarketBooks
from gateway.market.feed import MarketFeed, Published, Start
from gateway.market.tickers import TickerService
from gateway.market.views import MarketViews
from gateway.streams import ws
from gateway.streams.auth import Authenticator
from gateway.streams.hub import StreamConfig, StreamHub, encode
from gateway.streams.protocol import HEARTBEAT_CLOSE_CODE
from gateway.views import Views
from settlement.market_data import MarketDataStore

GOING_AWAY = 1001


class MarketData:
    """Feed -> books -> hub, plus the heartbeat and the ticker pushes."""

    def __init__(
        self,
        *,
        markets: Markets,
        feed: MarketFeed,
        store: MarketDataStore,
        config: StreamConfig | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.symbols = frozenset(markets.symbols)
        self.feed = feed
        self.views = MarketViews(markets)
        self.books = MarketBooks(sorted(markets.symbols), on_broken=feed.request_restart)
        cfg = config or StreamConfig()
        self.hub = StreamHub(
            Views(markets), self.views, max_queue=cfg.max_queue,
            max_buffer_bytes=cfg.max_buffer_bytes, raw_frames=cfg.raw_frames,
        )  # fmt: skip
        self.tickers = TickerService(store=store, books=self.books, views=self.views)
        self.authenticator = authenticator
        self._ping_interval_s = cfg.ping_interval_s
        self._ping_timeout_s = cfg.ping_timeout_s
        self._ticker_interval_s = cfg.ticker_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[Start | list[Published]] | None = None

    def install(self, app: FastAPI) -> None:
        """Expose the parts on the app's state and add the routes."""
        app.state.market = self
        app.state.streams = self.hub
        app.state.stream_symbols = self.symbols
        app.state.stream_auth = self.authenticator
        app.include_router(routes.router)
        app.include_router(ws.router)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        inbox: asyncio.Queue[Start | list[Published]] = asyncio.Queue()
        self._inbox = inbox
        self.feed.start(loop, inbox.put_nowait, inbox.put_nowait)
        self._tasks = [
            loop.create_task(self._apply_forever(inbox)),
            loop.create_task(self._heartbeat()),
            loop.create_task(self._push_tickers()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for client in list(self.hub.clients):
            await self.hub.close(client, GOING_AWAY, "server shutting down")
        await run_in_threadpool(self.feed.stop)

    def ready(self) -> str | None:
        reason = self.feed.ready()
        if reason is None and self.books.broken:
            return "market feed: restarting"
        return reason

    async def _apply_forever(self, inbox: asyncio.Queue[Start | list[Published]]) -> None:
        """Feed items in order: a start installs the books; a batch is applied to them at
        once (a depth answer never sees half a batch), then fanned out, yielding to the
        loop between slices of writes so REST requests are served meanwhile. Batches that
        queued up meanwhile are applied and fanned out together."""
        books = self.books
        hub = self.hub
        feed = self.feed
        held: Start | None = None  # a start found while merging: it goes next, alone
        while True:
            item = held if held is not None else await inbox.get()
            held = None
            if isinstance(item, Start):
                books.on_start(item)
                hub.reset()
                continue
            # Batches that queued up while the loop was busy go out in one fan-out: its cost
            # is one write per subscriber however much it carries, so a loop that falls
            # behind catches up instead of falling further behind (BENCHMARKS.md, streams).
            batches = [item]
            while not inbox.empty():
                more = inbox.get_nowait()
                if isinstance(more, Start):
                    held = more
                    break
                batches.append(more)
            batch = item if len(batches) == 1 else [p for b in batches for p in b]
            try:
                deltas = books.apply(batch)
                if deltas is not None:
                    await hub.publish(deltas, batch)
            finally:
                for _ in batches:
                    feed.done()

    async def _heartbeat(self) -> None:
        hub = self.hub
        interval = self._ping_interval_s
        limit = interval + self._ping_timeout_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            ping = encode({"op": "ping", "ts": time.time_ns() // 1_000_000})
            for client in list(hub.clients):
                if now - client.last_seen > limit:
                    asyncio.get_running_loop().create_task(
                        hub.close(client, HEARTBEAT_CLOSE_CODE, "no pong")
                    )
                else:
                    hub.offer(client, ping, 0)

    async def _push_tickers(self) -> None:
        hub = self.hub
        while True:
            await asyncio.sleep(self._ticker_interval_s)
            wanted = [s for s in sorted(hub.dirty) if "ticker@" + s in hub.subscribers]
            hub.dirty.clear()
            for symbol in wanted:
                try:
                    data = await self.tickers.ticker(symbol)
                except Exception:  # the store is away: the next change pushes again
                    hub.dirty.add(symbol)
                    continue
                name = "ticker@" + symbol
                hub.fan_out(name, encode({"stream": name, "data": data}), 0)
