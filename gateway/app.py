"""The REST API: FastAPI routes over the publisher (commands) and the store (reads).

Theory of operation
-------------------
Commands (create, cancel, deposit, withdraw) are validated and scaled to integers here, once,
then encoded and published to the single-partition ``orders`` topic. The client gets 202 as
soon as the broker acknowledged the record; its offset is the command id and a new order's
id. With ``?wait=true`` the request then waits (bounded) for the engine's output for that
command id and answers 200 with the result, or 202 if the engine did not answer in time.

Reads go to the settlement store (a read model that lags the engine slightly), in
FastAPI's threadpool because store queries block.

Request bodies are parsed here, not by FastAPI: ``json.loads(parse_float=Decimal)`` keeps
every JSON number exact, and the pydantic models of :mod:`gateway.schemas` validate the
result. The OpenAPI spec documents those models as the request bodies. Responses are built
as dicts and serialised once; the models document them.

Each command route is a *core* function ``(body, wait, timeout_ms) -> (status, payload)``.
The FastAPI route calls it, and so does the framework-free path of :mod:`gateway.fastpath`
that :class:`GatewayAPI` takes for plain command requests (the hot path), so both answer the
same by construction.

Every answer uses the envelope of :mod:`gateway.errors`; no route answers 422 (validation
errors are 400) and a last-resort middleware turns any bug into a 500 envelope.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.commands import CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from engine.enums import CommandKind, OrderType, RejectReason, TimeInForce
from engine.events import EngineOutput
from engine.markets import Markets
from gateway.convert import INT64_MAX, amount_to_minor, price_to_ticks, quantity_to_lots
from gateway.errors import ApiError, BrokerUnavailable, ErrorCode, clip
from gateway.fastpath import CommandCore, is_command, parse_command_query, serve_command
from gateway.publisher import CommandPublisher
from gateway.results import OutputFollower
from gateway.schemas import (
    FIELD_CODES,
    ORDER_ID_PATTERN,
    REQUEST_MODELS,
    BalanceOut,
    CancelAccepted,
    CancelOrderRequest,
    CommandAccepted,
    Envelope,
    ErrorResponse,
    FundsRequest,
    FundsResult,
    HealthOut,
    OrderAccepted,
    OrderDetail,
    OrderOut,
    OrderPage,
    OrderResult,
    PlaceOrderRequest,
    ReadyOut,
    TradeOut,
)
from gateway.views import Json, Views
from settlement.store import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    OrderRow,
    SettlementStore,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
DEFAULT_WAIT_MS = 5_000
MAX_WAIT_MS = 30_000
MAX_BODY_BYTES = 16 * 1024

M = TypeVar("M", bound=BaseModel)


class CommandEncoder(Protocol):
    """What the app needs of :class:`exchange.codec.Codec`."""

    def encode_command(self, command: Command) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Tunables of the API (the defaults are the production values)."""

    max_body_bytes: int = MAX_BODY_BYTES
    # How long a cancel looks for an order the store does not show yet (the store lags).
    cancel_lookup_s: float = 1.0
    ready_timeout_s: float = 2.0
    title: str = "Exchange gateway"


# ----------------------------------------------------------------------------- envelope

_encode = json.JSONEncoder(separators=(",", ":")).encode
_JSON = "application/json"


def ok_body(data: Any) -> bytes:
    """A success envelope; ``data`` holds only JSON types (StrEnum members are str)."""
    return b'{"success":true,"data":' + _encode(data).encode() + b"}"


def error_body(code: str, message: str) -> bytes:
    return _encode({"success": False, "error": {"code": code, "message": message}}).encode()


def ok(data: Any, status: int = 200) -> Response:
    return Response(ok_body(data), status, media_type=_JSON)


def error_response(
    code: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(error_body(code, message), status, headers=headers, media_type=_JSON)


def render_error(exc: Exception) -> tuple[int, bytes]:
    """The envelope of an exception raised while serving a request: (status, body)."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.code, exc.message)
    if isinstance(exc, BrokerUnavailable):
        log.warning("broker unavailable: %s", exc)
        return 503, error_body(ErrorCode.BROKER_UNAVAILABLE, f"broker unavailable: {exc}")
    if isinstance(exc, StoreError):
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc)
        else:  # not transient (e.g. no schema yet): still not the client's fault
            log.error("store error: %s", exc)
        return 503, error_body(ErrorCode.STORE_UNAVAILABLE, "the store is unavailable")
    return 500, error_body(ErrorCode.INTERNAL_ERROR, "internal error")


# ----------------------------------------------------------------------------- body parsing


class _NonJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonJsonConstant(f"{name} is not JSON")


_decode_json = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant).decode


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; ApiError(REQUEST_TOO_LARGE) beyond ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if length.isdigit() and int(length) > limit:
            raise ApiError(ErrorCode.REQUEST_TOO_LARGE, f"the body exceeds {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []  # chunked: count as it streams in
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(ErrorCode.REQUEST_TOO_LARGE, f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """Parse a UTF-8 JSON document with exact decimals (see :mod:`gateway.convert`)."""
    try:
        return _decode_json(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, _NonJsonConstant, RecursionError) as e:
        detail = "the body is empty" if not body.strip() else f"the body is not valid JSON: {e}"
        raise ApiError(ErrorCode.MALFORMED_JSON, detail) from None
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"a number in the body is too long: {e}"
        ) from None


def validate(model: type[M], data: Any) -> M:
    """``model`` from parsed JSON; ApiError with the first error's field code if invalid."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise body_error(e) from None


def body_error(e: ValidationError) -> ApiError:
    err = e.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = err["loc"]
    kind = err["type"]
    if not loc:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return ApiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object")
        return ApiError(ErrorCode.INVALID_REQUEST, str(err["msg"]))
    field = clip(".".join(str(part) for part in loc), 60).strip("'")
    if kind == "extra_forbidden":
        return ApiError(ErrorCode.INVALID_REQUEST, f"{field}: unknown field")
    code = ErrorCode.INVALID_REQUEST if kind == "missing" else FIELD_CODES.get(
        str(loc[0]), ErrorCode.INVALID_REQUEST
    )
    return ApiError(code, f"{field}: {err['msg']}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ----------------------------------------------------------------------------- routing


class _DigitsConvertor(Convertor[str]):
    """Path segment of digits, kept as a string: the handler range-checks it, so an id of a
    thousand digits is a clean 404 rather than a huge int."""

    regex = "[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class CatchAllMiddleware:
    """Last resort: any exception that escaped the handlers becomes a 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(ErrorCode.INTERNAL_ERROR, "internal error", 500)
            await response(scope, receive, send)


class GatewayAPI(FastAPI):
    """FastAPI, plus the framework-free path for the command routes (gateway.fastpath).

    A ``POST`` to a command route with a plain query string goes straight to the route's
    core function; everything else (and every other route) goes through FastAPI.
    ``fast_path = False`` sends everything through FastAPI (the tests compare the two).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands: dict[str, CommandCore] = {}
        self.max_body = MAX_BODY_BYTES
        self.fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path and is_command(scope, self.commands):
            query = parse_command_query(scope["query_string"], DEFAULT_WAIT_MS, MAX_WAIT_MS)
            if query is not None:
                await serve_command(
                    self.commands[scope["path"]], query[0], query[1], self.max_body,
                    render_error, receive, send,
                )  # fmt: skip
                return
        await super().__call__(scope, receive, send)


def _error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_Docs = dict[int | str, dict[str, Any]]
_BAD: _Docs = {400: _error_doc("Invalid request (see the error code).")}
_TOO_LARGE: _Docs = {413: _error_doc("The body is too large.")}
_BROKER: _Docs = {503: _error_doc("BROKER_UNAVAILABLE: the command was not accepted.")}
_STORE: _Docs = {503: _error_doc("STORE_UNAVAILABLE: the read model cannot be queried.")}
_NOT_FOUND: _Docs = {404: _error_doc("ORDER_NOT_FOUND.")}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


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
UserIdQ = Annotated[int, Query(ge=1, le=INT64_MAX, description="The account.")]
SymbolQ = Annotated[str | None, Query(max_length=64, description="Only this symbol.")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="Page size.")]
CursorQ = Annotated[
    str | None,
    Query(pattern=ORDER_ID_PATTERN, description="`next_cursor` of the previous page."),
]
OrderIdP = Annotated[str, Path(description="The order id.", pattern=r"^[0-9]+$")]


def create_app(
    *,
    markets: Markets,
    codec: CommandEncoder,
    publisher: CommandPublisher,
    follower: OutputFollower,
    store: SettlementStore,
    config: GatewayConfig | None = None,
) -> GatewayAPI:
    """Build the API over its dependencies.

    The app's lifespan starts the publisher's poll thread and the follower, and stops them;
    it does not close the store (the composition root owns it).
    """
    cfg = config or GatewayConfig()
    symbols = markets.symbols
    assets = markets.assets
    views = Views(markets)
    encode = codec.encode_command
    publish = publisher.publish
    max_body = cfg.max_body_bytes
    register_url_convertor("digits", _DigitsConvertor())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        publisher.start(loop)
        follower.start(loop)
        try:
            yield
        finally:
            await run_in_threadpool(follower.stop)
            await run_in_threadpool(publisher.close)

    app = GatewayAPI(
        title=cfg.title,
        version=API_VERSION,
        description=_API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(CatchAllMiddleware)
    _install_error_handlers(app)
    # The adapters, for the composition root and the tests (readiness, follower state).
    app.state.publisher = publisher
    app.state.follower = follower
    app.state.store = store

    # ---- command helpers -------------------------------------------------------------

    async def publish_and_wait(
        value: bytes, wait: bool, timeout_ms: int
    ) -> tuple[int, EngineOutput | None]:
        """Publish; with ``wait`` also wait for the engine's output (None on timeout)."""
        if wait and follower.try_begin():
            try:
                offset = await publish(value)
                return offset, await follower.wait(offset, timeout_ms / 1000)
            finally:
                follower.end()
        return await publish(value), None

    def place_command(req: PlaceOrderRequest) -> PlaceOrder:
        spec = symbols.get(req.symbol)
        if spec is None:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        tif = req.time_in_force
        price: int | None
        if req.order_type is OrderType.LIMIT:
            if req.price is None:
                raise ApiError(ErrorCode.INVALID_ORDER, "a LIMIT order needs a price")
            if req.post_only and tif is not TimeInForce.GTC:
                raise ApiError(ErrorCode.INVALID_ORDER, f"a post-only order must be GTC, not {tif}")
            price = price_to_ticks(spec, req.price)
        else:
            if req.price is not None:
                raise ApiError(ErrorCode.INVALID_ORDER, "a MARKET order takes no price")
            if tif is TimeInForce.FOK:
                raise ApiError(ErrorCode.INVALID_ORDER, "a MARKET order cannot be FOK")
            if req.post_only:
                raise ApiError(ErrorCode.INVALID_ORDER, "a MARKET order cannot be post-only")
            price = None
        lots = quantity_to_lots(spec, req.quantity)
        return PlaceOrder(
            command_id=0,  # not on the wire: the engine takes the record's offset
            order_id=0,  # likewise: a new order's id is its command id
            timestamp_ms=now_ms(),
            user_id=req.user_id,
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

    def order_result(output: EngineOutput, order_id: int, command: PlaceOrder) -> Json | None:
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

    async def find_open_order(req: CancelOrderRequest) -> OrderRow | None:
        """The user's open order named by the request, polling the lagging store briefly.

        Another user's order is treated exactly like a missing one (same answer, same
        time), so a cancel reveals nothing about other users' orders.
        """
        deadline = time.monotonic() + cfg.cancel_lookup_s
        delay = 0.02
        while True:
            row = await run_in_threadpool(lookup_order, req)
            if row is not None and row.user_id == req.user_id:
                return row if row.is_open and row.symbol == req.symbol else None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))  # the last look is at the deadline
            delay = min(delay * 2, 0.2)

    def lookup_order(req: CancelOrderRequest) -> OrderRow | None:
        if req.order_id is not None:
            return store.get_order(req.order_id)
        for row in store.active_orders(req.user_id, req.symbol):
            if row.client_order_id == req.client_order_id:
                return row
        return None

    def funds_command(kind: CommandKind, req: FundsRequest) -> Deposit | Withdraw:
        asset = assets.get(req.asset)
        if asset is None:
            raise ApiError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {clip(req.asset)}")
        amount = amount_to_minor(asset, req.amount)
        cls = Deposit if kind is CommandKind.DEPOSIT else Withdraw
        return cls(
            command_id=0, timestamp_ms=now_ms(), user_id=req.user_id, asset=req.asset,
            amount=amount,
        )  # fmt: skip

    def funds_result(output: EngineOutput, command_id: int, user_id: int, asset: str) -> Json:
        if output.rejections:
            return {
                "command_id": str(command_id), "status": "REJECTED", "asset": asset,
                "available": None, "locked": None, "reject_reason": output.rejections[0].reason,
            }  # fmt: skip
        available = locked = None
        for b in output.balance_updates:
            if b.user_id == user_id and b.asset == asset:
                available = views.asset_amount(asset, b.available)
                locked = views.asset_amount(asset, b.locked)
        return {
            "command_id": str(command_id), "status": "COMPLETED", "asset": asset,
            "available": available, "locked": locked, "reject_reason": None,
        }  # fmt: skip

    # ---- command cores: (body, wait, timeout_ms) -> (status, payload) -----------------
    # Shared by the FastAPI routes below and the framework-free path (gateway.fastpath).

    async def create_core(body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        req = validate(PlaceOrderRequest, parse_json(body))
        command = place_command(req)
        offset, output = await publish_and_wait(encode(command), wait, timeout_ms)
        if output is not None:
            result = order_result(output, offset, command)
            if result is not None:
                return 200, ok_body(result)
        return 202, ok_body(
            {"order_id": str(offset), "client_order_id": req.client_order_id,
             "status": "ACCEPTED"}
        )  # fmt: skip

    async def cancel_core(body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
        req = validate(CancelOrderRequest, parse_json(body))
        if req.symbol not in symbols:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(req.symbol)}")
        row = await find_open_order(req)
        if row is None:
            raise ApiError(ErrorCode.ORDER_NOT_FOUND, _not_found_message(req))
        command = CancelOrder(
            command_id=0, timestamp_ms=now_ms(), user_id=req.user_id, symbol=req.symbol,
            order_id=row.order_id,
        )  # fmt: skip
        _, output = await publish_and_wait(encode(command), wait, timeout_ms)
        if output is not None:
            if output.rejections:
                reason = output.rejections[0].reason
                if reason in (RejectReason.ORDER_NOT_FOUND, RejectReason.ORDER_ALREADY_COMPLETED):
                    raise ApiError(
                        ErrorCode.ORDER_NOT_FOUND, f"order {row.order_id} is already completed"
                    )
                raise ApiError(ErrorCode.INVALID_ORDER, f"the engine refused the cancel: {reason}")
            for update in output.order_updates:
                if update.order_id == row.order_id:
                    return 200, ok_body(views.order_from_event(update))
        return 202, ok_body({"order_id": str(row.order_id), "status": "CANCEL_REQUESTED"})

    def funds_core(kind: CommandKind) -> CommandCore:
        async def core(body: bytes, wait: bool, timeout_ms: int) -> tuple[int, bytes]:
            req = validate(FundsRequest, parse_json(body))
            command = funds_command(kind, req)
            offset, output = await publish_and_wait(encode(command), wait, timeout_ms)
            if output is not None:
                return 200, ok_body(funds_result(output, offset, req.user_id, req.asset))
            return 202, ok_body({"command_id": str(offset), "status": "ACCEPTED"})

        return core

    deposit_core = funds_core(CommandKind.DEPOSIT)
    withdraw_core = funds_core(CommandKind.WITHDRAW)

    async def run_core(
        core: CommandCore, request: Request, wait: bool, timeout_ms: int
    ) -> Response:
        status, payload = await core(await read_body(request, max_body), wait, timeout_ms)
        return Response(payload, status, media_type=_JSON)

    # ---- commands ----------------------------------------------------------------------

    @app.post(
        "/api/v1/order/create",
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
            **_BAD,
            **_TOO_LARGE,
            **_BROKER,
        },
        openapi_extra=_body_doc(PlaceOrderRequest),
        tags=["orders"],
    )
    async def create_order(
        request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
    ) -> Response:
        return await run_core(create_core, request, wait, timeout_ms)

    @app.post(
        "/api/v1/order/cancel",
        summary="Cancel an open order",
        description=(
            "Names the order by exactly one of `order_id` and `client_order_id`. The order "
            "must be one of the user's open orders on `symbol`; otherwise (unknown, "
            "completed, or another user's) the answer is 404 `ORDER_NOT_FOUND`. The store "
            "lags the engine slightly, so an order not shown yet is looked up again for up "
            "to a second. Answers **202** once the cancel is in the log; with `?wait=true`, "
            "**200** with the order after the cancel, or 404 if the engine found the order "
            "already completed."
        ),
        status_code=202,
        response_model=None,
        responses={
            202: {"model": Envelope[CancelAccepted], "description": "Cancel in the log."},
            200: {"model": Envelope[OrderOut], "description": "With wait=true: the order."},
            **_BAD,
            **_NOT_FOUND,
            **_TOO_LARGE,
            503: _error_doc("BROKER_UNAVAILABLE or STORE_UNAVAILABLE."),
        },
        openapi_extra=_body_doc(CancelOrderRequest),
        tags=["orders"],
    )
    async def cancel_order(
        request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
    ) -> Response:
        return await run_core(cancel_core, request, wait, timeout_ms)

    @app.post(
        "/api/v1/deposit",
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
            **_BAD,
            **_TOO_LARGE,
            **_BROKER,
        },
        openapi_extra=_body_doc(FundsRequest),
        tags=["funds"],
    )
    async def deposit(
        request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
    ) -> Response:
        return await run_core(deposit_core, request, wait, timeout_ms)

    @app.post(
        "/api/v1/withdraw",
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
            **_BAD,
            **_TOO_LARGE,
            **_BROKER,
        },
        openapi_extra=_body_doc(FundsRequest),
        tags=["funds"],
    )
    async def withdraw(
        request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
    ) -> Response:
        return await run_core(withdraw_core, request, wait, timeout_ms)

    # ---- reads (threadpool: store queries block) --------------------------------------

    def check_symbol(symbol: str | None) -> None:
        if symbol is not None and symbol not in symbols:
            raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(symbol)}")

    @app.get(
        "/api/v1/order/active",
        summary="Open orders",
        description="The user's open orders (NEW, PARTIALLY_FILLED), newest first.",
        response_model=None,
        responses={200: {"model": Envelope[list[OrderOut]]}, **_BAD, **_STORE},
        tags=["orders"],
    )
    def active_orders(user_id: UserIdQ, symbol: SymbolQ = None) -> Response:
        check_symbol(symbol)
        return ok([views.order(r) for r in store.active_orders(user_id, symbol)])

    @app.get(
        "/api/v1/order/history",
        summary="Order history",
        description=(
            "All of the user's orders in any status, newest first, a page at a time: pass "
            "`next_cursor` as `before` for the next page (null on the last page)."
        ),
        response_model=None,
        responses={200: {"model": Envelope[OrderPage]}, **_BAD, **_STORE},
        tags=["orders"],
    )
    def order_history(
        user_id: UserIdQ,
        symbol: SymbolQ = None,
        limit: LimitQ = DEFAULT_PAGE_LIMIT,
        before: CursorQ = None,
    ) -> Response:
        check_symbol(symbol)
        cursor = None if before is None else int(before)
        if cursor is not None and cursor > INT64_MAX:
            cursor = INT64_MAX
        rows, next_cursor = store.order_history(user_id, symbol, limit, cursor)
        return ok(
            {
                "orders": [views.order(r) for r in rows],
                "next_cursor": None if next_cursor is None else str(next_cursor),
            }
        )

    @app.get(
        "/api/v1/order/{order_id:digits}",
        summary="One order with its update trail",
        description=(
            "The order and every update it went through (`updates`, oldest first). 404 "
            "`ORDER_NOT_FOUND` when it does not exist or belongs to another user."
        ),
        response_model=None,
        responses={200: {"model": Envelope[OrderDetail]}, **_BAD, **_NOT_FOUND, **_STORE},
        tags=["orders"],
    )
    def get_order(order_id: OrderIdP, user_id: UserIdQ) -> Response:
        digits = order_id.lstrip("0") or "0"
        oid = int(digits) if len(digits) <= 19 else INT64_MAX + 1  # no giant ints
        row = store.get_order(oid) if oid <= INT64_MAX else None
        if row is None or row.user_id != user_id:
            raise ApiError(ErrorCode.ORDER_NOT_FOUND, f"order {clip(order_id)} not found")
        data = views.order(row)
        data["updates"] = [views.update(u) for u in store.order_trail(oid)]
        return ok(data)

    @app.get(
        "/api/v1/trades",
        summary="Trades",
        description="The user's trades (one row per side the user took), newest first.",
        response_model=None,
        responses={200: {"model": Envelope[list[TradeOut]]}, **_BAD, **_STORE},
        tags=["orders"],
    )
    def trades(
        user_id: UserIdQ, symbol: SymbolQ = None, limit: LimitQ = DEFAULT_PAGE_LIMIT
    ) -> Response:
        check_symbol(symbol)
        return ok([views.trade(t) for t in store.trades(user_id, symbol, limit)])

    @app.get(
        "/api/v1/balances",
        summary="Balances",
        description="The user's balance of every asset it ever held, by asset.",
        response_model=None,
        responses={200: {"model": Envelope[list[BalanceOut]]}, **_BAD, **_STORE},
        tags=["funds"],
    )
    def balances(user_id: UserIdQ) -> Response:
        return ok([views.balance(b) for b in store.balances(user_id)])

    # ---- health --------------------------------------------------------------------

    @app.get(
        "/health",
        summary="Liveness",
        description="200 while the process serves requests.",
        response_model=None,
        responses={200: {"model": Envelope[HealthOut]}},
        tags=["health"],
    )
    async def health() -> Response:
        return ok({"status": "ok"})

    @app.get(
        "/ready",
        summary="Readiness",
        description=(
            "200 when the broker and the store answer and the engine-output follower behind "
            "`?wait=true` is in place; 503 `NOT_READY` otherwise."
        ),
        response_model=None,
        responses={
            200: {"model": Envelope[ReadyOut]},
            503: _error_doc("NOT_READY: the broker or the store is unreachable, or the "
                            "engine-output follower has not started yet."),
        },
        tags=["health"],
    )
    async def ready() -> Response:
        async def check(what: str, probe: Callable[[], None]) -> str | None:
            try:
                await run_in_threadpool(probe)
                return None
            except (BrokerUnavailable, StoreError) as e:
                return f"{what}: {e}"

        problems = await asyncio.gather(
            check("broker", lambda: publisher.ping(cfg.ready_timeout_s)),
            check("store", store.ping),
        )
        failed = [p for p in problems if p is not None]
        if not follower.assigned.is_set():
            # Until then ?wait=true answers 202 at once: not what a ready gateway does.
            failed.append("engine-output follower: not following yet")
        if failed:
            raise ApiError(ErrorCode.NOT_READY, "; ".join(failed))
        return ok({"broker": "ok", "store": "ok"})

    app.openapi = _openapi_builder(app)  # type: ignore[method-assign]
    app.commands = {
        "/api/v1/order/create": create_core,
        "/api/v1/order/cancel": cancel_core,
        "/api/v1/deposit": deposit_core,
        "/api/v1/withdraw": withdraw_core,
    }
    app.max_body = max_body
    return app


def _not_found_message(req: CancelOrderRequest) -> str:
    if req.order_id is not None:
        return f"no open order {req.order_id} on {clip(req.symbol)}"
    return f"no open order with client_order_id {clip(req.client_order_id)} on {clip(req.symbol)}"


_API_DESCRIPTION = """\
REST gateway of the exchange. Commands go to the engine through the order log; reads come
from the settlement read model, which lags the engine by milliseconds.

* Every answer is an envelope: `{"success": true, "data": ...}` or
  `{"success": false, "error": {"code": "UPPER_SNAKE", "message": "..."}}`.
* Amounts are decimal strings (`"50000.00"`); a JSON number is read exactly as written.
* Ids assigned by the system (`order_id`, `trade_id`, `command_id`) are int64 as strings.
* Timestamps are epoch milliseconds.
"""


# ----------------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, exc: Exception) -> Response:
        status, body = render_error(exc)
        return Response(body, status, media_type=_JSON)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if not errors:
            return error_response(ErrorCode.INVALID_REQUEST, "invalid request", 400)
        err = errors[0]
        loc = [str(part) for part in err.get("loc", ())]
        where = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        return error_response(
            ErrorCode.INVALID_REQUEST, f"{clip(where, 60).strip(chr(39))}: {err.get('msg')}", 400
        )

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            code, message = ErrorCode.NOT_FOUND, "no such route"
        elif status == 405:
            code, message = ErrorCode.METHOD_NOT_ALLOWED, "method not allowed on this route"
        elif status == 413:
            code, message = ErrorCode.REQUEST_TOO_LARGE, str(exc.detail)
        elif status < 500:
            code, message = ErrorCode.INVALID_REQUEST, str(exc.detail)
        else:
            code, message = ErrorCode.INTERNAL_ERROR, str(exc.detail)
        return error_response(code, message, status, headers=exc.headers)

    for exc_type in (ApiError, BrokerUnavailable, StoreError):
        app.add_exception_handler(exc_type, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


# ----------------------------------------------------------------------------- OpenAPI


def _openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The spec with the request bodies as components and without FastAPI's 422s."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in REQUEST_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    return build


__all__ = [
    "DEFAULT_WAIT_MS",
    "MAX_WAIT_MS",
    "GatewayAPI",
    "GatewayConfig",
    "create_app",
    "error_response",
    "ok",
    "parse_json",
    "read_body",
    "render_error",
]
