"""Helpers for the gateway tests: a gateway served by uvicorn on the real broker, a real
SQLite store filled through ``apply()`` with outputs of the real engine core, and readers
of the ``orders`` log.

Ids and timestamps are fixed where the test controls them, so failures reproduce.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from engine.commands import (
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
    Withdraw,
)
from engine.engine import Engine
from engine.enums import OrderType, Side, TimeInForce
from engine.events import EngineOutput
from engine.markets import Markets
from exchange.codec import Codec
from exchange.kafka import ReadToEnd, make_consumer, where
from exchange.topics import Topics
from gateway.app import GatewayAPI, GatewayConfig
from gateway.auth.registry import KeyRegistry
from gateway.auth.signing import OPERATOR_KEY_ID
from gateway.server import ServerThread, create_gateway_app
from ops.broker import free_port
from ops.workload import user_commands
from settlement.sqlite_store import SqliteStore
from tests.support.kafka import skip_read_errors
from tests.support.signing import ByUser, Signer, new_signer

TS = 1_700_000_000_000
SEED_BASE = 1_000_000  # command ids of seeded outputs: far above the offsets tests produce
# The engine refuses commands for users it never created: the script's engine (and the
# pipeline's log) create users 1..TEST_USERS first, so every user id a test names exists.
TEST_USERS = 120


_key_versions = itertools.count(1)


class Keyring:
    """The keys of a test gateway: its operator, and a trader key per user, made on demand.

    Trader keys enter the gateway's registry through :meth:`KeyRegistry.apply`, the call the
    key feed makes for an ``ApiKeyUpdated`` (tests without an engine have no stream to feed
    it; the pipeline tests create users through the admin API instead).
    """

    def __init__(self, registry: KeyRegistry) -> None:
        self.registry = registry
        self.operator = new_signer()
        self.operator.api_key = OPERATOR_KEY_ID
        registry.set_operator(self.operator.public_key)
        self._traders: dict[int, Signer] = {}

    def trader(self, user_id: int) -> Signer:
        signer = self._traders.get(user_id)
        if signer is None:
            signer = self._traders[user_id] = new_signer()
            self.registry.apply(
                api_key=signer.api_key, user_id=user_id, role="TRADER",
                public_key_b64=signer.public_key, revoked=False, sequence=next(_key_versions),
            )  # fmt: skip
        return signer

    def adopt(self, user_id: int, signer: Signer) -> None:
        """Sign as ``signer`` for ``user_id`` from now on (a key made through the API)."""
        self._traders[user_id] = signer

    def revoke(self, signer: Signer) -> None:
        [user_id] = [u for u, s in self._traders.items() if s is signer]
        self.registry.apply(
            api_key=signer.api_key, user_id=user_id, role="TRADER",
            public_key_b64=signer.public_key, revoked=True, sequence=next(_key_versions),
        )  # fmt: skip


class AutoSigner(ByUser):
    """Signs each request as whoever it is for (:class:`tests.support.signing.ByUser`), with
    the keys of a :class:`Keyring`."""

    def __init__(self, keys: Keyring) -> None:
        super().__init__(keys.operator, keys.trader)
        self.keys = keys


def signer_for(keys: Keyring, path: str, query: str, content: bytes) -> Signer:
    """Whom a test request is signed as (see :class:`AutoSigner`)."""
    return AutoSigner(keys).signer_for(path, query, content)


@dataclass
class Gateway:
    """A running gateway and what it is wired to. ``client`` signs every request as the
    user it names (:class:`AutoSigner`); ``keys`` holds the keys."""

    url: str
    client: httpx.Client
    app: GatewayAPI
    bootstrap: str
    topics: Topics
    store: SqliteStore  # the writer (the gateway has its own read-only store on the file)
    store_path: Path
    keys: Keyring

    def signed(self, signer: Signer) -> httpx.Client:
        """A client that signs every request with ``signer`` (close it, or use ``with``)."""
        return httpx.Client(base_url=self.url, timeout=30, auth=signer)

    def create_user(self) -> tuple[int, Signer]:
        """A new user through the admin API (so the engine knows it), its key adopted by
        ``client``: (user id, its signer)."""
        signer = new_signer()
        response = self.client.post("/api/v1/admin/users", json={"public_key": signer.public_key})
        data = envelope_data(response, 201)
        assert isinstance(data, dict) and data["api_key"] == signer.api_key, data
        self.keys.adopt(data["user_id"], signer)
        return data["user_id"], signer

    def orders_log(self, codec: Codec) -> list[tuple[int, Command]]:
        return read_commands(self.bootstrap, self.topics.orders.name, codec)


@contextlib.contextmanager
def run_gateway(
    *,
    bootstrap: str,
    topics: Topics,
    store_path: Path,
    markets: Markets,
    codec: Codec,
    config: GatewayConfig | None = None,
    delivery_timeout_ms: int | None = None,
    init_schema: bool = True,
    wait_follower: bool = True,
    wait_market: bool = True,
) -> Iterator[Gateway]:
    writer = SqliteStore(store_path)
    if init_schema:
        writer.init_schema()
    reader = SqliteStore(store_path, readonly=True)
    app = create_gateway_app(
        bootstrap=bootstrap,
        topics=topics,
        markets=markets,
        codec=codec,
        store=reader,
        config=config or GatewayConfig(rate_limits=None),
        delivery_timeout_ms=delivery_timeout_ms,
    )
    keys = Keyring(app.state.keys)
    try:
        with (
            ServerThread(app, free_port()) as url,
            httpx.Client(base_url=url, timeout=30, auth=AutoSigner(keys)) as c,
        ):
            if wait_follower:
                assert app.state.follower.assigned.wait(30), "the follower never got assigned"
                if wait_market:  # (a log of hand-made outputs has no market to load)
                    assert app.state.market.feed.caught_up.wait(30), "the market books never loaded"
            yield Gateway(url, c, app, bootstrap, topics, writer, store_path, keys)
    finally:
        reader.close()
        writer.close()


def read_commands(
    bootstrap: str, topic: str, codec: Codec, timeout_s: float = 30.0
) -> list[tuple[int, Command]]:
    """Every record of the single-partition orders topic as (offset, decoded command)."""
    consumer = make_consumer(bootstrap, "gateway-test-reader", **{"enable.partition.eof": True})
    reading = ReadToEnd(consumer, {(topic, 0): 0}, timeout_s=timeout_s, on_error=skip_read_errors)
    out: list[tuple[int, Command]] = []
    try:
        for msg in reading:
            offset = where(msg)[2]
            out.append((offset, codec.decode_command(msg.value() or b"", command_id=offset)))
    finally:
        consumer.close()
    if reading.pending:
        raise AssertionError(f"{topic} was not read to its end in {timeout_s}s")
    return out


@dataclass
class Script:
    """Drives the real engine core in-process to produce realistic outputs for the store.

    Command ids start at ``SEED_BASE`` (a new order's id is its command id), timestamps at
    ``TS``; both go up by one per command.
    """

    markets: Markets
    engine: Engine = field(init=False)
    next_id: int = SEED_BASE
    outputs: list[EngineOutput] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(self.markets)
        # Command id 0 for these, outside the ids the tests compute from SEED_BASE.
        for command in user_commands(TEST_USERS, timestamp_ms=TS):
            self.outputs.append(self.engine.apply(replace(command, command_id=0)))

    users: int = TEST_USERS  # users the engine knows: 1..users

    def _apply(self, make: type, **fields: object) -> EngineOutput:
        user = fields.get("user_id")
        while isinstance(user, int) and self.users < user:  # the engine refuses unknown users
            self.users += 1
            self._apply(CreateUser, api_key=f"kseed{self.users}", public_key="-")
        cid = self.next_id
        self.next_id += 1
        extra = {"order_id": cid} if make is PlaceOrder else {}
        command = make(command_id=cid, timestamp_ms=TS + cid - SEED_BASE, **extra, **fields)
        output = self.engine.apply(command)
        self.outputs.append(output)
        return output

    def create_user(self, signer: Signer) -> EngineOutput:
        """A user with ``signer``'s key (the engine assigns the next user id)."""
        self.users += 1
        return self._apply(CreateUser, api_key=signer.api_key, public_key=signer.public_key)

    def revoke(self, signer: Signer) -> EngineOutput:
        return self._apply(RevokeApiKey, api_key=signer.api_key)

    def deposit(self, user: int, asset: str, amount: int) -> EngineOutput:
        return self._apply(Deposit, user_id=user, asset=asset, amount=amount)

    def withdraw(self, user: int, asset: str, amount: int) -> EngineOutput:
        return self._apply(Withdraw, user_id=user, asset=asset, amount=amount)

    def place(
        self,
        user: int,
        side: Side,
        price: int | None,
        quantity: int,
        *,
        symbol: str = "BTC_USDT",
        order_type: OrderType = OrderType.LIMIT,
        tif: TimeInForce = TimeInForce.GTC,
        client_order_id: str | None = None,
    ) -> int:
        order_id = self.next_id
        self._apply(
            PlaceOrder,
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=order_type,
            time_in_force=tif,
            price=price,
            quantity=quantity,
            client_order_id=client_order_id,
        )
        return order_id

    def cancel(self, user: int, order_id: int, symbol: str = "BTC_USDT") -> EngineOutput:
        return self._apply(CancelOrder, user_id=user, symbol=symbol, order_id=order_id)

    def flush_to(self, store: SqliteStore) -> None:
        store.apply(self.outputs)
        self.outputs = []


def envelope_error(response: httpx.Response) -> tuple[int, str]:
    """(status, error code) of an error envelope, checking its shape."""
    body = response.json()
    assert body["success"] is False, body
    assert set(body) == {"success", "error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["content-type"].startswith("application/json")
    return response.status_code, body["error"]["code"]


def envelope_data(response: httpx.Response, status: int) -> object:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True and set(body) == {"success", "data"}, body
    return body["data"]
