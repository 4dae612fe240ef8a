"""Fan-out without per-client encoding: one text frame, written as is to every subscriber.

Why: a stream message goes to every subscriber of its stream unchanged, and a server's
frames are not masked, so the frame's bytes are the same for every client. Through ASGI
each client's ``send_text`` costs the whole stack again (Starlette's state checks, uvicorn's
frame encoder, a join, the write): about 10 us per client and message, which at 1,000
subscribers is most of the gateway's CPU. Here the hub encodes the frame once
(:func:`text_frame`) and writes it to each client's transport.

How: uvicorn takes its WebSocket protocol class from its config (``ws=``, a documented
setting); :class:`FanOutWebSocketProtocol` is uvicorn's own sans-I/O protocol plus one
thing, an ASGI scope extension ``"exchange.frames"`` holding :meth:`write_frame`. The
endpoint uses it when present and falls back to ``send_text`` through a bounded queue when
not (another server, another protocol), so nothing depends on it but speed. Frames written
this way are plain uncompressed text frames (RSV1 clear), valid whether or not the client
negotiated permessage-deflate (RFC 7692 allows uncompressed messages), and the protocol's
own later frames (pings, the close) follow them on the same transport.

The class subclasses uvicorn's protocol and so depends on its ``transport``,
``handshake_complete`` and ``close_sent`` attributes: ``tests/gateway`` runs every stream
test through it, so an uvicorn upgrade that changes them fails there, not in production.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

FRAMES_EXTENSION = "exchange.frames"

_SHORT = struct.Struct(">BB")
_MEDIUM = struct.Struct(">BBH")
_LONG = struct.Struct(">BBQ")
_FIN_TEXT = 0x81  # FIN, opcode 1 (text), RSV bits clear


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final, uncompressed text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_FIN_TEXT, n) + payload
    if n < 1 << 16:
        return _MEDIUM.pack(_FIN_TEXT, 126, n) + payload
    return _LONG.pack(_FIN_TEXT, 127, n) + payload


class FanOutWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the ``exchange.frames`` scope extension."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get("type") == "websocket":
            scope["extensions"][FRAMES_EXTENSION] = {"write": self.write_frame}

    def write_frame(self, frame: bytes) -> int | None:
        """Write an encoded frame; the bytes the transport now buffers, or None when the
        connection is no longer open for data (closed, closing, or not accepted yet)."""
        transport = self.transport
        if not self.handshake_complete or self.close_sent or transport.is_closing():
            return None
        transport.write(frame)
        return int(transport.get_write_buffer_size())
