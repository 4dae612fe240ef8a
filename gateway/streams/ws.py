"""``GET /ws``: the WebSocket endpoint (protocol in :mod:`gateway.streams.protocol`).

The receive side lives here: it parses each request and acts on the hub; the hub's
per-client sender writes everything (answers included) in order. Login checks the
signature with the REST scheme over ``timestamp + "GET" + "/ws"`` through an
:class:`Authenticator` (the access layer's key registry and signature check, see
:mod:`gateway.streams.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.streams.auth import Authenticator
from gateway.streams.frames import FRAMES_EXTENSION
from gateway.streams.hub import StreamClient, StreamHub
from gateway.streams.protocol import (
    LOGIN_FAILED_CODE,
    MAX_STREAMS,
    TOO_MANY_STREAMS,
    UNAUTHORIZED,
    Login,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    parse,
)

WS_PATH = "/ws"

router = APIRouter()


@router.websocket(WS_PATH)
async def stream_socket(websocket: WebSocket) -> None:
    state = websocket.app.state
    hub: StreamHub = state.streams
    symbols: frozenset[str] = state.stream_symbols
    auth: Authenticator | None = state.stream_auth
    await websocket.accept()
    frames = websocket.scope.get("extensions", {}).get(FRAMES_EXTENSION) if hub.raw_frames else None
    client = hub.connect(websocket, frames["write"] if frames else None)
    try:
        while not client.closed:
            text = await websocket.receive_text()
            client.last_seen = time.monotonic()
            try:
                request = parse(text, symbols)
                if isinstance(request, Subscribe):
                    if len(client.streams | set(request.streams)) > MAX_STREAMS:
                        raise ProtocolError(TOO_MANY_STREAMS, f"at most {MAX_STREAMS} streams")
                    hub.subscribe(client, request.streams)
                    hub.reply(client, {"op": "subscribed", "streams": request.streams})
                elif isinstance(request, Unsubscribe):
                    hub.unsubscribe(client, request.streams)
                    hub.reply(client, {"op": "unsubscribed", "streams": request.streams})
                elif isinstance(request, Login):
                    if not await _login(hub, client, auth, request):
                        return
                elif isinstance(request, Ping):
                    hub.reply(client, {"op": "pong"})
            except ProtocolError as e:
                hub.reply(client, e.reply())
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (or was closed by the hub)
    finally:
        hub.disconnect(client)


async def _login(
    hub: StreamHub, client: StreamClient, auth: Authenticator | None, request: Login
) -> bool:
    """Log the client in (True), or answer the error, close with 4401 and say False."""
    user_id = (
        None
        if auth is None
        else auth.authenticate(request.api_key, request.timestamp_ms, request.signature)
    )
    if client.user_id is not None and user_id is not None and user_id != client.user_id:
        user_id = None  # one user per connection
    if user_id is None:
        hub.reply(client, ProtocolError(UNAUTHORIZED, "login failed").reply())
        await _flush(client)
        await hub.close(client, LOGIN_FAILED_CODE, "login failed")
        return False
    hub.login(client, user_id)
    hub.reply(client, {"op": "login", "success": True, "user_id": user_id})
    return True


async def _flush(client: StreamClient, timeout_s: float = 2.0) -> None:
    """Give the sender a moment to write what is queued (the error before the close)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not client.queue.empty():
                await asyncio.sleep(0.005)
