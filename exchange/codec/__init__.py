"""The Avro codec: the single mapper between domain objects and the bytes on Kafka.

:mod:`exchange.codec.codec` holds the :class:`Codec` (framing, the schema registry, the dict
mapping of the general fastavro path); :mod:`exchange.codec.compiled` is the compiled fast
path it tries first. ``from exchange.codec import Codec`` is the public entry point.
"""

from exchange.codec.codec import (
    COMMAND_SCHEMA_NAME,
    OUTPUT_SCHEMA_NAME,
    SINGLE_OBJECT_MARKER,
    Codec,
    ParsedSchema,
    WireSchemas,
    default_schema_dir,
    load_schemas,
    schema_fingerprint,
)

__all__ = [
    "COMMAND_SCHEMA_NAME",
    "OUTPUT_SCHEMA_NAME",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "ParsedSchema",
    "WireSchemas",
    "default_schema_dir",
    "load_schemas",
    "schema_fingerprint",
]
