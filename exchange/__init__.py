"""Shared plumbing for the exchange services.

Settings, the Kafka client factory and topic layout, the Avro codec, the embedded broker
launcher, the stack supervisor and the ``exchange`` CLI. The domain lives in ``engine``;
this package never holds business rules.
"""
