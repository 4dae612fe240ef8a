"""The command service: what a command request does, whatever transport carried it.

Commands (create, cancel, deposit, withdraw) are validated and scaled to integers here, once,
then encoded and published to the single-partition ``orders`` topic. The client gets 202 as
soon as the broker acknowledged the record; its offset is the command id and a new order's
id. With ``?wait=true`` the request then waits (bounded) for the engine's output for that
command id and answers 200 with the result, or 202 if the engine did not answer in time.

Each command is a *core* method ``(body, wait, timeout_ms) -> (status, payload)``: the
FastAPI routes of :mod:`gateway.routes.commands` call it, and so does the framework-free path
of :mod:`gateway.fastpath` (the hot path), so both answer the same by construction. The order
rules the engine also checks come from :mod:`engine.validation` (one copy of each).
"""

from __future__ import annotations

import time
from typing import Protocol

from engine.commands import CancelAllOrders, CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from engine.enums import CommandKind
from engine.events import EngineOutput
from engine.markets import Markets
from engine.validation import order_shape_error
from gateway.auth.policy import CANCEL_ALL_PATH
from gateway.auth.principal import acting_user
from gateway.bodies import parse_json, validate
from gateway.convert import amount_to_minor, price_to_ticks, quantity_to_lots
from gateway.envelope import ok_body
from gateway.errors import ApiError, ErrorCode, clip
from gateway.fastpath import CommandCore
from gateway.publisher import CommandPublisher
from gateway.results import OutputFollower
from gateway.schemas import (
    CancelAllRequest,
    CancelOrderRequest,
    FundsRequest,
    PlaceOrderRequest,
)
from gateway.views import Json, Views
from settlement.store import SettlementStore

CREATE_PATH = "/api/v1/order/create"
CANCEL_PATH = "/api/v1/order/cancel"
DEPOSIT_PATH = "/api/v1/deposit"
WITHDRAW_PATH = "/api/v1/withdraw"
UNKNOWN_USER = "UNKNOWN_USER"  # the engine's RejectReason for a user it does not know


class CommandEncoder(Protocol):
    """What the service needs of :class:`exchange.codec.Codec`."""

    def encode_command(self, command: Command) -> bytes: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandService:
    """Validates, publishes and (with ``wait``) reports the result of each command."""

    def __init__(
        self,
        *,
        markets: Markets,
        codec: CommandEncoder,
        publisher: CommandPublisher,
        follower: OutputFollower,
        store: SettlementStore,
        views: Views,
    ) -> None:
        self._symbols = markets.symbols
        self._assets = markets.assets
        self._encode = codec.encode_command
        self._publish = publisher.publish
        self._follower = follower
        self._store = store
        self._views = views

    @property
    def cores(self) -> dict[str, CommandCore]:
        """The core of each command route, by path (the fast path's table)."""
        return {
            CREATE_PATH: self.create,
            CANCEL_PATH: self.cancel,
            CANCEL_ALL_PATH: self.cancel_all,
            DEPOSIT_PATH: self.deposit,
            WITHDRAW_PATH: self.withdraw,
        }

    # ---- cores: (body, wait, timeout_ms) -> (status, payload) ---------------------------

    async def create(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        req = validate(PlaceOrderRequest, parse_json(body))
        command = self.place_command(req, acting_user(req.user_id))
        offset, output = await self._publish_and_wait(self._encode(command), wait, timeout_ms)
        if output is not None:
            result = self._order_result(output, offset, command)
            if result is not None:
                return 200, ok_body(result)
        return 202, ok_body(
            {"order_id": str(offset), "client_order_id": req.client_order_id,
             "status": "ACCEPTED"}
        )  # fmt: skip

    async def cancel(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        """Publish the cancel; the engine alone decides (the read model is never asked, so a
        cancel right after a place works however far settlement lags)."""
        req = validate(CancelOrderRequest, parse_json(body))
        user_id = acting_user(req.user_id)
        if req.symbol not in self._symbols:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        order_id = None if req.order_id is None else int(req.order_id)
        command = CancelOrder(
            command_id=0, timestamp_ms=now_ms(), user_id=user_id, symbol=req.symbol,
            order_id=order_id, client_order_id=req.client_order_id,
        )  # fmt: skip
        offset, output = await self._publish_and_wait(self._encode(command), wait, timeout_ms)
        if output is not None:
            if output.rejections:
                # Unknown, completed, another user's or another market's: one answer, so a
                # cancel reveals nothing about other users' orders.
                raise ApiError(ErrorCode.ORDER_NOT_FOUND, _not_found_message(req))
            updates = output.order_updates
            for update in reversed(updates):
                if order_id is None or update.order_id == order_id:
                    return 200, ok_body(self._views.order_from_event(update))
        return 202, ok_body({"command_id": str(offset), "status": "CANCEL_REQUESTED"})

    async def cancel_all(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        """One engine command cancels all of the user's open orders in the market."""
        req = validate(CancelAllRequest, parse_json(body))
        user_id = acting_user(req.user_id)
        if req.symbol not in self._symbols:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        command = CancelAllOrders(
            command_id=0, timestamp_ms=now_ms(), user_id=user_id, symbol=req.symbol
        )
        offset, output = await self._publish_and_wait(self._encode(command), wait, timeout_ms)
        if output is not None:
            if output.rejections:  # an unknown user has nothing open
                return 200, ok_body({"cancelled": []})
            last = {u.order_id: u for u in output.order_updates}  # the last report wins
            cancelled = [self._views.order_from_event(last[oid]) for oid in sorted(last)]
            return 200, ok_body({"cancelled": cancelled})
        return 202, ok_body({"command_id": str(offset), "status": "CANCEL_REQUESTED"})

    async def deposit(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        return await self._funds(CommandKind.DEPOSIT, body, wait, timeout_ms)

    async def withdraw(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        return await self._funds(CommandKind.WITHDRAW, body, wait, timeout_ms)

    async def publish_command(
        self, command: Command, wait: bool, timeout_ms: int
    ) -> tuple[int, EngineOutput | None]:
        """Publish ``command``; with ``wait`` also wait for its output (None on timeout).
        For services outside this one (gateway.admin)."""
        return await self._publish_and_wait(self._encode(command), wait, timeout_ms)

    # ---- commands from requests ---------------------------------------------------------

    def place_command(self, req: PlaceOrderRequest, user_id: int) -> PlaceOrder:
        """The engine command of a valid request; ApiError for what the engine would refuse
        as INVALID_ORDER/PRICE/QUANTITY or an unknown symbol."""
        spec = self._symbols.get(req.symbol)
        if spec is None:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        tif = req.time_in_force
        shape_error = order_shape_error(req.order_type, tif, req.post_only, req.price is not None)
        if shape_error is not None:
            raise ApiError(ErrorCode.INVALID_ORDER, shape_error)
        price = None if req.price is None else price_to_ticks(spec, req.price)
        lots = quantity_to_lots(spec, req.quantity)
        return PlaceOrder(
            command_id=0,  # not on the wire: the engine takes the record's offset
            order_id=0,  # likewise: a new order's id is its command id
            timestamp_ms=now_ms(),
            user_id=user_id,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            time_in_force=tif,
            post_only=req.post_only,
            price=price,
            quantity=lots,
            client_order_id=req.client_order_id,
            stp_mode=req.stp_mode,
        )

    def funds_command(self, kind: CommandKind, req: FundsRequest) -> Deposit | Withdraw:
        asset = self._assets.get(req.asset)
        if asset is None:
            raise ApiError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {clip(req.asset)}")
        amount = amount_to_minor(asset, req.amount)
        cls = Deposit if kind is CommandKind.DEPOSIT else Withdraw
        return cls(
            command_id=0, timestamp_ms=now_ms(), user_id=req.user_id, asset=req.asset,
            amount=amount,
        )  # fmt: skip

    # ---- helpers ------------------------------------------------------------------------

    async def _funds(
        self, kind: CommandKind, body: bytes, wait: bool, timeout_ms: int
    ) -> tuple[int, bytes]:
        req = validate(FundsRequest, parse_json(body))
        command = self.funds_command(kind, req)
        offset, output = await self._publish_and_wait(self._encode(command), wait, timeout_ms)
        if output is not None:
            if output.rejections and output.rejections[0].reason == UNKNOWN_USER:
                raise ApiError(ErrorCode.USER_NOT_FOUND, f"no user {req.user_id}")
            return 200, ok_body(self._funds_result(output, offset, req.user_id, req.asset))
        return 202, ok_body({"command_id": str(offset), "status": "ACCEPTED"})

    async def publish_and_wait(
        self, value: bytes, wait: bool, timeout_ms: int
    ) -> tuple[int, EngineOutput | None]:
        """Publish an encoded command; with ``wait`` also wait for its output (None on
        timeout). For cores outside this service (gateway.amend)."""
        return await self._publish_and_wait(value, wait, timeout_ms)

    async def _publish_and_wait(
        self, value: bytes, wait: bool, timeout_ms: int
    ) -> tuple[int, EngineOutput | None]:
        """Publish; with ``wait`` also wait for the engine's output (None on timeout)."""
        follower = self._follower
        if wait and follower.try_begin():
            try:
                offset = await self._publish(value)
                return offset, await follower.wait(offset, timeout_ms / 1000)
            finally:
                follower.end()
        return await self._publish(value), None

    def _order_result(
        self, output: EngineOutput, order_id: int, command: PlaceOrder
    ) -> Json | None:
        views = self._views
        update = None
        for u in output.order_updates:
            if u.order_id == order_id:
                update = u  # the last report of the order is its state after the command
        if update is not None:
            data = views.order_from_event(update)
        elif output.rejections:
            data = views.order_from_command(command, order_id, output.rejections[0].reason)
        else:
            return None
        data["fills"] = [
            views.fill(t, order_id)
            for t in output.trades
            if t.taker_order_id == order_id or t.maker_order_id == order_id
        ]
        return data

    def _funds_result(
        self, output: EngineOutput, command_id: int, user_id: int, asset: str
    ) -> Json:
        if output.rejections:
            return {
                "command_id": str(command_id), "status": "REJECTED", "asset": asset,
                "available": None, "locked": None, "reject_reason": output.rejections[0].reason,
            }  # fmt: skip
        available = locked = None
        for b in output.balance_updates:
            if b.user_id == user_id and b.asset == asset:
                available = self._views.asset_amount(asset, b.available)
                locked = self._views.asset_amount(asset, b.locked)
        return {
            "command_id": str(command_id), "status": "COMPLETED", "asset": asset,
            "available": available, "locked": locked, "reject_reason": None,
        }  # fmt: skip


def _not_found_message(req: CancelOrderRequest) -> str:
    if req.order_id is not None:
        return f"no open order {req.order_id} on {clip(req.symbol)}"
    return f"no open order with client_order_id {clip(req.client_order_id)} on {clip(req.symbol)}"


__all__ = ["CommandEncoder", "CommandService"]
