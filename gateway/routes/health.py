"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gateway.envelope import ok
from gateway.errors import ApiError, BrokerUnavailable, ErrorCode
from gateway.openapi import error_doc
from gateway.schemas import Envelope, HealthOut, ReadyOut
from settlement.store import StoreError

router = APIRouter()


@router.get(
    "/health",
    summary="Liveness",
    description="200 while the process serves requests.",
    response_model=None,
    responses={200: {"model": Envelope[HealthOut]}},
    tags=["health"],
)
async def health() -> Response:
    return ok({"status": "ok"})


@router.get(
    "/ready",
    summary="Readiness",
    description=(
        "200 when the broker and the store answer and the engine-output follower behind "
        "`?wait=true` is in place; 503 `NOT_READY` otherwise."
    ),
    response_model=None,
    responses={
        200: {"model": Envelope[ReadyOut]},
        503: error_doc("NOT_READY: the broker or the store is unreachable, or the "
                       "engine-output follower has not started yet."),
    },
    tags=["health"],
)
async def ready(request: Request) -> Response:
    state = request.app.state
    publisher, follower, store, cfg = state.publisher, state.follower, state.store, state.config

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
