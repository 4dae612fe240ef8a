"""The command routes. Each calls its core on the command service (gateway.commands); the
fast path (gateway.fastpath) calls the same cores for plain requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gateway.bodies import read_body
from gateway.commands import CANCEL_PATH, CREATE_PATH, DEPOSIT_PATH, WITHDRAW_PATH
from gateway.envelope import JSON_MEDIA_TYPE
from gateway.fastpath import CommandCore
from gateway.openapi import BAD, BROKER, NOT_FOUND, TOO_LARGE, body_doc
from gateway.schemas import (
    CancelAccepted,
    CancelOrderRequest,
    CommandAccepted,
    Envelope,
    FundsRequest,
    FundsResult,
    OrderAccepted,
    OrderOut,
    OrderResult,
    PlaceOrderRequest,
)

DEFAULT_WAIT_MS = 5_000
MAX_WAIT_MS = 30_000

WaitQ = Annotated[
    bool,
    Query(description="Wait for the engine's result (200) instead of answering 202 at once."),
]
TimeoutQ = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_WAIT_MS,
        description="With wait=true: how long to wait for the engine after the broker "
        "acknowledged the command, in ms. On expiry the answer is 202.",
    ),
]

router = APIRouter()


async def run_core(path: str, request: Request, wait: bool, timeout_ms: int) -> Response:
    """The command route's answer: its core (by path) over the bounded body."""
    core: CommandCore = request.app.commands[path]
    body = await read_body(request, request.app.max_body)
    status, payload = await core(body, wait, timeout_ms)
    return Response(payload, status, media_type=JSON_MEDIA_TYPE)


@router.post(
    CREATE_PATH,
    summary="Place an order",
    description=(
        "Validates the order, converts price and quantity to the market's ticks and "
        "lots, and publishes it to the order log. Answers **202** once the broker has "
        "acknowledged it: `order_id` is its offset in the log. With `?wait=true` it "
        "answers **200** with the order as the engine left it (status, fills, "
        "`reject_reason` for a refused order), or 202 if the engine did not answer "
        "within `timeout_ms`.\n\nPrice is required for LIMIT and refused for MARKET "
        "(`INVALID_ORDER`), as are MARKET FOK, MARKET post-only and post-only IOC/FOK."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[OrderAccepted], "description": "Accepted into the log."},
        200: {"model": Envelope[OrderResult], "description": "With wait=true: the result."},
        **BAD,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(PlaceOrderRequest),
    tags=["orders"],
)
async def create_order(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(CREATE_PATH, request, wait, timeout_ms)


@router.post(
    CANCEL_PATH,
    summary="Cancel an open order",
    description=(
        "Names the order by exactly one of `order_id` and `client_order_id`. The cancel "
        "goes to the engine, which alone decides (the read model is not consulted): "
        "**202** `{command_id, status: CANCEL_REQUESTED}` once it is in the log; with "
        "`?wait=true`, **200** with the order after the cancel, or 404 `ORDER_NOT_FOUND` "
        "when the engine refused it (unknown, completed, another user's or another "
        "market's: one answer). A wait that times out answers the 202."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[CancelAccepted], "description": "Cancel in the log."},
        200: {"model": Envelope[OrderOut], "description": "With wait=true: the order."},
        **BAD,
        **NOT_FOUND,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(CancelOrderRequest),
    tags=["orders"],
)
async def cancel_order(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(CANCEL_PATH, request, wait, timeout_ms)


@router.post(
    DEPOSIT_PATH,
    summary="Deposit funds",
    description=(
        "Credits `amount` of `asset` (a decimal with at most the asset's decimals) to "
        "the user. Goes through the order log like every command: **202** with its "
        "`command_id` once acknowledged; with `?wait=true`, **200** with the balance "
        "after it."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[CommandAccepted], "description": "Accepted into the log."},
        200: {"model": Envelope[FundsResult], "description": "With wait=true: the result."},
        **BAD,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(FundsRequest),
    tags=["funds"],
)
async def deposit(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(DEPOSIT_PATH, request, wait, timeout_ms)


@router.post(
    WITHDRAW_PATH,
    summary="Withdraw funds",
    description=(
        "Debits `amount` of `asset` from the user's available balance. **202** once in "
        "the log; with `?wait=true`, **200** with the balance after it, or status "
        "`REJECTED` with `reject_reason` (e.g. `INSUFFICIENT_FUNDS`)."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[CommandAccepted], "description": "Accepted into the log."},
        200: {"model": Envelope[FundsResult], "description": "With wait=true: the result."},
        **BAD,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(FundsRequest),
    tags=["funds"],
)
async def withdraw(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(WITHDRAW_PATH, request, wait, timeout_ms)
