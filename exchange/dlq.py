"""Dead-letter queues: a record that cannot be decoded or applied is parked, never lost.

The original bytes travel unchanged as the value; where they came from and why they failed
travel as headers, so a person (or a replay tool) can find, fix and re-publish them.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message, Producer

log = logging.getLogger(__name__)


def dead_letter_headers(
    msg: Message, error: BaseException, service: str
) -> list[tuple[str, str | bytes | None]]:
    return [
        ("dlq.source.topic", str(msg.topic()).encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
        ("dlq.error.type", type(error).__name__.encode()),
        ("dlq.error.message", str(error).encode("utf-8", "replace")[:4000]),
        ("dlq.service", service.encode()),
    ]


def send_to_dlq(
    producer: Producer, dlq_topic: str, msg: Message, error: BaseException, service: str
) -> None:
    """Queue ``msg`` for the DLQ. Delivery is checked when the caller flushes the producer."""
    log.warning(
        "dead-lettering %s[%s]@%s to %s: %s",
        msg.topic(),
        msg.partition(),
        msg.offset(),
        dlq_topic,
        error,
    )
    producer.produce(
        dlq_topic,
        key=msg.key(),
        value=msg.value(),
        headers=dead_letter_headers(msg, error, service),
    )
