"""The public market-data routes (no signature): depth, recent trades, ticker, klines.

Depth is served from the gateway's own books (:mod:`gateway.market.books`), on the event
loop, so an answer is exactly the book after ``last_update_id``. Trades and klines come from
the store (threadpool); the ticker from both (:mod:`gateway.market.tickers`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gateway.envelope import ok
from gateway.errors import ApiError, ErrorCode, clip
from gateway.market.books import MarketBooks
from gateway.market.tickers import INTERVALS, TickerService
from gateway.market.views import MarketViews
from gateway.openapi import BAD, STORE, Docs, error_doc

DEPTH_PATH = "/api/v1/depth"
TRADES_PATH = "/api/v1/trades/recent"
TICKER_PATH = "/api/v1/ticker"
KLINES_PATH = "/api/v1/klines"

MAX_LIMIT = 1000
DEFAULT_DEPTH_LIMIT = 100
DEFAULT_TRADES_LIMIT = 100
DEFAULT_KLINES_LIMIT = 500
TIME_MAX = 2**63 - 1

SymbolQ = Annotated[str, Query(max_length=64, description="The market, e.g. BTC_USDT.")]
OptionalSymbolQ = Annotated[
    str | None, Query(max_length=64, description="The market; all markets when omitted.")
]
NOT_READY: Docs = {503: error_doc("NOT_READY: the gateway's books are still loading.")}

router = APIRouter()


def _symbol(request: Request, symbol: str) -> str:
    if symbol not in request.app.state.stream_symbols:
        raise ApiError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {clip(symbol)}")
    return symbol


def _tickers(request: Request) -> TickerService:
    service: TickerService = request.app.state.market.tickers
    return service


@router.get(
    DEPTH_PATH,
    summary="Order book depth",
    description=(
        "The book's price levels, best first, exactly as after the market's update "
        "`last_update_id` (`sequence` is the engine sequence of that update). `limit` levels "
        "per side: default 100, at most 1000. Keep a live local book with the `depth@SYMBOL` "
        "stream of `GET /ws` (the README describes the procedure)."
    ),
    response_model=None,
    responses={**BAD, **NOT_READY},
    tags=["market"],
)
async def depth(
    request: Request,
    symbol: SymbolQ,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Levels per side (at most 1000).")
    ] = DEFAULT_DEPTH_LIMIT,
) -> Response:
    _symbol(request, symbol)
    books: MarketBooks = request.app.state.market.books
    if not books.installed or books.broken:
        raise ApiError(ErrorCode.NOT_READY, "the market books are loading")
    snap = books.depth(symbol, limit)
    assert snap is not None  # every configured symbol has a book
    views: MarketViews = request.app.state.market.views
    return ok(views.depth(snap))


@router.get(
    TRADES_PATH,
    summary="Recent trades",
    description=(
        "The market's latest trades, newest first (default 100, at most 1000): no user or "
        "order ids."
    ),
    response_model=None,
    responses={**BAD, **STORE},
    tags=["market"],
)
def recent_trades(
    request: Request,
    symbol: SymbolQ,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most 1000.")] = (
        DEFAULT_TRADES_LIMIT
    ),
) -> Response:
    _symbol(request, symbol)
    return ok(_tickers(request).recent_trades(symbol, limit))


@router.get(
    TICKER_PATH,
    summary="24 h ticker",
    description=(
        "Last price, best bid and ask, and the rolling 24 h open, high, low, volume, quote "
        "volume and trade count (from 1-minute candles: the window rolls by the minute). "
        "One market, or a list of all markets when `symbol` is omitted."
    ),
    response_model=None,
    responses={**BAD, **STORE},
    tags=["market"],
)
async def ticker(request: Request, symbol: OptionalSymbolQ = None) -> Response:
    service = _tickers(request)
    if symbol is None:
        data: Any = await service.tickers(sorted(request.app.state.stream_symbols))
    else:
        data = await service.ticker(_symbol(request, symbol))
    return ok(data)


@router.get(
    KLINES_PATH,
    summary="Candles",
    description=(
        "Candles of `interval` (1m, 5m, 15m, 1h, 1d), oldest first, whose open time is "
        "within [`start`, `end`] (epoch ms, both optional; the latest when omitted); "
        "default 500, at most 1000."
    ),
    response_model=None,
    responses={**BAD, **STORE},
    tags=["market"],
)
async def klines(
    request: Request,
    symbol: SymbolQ,
    interval: Annotated[str, Query(description="1m, 5m, 15m, 1h or 1d.")],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most 1000.")] = (
        DEFAULT_KLINES_LIMIT
    ),
    start: Annotated[int | None, Query(ge=0, le=TIME_MAX, description="Epoch ms.")] = None,
    end: Annotated[int | None, Query(ge=0, le=TIME_MAX, description="Epoch ms.")] = None,
) -> Response:
    _symbol(request, symbol)
    if interval not in INTERVALS:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"interval must be one of {', '.join(INTERVALS)}")
    if start is not None and end is not None and start > end:
        raise ApiError(ErrorCode.INVALID_REQUEST, "start must not be after end")
    service = _tickers(request)
    rows = await run_in_threadpool(service.klines, symbol, interval, start, end, limit)
    return ok(rows)
