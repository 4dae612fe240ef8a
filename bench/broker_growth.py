"""Embedded broker: CPU for a fixed trickle of records as its log grows.

Starts its own embedded Tansu broker, produces and consumes a steady ~1,000 records/s on one
topic for a few seconds and reads the broker's CPU time from ``/proc``; then appends 100k
records at once, lets the consumer catch up, and measures the same trickle again, several
times. A broker whose per-request cost does not depend on the log's length gives a flat
line; Tansu's in-memory engine does not (see ``bench/E2E_RESULTS.md``).

Run: ``.venv/bin/python bench/broker_growth.py [--steps N] [--step-records N]``; about a
minute. Last line:
``RESULT broker_growth cpu_pct_empty=<n> cpu_pct_last=<n> records_last=<n>``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from exchange.kafka import make_admin, make_consumer, make_producer
from ops.broker import EmbeddedBroker

TOPIC = "broker-growth"
RECORD = b"x" * 200
TRICKLE_SECONDS = 6.0


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-records", type=int, default=100_000)
    args = parser.parse_args()

    with EmbeddedBroker() as broker:
        pid = broker.pid
        if pid is None:
            raise SystemExit("the embedded broker has no pid")
        bootstrap = broker.bootstrap_servers
        admin = make_admin(bootstrap)
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            future.result()
        producer = make_producer(bootstrap, **{"linger.ms": 5})
        consumer = make_consumer(bootstrap, "broker-growth")
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        stop = threading.Event()

        def follow() -> None:
            while not stop.is_set():
                consumer.poll(0.05)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()

        def trickle() -> float:
            """Broker CPU (% of a core) while ~1,000 records/s go through."""
            before = cpu_ticks(pid)
            started = time.monotonic()
            while time.monotonic() - started < TRICKLE_SECONDS:
                for _ in range(5):
                    producer.produce(TOPIC, RECORD)
                producer.poll(0)
                time.sleep(0.005)
            return (cpu_ticks(pid) - before) / TRICKLE_SECONDS

        records = 0
        results = [(records, trickle())]
        print(f"log {records:>9,} records: broker {results[-1][1]:.0f}% of a core", flush=True)
        for _ in range(args.steps):
            for _ in range(args.step_records):
                while True:
                    try:
                        producer.produce(TOPIC, RECORD)
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.flush()
            records += args.step_records
            time.sleep(3)  # the follower catches up before the next measurement
            results.append((records, trickle()))
            print(f"log {records:>9,} records: broker {results[-1][1]:.0f}% of a core", flush=True)
        stop.set()
        follower.join()
        consumer.close()

    print(
        f"RESULT broker_growth cpu_pct_empty={results[0][1]:.0f} "
        f"cpu_pct_last={results[-1][1]:.0f} records_last={results[-1][0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
