"""Read which command an ``EngineOutput`` record answers without decoding the record.

Why: the gateway's output follower must see every output that changes an API key (to
accept or refuse keys within a second) but decoding every output of a busy engine costs a
good share of a core. An output's first fields are ``sequence``, ``command_id`` (longs) and
``command_kind`` (an enum): after the 10-byte single-object header, two varints to skip and
one to read, about a microsecond. Only records framed with the codec's own output schema
are peeked; for any other writer schema (or a record too short) the answer is None and the
caller decodes the record through the codec (see :mod:`exchange.codec.codec`).
"""

from __future__ import annotations

from typing import Any

from engine.enums import CommandKind
from exchange.codec.codec import HEADER_SIZE, SINGLE_OBJECT_MARKER, Codec

_KIND = "exchange.v1.CommandKind"


class OutputKindPeek:
    """``peek(record_bytes) -> CommandKind | None`` for the codec's output schema."""

    def __init__(self, codec: Codec) -> None:
        self._header = SINGLE_OBJECT_MARKER + codec.output_fingerprint
        fields = codec.schemas.output["fields"]
        names = [f["name"] for f in fields[:3]]
        if names != ["sequence", "command_id", "command_kind"]:
            raise ValueError(f"EngineOutput starts with {names}, not sequence, command_id, kind")
        symbols = _enum_symbols(fields[2]["type"])
        self._kinds = tuple(CommandKind(s) for s in symbols)

    def __call__(self, data: bytes) -> CommandKind | None:
        if not data.startswith(self._header):
            return None
        pos = HEADER_SIZE
        end = len(data)
        for _ in range(2):  # sequence, command_id
            while pos < end and data[pos] & 0x80:
                pos += 1
            pos += 1
        shift = value = 0
        while pos < end:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                index = (value >> 1) ^ -(value & 1)  # zigzag
                kinds = self._kinds
                return kinds[index] if 0 <= index < len(kinds) else None
            shift += 7
        return None


def _enum_symbols(schema: Any) -> list[str]:
    if isinstance(schema, dict) and schema.get("type") == "enum":
        return list(schema["symbols"])
    raise ValueError(f"EngineOutput.command_kind is not an inline {_KIND} enum")
