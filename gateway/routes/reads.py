"""The read routes: the user's orders, trades and balances from the settlement read model.

Who is read: :func:`gateway.auth.principal.acting_user` (a trader: its own data; an
operator: the ``user_id`` it names).

Plain ``def`` handlers: FastAPI runs them in its threadpool, because store queries block.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from gateway.auth.principal import acting_user, is_operator
from gateway.convert import INT64_MAX
from gateway.envelope import ok
from gateway.openapi import BAD, NOT_FOUND, STORE
from gateway.reads import ReadService
from gateway.schemas import (
    ORDER_ID_PATTERN,
    BalanceOut,
    Envelope,
    OrderDetail,
    OrderOut,
    OrderPage,
    TradeOut,
)
from settlement.store import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT


class _DigitsConvertor(Convertor[str]):
    """Path segment of digits, kept as a string: the handler range-checks it, so an id of a
    thousand digits is a clean 404 rather than a huge int."""

    regex = "[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Before the routes below are declared: their paths use it. (Starlette's registry of
# convertors is a process-wide dict; registering is idempotent.)
register_url_convertor("digits", _DigitsConvertor())

UserIdQ = Annotated[
    int | None,
    Query(
        ge=1,
        le=INT64_MAX,
        description="The account: optional for a trader (its key's user; another is 403), "
        "required for an operator.",
    ),
]
SymbolQ = Annotated[str | None, Query(max_length=64, description="Only this symbol.")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="Page size.")]
CursorQ = Annotated[
    str | None,
    Query(pattern=ORDER_ID_PATTERN, description="`next_cursor` of the previous page."),
]
OrderIdP = Annotated[str, Path(description="The order id.", pattern=r"^[0-9]+$")]

router = APIRouter()


def _reads(request: Request) -> ReadService:
    reads: ReadService = request.app.state.reads
    return reads


@router.get(
    "/api/v1/order/active",
    summary="Open orders",
    description="The user's open orders (NEW, PARTIALLY_FILLED), newest first.",
    response_model=None,
    responses={200: {"model": Envelope[list[OrderOut]]}, **BAD, **STORE},
    tags=["orders"],
)
def active_orders(request: Request, user_id: UserIdQ = None, symbol: SymbolQ = None) -> Response:
    return ok(_reads(request).active_orders(acting_user(user_id), symbol))


@router.get(
    "/api/v1/order/history",
    summary="Order history",
    description=(
        "All of the user's orders in any status, newest first, a page at a time: pass "
        "`next_cursor` as `before` for the next page (null on the last page)."
    ),
    response_model=None,
    responses={200: {"model": Envelope[OrderPage]}, **BAD, **STORE},
    tags=["orders"],
)
def order_history(
    request: Request,
    user_id: UserIdQ = None,
    symbol: SymbolQ = None,
    limit: LimitQ = DEFAULT_PAGE_LIMIT,
    before: CursorQ = None,
) -> Response:
    return ok(_reads(request).order_history(acting_user(user_id), symbol, limit, before))


@router.get(
    "/api/v1/order/{order_id:digits}",
    summary="One order with its update trail",
    description=(
        "The order and every update it went through (`updates`, oldest first). 404 "
        "`ORDER_NOT_FOUND` when it does not exist or belongs to another user."
    ),
    response_model=None,
    responses={200: {"model": Envelope[OrderDetail]}, **BAD, **NOT_FOUND, **STORE},
    tags=["orders"],
)
def get_order(request: Request, order_id: OrderIdP, user_id: UserIdQ = None) -> Response:
    # An operator may look up any order by id; anyone else only their own.
    owner = None if user_id is None and is_operator() else acting_user(user_id)
    return ok(_reads(request).order(order_id, owner))


@router.get(
    "/api/v1/trades",
    summary="Trades",
    description="The user's trades (one row per side the user took), newest first.",
    response_model=None,
    responses={200: {"model": Envelope[list[TradeOut]]}, **BAD, **STORE},
    tags=["orders"],
)
def trades(
    request: Request, user_id: UserIdQ = None, symbol: SymbolQ = None,
    limit: LimitQ = DEFAULT_PAGE_LIMIT,
) -> Response:  # fmt: skip
    return ok(_reads(request).trades(acting_user(user_id), symbol, limit))


@router.get(
    "/api/v1/balances",
    summary="Balances",
    description="The user's balance of every asset it ever held, by asset.",
    response_model=None,
    responses={200: {"model": Envelope[list[BalanceOut]]}, **BAD, **STORE},
    tags=["funds"],
)
def balances(request: Request, user_id: UserIdQ = None) -> Response:
    return ok(_reads(request).balances(acting_user(user_id)))
