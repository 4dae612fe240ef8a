"""The shared kernel of the exchange services.

Settings, the Kafka client factory (and ReadToEnd), the topic layout, the DLQ, errors, metric
definitions, the consumer watchdog and the Avro codec (:mod:`exchange.codec`). It imports
only the engine core and third-party libraries; the services, the operations tools
(:mod:`ops`) and the composition root (:mod:`entrypoints`) build on it. This package never
holds business rules.
"""
