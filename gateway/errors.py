"""The gateway's error vocabulary: every non-2xx answer is one of these codes.

Every error leaves the API in the same envelope,
``{"success": false, "error": {"code": "UPPER_SNAKE", "message": "human text"}}``, whatever
raised it: a request the gateway refuses (:class:`ApiError`), FastAPI's own validation,
Starlette's 404/405, a broker or store outage, or (last resort) a bug.

==================== ====== =====================================================================
code                 status when
==================== ====== =====================================================================
INVALID_REQUEST      400    missing/unknown fields, wrong types, bad enum values, bad query or
                            path parameters, ids out of range, a body that is not a JSON object
MALFORMED_JSON       400    the body is not JSON (or empty, or not UTF-8)
UNKNOWN_SYMBOL       400    the symbol is not traded
UNKNOWN_ASSET        400    the asset is not known
INVALID_PRICE        400    not a positive decimal, not a multiple of the tick, above max price
INVALID_QUANTITY     400    not a positive decimal, not a multiple of the step, outside min..max
INVALID_AMOUNT       400    not a positive decimal, finer than the asset's minor unit, too large
INVALID_ORDER        400    inconsistent fields: LIMIT without a price, MARKET with a price,
                            MARKET FOK or post-only, post-only that is not GTC
UNAUTHENTICATED      401    no ``X-API-KEY``, or an unknown or revoked key (gateway.auth)
TIMESTAMP_OUT_OF_WINDOW 401 ``X-TIMESTAMP`` missing, not digits, or too far from the server's clock
INVALID_SIGNATURE    401    ``X-SIGNATURE`` missing or not the key's signature of the request
FORBIDDEN            403    a valid key without the route's role, or naming another user
ORDER_NOT_FOUND      404    unknown order, another user's order, or (cancel) a completed one
USER_NOT_FOUND       404    the engine knows no such user (operator commands with wait=true)
API_KEY_NOT_FOUND    404    revoking a key the engine never knew
DUPLICATE_API_KEY    409    the public key is already registered (revoked or not)
RATE_LIMITED         429    over the key's rate limit; ``Retry-After`` says when to retry
NOT_FOUND            404    no such route
METHOD_NOT_ALLOWED   405    the route exists, not with this method
REQUEST_TOO_LARGE    413    body above the gateway's limit
BROKER_UNAVAILABLE   503    the broker did not acknowledge the command in time (not accepted)
STORE_UNAVAILABLE    503    the read model cannot be queried right now
NOT_READY            503    ``/ready``: the broker or the store is unreachable
INTERNAL_ERROR       500    a bug; never expected (the fuzz test asserts no 5xx besides 503)
==================== ====== =====================================================================
"""

from __future__ import annotations

from enum import StrEnum

from engine.errors import ExchangeError


class ErrorCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    MALFORMED_JSON = "MALFORMED_JSON"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_ORDER = "INVALID_ORDER"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    TIMESTAMP_OUT_OF_WINDOW = "TIMESTAMP_OUT_OF_WINDOW"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    FORBIDDEN = "FORBIDDEN"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    API_KEY_NOT_FOUND = "API_KEY_NOT_FOUND"
    DUPLICATE_API_KEY = "DUPLICATE_API_KEY"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID_AMEND = "INVALID_AMEND"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    NOT_READY = "NOT_READY"
    INTERNAL_ERROR = "INTERNAL_ERROR"


# HTTP status of each code; the one table the exception handlers read.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.UNKNOWN_SYMBOL: 400,
    ErrorCode.UNKNOWN_ASSET: 400,
    ErrorCode.INVALID_PRICE: 400,
    ErrorCode.INVALID_QUANTITY: 400,
    ErrorCode.INVALID_AMOUNT: 400,
    ErrorCode.INVALID_ORDER: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.TIMESTAMP_OUT_OF_WINDOW: 401,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.ORDER_NOT_FOUND: 404,
    ErrorCode.USER_NOT_FOUND: 404,
    ErrorCode.API_KEY_NOT_FOUND: 404,
    ErrorCode.DUPLICATE_API_KEY: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INVALID_AMEND: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.BROKER_UNAVAILABLE: 503,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class GatewayError(ExchangeError):
    """Root of the gateway's own exceptions."""


class ApiError(GatewayError):
    """A request the gateway answers with an error envelope (never a bug)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = STATUS[code]


class BrokerUnavailable(GatewayError):
    """The broker did not acknowledge a command in time; the command was not accepted.

    Raised ``from`` the librdkafka error when there is one. A timed-out command may still
    reach the log if the broker got it just before the deadline, as with any at-least-once
    client; a retry with the same ``client_order_id`` is refused by the engine as a duplicate
    while the first order is open.
    """


def clip(text: object, limit: int = 40) -> str:
    """``repr`` of a client-supplied value, cut short so no message echoes a huge input."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
