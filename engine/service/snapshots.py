"""Where engine snapshots live: the compacted ``engine-snapshots`` topic, or files.

A snapshot is the engine state plus where to resume: the next ``orders`` offset, the output
sequence, and for each ``engine-output`` partition the offset to start the recovery tail
scan from. A snapshot is only ever taken whole: its manifest names its id, chunk count, size
and SHA-256, and a loader accepts it only if every chunk is present with that id and the
digest matches. So a crash while writing leaves the previous snapshot in charge.

On Kafka the chunks of a large snapshot (far above the 1 MB default record limit) are keyed
into two alternating slots, ``A`` and ``B``: compaction keeps at most two snapshots, and a
half-written slot never damages the other one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from engine.errors import ExchangeError
from exchange.kafka import ReadToEnd, make_consumer

log = logging.getLogger(__name__)

CHUNK_SIZE = 512 * 1024
_ID = struct.Struct(">q")


class SnapshotStoreError(ExchangeError):
    """A snapshot could not be written or read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    snapshot_id: int  # the output sequence at the snapshot: unique and increasing
    orders_next_offset: int
    sequence: int
    next_trade_hint: int = 0
    output_scan_from: dict[int, int] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""
    chunks: int = 0
    state_hash: str = ""
    created_unix_ms: int = 0  # informational only; never read back into the engine

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotMeta:
        d = json.loads(raw)
        d["output_scan_from"] = {int(k): int(v) for k, v in d.get("output_scan_from", {}).items()}
        return cls(**d)


def seal(meta: SnapshotMeta, data: bytes, chunk_size: int = CHUNK_SIZE) -> SnapshotMeta:
    """The manifest for ``data``: size, digest and chunk count filled in."""
    chunks = max(1, -(-len(data) // chunk_size))
    return SnapshotMeta(
        **{
            **asdict(meta),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "chunks": chunks,
            "created_unix_ms": int(time.time() * 1000),
        }
    )


class SnapshotStore(Protocol):
    def save(self, meta: SnapshotMeta, data: bytes) -> None: ...

    def load_latest(self) -> tuple[SnapshotMeta, bytes] | None: ...


class FileSnapshotStore:
    """``<dir>/snapshot-<id>.bin``: a JSON manifest line, then the state. Atomic rename."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self._dir = directory
        self._keep = keep

    def save(self, meta: SnapshotMeta, data: bytes) -> None:
        meta = seal(meta, data)
        self._dir.mkdir(parents=True, exist_ok=True)
        final = self._dir / f"snapshot-{meta.snapshot_id:016d}.bin"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(meta.to_json() + b"\n")
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in sorted(self._dir.glob("snapshot-*.bin"))[: -self._keep]:
            old.unlink(missing_ok=True)

    def load_latest(self) -> tuple[SnapshotMeta, bytes] | None:
        for path in sorted(self._dir.glob("snapshot-*.bin"), reverse=True):
            try:
                raw = path.read_bytes()
                head, _, data = raw.partition(b"\n")
                meta = SnapshotMeta.from_json(head)
            except (OSError, ValueError, TypeError) as e:
                log.warning("ignoring unreadable snapshot %s: %s", path, e)
                continue
            if len(data) == meta.size and hashlib.sha256(data).hexdigest() == meta.sha256:
                return meta, data
            log.warning("ignoring incomplete snapshot %s", path)
        return None


class KafkaSnapshotStore:
    """Chunked snapshots on a compacted single-partition topic, in two alternating slots."""

    def __init__(
        self, producer: Producer, bootstrap: str, topic: str, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self._producer = producer
        self._saves = 0
        self._bootstrap = bootstrap
        self._topic = topic
        self._chunk_size = chunk_size

    def save(self, meta: SnapshotMeta, data: bytes) -> None:
        meta = seal(meta, data, self._chunk_size)
        slot = self._next_slot()
        prefix = _ID.pack(meta.snapshot_id)
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        view = memoryview(data)
        for i in range(meta.chunks):
            chunk = view[i * self._chunk_size : (i + 1) * self._chunk_size]
            self._produce(f"{slot}/chunk/{i:06d}".encode(), prefix + bytes(chunk), on_delivery)
        # The manifest goes last: a reader only trusts chunks a manifest vouches for.
        self._produce(f"{slot}/manifest".encode(), meta.to_json(), on_delivery)
        remaining = self._producer.flush(120)
        if remaining or errors:
            raise SnapshotStoreError(
                f"snapshot {meta.snapshot_id} not fully written: "
                f"{remaining} undelivered, errors {errors[:3]}"
            )

    def _next_slot(self) -> str:
        self._saves += 1
        return "A" if self._saves % 2 else "B"

    def _produce(
        self, key: bytes, value: bytes, cb: Callable[[KafkaError | None, Message], None]
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, key=key, value=value, partition=0, on_delivery=cb
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def load_latest(self) -> tuple[SnapshotMeta, bytes] | None:
        latest = _read_to_end(self._bootstrap, self._topic)
        best: tuple[SnapshotMeta, bytes] | None = None
        for slot in ("A", "B"):
            raw = latest.get(f"{slot}/manifest".encode())
            if raw is None:
                continue
            try:
                meta = SnapshotMeta.from_json(raw)
            except (ValueError, TypeError) as e:
                log.warning("ignoring unreadable snapshot manifest in slot %s: %s", slot, e)
                continue
            parts: list[bytes] = []
            for i in range(meta.chunks):
                value = latest.get(f"{slot}/chunk/{i:06d}".encode())
                if value is None or value[:8] != _ID.pack(meta.snapshot_id):
                    break
                parts.append(value[8:])
            data = b"".join(parts)
            if (
                len(parts) != meta.chunks
                or len(data) != meta.size
                or hashlib.sha256(data).hexdigest() != meta.sha256
            ):
                log.warning("ignoring incomplete snapshot %s in slot %s", meta.snapshot_id, slot)
                continue
            if best is None or meta.snapshot_id > best[0].snapshot_id:
                best = (meta, data)
        if best is not None:
            # Continue alternating after the slot that holds the newest snapshot.
            newest_slot_a = (
                latest.get(b"A/manifest") is not None
                and SnapshotMeta.from_json(latest[b"A/manifest"]).snapshot_id == best[0].snapshot_id
            )
            self._saves = 1 if newest_slot_a else 0
        return best


def _read_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0) -> dict[bytes, bytes]:
    """Latest value per key of a single-partition topic, read from the start to its end.

    The end is the fetch's, not ListOffsets' (see :class:`exchange.kafka.ReadToEnd`).
    """

    def fail(_msg: Message, err: KafkaError) -> None:
        raise SnapshotStoreError(f"reading {topic}: {err}")

    consumer = make_consumer(
        bootstrap,
        "engine-snapshot-loader",
        latency="bulk",
        **{
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 16 << 20,
        },
    )
    latest: dict[bytes, bytes] = {}
    reading = ReadToEnd(consumer, {(topic, 0): 0}, timeout_s=timeout_s, on_error=fail)
    try:
        for msg in reading:
            key = msg.key()
            if key is not None:
                latest[key] = msg.value() or b""
    finally:
        consumer.close()
    if reading.pending:
        raise SnapshotStoreError(f"could not read {topic} to its end in {timeout_s}s")
    return latest
