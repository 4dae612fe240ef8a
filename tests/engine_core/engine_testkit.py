"""Shared helpers for the engine tests: markets, a command factory, canonical serialization.

Fixed ids and timestamps: every command a :class:`Kit` builds gets the next command id (also
the order id of a new order) and a timestamp derived from it, so failures are reproducible.

Users: the engine refuses commands for users it never created, and assigns user ids 1, 2, 3,
... in creation order. A :class:`Kit` therefore starts by creating users 1..``users``
(:data:`KIT_USERS` by default) through ``CreateUser`` commands, which take the first command
ids; the ids a test uses for its users are then the engine's own.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import os
from typing import Any

from hypothesis import HealthCheck, settings

from engine import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    Engine,
    EngineOutput,
    Markets,
    OrderType,
    PlaceOrder,
    RevokeApiKey,
    Role,
    Side,
    StpMode,
    TimeInForce,
    Withdraw,
    parse_markets,
)
from engine.invariants import check_invariants
from engine.markets import DEFAULT_MARKETS_PATH

BTC = "BTC_USDT"
ETH = "ETH_USDT"
BUY = Side.BUY
SELL = Side.SELL
T0 = 1_700_000_000_000
KIT_USERS = 9  # users 1..9 exist in every kit's engine unless a test asks otherwise


def key_id(user: int, n: int = 0) -> str:
    """A fixed key id for ``user``'s ``n``-th key, shaped like the gateway's ("k" + 24 hex)."""
    return f"k{user:012x}{n:012x}"


def public_key(user: int, n: int = 0) -> str:
    """A fixed stand-in public key (the engine treats it as an opaque string)."""
    return base64.b64encode(bytes([user % 256, n % 256]) * 16).decode()


def register_profiles() -> None:
    common: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        "print_blob": True,
    }
    settings.register_profile("ci", max_examples=60, stateful_step_count=60, **common)
    settings.register_profile("deep", max_examples=1500, stateful_step_count=150, **common)


def engine_settings() -> settings:
    """The profile named by HYPOTHESIS_PROFILE (default "ci")."""
    register_profiles()
    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def raw_markets() -> dict[str, Any]:
    """The shipped markets.json, decoded (decimals stay strings)."""
    with open(DEFAULT_MARKETS_PATH, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def make_markets(maker_bps: int = 0, taker_bps: int = 0) -> Markets:
    raw = copy.deepcopy(raw_markets())
    for spec in raw["symbols"].values():
        spec["maker_fee_bps"] = maker_bps
        spec["taker_fee_bps"] = taker_bps
    return parse_markets(raw)


class Kit:
    """Builds commands with sequential ids and applies them, checking invariants each time.

    It also keeps every market's levels from the outputs' depth updates alone, as a market-data
    reader would, and checks after each command that they equal the engine's book and that the
    update ids have no gap.
    """

    def __init__(self, engine: Engine, first_id: int = 1, users: int = KIT_USERS) -> None:
        self.engine = engine
        self.next_id = first_id
        self.depth: dict[str, dict[tuple[Side, int], tuple[int, int]]] = {
            symbol: {
                (lv.side, lv.price): (lv.quantity, lv.order_count)
                for lv in engine.depth_levels(symbol)
            }
            for symbol in engine.markets.symbols
        }
        self.update_ids = {symbol: engine.update_id(symbol) for symbol in engine.markets.symbols}
        self.create_users(users)

    def create_users(self, count: int) -> None:
        """Create users until ids 1..``count`` exist (none when the engine already has them,
        e.g. restored from a snapshot)."""
        while self.engine.next_user_id <= count:
            user = self.engine.next_user_id
            out = self.apply(self.create_user(key_id(user), public_key(user)))
            assert [u.user_id for u in out.user_creations] == [user], out

    def create_user(
        self, api_key: str, public_key: str, *, role: Role = Role.TRADER, label: str | None = None
    ) -> CreateUser:
        command_id, ts = self._ids()
        return CreateUser(
            command_id=command_id,
            timestamp_ms=ts,
            api_key=api_key,
            public_key=public_key,
            role=role,
            label=label,
        )

    def add_key(self, user: int, api_key: str, public_key: str) -> AddApiKey:
        command_id, ts = self._ids()
        return AddApiKey(
            command_id=command_id,
            timestamp_ms=ts,
            user_id=user,
            api_key=api_key,
            public_key=public_key,
        )

    def revoke_key(self, api_key: str) -> RevokeApiKey:
        command_id, ts = self._ids()
        return RevokeApiKey(command_id=command_id, timestamp_ms=ts, api_key=api_key)

    def cancel_all(self, user: int, *, symbol: str = BTC) -> CancelAllOrders:
        command_id, ts = self._ids()
        return CancelAllOrders(command_id=command_id, timestamp_ms=ts, user_id=user, symbol=symbol)

    def _ids(self) -> tuple[int, int]:
        command_id = self.next_id
        self.next_id += 1
        return command_id, T0 + command_id

    def deposit(self, user: int, asset: str, amount: int) -> Deposit:
        command_id, ts = self._ids()
        return Deposit(
            command_id=command_id, timestamp_ms=ts, user_id=user, asset=asset, amount=amount
        )

    def withdraw(self, user: int, asset: str, amount: int) -> Withdraw:
        command_id, ts = self._ids()
        return Withdraw(
            command_id=command_id, timestamp_ms=ts, user_id=user, asset=asset, amount=amount
        )

    def limit(
        self,
        user: int,
        side: Side,
        price: int | None,
        quantity: int,
        *,
        symbol: str = BTC,
        tif: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
        client_order_id: str | None = None,
        stp: StpMode | None = None,
        order_id: int | None = None,
    ) -> PlaceOrder:
        command_id, ts = self._ids()
        return PlaceOrder(
            command_id=command_id,
            timestamp_ms=ts,
            order_id=command_id if order_id is None else order_id,
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.LIMIT,
            time_in_force=tif,
            post_only=post_only,
            price=price,
            quantity=quantity,
            client_order_id=client_order_id,
            stp_mode=stp,
        )

    def market(
        self,
        user: int,
        side: Side,
        quantity: int,
        *,
        symbol: str = BTC,
        tif: TimeInForce = TimeInForce.GTC,
        stp: StpMode | None = None,
        price: int | None = None,
        post_only: bool = False,
    ) -> PlaceOrder:
        command_id, ts = self._ids()
        return PlaceOrder(
            command_id=command_id,
            timestamp_ms=ts,
            order_id=command_id,
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            time_in_force=tif,
            post_only=post_only,
            price=price,
            quantity=quantity,
            stp_mode=stp,
        )

    def cancel(
        self,
        user: int,
        order_id: int | None = None,
        *,
        client_order_id: str | None = None,
        symbol: str = BTC,
    ) -> CancelOrder:
        command_id, ts = self._ids()
        return CancelOrder(
            command_id=command_id,
            timestamp_ms=ts,
            user_id=user,
            symbol=symbol,
            order_id=order_id,
            client_order_id=client_order_id,
        )

    def amend(
        self,
        user: int,
        order_id: int | None = None,
        quantity: int = 1,
        *,
        client_order_id: str | None = None,
        symbol: str = BTC,
    ) -> AmendOrder:
        command_id, ts = self._ids()
        return AmendOrder(
            command_id=command_id,
            timestamp_ms=ts,
            user_id=user,
            symbol=symbol,
            order_id=order_id,
            client_order_id=client_order_id,
            quantity=quantity,
        )

    def apply(self, command: Command) -> EngineOutput:
        output = self.engine.apply(command)
        check_invariants(self.engine)
        self.follow_depth(output)
        return output

    def follow_depth(self, output: EngineOutput) -> None:
        """Apply ``output``'s depth updates to the kit's books; check them against the engine."""
        engine = self.engine
        for update in output.depth_updates:
            symbol = update.symbol
            assert update.update_id == self.update_ids[symbol] + 1, "update ids have a gap"
            self.update_ids[symbol] = update.update_id
            book = self.depth[symbol]
            for lv in update.levels:
                if lv.quantity:
                    book[(lv.side, lv.price)] = (lv.quantity, lv.order_count)
                else:
                    assert lv.order_count == 0, lv
                    book.pop((lv.side, lv.price), None)
        for symbol, book in self.depth.items():
            assert engine.update_id(symbol) == self.update_ids[symbol], "a change without update"
            assert book == {
                (lv.side, lv.price): (lv.quantity, lv.order_count)
                for lv in engine.depth_levels(symbol)
            }, f"{symbol}: the depth updates do not rebuild the engine's book"

    def fund(self, user: int, **amounts: int) -> None:
        for asset, amount in amounts.items():
            out = self.apply(self.deposit(user, asset, amount))
            assert not out.rejections, out.rejections


def canonical(output: EngineOutput) -> str:
    """A canonical, deterministic text form of an output (sorted-key JSON of asdict)."""
    return json.dumps(dataclasses.asdict(output), sort_keys=True, separators=(",", ":"))


def digest_outputs(outputs: list[EngineOutput]) -> str:
    h = hashlib.sha256()
    for output in outputs:
        h.update(canonical(output).encode())
        h.update(b"\n")
    return h.hexdigest()


def random_commands(seed: int, n: int, users: int = 6, access: bool = True) -> list[Command]:
    """A seeded random command stream touching every command kind, order type and TIF
    (amends included since issue 15).

    It opens with the creation of users 1..``users``, then funds them. With ``access``, a
    second generator (so the trading stream draws exactly what it drew before users existed)
    mixes in cancel-alls, key additions and revocations (some of unknown or already revoked
    keys), and commands for a user that does not exist.

    ``random.Random(seed)`` is used here, in the tests, never in the engine.
    """
    import random

    rng = random.Random(seed)
    extra = random.Random(seed + 1_000_003)
    kit = Kit(Engine(make_markets()), users=0)  # only its id counter is used
    out: list[Command] = []
    placed: list[tuple[int, int, str]] = []
    keys: list[str] = []
    for user in range(1, users + 1):
        keys.append(key_id(user))
        out.append(kit.create_user(key_id(user), public_key(user), label=f"user {user}"))
    for user in range(1, users + 1):
        for asset, amount in (("BTC", 400_000), ("ETH", 4_000_000), ("USDT", 4_000_000)):
            out.append(kit.deposit(user, asset, amount))
    for _ in range(n):
        if access and extra.random() < 0.05:
            r = extra.random()
            who = extra.randint(1, users + 1)  # users + 1 was never created
            if r < 0.4:
                out.append(kit.cancel_all(who, symbol=BTC if extra.random() < 0.6 else ETH))
            elif r < 0.6:
                keys.append(key_id(who, len(keys)))
                out.append(kit.add_key(who, keys[-1], public_key(who, len(keys))))
            elif r < 0.8:
                out.append(kit.revoke_key(extra.choice([*keys, "k-never-added"])))
            elif r < 0.9:
                out.append(kit.deposit(users + 1, "USDT", 1_000))
            else:
                out.append(kit.limit(users + 1, SELL, 100, 1))
            continue
        r = rng.random()
        user = rng.randint(1, users)
        symbol = BTC if rng.random() < 0.6 else ETH
        side = BUY if rng.random() < 0.5 else SELL
        if r < 0.55:
            order = kit.limit(
                user,
                side,
                rng.randint(95, 105),
                rng.randint(1, 20),
                symbol=symbol,
                tif=rng.choice([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK]),
                post_only=rng.random() < 0.05,
                client_order_id=rng.choice([None] * 6 + ["x", "y"]),
                stp=rng.choice([None, None, *StpMode]),
            )
            placed.append((order.order_id, user, symbol))
            out.append(order)
        elif r < 0.65:
            out.append(
                kit.market(
                    user, side, rng.randint(1, 30), symbol=symbol, stp=rng.choice([None, *StpMode])
                )
            )
        elif r < 0.85 and placed:
            order_id, owner, on = placed[rng.randrange(len(placed))]
            if rng.random() < 0.8:
                user, symbol = owner, on
            if rng.random() < 0.3:  # an amend of a recent order (more likely still open)
                order_id, owner, on = placed[-1 - rng.randrange(min(4, len(placed)))]
                if rng.random() < 0.9:
                    user, symbol = owner, on
                out.append(kit.amend(user, order_id, rng.randint(1, 12), symbol=symbol))
            else:
                out.append(kit.cancel(user, order_id, symbol=symbol))
        elif r < 0.90:
            out.append(kit.cancel(user, client_order_id=rng.choice(["x", "y"]), symbol=symbol))
        elif r < 0.95:
            out.append(
                kit.deposit(user, rng.choice(["BTC", "ETH", "USDT"]), rng.randint(1, 50_000))
            )
        else:
            out.append(
                kit.withdraw(user, rng.choice(["BTC", "ETH", "USDT"]), rng.randint(1, 100_000))
            )
    return out
