"""Request and response models of the REST API (pydantic).

Requests are validated with these models after the body was parsed with
``json.loads(parse_float=Decimal)`` (see :mod:`gateway.convert`); responses are built as
plain dicts on the hot path and these models document them in the OpenAPI spec (the fuzz
test checks that every response conforms).

Ids the system assigns (``order_id``, ``trade_id``, ``command_id``, ``next_cursor``) are
int64 and travel as JSON strings, so JavaScript clients do not lose digits. Amounts are
decimal strings. Timestamps are integer epoch milliseconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.enums import OrderStatus, OrderType, RejectReason, Side, StpMode, TimeInForce
from engine.validation import MAX_CLIENT_ORDER_ID_LENGTH
from gateway.convert import INT64_MAX, MAX_DECIMAL_CHARS, parse_decimal
from gateway.errors import ErrorCode

# The length is the engine's rule (one copy, engine.validation); the character set is the
# API's own, stricter than the engine's (which takes any non-empty string).
CLIENT_ORDER_ID_PATTERN = rf"^[A-Za-z0-9_-]{{1,{MAX_CLIENT_ORDER_ID_LENGTH}}}$"
ORDER_ID_PATTERN = r"^[0-9]{1,19}$"


def _amount(value: Any) -> Decimal:
    try:
        return parse_decimal(value)
    except ValueError as e:
        raise PydanticCustomError("invalid_amount", "{reason}", {"reason": str(e)}) from None


def _order_id(value: Any) -> int:
    kind = type(value)
    if kind is int:
        number: int = value
    elif kind is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise PydanticCustomError("invalid_order_id", "must be an order id (a string of digits)")
    if not 0 <= number <= INT64_MAX:
        raise PydanticCustomError("invalid_order_id", "is out of range")
    return number


_AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "maxLength": MAX_DECIMAL_CHARS},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": 'A positive decimal, preferably as a string ("50000.00"). A JSON number '
    "is read exactly as written, never through a binary float.",
}

Amount = Annotated[Decimal, PlainValidator(_amount), WithJsonSchema(_AMOUNT_SCHEMA)]
UserId = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX, description="The account, 1..2^63-1.")]
Symbol = Annotated[str, Strict(), Field(description="A traded symbol, e.g. BTC_USDT.")]
Asset = Annotated[str, Strict(), Field(description="An asset code, e.g. USDT.")]
ClientOrderId = Annotated[
    str,
    Strict(),
    Field(
        pattern=CLIENT_ORDER_ID_PATTERN,
        description=f"The client's own id: 1-{MAX_CLIENT_ORDER_ID_LENGTH} characters of A-Z, "
        "a-z, 0-9, _ and -.",
    ),
]
OrderIdIn = Annotated[
    int,
    PlainValidator(_order_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": ORDER_ID_PATTERN},
                {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
            ],
            "description": "An order id as returned by the API (a string of digits).",
        }
    ),
]

# Errors on these body fields get the field's own code; any other field gets INVALID_REQUEST.
FIELD_CODES: dict[str, ErrorCode] = {
    "price": ErrorCode.INVALID_PRICE,
    "quantity": ErrorCode.INVALID_QUANTITY,
    "amount": ErrorCode.INVALID_AMOUNT,
}

_STRICT_BODY = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- requests


class PlaceOrderRequest(BaseModel):
    """A new order. ``price`` is required for LIMIT and refused for MARKET."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "user_id": 1,
                    "symbol": "BTC_USDT",
                    "side": "BUY",
                    "order_type": "LIMIT",
                    "price": "50000.00",
                    "quantity": "0.01000",
                    "time_in_force": "GTC",
                    "client_order_id": "my-order-1",
                }
            ]
        },
    )

    # Optional: a trader acts as its key's user (another user_id is 403); see gateway.auth.
    user_id: UserId | None = None
    symbol: Symbol
    side: Side
    order_type: OrderType
    price: Amount | None = None
    quantity: Amount
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: Annotated[bool, Strict()] = False
    client_order_id: ClientOrderId | None = None
    stp_mode: StpMode | None = Field(
        default=None, description="Self-trade prevention; default EXPIRE_TAKER."
    )


class CancelOrderRequest(BaseModel):
    """Cancel one of the user's open orders, named by exactly one of its two ids."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"user_id": 1, "symbol": "BTC_USDT", "order_id": "42"}]},
    )

    user_id: UserId | None = None  # optional, as for orders
    symbol: Symbol
    order_id: OrderIdIn | None = None
    client_order_id: ClientOrderId | None = None

    @model_validator(mode="after")
    def _exactly_one_id(self) -> CancelOrderRequest:
        if (self.order_id is None) == (self.client_order_id is None):
            raise PydanticCustomError("one_id", "give exactly one of order_id and client_order_id")
        return self


class FundsRequest(BaseModel):
    """A deposit or a withdrawal of ``amount`` of ``asset`` (operators; they name the user)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"user_id": 1, "asset": "USDT", "amount": "1000.00"}]},
    )

    user_id: UserId
    asset: Asset
    amount: Amount


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    PlaceOrderRequest,
    CancelOrderRequest,
    FundsRequest,
)


# ----------------------------------------------------------------------------- responses

T = TypeVar("T")

DecimalStr = Annotated[str, Field(description='A decimal string, e.g. "50000.00".')]
IdStr = Annotated[str, Field(pattern=ORDER_ID_PATTERN, description="An int64 id as a string.")]
EpochMs = Annotated[int, Field(description="Epoch milliseconds.")]


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable UPPER_SNAKE code, e.g. INVALID_PRICE.")
    message: str = Field(description="Human-readable text; may change between versions.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer."""

    success: Literal[False]
    error: ErrorDetail


class Envelope(BaseModel, Generic[T]):
    """Every 2xx answer."""

    success: Literal[True]
    data: T


class OrderAccepted(BaseModel):
    order_id: IdStr = Field(description="The order's id: its command's offset in the log.")
    client_order_id: str | None
    status: Literal["ACCEPTED"]


class CancelAccepted(BaseModel):
    command_id: IdStr = Field(description="The cancel's offset in the log.")
    status: Literal["CANCEL_REQUESTED"]


class CommandAccepted(BaseModel):
    command_id: IdStr = Field(description="The command's offset in the log.")
    status: Literal["ACCEPTED"]


class OrderOut(BaseModel):
    order_id: IdStr
    client_order_id: str | None
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: DecimalStr | None = Field(description="Null for MARKET orders.")
    quantity: DecimalStr
    filled_quantity: DecimalStr
    remaining_quantity: DecimalStr
    avg_fill_price: DecimalStr | None = Field(description="Exact average; null with no fill.")
    status: OrderStatus
    reject_reason: RejectReason | None
    created_at: EpochMs
    updated_at: EpochMs


class FillOut(BaseModel):
    trade_id: IdStr
    price: DecimalStr
    quantity: DecimalStr
    quote_quantity: DecimalStr
    fee: DecimalStr
    fee_asset: str
    is_maker: bool
    executed_at: EpochMs


class OrderResult(OrderOut):
    """The order as the engine left it after processing the command (``?wait=true``)."""

    fills: list[FillOut]


class OrderUpdateOut(BaseModel):
    command_id: IdStr = Field(description="The command that changed the order.")
    sequence: int = Field(description="The engine output's sequence number.")
    status: OrderStatus
    filled_quantity: DecimalStr
    remaining_quantity: DecimalStr
    avg_fill_price: DecimalStr | None
    last_fill_price: DecimalStr | None
    last_fill_quantity: DecimalStr
    reject_reason: RejectReason | None
    updated_at: EpochMs


class OrderDetail(OrderOut):
    updates: list[OrderUpdateOut] = Field(description="Every update, oldest first.")


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: IdStr | None = Field(description="Pass as `before` for the next page.")


class TradeOut(BaseModel):
    trade_id: IdStr
    order_id: IdStr
    symbol: str
    side: Side
    price: DecimalStr
    quantity: DecimalStr
    quote_quantity: DecimalStr
    is_maker: bool
    fee: DecimalStr
    fee_asset: str
    executed_at: EpochMs


class BalanceOut(BaseModel):
    asset: str
    available: DecimalStr
    locked: DecimalStr


class FundsResult(BaseModel):
    """A deposit's or withdrawal's outcome after the engine processed it (``?wait=true``)."""

    command_id: IdStr
    status: Literal["COMPLETED", "REJECTED"]
    asset: str
    available: DecimalStr | None = Field(description="The balance after; null if rejected.")
    locked: DecimalStr | None
    reject_reason: RejectReason | None


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    broker: Literal["ok"]
    store: Literal["ok"]


# ----------------------------------------------------------------------------- access (#14)

PublicKey = Annotated[
    str,
    Strict(),
    Field(
        max_length=64,
        description="Base64 (standard, padded) of the 32-byte raw Ed25519 public key.",
    ),
]


class CancelAllRequest(BaseModel):
    """Cancel all of the user's open orders in one market (one engine command)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"symbol": "BTC_USDT"}]}
    )

    user_id: UserId | None = None  # optional: the key's user
    symbol: Symbol


class CreateUserRequest(BaseModel):
    """A new trader with its first key (operators)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
                          "label": "desk-1"}]
        },
    )  # fmt: skip

    public_key: PublicKey
    label: Annotated[str, Strict(), Field(max_length=128)] | None = None


class AddApiKeyRequest(BaseModel):
    """One more key for an existing user (operators)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: PublicKey


class CancelAllResult(BaseModel):
    cancelled: list[OrderOut] = Field(description="The orders after the cancel, by order id.")


class UserCreated(BaseModel):
    user_id: int
    api_key: str = Field(description="The key id: sign requests with it in X-API-KEY.")


class ApiKeyCreated(BaseModel):
    api_key: str


class ApiKeyRevoked(BaseModel):
    api_key: str
    revoked: Literal[True]


REQUEST_MODELS = (*REQUEST_MODELS, CancelAllRequest, CreateUserRequest, AddApiKeyRequest)
