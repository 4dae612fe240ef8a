"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
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


async def peer_ready(client: httpx.AsyncClient, url: str, timeout_s: float) -> str | None:
    """None when the service at ``url`` (its ``/ready``) answers 200; else why not."""
    try:
        answer = await client.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        return f"{url}: unreachable ({type(e).__name__})"
    if answer.status_code == 200:
        return None
    try:
        detail = str(answer.json().get("detail", ""))
    except ValueError:
        detail = answer.text[:200]
    return f"{url}: {answer.status_code} {detail}".rstrip()


def _peer_client(state: Any) -> httpx.AsyncClient:
    """One client per app: building one per probe costs more than the probe."""
    client = getattr(state, "peer_client", None)
    if client is None:
        client = state.peer_client = httpx.AsyncClient()
    return client


@router.get(
    "/ready",
    summary="Readiness",
    description=(
        "200 only when the pipeline takes commands: the broker and the store answer, the "
        "engine-output follower behind `?wait=true` follows and is not stalled, and every "
        "service in EXCHANGE_READY_URLS (the engine: recovered and consuming; settlement: "
        "assigned and able to write) answers its own `/ready` with 200. 503 `NOT_READY`, "
        "naming what is not ready, otherwise."
    ),
    response_model=None,
    responses={
        200: {"model": Envelope[ReadyOut]},
        503: error_doc(
            "NOT_READY: the broker or the store is unreachable, the "
            "engine-output follower is not following, or the engine or a "
            "settlement worker is not ready."
        ),
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
        *(peer_ready(_peer_client(state), url, cfg.ready_timeout_s) for url in cfg.ready_urls),
    )
    failed = [p for p in problems if p is not None]
    # Until the follower follows, ?wait=true answers 202 at once: not what a ready gateway does.
    following = follower.ready()
    if following is not None:
        failed.append(following)
    # The market books (issue #15): loaded from the engine's snapshot and caught up with the log.
    market = getattr(state, "market", None)
    books = None if market is None else market.ready()
    if books is not None:
        failed.append(books)
    if failed:
        raise ApiError(ErrorCode.NOT_READY, "; ".join(failed))
    return ok({"broker": "ok", "store": "ok"})
