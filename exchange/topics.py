"""The project's topics, their partition counts and configs, and an idempotent creator.

``orders`` has exactly one partition: it is the engine's total order, and its offsets are
the order ids. ``engine-output`` has several, for the settlement consumer group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from engine.errors import ExchangeError
from exchange.settings import Settings


class TopicError(ExchangeError):
    """A topic exists with a layout the pipeline cannot use, or could not be created."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    orders: TopicSpec
    engine_output: TopicSpec
    orders_dlq: TopicSpec
    engine_output_dlq: TopicSpec
    engine_snapshots: TopicSpec

    def all(self) -> tuple[TopicSpec, ...]:
        return (
            self.orders,
            self.engine_output,
            self.orders_dlq,
            self.engine_output_dlq,
            self.engine_snapshots,
        )

    @classmethod
    def from_settings(cls, s: Settings) -> Topics:
        return cls.named(
            orders=s.exchange_topic_orders,
            engine_output=s.exchange_topic_engine_output,
            orders_dlq=s.exchange_topic_orders_dlq,
            engine_output_dlq=s.exchange_topic_engine_output_dlq,
            engine_snapshots=s.exchange_topic_engine_snapshots,
            engine_output_partitions=s.exchange_engine_output_partitions,
            dlq_partitions=s.exchange_dlq_partitions,
        )

    @classmethod
    def named(
        cls,
        *,
        orders: str = "orders",
        engine_output: str = "engine-output",
        orders_dlq: str = "orders.dlq",
        engine_output_dlq: str = "engine-output.dlq",
        engine_snapshots: str = "engine-snapshots",
        engine_output_partitions: int = 4,
        dlq_partitions: int = 1,
    ) -> Topics:
        return cls(
            orders=TopicSpec(name=orders, partitions=1),
            engine_output=TopicSpec(name=engine_output, partitions=engine_output_partitions),
            orders_dlq=TopicSpec(name=orders_dlq, partitions=dlq_partitions),
            engine_output_dlq=TopicSpec(name=engine_output_dlq, partitions=dlq_partitions),
            # Compacted: only the newest snapshot chunks per key matter.
            engine_snapshots=TopicSpec(
                name=engine_snapshots, partitions=1, config={"cleanup.policy": "compact"}
            ),
        )

    @classmethod
    def with_prefix(cls, prefix: str, engine_output_partitions: int = 4) -> Topics:
        """Fresh names, for tests that need isolation on a shared broker."""
        return cls.named(
            orders=f"{prefix}orders",
            engine_output=f"{prefix}engine-output",
            orders_dlq=f"{prefix}orders.dlq",
            engine_output_dlq=f"{prefix}engine-output.dlq",
            engine_snapshots=f"{prefix}engine-snapshots",
            engine_output_partitions=engine_output_partitions,
        )


class TopicOutcome(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"


def ensure_topics(
    admin: AdminClient, specs: tuple[TopicSpec, ...], timeout_s: float = 15.0
) -> dict[str, TopicOutcome]:
    """Create what is missing; verify what exists. Raise TopicError on a wrong layout.

    Running it twice changes nothing the second time (every outcome is UNCHANGED).
    """
    existing = admin.list_topics(timeout=timeout_s).topics
    outcome: dict[str, TopicOutcome] = {}
    mismatches: list[str] = []
    missing: list[TopicSpec] = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None or (meta.error is not None and not meta.partitions):
            missing.append(spec)
            continue
        have = len(meta.partitions)
        if have != spec.partitions:
            mismatches.append(
                f"topic {spec.name!r} has {have} partition(s), the pipeline needs {spec.partitions}"
            )
        outcome[spec.name] = TopicOutcome.UNCHANGED
    if mismatches:
        raise TopicError("; ".join(mismatches) + " (delete or rename it; refusing to use it)")
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name, num_partitions=s.partitions, replication_factor=-1, config=s.config
                )
                for s in missing
            ],
            request_timeout=timeout_s,
        )
        for spec in missing:
            try:
                futures[spec.name].result(timeout=timeout_s)
                outcome[spec.name] = TopicOutcome.CREATED
            except KafkaException as e:
                err = e.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    outcome[spec.name] = TopicOutcome.UNCHANGED  # lost a race: fine
                else:
                    raise TopicError(f"could not create topic {spec.name!r}: {err}") from e
        # Re-check: a racing creator may have used another partition count.
        return {**outcome, **_verify(admin, missing, timeout_s, outcome)}
    return outcome


def _verify(
    admin: AdminClient,
    specs: list[TopicSpec],
    timeout_s: float,
    outcome: dict[str, TopicOutcome],
) -> dict[str, TopicOutcome]:
    meta = admin.list_topics(timeout=timeout_s).topics
    for spec in specs:
        have = len(meta[spec.name].partitions) if spec.name in meta else 0
        if have and have != spec.partitions:
            raise TopicError(
                f"topic {spec.name!r} has {have} partition(s), the pipeline needs {spec.partitions}"
            )
    return {s.name: outcome[s.name] for s in specs}
