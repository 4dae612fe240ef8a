"""``POST /api/v1/order/amend``: reduce an open order's quantity, keeping its queue place.

The request names the order by exactly one of ``order_id`` and ``client_order_id`` and
gives ``quantity``, the new *total* quantity (the filled part included). A malformed
quantity (zero, off the market's step, not a decimal) is refused at once with 400
``INVALID_QUANTITY``; everything else is the engine's to judge (is the order open, the
user's, in that market; is the new quantity a strict reduction above the filled part), as
an ``AmendOrder`` command on the log like every other change. 202 ``{"command_id", "status":
"AMEND_REQUESTED"}`` once the broker has it; with ``?wait=true`` 200 with the order after
the amend, 400 ``INVALID_AMEND`` when the engine refused the new quantity, 404
``ORDER_NOT_FOUND`` for an unknown, completed or another user's order (the same answer
for all three, so an amend reveals nothing about other users' orders).

The core has the command cores' signature ``(body, wait, timeout_ms) -> (status, payload)``,
so the fast path (:mod:`gateway.fastpath`) and the FastAPI route answer alike.
"""

from __future__ import annotations

import time
from typing import Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from engine.commands import AmendOrder
from engine.enums import RejectReason
from engine.events import EngineOutput
from engine.markets import Markets
from gateway.auth.principal import acting_user
from gateway.bodies import parse_json, validate
from gateway.convert import quantity_to_lots
from gateway.envelope import ok_body
from gateway.errors import ApiError, ErrorCode, clip
from gateway.openapi import BAD, BROKER, NOT_FOUND, TOO_LARGE, body_doc
from gateway.routes.commands import DEFAULT_WAIT_MS, TimeoutQ, WaitQ, run_core
from gateway.schemas import Amount, ClientOrderId, Envelope, OrderIdIn, OrderOut, Symbol, UserId
from gateway.views import Views

AMEND_PATH = "/api/v1/order/amend"

# The engine's refusals that mean "no such open order of yours here". By name (the
# reasons are StrEnums): UNKNOWN_USER comes with the access layer (issue #14).
_NOT_FOUND = frozenset({"ORDER_NOT_FOUND", "ORDER_ALREADY_COMPLETED", "UNKNOWN_USER"})


class AmendOrderRequest(BaseModel):
    """Reduce an open order to a new total quantity, keeping its place in the queue."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {"user_id": 1, "symbol": "BTC_USDT", "order_id": "42", "quantity": "0.00500"}
            ]
        },
    )

    user_id: UserId | None = None  # optional: a trader acts as its key's user (gateway.auth)
    symbol: Symbol
    order_id: OrderIdIn | None = None
    client_order_id: ClientOrderId | None = None
    quantity: Amount

    @model_validator(mode="after")
    def _exactly_one_id(self) -> AmendOrderRequest:
        if (self.order_id is None) == (self.client_order_id is None):
            raise PydanticCustomError("one_id", "give exactly one of order_id and client_order_id")
        return self


class AmendAccepted(BaseModel):
    command_id: str
    status: str = "AMEND_REQUESTED"


class Publisher(Protocol):
    async def __call__(
        self, value: bytes, wait: bool, timeout_ms: int
    ) -> tuple[int, EngineOutput | None]: ...


class Encoder(Protocol):
    def encode_command(self, command: AmendOrder) -> bytes: ...


class AmendService:
    """The amend core over the command service's publish-and-wait."""

    def __init__(
        self, *, markets: Markets, codec: Encoder, publish_and_wait: Publisher, views: Views
    ) -> None:
        self._symbols = markets.symbols
        self._encode = codec.encode_command
        self._publish_and_wait = publish_and_wait
        self._views = views

    def command(self, req: AmendOrderRequest) -> AmendOrder:
        spec = self._symbols.get(req.symbol)
        if spec is None:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        return AmendOrder(
            command_id=0,  # the record's offset, set by the engine
            timestamp_ms=time.time_ns() // 1_000_000,
            user_id=acting_user(req.user_id),
            symbol=req.symbol,
            order_id=req.order_id,
            client_order_id=req.client_order_id,
            quantity=quantity_to_lots(spec, req.quantity),
        )

    async def amend(self, body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        req = validate(AmendOrderRequest, parse_json(body))
        command = self.command(req)
        offset, output = await self._publish_and_wait(self._encode(command), wait, timeout_ms)
        if output is not None:
            if output.rejections:
                reason = output.rejections[0].reason
                if reason in _NOT_FOUND:
                    raise ApiError(ErrorCode.ORDER_NOT_FOUND, _not_found(req))
                if reason == RejectReason.INVALID_AMEND:
                    raise ApiError(ErrorCode.INVALID_AMEND, output.rejections[0].message)
                if reason == RejectReason.UNKNOWN_SYMBOL:
                    raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
                raise ApiError(ErrorCode.INVALID_ORDER, f"the engine refused the amend: {reason}")
            for update in output.order_updates:
                return 200, ok_body(self._views.order_from_event(update))
        return 202, ok_body({"command_id": str(offset), "status": "AMEND_REQUESTED"})


def _not_found(req: AmendOrderRequest) -> str:
    if req.order_id is not None:
        return f"no open order {req.order_id} on {clip(req.symbol)}"
    return f"no open order with client_order_id {clip(req.client_order_id)} on {clip(req.symbol)}"


router = APIRouter()


@router.post(
    AMEND_PATH,
    summary="Amend an open order (reduce its quantity, keeping priority)",
    description=(
        "Names the order by exactly one of `order_id` and `client_order_id`; `quantity` is "
        "the new total quantity (filled part included), which must be below the current "
        "quantity and above the filled quantity. The order keeps its place in the queue and "
        "the released funds are unlocked. A malformed quantity is **400** "
        "`INVALID_QUANTITY` at once. **202** `AMEND_REQUESTED` once in the log; with "
        "`?wait=true`, **200** with the order after the amend, **400** `INVALID_AMEND` when "
        "the engine refused the new quantity, **404** `ORDER_NOT_FOUND` for an unknown, "
        "completed or another user's order."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[AmendAccepted], "description": "Amend in the log."},
        200: {"model": Envelope[OrderOut], "description": "With wait=true: the order."},
        **BAD,
        **NOT_FOUND,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(AmendOrderRequest),
    tags=["orders"],
)
async def amend_order(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(AMEND_PATH, request, wait, timeout_ms)
