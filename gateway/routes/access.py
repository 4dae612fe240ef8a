"""The routes of issue #14: cancel-all (an order command) and the operators' admin routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from gateway.admin import AdminService
from gateway.auth.policy import (
    ADMIN_KEY_PATH,
    ADMIN_USER_KEYS_PATH,
    ADMIN_USERS_PATH,
    CANCEL_ALL_PATH,
)
from gateway.bodies import read_body
from gateway.envelope import JSON_MEDIA_TYPE
from gateway.openapi import BAD, BROKER, TOO_LARGE, Docs, body_doc, error_doc
from gateway.routes.commands import DEFAULT_WAIT_MS, TimeoutQ, WaitQ, run_core
from gateway.schemas import (
    AddApiKeyRequest,
    ApiKeyCreated,
    ApiKeyRevoked,
    CancelAccepted,
    CancelAllRequest,
    CancelAllResult,
    CreateUserRequest,
    Envelope,
    UserCreated,
)

router = APIRouter()

_ADMIN_ACCEPTED: Docs = {202: {"description": "The engine did not answer in time: the command id."}}


def _admin(request: Request) -> AdminService:
    admin: AdminService = request.app.state.admin
    return admin


def _json(status_payload: tuple[int, bytes]) -> Response:
    status, payload = status_payload
    return Response(payload, status, media_type=JSON_MEDIA_TYPE)


@router.post(
    CANCEL_ALL_PATH,
    summary="Cancel all open orders in a market",
    description=(
        "One engine command cancels every open order of the user on `symbol`. **202** "
        "`{command_id, status: CANCEL_REQUESTED}` once in the log; with `?wait=true`, "
        "**200** `{cancelled: [order, ...]}` (the orders after the cancel; empty when none "
        "was open)."
    ),
    status_code=202,
    response_model=None,
    responses={
        202: {"model": Envelope[CancelAccepted], "description": "Cancel in the log."},
        200: {"model": Envelope[CancelAllResult], "description": "With wait=true."},
        **BAD,
        **TOO_LARGE,
        **BROKER,
    },
    openapi_extra=body_doc(CancelAllRequest),
    tags=["orders"],
)
async def cancel_all(
    request: Request, wait: WaitQ = False, timeout_ms: TimeoutQ = DEFAULT_WAIT_MS
) -> Response:
    return await run_core(CANCEL_ALL_PATH, request, wait, timeout_ms)


@router.post(
    ADMIN_USERS_PATH,
    summary="Create a user (operators)",
    description=(
        "Registers a trader with its first key: the client generated the Ed25519 key pair "
        "and sends only the public key. **201** `{user_id, api_key}` once this gateway "
        "accepts the key (every gateway within a second); 409 `DUPLICATE_API_KEY` for a "
        "public key already registered."
    ),
    status_code=201,
    response_model=None,
    responses={
        201: {"model": Envelope[UserCreated], "description": "The user and its key id."},
        **_ADMIN_ACCEPTED,
        **BAD,
        409: error_doc("DUPLICATE_API_KEY."),
        **BROKER,
    },
    openapi_extra=body_doc(CreateUserRequest),
    tags=["admin"],
)
async def create_user(request: Request) -> Response:
    body = await read_body(request, request.app.max_body)
    return _json(await _admin(request).create_user(body))


@router.post(
    ADMIN_USER_KEYS_PATH,
    summary="Add a key to a user (operators)",
    description=(
        "**201** `{api_key}` once this gateway accepts the key; 404 `USER_NOT_FOUND` for "
        "a user the engine does not know; 409 `DUPLICATE_API_KEY`."
    ),
    status_code=201,
    response_model=None,
    responses={
        201: {"model": Envelope[ApiKeyCreated], "description": "The new key id."},
        **_ADMIN_ACCEPTED,
        **BAD,
        404: error_doc("USER_NOT_FOUND."),
        409: error_doc("DUPLICATE_API_KEY."),
        **BROKER,
    },
    openapi_extra=body_doc(AddApiKeyRequest),
    tags=["admin"],
)
async def add_key(
    request: Request, user_id: Annotated[str, Path(description="The user.")]
) -> Response:
    body = await read_body(request, request.app.max_body)
    return _json(await _admin(request).add_key(user_id, body))


@router.delete(
    ADMIN_KEY_PATH,
    summary="Revoke a key (operators)",
    description=(
        "**200** `{api_key, revoked: true}` once this gateway refuses the key (every "
        "gateway within a second); revoking a revoked key is 200 too. 404 "
        "`API_KEY_NOT_FOUND` for a key never registered."
    ),
    response_model=None,
    responses={
        200: {"model": Envelope[ApiKeyRevoked], "description": "Revoked."},
        **_ADMIN_ACCEPTED,
        404: error_doc("API_KEY_NOT_FOUND."),
        **BROKER,
    },
    tags=["admin"],
)
async def revoke_key(
    request: Request, api_key: Annotated[str, Path(description="The key id.")]
) -> Response:
    return _json(await _admin(request).revoke_key(api_key))
