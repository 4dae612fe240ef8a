"""Feeds the key registry: the store's keys at start, then the engine output stream.

Theory of operation
-------------------
The gateway's output follower (:class:`gateway.results.OutputFollower`) reads every
partition of ``engine-output``. This feed plugs into it twice:

* :meth:`KeyFeed.start_positions` chooses where the follower starts, with no gap between
  what the store holds and what the follower reads. It first asks the broker for the
  settlement group's committed offsets (settlement commits an offset only after the outputs
  before it are durable in the store), *then* loads every key from the store into the
  registry, and answers those offsets as the start positions (the partition's beginning
  where the group has committed nothing). Every output is therefore either in the store
  when it is loaded (it is before a committed offset) or read by the follower (it is at or
  after it); outputs both in the store and re-read are applied twice, which changes nothing
  (the registry keeps the newest state by engine sequence). The follower is not ready (nor
  the gateway's ``/ready``) until it has read up to where the log ended when it started.
* :meth:`KeyFeed.on_records` sees every record the follower fetches, in the follower's
  thread, before any waiting request is answered. It peeks each record's command kind
  (:class:`exchange.codec.peek.OutputKindPeek`, about a microsecond) and decodes only the
  outputs of ``CreateUser``, ``AddApiKey`` and ``RevokeApiKey`` (and any record of another
  writer schema), applying their ``ApiKeyUpdated`` events. A request that waits for such a
  command's output therefore finds the key already applied when its wait returns: the
  admin routes answer 201 only once this gateway accepts the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from engine.enums import CommandKind
from engine.events import EngineOutput
from exchange.codec.peek import OutputKindPeek
from exchange.errors import DecodeError
from gateway.auth.registry import KeyRegistry

log = logging.getLogger(__name__)

KEY_KINDS = frozenset(
    {CommandKind.CREATE_USER, CommandKind.ADD_API_KEY, CommandKind.REVOKE_API_KEY}
)


class KeyRow(Protocol):
    """A key as the store holds it (``settlement.store.ApiKeyRow``)."""

    @property
    def api_key(self) -> str: ...
    @property
    def user_id(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def revoked(self) -> bool: ...
    @property
    def sequence(self) -> int: ...


class KeyFeed:
    """The registry's feed: ``start_positions`` and ``on_records`` for the output follower."""

    def __init__(
        self,
        *,
        registry: KeyRegistry,
        decode: Callable[[bytes], EngineOutput],
        peek: OutputKindPeek,
        stored_keys: Callable[[], Iterable[KeyRow]],
        committed: Callable[[str, Sequence[int]], dict[int, int]],
    ) -> None:
        self.registry = registry
        self._decode = decode
        self._peek = peek
        self._stored_keys = stored_keys
        self._committed = committed
        self.loaded = 0  # keys loaded from the store at the last start
        self.decoded = 0  # key outputs decoded from the stream

    def start_positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Where the follower starts reading each partition (see the module docstring)."""
        committed = self._committed(topic, partitions)  # first: the store holds all before
        self.loaded = self.load()
        return {p: committed.get(p, OFFSET_BEGINNING) for p in partitions}

    def load(self) -> int:
        """Apply every key of the store; the number of rows read."""
        n = 0
        for row in self._stored_keys():
            self.registry.apply(
                api_key=row.api_key, user_id=row.user_id, role=str(row.role),
                public_key_b64=row.public_key, revoked=bool(row.revoked), sequence=row.sequence,
            )  # fmt: skip
            n += 1
        return n

    def on_records(self, messages: Sequence[Message]) -> None:
        peek = self._peek
        for msg in messages:
            if msg.error() is not None:
                continue
            value = msg.value() or b""
            kind = peek(value)
            if kind is not None and kind not in KEY_KINDS:
                continue
            try:
                output = self._decode(value)
            except DecodeError:
                continue  # settlement dead-letters it
            self.decoded += 1
            self.apply(output)

    def apply(self, output: EngineOutput) -> None:
        apply = self.registry.apply
        for u in output.api_key_updates:
            apply(
                api_key=u.api_key, user_id=u.user_id, role=u.role, public_key_b64=u.public_key,
                revoked=u.revoked, sequence=output.sequence,
            )  # fmt: skip


def committed_offsets(
    make_consumer: Callable[[str], Consumer], group: str, timeout_s: float = 10.0
) -> Callable[[str, Sequence[int]], dict[int, int]]:
    """``committed(topic, partitions)``: the offsets ``group`` has committed (none: absent),
    asked with a consumer of that group that never joins it nor commits."""

    def committed(topic: str, partitions: Sequence[int]) -> dict[int, int]:
        consumer = make_consumer(group)
        try:
            tps = consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=timeout_s
            )
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0 and tp.error is None}

    return committed
