"""Snapshot encoding: the only place in the engine that turns state into bytes and back.

Layout::

    MAGIC (8 bytes) | format version (u16, big endian) | SHA-256 of the body (32 bytes) | body

The body is ``marshal`` format version 2 of a tuple of plain ints, strs, bools, None, lists and
tuples. Version 2 on purpose: from version 3 on, marshal writes back-references and "interned"
flags that depend on object identity and reference counts, so equal states could give
different bytes; version 2 depends only on the values. marshal never runs code on load (unlike
pickle) and the checksum is verified before anything is decoded.

The engine (``Engine.snapshot``) hands over ``(sequence, scales, business)``:

* ``scales`` - fee account, assets and decimals, and each symbol's base/quote and units; a
  restore refuses a markets config whose scales differ;
* ``business`` - ``(next_trade_id, completed_capacity, supply, balances, books, completed,
  update_ids, users)``, everything :meth:`Engine.state_hash` covers: per-asset supply, non-zero
  balances sorted by (user, asset), per symbol and side one row per resting order (fields as
  listed in :mod:`engine.state_io`; ascending price, FIFO within a level), the completed-order
  memory oldest first, each book's update id (symbol, id) in symbol order, and the user
  registry (``engine.users.Users.export``: next user id, users with their role values, every
  key).

Version history: 1 had no update ids and no users; 2 (issues 14 and 15) added both. A
version-1 snapshot is refused rather than read with update ids of 0 and no users, since the
state it would continue from could not match a replay of the log; remove old snapshots (the
engine then replays the log) on upgrade.

Enums are stored as fixed codes (the side, from the table below) or by their value (the wire
name), never by position in the enum class, so reordering an enum cannot silently change a
snapshot's meaning. A new code or a
new field means a new ``FORMAT_VERSION``.
"""

from __future__ import annotations

import hashlib
import marshal
import struct
from typing import Any, Final

from engine.enums import Side
from engine.errors import ExchangeError

MAGIC: Final = b"XENGSNAP"
FORMAT_VERSION: Final = 2  # 2: book update ids (engine.depth) and the user registry (engine.users)
_MARSHAL_VERSION: Final = 2
_HEADER = struct.Struct(">8sH32s")


class SnapshotFormatError(ExchangeError):
    """A snapshot is unreadable: wrong magic, unknown version, corrupt body."""


def _codes(members: tuple[Any, ...]) -> tuple[dict[Any, int], dict[int, Any]]:
    encode = {member: code for code, member in enumerate(members)}
    return encode, dict(enumerate(members))


# Append-only tables: a member's code never changes once a snapshot has been written with it.
SIDE_CODE, SIDE_FROM_CODE = _codes((Side.BUY, Side.SELL))


def encode_body(state: tuple[Any, ...]) -> bytes:
    """Deterministic bytes for a plain-data tuple (used for both snapshots and state hashes)."""
    try:
        return marshal.dumps(state, _MARSHAL_VERSION)
    except ValueError as e:  # an object marshal cannot represent: a bug in the exporter
        raise SnapshotFormatError(f"state is not plain data: {e}") from e


def digest(state: tuple[Any, ...]) -> str:
    return hashlib.sha256(encode_body(state)).hexdigest()


def dump(state: tuple[Any, ...]) -> bytes:
    return frame(encode_body(state))


def frame(body: bytes) -> bytes:
    """The snapshot of an encoded body: the header (magic, version, SHA-256) + the body."""
    return _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(body).digest()) + body


def load(data: bytes) -> tuple[Any, ...]:
    if len(data) < _HEADER.size:
        raise SnapshotFormatError("snapshot is truncated (no header)")
    magic, version, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotFormatError("not an engine snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotFormatError(
            f"snapshot format version {version}, this engine reads {FORMAT_VERSION}"
        )
    body = memoryview(data)[_HEADER.size :]
    if hashlib.sha256(body).digest() != checksum:
        raise SnapshotFormatError("snapshot body does not match its checksum")
    try:
        state = marshal.loads(body)
    except (EOFError, ValueError, TypeError) as e:
        raise SnapshotFormatError(f"snapshot body is unreadable: {e}") from e
    if not isinstance(state, tuple):
        raise SnapshotFormatError("snapshot body is not a tuple")
    return state
