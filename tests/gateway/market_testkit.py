"""Helpers of the market-data tests (issue #15): the whole pipeline on the real broker
(engine service, settlement into SQLite, gateways), WebSocket clients, and the engine's own
book recomputed from the ``orders`` log (the engine is deterministic, so replaying the log
through a fresh core gives exactly the engine service's state).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gateway_testkit import AutoSigner, Keyring, read_commands
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from engine.commands import CreateUser
from engine.engine import Engine
from engine.enums import Role, Side
from engine.markets import Markets
from engine.service.runner import EngineService, EngineServiceConfig
from engine.service.snapshots import FileSnapshotStore
from exchange.codec import Codec
from exchange.kafka import make_admin, make_producer
from exchange.topics import Topics, ensure_topics
from gateway.app import GatewayAPI, GatewayConfig
from gateway.server import ServerThread, create_gateway_app
from gateway.streams.hub import StreamConfig
from ops.broker import free_port
from settlement.service import SettlementConfig, SettlementService
from settlement.sqlite_store import SqliteStore

WAIT = "?wait=true&timeout_ms=10000"
USERS = 800  # users 1..USERS exist in every pipeline (the engine refuses unknown users)


def create_users(bootstrap: str, topics: Topics, codec: Codec, n: int) -> None:
    """Register users 1..n: the first ``n`` commands of a fresh ``orders`` log are
    ``CreateUser``s, and the engine numbers users in the order it creates them. Published
    straight to the log: the admin route that makes users (issue #14) is not on this branch."""
    producer = make_producer(bootstrap)
    for i in range(1, n + 1):
        command = CreateUser(
            command_id=0, timestamp_ms=1_700_000_000_000 + i,
            api_key=f"k{i:024d}", public_key=f"test-public-key-{i}", role=Role.TRADER,
        )  # fmt: skip
        producer.produce(topics.orders.name, codec.encode_command(command), partition=0)
    assert producer.flush(30) == 0


@dataclass
class Pipeline:
    """Engine service and settlement running on fresh topics; gateways are added on it."""

    bootstrap: str
    topics: Topics
    store_path: Path
    snapshots_dir: Path
    markets: Markets
    codec: Codec


@contextlib.contextmanager
def run_pipeline(
    bootstrap: str, tmp: Path, markets: Markets, codec: Codec, *, snapshot_every: int = 10**9
) -> Iterator[Pipeline]:
    topics = Topics.with_prefix(f"m{uuid.uuid4().hex[:10]}-")
    ensure_topics(make_admin(bootstrap), topics.all())
    store_path = tmp / "exchange.sqlite3"
    snapshots_dir = tmp / "snapshots"
    engine = EngineService(
        bootstrap=bootstrap,
        config=EngineServiceConfig(
            orders_topic=topics.orders.name,
            output_topic=topics.engine_output.name,
            orders_dlq_topic=topics.orders_dlq.name,
            group_id=f"engine-{topics.orders.name}",
            snapshot_every_commands=snapshot_every,
            snapshot_every_s=3600.0,
            snapshot_fork=False,
        ),
        codec=codec,
        new_engine=lambda: Engine(markets),
        restore_engine=lambda data: Engine.restore(data, markets),
        snapshots=FileSnapshotStore(snapshots_dir),
    )
    settlement_store = SqliteStore(store_path)
    settlement_store.init_schema()
    settlement = SettlementService(
        bootstrap=bootstrap,
        config=SettlementConfig(
            output_topic=topics.engine_output.name,
            output_dlq_topic=topics.engine_output_dlq.name,
            group_id=f"settlement-{topics.orders.name}",
            batch_max_ms=10,
        ),
        codec=codec,
        store=settlement_store,
    )
    create_users(bootstrap, topics, codec, USERS)
    stop = threading.Event()
    threads = [
        threading.Thread(target=engine.run, args=(stop,), daemon=True),
        threading.Thread(target=settlement.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        yield Pipeline(bootstrap, topics, store_path, snapshots_dir, markets, codec)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        settlement_store.close()


@dataclass
class MarketGateway:
    url: str
    ws_url: str
    client: httpx.Client
    app: GatewayAPI
    keys: Keyring


@contextlib.contextmanager
def run_market_gateway(
    pipe: Pipeline, *, streams: StreamConfig | None = None, snapshots: bool = False
) -> Iterator[MarketGateway]:
    reader = SqliteStore(pipe.store_path, readonly=True)
    app = create_gateway_app(
        bootstrap=pipe.bootstrap,
        topics=pipe.topics,
        markets=pipe.markets,
        codec=pipe.codec,
        store=reader,
        config=GatewayConfig(rate_limits=None),
        snapshots=FileSnapshotStore(pipe.snapshots_dir) if snapshots else None,
        streams=streams,
    )
    keys = Keyring(app.state.keys)  # requests signed as the user they name (the operator's)
    try:
        with (
            ServerThread(app, free_port()) as url,
            httpx.Client(base_url=url, timeout=30, auth=AutoSigner(keys)) as c,
        ):
            assert app.state.follower.assigned.wait(30), "the follower never got assigned"
            assert app.state.market.feed.caught_up.wait(90), "the market books never loaded"
            yield MarketGateway(url, "ws" + url[4:] + "/ws", c, app, keys)
    finally:
        reader.close()


# ---- the engine's book, from the log ------------------------------------------------


def engine_from_log(pipe: Pipeline) -> Engine:
    """The engine service's state, recomputed: every ``orders`` command through a fresh core
    (the codec gives each command its offset as id, as the engine service does)."""
    engine = Engine(pipe.markets)
    for _, command in read_commands(pipe.bootstrap, pipe.topics.orders.name, pipe.codec):
        engine.apply(command)
    return engine


def engine_levels(engine: Engine, symbol: str) -> tuple[list[list[int]], list[list[int]]]:
    """(bids, asks) of the engine's book as [[price ticks, lots], ...], best first."""
    bids = [[p, q] for p, q in engine.depth(symbol, Side.BUY)]
    asks = [[p, q] for p, q in engine.depth(symbol, Side.SELL)]
    return bids, asks


# ---- WebSocket clients ----------------------------------------------------------------


@dataclass
class StreamReader:
    """A WebSocket client whose messages a thread collects (JSON-decoded)."""

    ws: ClientConnection
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed_code: int | None = None
    closed_reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def start(self) -> StreamReader:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            for raw in self.ws:
                with self.lock:
                    self.messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
        self.closed_code = self.ws.close_code
        self.closed_reason = self.ws.close_reason

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            msgs = self.snapshot()
            for m in msgs[seen:]:
                if predicate(m):
                    return m
            seen = len(msgs)
            time.sleep(0.01)
        raise AssertionError(f"no matching message in {timeout_s}s; got {self.snapshot()[-5:]}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.thread is not None:
            self.thread.join(5)


def open_stream(ws_url: str, **kwargs: Any) -> StreamReader:
    ws = connect(ws_url, open_timeout=10, **kwargs)
    ws.__enter__()  # what `with connect(...) as ws` does; StreamReader.close() closes it
    return StreamReader(ws).start()


class StalledClient:
    """A WebSocket client that stops reading after its handshake: a raw socket with a tiny
    receive buffer driven by websockets' sans-I/O protocol, so nothing reads on its behalf
    (a library client's background thread would keep draining the socket)."""

    def __init__(self, url: str, ws_url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.sock.settimeout(10)
        self.proto = ClientProtocol(parse_uri(ws_url), max_size=None)
        self.proto.send_request(self.proto.connect())
        self._flush()
        while not self.proto.handshake_exc and not self._events():
            self.proto.receive_data(self.sock.recv(65536))
        assert self.proto.state is State.OPEN, self.proto.handshake_exc

    def _events(self) -> list[Any]:
        return self.proto.events_received()

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            self.sock.sendall(chunk)

    def send(self, message: dict[str, Any]) -> None:
        self.proto.send_text(json.dumps(message).encode())
        self._flush()

    def read_to_close(self, timeout_s: float = 30.0) -> tuple[int | None, str | None]:
        """Read everything the server sent up to its close frame: (code, reason)."""
        deadline = time.monotonic() + timeout_s
        while self.proto.close_rcvd is None and time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 20)
            except (TimeoutError, OSError):
                break
            if not data:
                self.proto.receive_eof()
                break
            self.proto.receive_data(data)
            self._events()
        rcvd = self.proto.close_rcvd
        return (None, None) if rcvd is None else (rcvd.code, rcvd.reason)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
