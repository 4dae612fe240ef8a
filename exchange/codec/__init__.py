"""The Avro codec: the single mapper between domain objects and the bytes on Kafka.

Modules
-------
* :mod:`exchange.codec.codec`: :class:`Codec` (framing with single-object encoding, the
  registry of writer schemas by fingerprint, the field-by-field dict mapping of the general
  path through fastavro, and the choice between the two paths).
* :mod:`exchange.codec.compiled`: the compiled fast path, a small hand-written
  Avro-to-Python compiler.

How the compiler works
----------------------
When a :class:`Codec` is built, the parsed ``EngineOutput`` and ``OrderCommand`` schemas
(fastavro's own parse of the ``avro/*.avsc`` files, the only source of truth) are walked once
and turned into the Python source of straight-line ``encode(obj) -> bytes`` and
``decode(bytes) -> obj`` functions, compiled with ``exec``. Each field becomes a fixed
statement: an enum is a dict lookup from member to its encoded index, an optional a lookup
that also maps ``None`` to the null branch, a long or string a memo-dict lookup of its
encoding, an array a block count, its items and a zero. Decoders fill a slot *twin* of each
frozen dataclass and relabel it (:func:`engine.fastbuild.slot_twin`). See the theory of
operation in :mod:`exchange.codec.compiled`.

How it is checked against fastavro
----------------------------------
The contract: for every value it accepts, the fast path writes exactly fastavro's bytes and
reads exactly what fastavro reads; anything else raises ``FastPathMiss`` and the codec runs
fastavro instead, so an error reads the same either way. ``tests/codec/test_codec_compiled.py``
and ``test_codec_compiled_commands.py`` check it with hypothesis: random outputs and commands
are encoded by both paths and compared byte for byte, decoded by both and compared object for
object, and boundary values (varint widths, int64 limits, empty/long/non-ASCII strings,
empty lists), corrupt and non-canonical bytes are pinned as examples. A schema outside the
supported subset raises ``UnsupportedSchema`` at build time and the codec logs one warning
and stays on fastavro.

``from exchange.codec import Codec`` is the public entry point.
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
