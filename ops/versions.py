"""The one place the real stack's versions are pinned.

``compose/docker-compose.yml`` uses the images ``apache/kafka:<KAFKA_VERSION>`` and
``cassandra:<CASSANDRA_VERSION>`` (a test compares them with this module), and
``exchange infra`` resolves the same releases from Maven Central through ``compose/pom.xml``,
which receives them as ``-D`` properties rather than repeating them.
"""

from __future__ import annotations

KAFKA_VERSION = "4.1.1"
CASSANDRA_VERSION = "5.0.6"
