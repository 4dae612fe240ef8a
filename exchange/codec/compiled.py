"""Straight-line Avro encoders and decoders, generated from a parsed schema.

Theory of operation
-------------------
fastavro interprets a schema for every datum it writes or reads, and the codec first has to
turn each dataclass into a dict for it (and back). For one fixed schema both steps can be
done once instead: :func:`compile_record` walks the parsed schema (as fastavro's
``load_schema``/``parse_schema`` return it, so the ``.avsc`` files stay the only source of
truth) and emits the Python source of two functions, compiled with ``exec`` when a codec is
built:

* ``encode(obj) -> bytes`` reads the dataclass attributes in schema order and collects the
  encoded pieces in one list, joined once behind the single-object header. Nothing is
  interpreted per call: an enum field is one lookup in a ``symbol -> index bytes`` dict, an
  optional field one lookup in a dict that also maps ``None`` to the null branch's index, an
  array a block count, the items and the terminating zero.
* ``decode(data) -> obj`` reads a ``bytes`` object with a running index and builds the
  dataclasses directly, enums through ``encoded index byte -> member`` dicts.

Longs and strings go through *memo dicts* (:class:`_Memo`): a ``dict`` subclass whose
``__missing__`` encodes the value and keeps the result, up to :data:`MEMO_LIMIT` entries
after which it starts over. A hit is one dict lookup, and real traffic repeats itself a lot:
symbols, asset codes, prices near the touch, the current millisecond, small quantities. The
long memo starts pre-filled with every value whose zig-zag varint fits two bytes
(-8192..8191). Decoding reads one- and two-byte varints inline; a longer one is located with
``bytes.find`` on a translated copy of the record (0x00 where a varint may end) and looked up
in a ``varint bytes -> int`` memo (or, with ``fresh_longs``, see Envelopes below, split into
its two low bytes and a memo of the rest). These memos are shared by every compiled record of
the process (about 4 MB of tables, under 13 MB with every memo full); they only ever map a
value to its one encoding, so sharing them between threads or codecs cannot change a result.

Frozen ``slots`` dataclasses are slow to build: their ``__init__`` goes through
``object.__setattr__`` for every field (about 4 us for a 19-field event). The decoder instead
fills a *twin*, a plain class with the same ``__slots__``, and then assigns the real class to
the instance's ``__class__`` (CPython allows that between classes with identical slot
layouts; :func:`engine.fastbuild.slot_twin` is the one copy of the trick, which the engine
uses for its events too). The result is an ordinary instance of the dataclass, about seven
times cheaper to build. A class with a
``__post_init__``, or whose layout does not match, is built through its constructor instead.

Envelopes: :func:`compile_envelope` handles a record that wraps a union of records (the
orders topic's ``OrderCommand``: a timestamp and one of four commands) and has no class of its
own. Each branch decodes straight into its own dataclass, which also receives the envelope's
other fields and any fields the wire does not carry, passed to ``decode`` as arguments (a
command's id is its record's offset). The encoder picks the branch by the object's exact
class. Commands carry few longs, and those of three or more bytes are mostly new values close
to earlier ones (the timestamp, a cancel's order id), which the whole-varint memo would almost
always miss; with ``fresh_longs`` such a long is decoded from its two low bytes, read inline,
plus a memo of its remaining bytes (:class:`_HighMemo`), which the next millisecond or offset
hits as well.

Contract: for the schema and values it accepts, ``encode`` returns exactly the bytes
fastavro's ``schemaless_writer`` writes (after the header), and ``decode`` returns what
fastavro's ``schemaless_reader`` reads, mapped to the same domain objects. It is the fast path
only: anything it cannot handle (a value of the wrong type, an out-of-range long, malformed
or merely unusual bytes such as a negative array block count or a non-minimal varint) makes
it raise :class:`FastPathMiss`, and the caller then runs the general fastavro path, which
either handles the input or raises the proper error. The generated code is therefore free to
be strict, but must never accept anything fastavro would read or write differently. A schema
outside the supported subset (see :func:`compile_record`) raises :class:`UnsupportedSchema`
when compiling, and the caller keeps using fastavro for it.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.errors import ExchangeError
from engine.fastbuild import slot_twin

__all__ = [
    "CompiledEnvelope",
    "CompiledRecord",
    "FastPathMiss",
    "UnsupportedSchema",
    "compile_envelope",
    "compile_record",
    "encode_long",
]

ParsedSchema = dict[str, Any]

MEMO_LIMIT = 1 << 14
"""Entries a memo may add to its base before it is reset: a full memo holds about 2 MB."""

MEMO_MAX_BYTES = 64
"""Longer encoded strings are not memoized: they are rarely repeated and would pin memory."""


class UnsupportedSchema(ExchangeError):
    """The schema, or its mapping onto the domain classes, is outside the generator's subset."""


class FastPathMiss(ExchangeError):
    """The generated code cannot handle this value or these bytes: use the general path."""


# --------------------------------------------------------------------------- varints
# A long is zig-zag mapped to an unsigned n, then written 7 bits at a time, low group first,
# with the top bit of every byte but the last set. Encoding works 14 bits (two bytes) at a
# time through two tables, which is roughly twice as fast as a byte-at-a-time loop.


def _unsigned_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _long_encoder() -> Callable[[int], bytes]:
    """Build the tables and return the zig-zag varint encoder that closes over them.

    ``whole[n]`` is the varint of ``n < 2**14`` (one or two bytes); ``chunk[n]`` the two bytes
    of a 14-bit group that more groups follow. A closure, so the hot miss path of the long
    memo reads its tables without a global or attribute lookup.
    """
    whole = tuple(_unsigned_varint(n) for n in range(1 << 14))
    chunk = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(1 << 14))

    def encode(value: int) -> bytes:
        n = (value << 1) ^ (value >> 63)  # zig-zag: TypeError for a float, str or None
        if n < 0x4000:  # n >= 0 for any int, and n < 2**64 exactly when value is in range
            return whole[n]
        low = chunk[n & 0x3FFF]
        n >>= 14
        if n < 0x4000:  # up to four bytes: prices, ids, quantities
            return low + whole[n]
        middle = chunk[n & 0x3FFF]
        n >>= 14
        if n < 0x4000:  # up to six bytes: epoch milliseconds
            return low + middle + whole[n]
        if n >> 36:  # the unshifted n is >= 2**64: value is outside the signed 64-bit range
            raise OverflowError(f"{value} does not fit an Avro long")
        high = chunk[n & 0x3FFF]
        n >>= 14
        if n < 0x4000:
            return low + middle + high + whole[n]
        return low + middle + high + chunk[n & 0x3FFF] + whole[n >> 14]  # n >> 14 < 2**8

    return encode


def encode_long(value: int) -> bytes:
    """The Avro (zig-zag varint) encoding of a long.

    Raises ``OverflowError`` outside the signed 64-bit range and ``TypeError`` for a value
    that is not an ``int`` (fastavro's error types for the same values).
    """
    return _tables().encode_long(value)


def _string_encoder(encode_long: Callable[[int], bytes]) -> Callable[[str], bytes]:
    """The Avro string encoder (length, then UTF-8), over the given long encoder."""

    def encode(value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"must be string, not {type(value).__name__}")
        data = value.encode()  # strict: a lone surrogate raises UnicodeEncodeError, as fastavro
        return encode_long(len(data)) + data

    return encode


def _reject_optional_long(value: object) -> bytes:
    # fastavro matches the long branch of a union only for a real int (not a bool).
    raise TypeError(f"{value!r} does not match a [null, long] union")


class _Memo(dict[Any, Any]):
    """``value -> encoding``: a miss computes the encoding (or raises) and keeps it.

    Once ``limit`` misses have been kept, the dict goes back to ``base``, so memory stays
    bounded however many distinct values pass. Results longer than ``max_bytes`` (encoded
    strings) are returned but not kept.
    """

    __slots__ = ("_base", "_compute", "_limit", "_max_bytes", "_room")

    def __init__(
        self,
        compute: Callable[[Any], Any],
        base: Mapping[Any, Any] | None = None,
        *,
        limit: int = MEMO_LIMIT,
        max_bytes: int | None = None,
    ) -> None:
        base = {} if base is None else base
        super().__init__(base)
        self._base = base  # read only, never changed
        self._compute = compute
        self._limit = limit
        self._max_bytes = max_bytes
        self._room = limit

    def __missing__(self, key: Any) -> Any:
        result = self._compute(key)  # raises for a value with no encoding: nothing is kept
        if self._max_bytes is not None and len(result) > self._max_bytes:
            return result
        if self._room <= 0:
            self.clear()
            self.update(self._base)
            self._room = self._limit
        self._room -= 1
        self[key] = result
        return result


class _VarintMemo(dict[bytes, int]):
    """``varint bytes -> long``, bounded like :class:`_Memo` (a separate class: the miss path
    is hot on real traffic, fresh balances and ids, so the decoding is inlined).

    The decoder only looks up slices that end at the first byte without a continuation bit,
    so a key is one whole varint, or empty when none ends before the record does. A key
    longer than 10 bytes or beyond 64 bits raises ``ValueError``: fastavro decides those.
    """

    __slots__ = ("_room",)

    def __init__(self) -> None:
        super().__init__()
        self._room = MEMO_LIMIT

    def __missing__(self, key: bytes) -> int:
        if not 0 < len(key) <= 10:
            raise ValueError(f"not a varint of 1 to 10 bytes: {key.hex()}")
        n = 0
        shift = 0
        for byte in key:
            n |= (byte & 0x7F) << shift
            shift += 7
        if n >> 64:
            raise ValueError(f"varint beyond 64 bits: {key.hex()}")
        value = (n >> 1) ^ -(n & 1)
        if self._room <= 0:
            self.clear()
            self._room = MEMO_LIMIT
        self._room -= 1
        self[key] = value
        return value


class _HighMemo(dict[bytes, tuple[int, int]]):
    """``varint bytes from the third on -> (h, -h)``, where ``h`` is half the unsigned value
    of those bytes in place (their 7-bit groups from bit 14 up), bounded like :class:`_Memo`.

    For the ``fresh_longs`` decoders: a long of three or more bytes is the two bytes read
    inline plus this, ``H[high][b & 1] + Z14[low 14 bits]`` (the zig-zag sign is the first
    byte's low bit), so fresh values that share their high bytes (the next millisecond, the
    next offset) still hit. The key is empty when no varint ends before the record does; a
    key of more than 8 bytes (a varint of more than 10) or beyond 64 bits raises
    ``ValueError``: fastavro decides those.
    """

    __slots__ = ("_room",)

    def __init__(self) -> None:
        super().__init__()
        self._room = MEMO_LIMIT

    def __missing__(self, key: bytes) -> tuple[int, int]:
        if not 0 < len(key) <= 8:
            raise ValueError(f"not the high part of a varint of 3 to 10 bytes: {key.hex()}")
        n = 0
        shift = 14
        for byte in key:
            n |= (byte & 0x7F) << shift
            shift += 7
        if n >> 64:
            raise ValueError(f"varint beyond 64 bits: {key.hex()}")
        half = n >> 1
        if self._room <= 0:
            self.clear()
            self._room = MEMO_LIMIT
        self._room -= 1
        value = self[key] = (half, -half)
        return value


@dataclass(frozen=True, slots=True)
class _Tables:
    encode_long: Callable[[int], bytes]
    encode_string: Callable[[str], bytes]
    long: _Memo  # int -> varint
    string: _Memo  # str -> length varint + UTF-8
    varint: _VarintMemo  # a whole varint of 3+ bytes -> int
    high: _HighMemo  # the bytes of a 3+ byte varint from the third on -> (h, -h)
    zigzag: tuple[int, ...]  # one-byte varint (0..127) -> int
    zigzag14: tuple[int, ...]  # the 14 payload bits of a two-byte varint -> int
    flags: bytes  # bytes.translate table: 0x00 for a varint's last byte, 0x01 otherwise


@functools.cache
def _tables() -> _Tables:
    """The process-wide tables and memos, built on first use (never at import)."""
    encode = _long_encoder()
    small = {(n >> 1) ^ -(n & 1): encode((n >> 1) ^ -(n & 1)) for n in range(1 << 14)}
    encode_string = _string_encoder(encode)
    return _Tables(
        encode_long=encode,
        encode_string=encode_string,
        long=_Memo(encode, small),  # pre-filled: -8192..8191
        string=_Memo(encode_string, max_bytes=MEMO_MAX_BYTES),
        varint=_VarintMemo(),
        high=_HighMemo(),
        zigzag=tuple((n >> 1) ^ -(n & 1) for n in range(0x80)),
        zigzag14=tuple((n >> 1) ^ -(n & 1) for n in range(1 << 14)),
        flags=bytes(0 if byte < 0x80 else 1 for byte in range(256)),
    )


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True, slots=True)
class CompiledRecord:
    """The generated functions for one record schema, and their source (for debugging)."""

    encode: Callable[[Any], bytes]
    """``obj -> header + body``; raises :class:`FastPathMiss` for a value it cannot write."""
    decode: Callable[[bytes], Any]
    """``header + body -> obj`` (the header is not checked); :class:`FastPathMiss` otherwise."""
    source: str


def compile_record(
    schema: ParsedSchema,
    classes: Mapping[str, type],
    *,
    header: bytes = b"",
    fresh_longs: bool = False,
    fresh_fields: frozenset[str] = frozenset(),
) -> CompiledRecord:
    """Generate the encoder and decoder of the record ``schema``.

    ``classes`` maps the full name of every record to its dataclass (whose fields are exactly
    the record's fields, any order) and of every enum to its ``Enum`` class (whose values are
    the symbols; symbols it lacks fail to decode). Arrays decode to tuples. ``header`` is
    written before the body and skipped when reading.

    Supported: records, enums, arrays, ``long``, ``string``, ``boolean``, and two-branch
    unions of ``null`` with a long, string or enum. Anything else (other primitives, maps,
    fixed, logical types, other unions, recursive records, a record without fields, a class
    that does not match) raises :class:`UnsupportedSchema`.

    ``fresh_longs`` chooses how a long of three or more bytes is decoded: by default through
    the memo of whole varints, the cheapest when values repeat; with it, from its two low
    bytes and a memo of the rest (:class:`_HighMemo`), a little dearer when values repeat but
    far cheaper when most are new yet close to earlier ones (timestamps, offsets).

    ``fresh_fields`` names long fields (in any record) whose values are nearly always new:
    sequences, ids, balances. The encoder writes them without the long memo, whose miss
    costs about twice a plain encoding (and whose churn would evict the values that do
    repeat, prices and quantities).
    """
    generator = _Generator(classes, fresh_longs=fresh_longs, fresh_fields=fresh_fields)
    # fastavro's parsed form inlines each named type where it first occurs, which is where the
    # walk meets it too; its index of named types covers any other order.
    generator.named.update(schema.get("__named_schemas", {}))
    root = generator.resolve(schema)
    if root.get("type") != "record":
        raise UnsupportedSchema("the top-level schema must be a record")
    source = generator.module(root, header)
    namespace: dict[str, Any] = dict(generator.constants)
    exec(compile(source, f"<avro_compiled {root['name']}>", "exec"), namespace)
    return CompiledRecord(encode=namespace["encode"], decode=namespace["decode"], source=source)


@dataclass(frozen=True, slots=True)
class CompiledEnvelope:
    """The generated functions for one envelope schema (see :func:`compile_envelope`)."""

    encode: Callable[[Any], bytes]
    """``obj -> header + body`` for an instance of a branch class; :class:`FastPathMiss`
    otherwise."""
    decode: Callable[..., Any]
    """``(header + body, *values) -> obj``, ``values`` in the order of :attr:`arguments` (the
    header is not checked); :class:`FastPathMiss` for bytes it cannot read."""
    arguments: tuple[str, ...]
    """What ``decode`` takes after the bytes: the distinct names in ``supplied``, sorted."""
    source: str


def compile_envelope(
    schema: ParsedSchema,
    classes: Mapping[str, type],
    *,
    supplied: Mapping[str, Mapping[str, str]] | None = None,
    header: bytes = b"",
    fresh_longs: bool = False,
) -> CompiledEnvelope:
    """Generate the encoder and decoder of the *envelope* ``schema``: a record with exactly
    one field whose type is a union of records (the *branches*), read straight into the
    domain class of the branch on the wire. The envelope itself has no class.

    ``classes`` maps every branch (and every enum and nested record, as for
    :func:`compile_record`) to its class. A branch's dataclass has exactly the branch
    record's fields, the envelope's other fields (a timestamp, say) and the fields of
    ``supplied[branch name]``, ``{class field: argument name}``: values the wire does not
    carry, which the decoder's caller passes (an id taken from the record's offset, say);
    several fields may take the same argument. ``encode`` writes the branch of the object's
    exact class, and nothing of its supplied fields.

    Supported: what :func:`compile_record` supports, plus this one union of up to 64
    records, each mapped to its own class. Anything else raises :class:`UnsupportedSchema`.
    ``header`` and ``fresh_longs`` are as for :func:`compile_record`.
    """
    generator = _Generator(classes, fresh_longs=fresh_longs)
    generator.named.update(schema.get("__named_schemas", {}))
    root = generator.resolve(schema)
    if _kind(root) != "record":
        raise UnsupportedSchema("the top-level schema must be a record")
    source, arguments = generator.envelope_module(root, supplied or {}, header)
    namespace: dict[str, Any] = dict(generator.constants)
    exec(compile(source, f"<avro_compiled {root['name']}>", "exec"), namespace)
    return CompiledEnvelope(
        encode=namespace["encode"],
        decode=namespace["decode"],
        arguments=arguments,
        source=source,
    )


_NAMED = ("record", "enum", "fixed")
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Generator:
    """Walks one parsed schema and writes the source of ``encode`` and ``decode``."""

    def __init__(
        self,
        classes: Mapping[str, type],
        *,
        fresh_longs: bool = False,
        fresh_fields: frozenset[str] = frozenset(),
    ) -> None:
        self.classes = classes
        self.fresh_longs = fresh_longs
        self.fresh_fields = fresh_fields
        self.named: dict[str, ParsedSchema] = {}
        self.constants: dict[str, Any] = {}
        self._counter = 0
        self._enum_tables: dict[tuple[str, str], str] = {}
        self._active: set[str] = set()  # records being generated: recursion is unsupported
        tables = _tables()
        self.constants.update(
            L=tables.long,
            LONG=tables.encode_long,
            S=tables.string,
            M=tables.varint,
            H=tables.high,
            Z=tables.zigzag,
            Z14=tables.zigzag14,
            FLAGS=tables.flags,
            JOIN=b"".join,
            NEW=object.__new__,
            TUPLE=tuple,
            FastPathMiss=FastPathMiss,
            NOT_LONG=_reject_optional_long,
        )

    # ------------------------------------------------------------- schema walking

    def resolve(self, schema: Any) -> Any:
        """A primitive's name, or the definition dict of a complex or named type."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema
            if schema in self.named:
                return self.named[schema]
            raise UnsupportedSchema(f"unknown named type {schema!r}")
        if isinstance(schema, list):
            return schema
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"not a schema: {schema!r}")
        if "logicalType" in schema:
            raise UnsupportedSchema(f"logical type {schema['logicalType']!r}")
        kind = schema.get("type")
        if kind in _PRIMITIVES:
            return kind
        if kind in _NAMED:
            self.named.setdefault(schema["name"], schema)
        return schema

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def constant(self, prefix: str, value: Any) -> str:
        name = self.fresh(prefix)
        self.constants[name] = value
        return name

    def record_class(self, record: ParsedSchema) -> type:
        name = record["name"]
        cls = self.classes.get(name)
        if cls is None or not dataclasses.is_dataclass(cls):
            raise UnsupportedSchema(f"no dataclass for the record {name}")
        fields = self.field_names(record)
        declared = [f.name for f in dataclasses.fields(cls)]
        if sorted(declared) != sorted(fields):
            raise UnsupportedSchema(
                f"{cls.__name__} fields {declared} do not match the record {name} {fields}"
            )
        return cls

    def field_names(self, record: ParsedSchema) -> list[str]:
        """The record's field names, each one a plain attribute name (never empty)."""
        name = record["name"]
        fields = [f["name"] for f in record["fields"]]
        if not fields:
            raise UnsupportedSchema(f"the record {name} has no fields")
        for field in fields:
            if not field.isidentifier() or keyword.iskeyword(field) or field.startswith("__"):
                raise UnsupportedSchema(f"field {name}.{field} is not a plain attribute name")
        return fields

    def enum_symbols(self, enum: ParsedSchema) -> list[str]:
        symbols: list[str] = enum["symbols"]
        return symbols

    def optional_branch(self, union: list[Any]) -> tuple[int, Any]:
        """(index of the null branch, the other branch) of a [null, X] or [X, null] union."""
        branches = [self.resolve(branch) for branch in union]
        if len(branches) != 2 or branches.count("null") != 1:
            raise UnsupportedSchema(f"only [null, X] unions are supported, not {union!r}")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        if not (other in ("long", "string") or _kind(other) == "enum"):
            raise UnsupportedSchema(f"unsupported optional type {other!r}")
        return null_index, other

    # ------------------------------------------------------------- envelopes

    def envelope_module(
        self, root: ParsedSchema, supplied: Mapping[str, Mapping[str, str]], header: bytes
    ) -> tuple[str, tuple[str, ...]]:
        """The source of an envelope's ``encode`` and ``decode``, and decode's arguments."""
        fields: list[ParsedSchema] = root["fields"]
        self.field_names(root)
        unions = [k for k, field in enumerate(fields) if self.record_union(field["type"])]
        if len(unions) != 1:
            raise UnsupportedSchema(
                f"the envelope {root['name']} needs exactly one field that is a union of records"
            )
        at = unions[0]
        branches = [self.resolve(branch) for branch in self.resolve(fields[at]["type"])]
        if len(branches) > 64:  # every index must be one varint byte
            raise UnsupportedSchema(f"a union of {len(branches)} records")
        unknown = set(supplied) - {branch["name"] for branch in branches}
        if unknown:
            raise UnsupportedSchema(f"supplied fields for records outside the union: {unknown}")
        self._active.add(root["name"])
        classes = [self.branch_class(root, at, b, supplied.get(b["name"], {})) for b in branches]
        if len(set(classes)) != len(classes):
            raise UnsupportedSchema("two branches of the union map to one class")
        arguments = tuple(sorted({a for names in supplied.values() for a in names.values()}))
        parameters = {argument: self.fresh("arg") for argument in arguments}
        encoder = self.envelope_encoder(root, at, branches, classes, header)
        decoder = self.envelope_decoder(
            root, at, branches, classes, supplied, parameters, len(header)
        )
        self._active.discard(root["name"])
        return encoder + "\n\n" + decoder, arguments

    def record_union(self, schema: Any) -> bool:
        """Whether ``schema`` is a union whose every branch is a record."""
        kind = self.resolve(schema)
        return (
            isinstance(kind, list)
            and bool(kind)
            and all(_kind(self.resolve(branch)) == "record" for branch in kind)
        )

    def branch_class(
        self,
        root: ParsedSchema,
        at: int,
        branch: ParsedSchema,
        supplied: Mapping[str, str],
    ) -> type:
        """The dataclass of a branch, checked: its fields come from exactly one place each."""
        name = branch["name"]
        cls = self.classes.get(name)
        if cls is None or not dataclasses.is_dataclass(cls):
            raise UnsupportedSchema(f"no dataclass for the record {name}")
        shared = [field["name"] for k, field in enumerate(root["fields"]) if k != at]
        expected = [*self.field_names(branch), *shared, *supplied]
        if len(set(expected)) != len(expected):
            raise UnsupportedSchema(f"{name}: a field of {expected} comes from two places")
        declared = {f.name for f in dataclasses.fields(cls)}
        if declared != set(expected):
            lacks = sorted(set(expected) - declared)
            unfilled = sorted(declared - set(expected))
            raise UnsupportedSchema(
                f"{cls.__name__} fields do not match the record {name} with the envelope's "
                f"{shared} and the supplied {list(supplied)}: {cls.__name__} lacks {lacks}, "
                f"nothing fills {unfilled}"
            )
        return cls

    def envelope_encoder(
        self,
        root: ParsedSchema,
        at: int,
        branches: list[ParsedSchema],
        classes: list[type],
        header: bytes,
    ) -> str:
        self.constants.update(HEADER=header, ZERO=b"\x00", TYPE=type)
        fields: list[ParsedSchema] = root["fields"]
        body = _Block()
        body.line("t = TYPE(o)")  # the exact class, as the general path dispatches on it
        for index, (branch, cls) in enumerate(zip(branches, classes, strict=True)):
            keyword_ = "if" if index == 0 else "elif"
            body.line(f"{keyword_} t is {self.constant('C', cls)}:")
            block = body.indented()
            parts = _Parts(block, ["HEADER"])
            self.encode_fields(parts, fields[:at], "o")
            parts.items.append(self.constant("U", encode_long(index)))
            self._active.add(branch["name"])
            self.encode_fields(parts, branch["fields"], "o")
            self._active.discard(branch["name"])
            self.encode_fields(parts, fields[at + 1 :], "o")
            parts.flush()
            block.line("return JOIN(p)")
        body.line("raise FastPathMiss('not an instance of a branch class')")
        return _function("encode", "o", body, "could not encode")

    def envelope_decoder(
        self,
        root: ParsedSchema,
        at: int,
        branches: list[ParsedSchema],
        classes: list[type],
        supplied: Mapping[str, Mapping[str, str]],
        parameters: Mapping[str, str],
        offset: int,
    ) -> str:
        self.constants["MALFORMED"] = FastPathMiss
        fields: list[ParsedSchema] = root["fields"]
        body = _Block()
        body.line("F = d.translate(FLAGS).find")
        body.line("D = len(d)")
        body.line(f"i = {offset}")
        given: dict[str, str] = {}  # class field -> the local that holds its value
        for field in fields[:at]:
            local = self.fresh("v")
            self.decode_value(body, self.resolve(field["type"]), local)
            given[field["name"]] = local
        body.line("b = d[i]")  # the branch index: one varint byte, 2 * index
        body.line("i += 1")
        for index, (branch, cls) in enumerate(zip(branches, classes, strict=True)):
            body.line(f"{'if' if index == 0 else 'elif'} b == {2 * index}:")
            block = body.indented()
            values = dict(given)
            for name, argument in supplied.get(branch["name"], {}).items():
                values[name] = parameters[argument]
            built = self.decode_branch(block, branch, cls, values, fields[at + 1 :])
            block.line("if i != D:")
            block.indented().line("raise MALFORMED('trailing bytes')")
            block.extend(built.finish)
            block.line(f"return {built.value}")
        # A negative index (which fastavro would read from the end), a non-minimal varint or
        # one past the last branch: fastavro decides.
        body.line("raise MALFORMED('unsupported or corrupt union index')")
        arguments = ", ".join(["d", *parameters.values()])
        return _function("decode", arguments, body, "could not decode")

    def decode_branch(
        self,
        block: _Block,
        branch: ParsedSchema,
        cls: type,
        values: Mapping[str, str],
        trailing: list[ParsedSchema],
    ) -> _Built:
        """Decode a branch record (then the envelope's ``trailing`` fields) into a new
        ``cls``, whose other fields take the locals of ``values``."""
        name = branch["name"]
        if name in self._active:
            raise UnsupportedSchema(f"recursive record {name}")
        self._active.add(name)
        cls_name = self.constant("C", cls)
        twin = slot_twin(cls)
        obj = self.fresh("r")
        decoded = [*branch["fields"], *trailing]
        if twin is not None:
            # Calling the twin (it has no __init__) is cheaper than object.__new__.
            block.line(f"{obj} = {self.constant('TW', twin)}()")
            for field, value in values.items():
                block.line(f"{obj}.{field} = {value}")
            for field in decoded:
                self.decode_value(block, self.resolve(field["type"]), f"{obj}.{field['name']}")
            finish = [f"{obj}.__class__ = {cls_name}"]
        else:
            arguments = [f"{field}={value}" for field, value in values.items()]
            for field in decoded:
                local = self.fresh("v")
                self.decode_value(block, self.resolve(field["type"]), local)
                arguments.append(f"{field['name']}={local}")
            finish = [f"{obj} = {cls_name}({', '.join(arguments)})"]
        self._active.discard(name)
        return _Built(obj, finish)

    # ------------------------------------------------------------- encoder

    def module(self, root: ParsedSchema, header: bytes) -> str:
        encoder = self.encoder(root, header)
        decoder = self.decoder(root, len(header))
        return encoder + "\n\n" + decoder

    def encoder(self, root: ParsedSchema, header: bytes) -> str:
        self.constants.update(HEADER=header, ZERO=b"\x00")
        body = _Block()
        parts = _Parts(body, ["HEADER"])
        self.encode_record(parts, root, "o")
        parts.flush()
        body.line("return JOIN(p)")
        return _function("encode", "o", body, "could not encode")

    def encode_record(self, parts: _Parts, record: ParsedSchema, obj: str) -> None:
        """Append the record's encoded fields to ``parts`` (an array flushes them first)."""
        name = record["name"]
        if name in self._active:
            raise UnsupportedSchema(f"recursive record {name}")
        self._active.add(name)
        self.record_class(record)
        self.encode_fields(parts, record["fields"], obj)
        self._active.discard(name)

    def encode_fields(self, parts: _Parts, fields: list[ParsedSchema], obj: str) -> None:
        """Append the encoded values of ``fields``, read as attributes of ``obj``."""
        for field in fields:
            value = f"{obj}.{field['name']}"
            kind = self.resolve(field["type"])
            if _kind(kind) == "array":
                self.encode_array(parts, kind, value)
            elif _kind(kind) == "record":
                nested = self.fresh("r")
                parts.flush()
                parts.block.line(f"{nested} = {value}")
                self.encode_record(parts, kind, nested)
            elif kind == "long" and field["name"] in self.fresh_fields:
                parts.items.append(f"LONG({value})")
            else:
                parts.items.append(self.encode_expression(kind, value))

    def encode_array(self, parts: _Parts, array: ParsedSchema, value: str) -> None:
        """Block count, items, then the zero count that ends the array (fastavro writes one
        block; an empty array is the zero alone)."""
        items_schema = self.resolve(array["items"])
        sequence = self.fresh("a")
        count = self.fresh("n")
        item = self.fresh("x")
        parts.flush()
        block = parts.block
        block.line(f"{sequence} = {value}")
        # len(), not truthiness: None (or any non-sequence) must fail as it does in fastavro.
        block.line(f"{count} = len({sequence})")
        block.line(f"if {count}:")
        inner = block.indented()
        inner.line(f"p.append(L[{count}])")
        inner.line(f"for {item} in {sequence}:")
        loop = _Parts(inner.indented(), [])
        if _kind(items_schema) == "record":
            self.encode_record(loop, items_schema, item)
        elif _kind(items_schema) == "array":
            self.encode_array(loop, items_schema, item)
        else:
            loop.items.append(self.encode_expression(items_schema, item))
        loop.flush()
        parts.items.append("ZERO")

    def encode_expression(self, kind: Any, value: str) -> str:
        """A Python expression for the encoded bytes of ``value`` (a non-array, non-record)."""
        if kind == "long":
            return f"L[{value}]"
        if kind == "string":
            return f"S[{value}]"
        if kind == "boolean":
            self.constants.update(TRUE=b"\x01", FALSE=b"\x00")
            return f"(TRUE if {value} else FALSE)"  # fastavro writes the truth value
        if _kind(kind) == "enum":
            return f"{self.enum_encoder(kind)}[{value}]"
        if isinstance(kind, list):
            null_index, other = self.optional_branch(kind)
            table = self.optional_encoder(null_index, other)
            if other == "long":
                # A bool or an integral float equals an int key of the memo; fastavro refuses
                # both in a union, so only an exact int (or None) may use the table.
                check = f"(w := {value}).__class__ is int or w is None"
                return f"({table}[w] if {check} else NOT_LONG(w))"
            return f"{table}[{value}]"
        raise UnsupportedSchema(f"unsupported type {kind!r}")

    def enum_encoder(self, enum: ParsedSchema) -> str:
        key = ("enum", enum["name"])
        if key not in self._enum_tables:
            # Keyed by symbol: a StrEnum member hashes and compares as its value, so it
            # finds its entry (fastavro looks it up with symbols.index, i.e. by equality).
            table = {s: encode_long(i) for i, s in enumerate(self.enum_symbols(enum))}
            self._enum_tables[key] = self.constant("E", table)
        return self._enum_tables[key]

    def optional_encoder(self, null_index: int, other: Any) -> str:
        null = encode_long(null_index)
        branch = encode_long(1 - null_index)
        tables = _tables()
        if other == "long":
            long = tables.encode_long
            return self.constant("OL", _Memo(lambda v: branch + long(v), {None: null}))
        if other == "string":
            string = tables.encode_string
            memo = _Memo(lambda v: branch + string(v), {None: null}, max_bytes=MEMO_MAX_BYTES)
            return self.constant("OS", memo)
        table: dict[Any, bytes] = {None: null}
        for i, symbol in enumerate(self.enum_symbols(other)):
            table[symbol] = branch + encode_long(i)
        return self.constant("OE", table)

    # ------------------------------------------------------------- decoder

    def decoder(self, root: ParsedSchema, offset: int) -> str:
        self.constants["MALFORMED"] = FastPathMiss
        body = _Block()
        body.line("F = d.translate(FLAGS).find")
        body.line("D = len(d)")
        body.line(f"i = {offset}")
        result = self.decode_record(body, root)
        body.line("if i != D:")
        body.indented().line("raise MALFORMED('trailing bytes')")
        body.extend(result.finish)
        body.line(f"return {result.value}")
        return _function("decode", "d", body, "could not decode")

    def decode_record(self, block: _Block, record: ParsedSchema) -> _Built:
        """Decode the record's fields into a new object; returns how to finish it."""
        name = record["name"]
        if name in self._active:
            raise UnsupportedSchema(f"recursive record {name}")
        self._active.add(name)
        cls = self.record_class(record)
        cls_name = self.constant("C", cls)
        twin = slot_twin(cls)
        obj = self.fresh("r")
        if twin is not None:
            twin_name = self.constant("TW", twin)
            block.line(f"{obj} = NEW({twin_name})")
            for field in record["fields"]:
                self.decode_value(block, self.resolve(field["type"]), f"{obj}.{field['name']}")
            finish = [f"{obj}.__class__ = {cls_name}"]
        else:
            arguments = []
            for field in record["fields"]:
                local = self.fresh("v")
                self.decode_value(block, self.resolve(field["type"]), local)
                arguments.append(f"{field['name']}={local}")
            finish = [f"{obj} = {cls_name}({', '.join(arguments)})"]
        self._active.discard(name)
        return _Built(obj, finish)

    def decode_value(self, block: _Block, kind: Any, target: str) -> None:
        """Statements that read one value of ``kind`` at ``i`` into ``target``."""
        if kind == "long":
            self.decode_long(block, target)
        elif kind == "string":
            length = self.fresh("n")
            self.decode_long(block, length)
            block.line(f"e = i + {length}")
            block.line(f"if {length} < 0 or e > D:")
            block.indented().line("raise MALFORMED('bad string length')")
            block.line(f"{target} = d[i:e].decode()")  # strict UTF-8, as fastavro reads it
            block.line("i = e")
        elif kind == "boolean":
            self.constants["BOOLEAN"] = (False, True)  # any other byte: IndexError
            block.line(f"{target} = BOOLEAN[d[i]]")
            block.line("i += 1")
        elif _kind(kind) == "enum":
            table = self.enum_decoder(kind)
            if len(self.enum_symbols(kind)) <= 64:  # every index is one varint byte
                block.line(f"{target} = {table}[d[i]]")
                block.line("i += 1")
            else:
                index = self.fresh("n")
                self.decode_long(block, index)
                block.line(f"{target} = {table}[{index}]")
        elif isinstance(kind, list):
            null_index, other = self.optional_branch(kind)
            block.line("b = d[i]")
            block.line("i += 1")
            block.line(f"if b == {2 * null_index}:")
            block.indented().line(f"{target} = None")
            block.line(f"elif b == {2 * (1 - null_index)}:")
            self.decode_value(block.indented(), other, target)
            block.line("else:")
            block.indented().line("raise MALFORMED('bad union index')")
        elif _kind(kind) == "array":
            self.decode_array(block, kind, target)
        elif _kind(kind) == "record":
            built = self.decode_record(block, kind)
            block.extend(built.finish)
            block.line(f"{target} = {built.value}")
        else:
            raise UnsupportedSchema(f"unsupported type {kind!r}")

    def decode_long(self, block: _Block, target: str) -> None:
        # One- and two-byte varints (-8192..8191: counts, lengths, small ids and quantities)
        # are decoded inline through tables. A longer one is found with the translated flags
        # (its last byte is the first 0x00 flag from i) and looked up in the varint memo:
        # measured, that beats decoding a third and fourth byte inline.
        block.line("b = d[i]")
        block.line("if b < 128:")
        one = block.indented()
        one.line(f"{target} = Z[b]")
        one.line("i += 1")
        block.line("else:")
        more = block.indented()
        more.line("c = d[i + 1]")
        more.line("if c < 128:")
        two = more.indented()
        two.line(f"{target} = Z14[b - 128 | c << 7]")
        two.line("i += 2")
        more.line("else:")
        long = more.indented()
        long.line("e = F(0, i) + 1")
        if self.fresh_longs:
            # The low 14 bits are b and c; the rest is memoized (see _HighMemo). Not found:
            # e == 0, an empty key, ValueError.
            long.line(f"{target} = H[d[i + 2:e]][b & 1] + Z14[b + (c << 7) - 16512]")
        else:
            long.line(f"{target} = M[d[i:e]]")  # not found: e == 0, an empty key, ValueError
        long.line("i = e")

    def decode_array(self, block: _Block, array: ParsedSchema, target: str) -> None:
        items_schema = self.resolve(array["items"])
        count = self.fresh("n")
        acc = self.fresh("acc")
        self.decode_long(block, count)
        block.line(f"if {count}:")
        inner = block.indented()
        inner.line(f"{acc} = []")
        inner.line(f"while {count}:")
        loop = inner.indented()
        # A negative count (a block with its byte size) is valid Avro that fastavro reads;
        # the bound keeps a corrupt count from looping long (every item takes >= 1 byte).
        loop.line(f"if {count} < 0 or {count} > D - i:")
        loop.indented().line("raise MALFORMED('unsupported or corrupt block count')")
        loop.line(f"for _ in range({count}):")
        each = loop.indented()
        if _kind(items_schema) == "record":
            built = self.decode_record(each, items_schema)
            each.extend(built.finish)
            each.line(f"{acc}.append({built.value})")
        else:
            item = self.fresh("v")
            self.decode_value(each, items_schema, item)
            each.line(f"{acc}.append({item})")
        self.decode_long(loop, count)
        inner.line(f"{target} = TUPLE({acc})")
        block.line("else:")
        block.indented().line(f"{target} = ()")

    def enum_decoder(self, enum: ParsedSchema) -> str:
        key = ("enum-decode", enum["name"])
        if key not in self._enum_tables:
            cls = self.classes.get(enum["name"])
            if cls is None or not issubclass(cls, Enum):
                raise UnsupportedSchema(f"no Enum class for the enum {enum['name']}")
            members = {member.value: member for member in cls}
            short = len(self.enum_symbols(enum)) <= 64
            table = {
                (2 * i if short else i): members[symbol]
                for i, symbol in enumerate(self.enum_symbols(enum))
                if symbol in members  # a symbol the class lacks fails (and fastavro decides)
            }
            self._enum_tables[key] = self.constant("ED", table)
        return self._enum_tables[key]


def _kind(schema: Any) -> str | None:
    return schema.get("type") if isinstance(schema, dict) else None


@dataclass(frozen=True, slots=True)
class _Built:
    value: str  # the local that holds the object
    finish: list[str]  # statements that complete it (set its class, or call the constructor)


class _Parts:
    """Encoded-piece expressions waiting to be added to the list ``p`` in one statement."""

    def __init__(self, block: _Block, items: list[str]) -> None:
        self.block = block
        self.items = items
        self.opening = bool(items)  # the root's first flush creates the list: p = [HEADER, ...]

    def flush(self) -> None:
        items = self.items
        if self.opening:
            self.block.line(f"p = [{', '.join(items)}]")
            self.opening = False
        elif len(items) == 1:
            self.block.line(f"p.append({items[0]})")
        elif items:
            self.block.line(f"p += ({', '.join(items)})")
        items.clear()


class _Block:
    """Lines of generated source at one indentation level, sharing one list."""

    def __init__(self, lines: list[str] | None = None, indent: str = "") -> None:
        self.lines = [] if lines is None else lines
        self.indent = indent

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def extend(self, texts: list[str]) -> None:
        for text in texts:
            self.line(text)

    def indented(self) -> _Block:
        return _Block(self.lines, self.indent + "    ")


def _function(name: str, argument: str, body: _Block, failure: str) -> str:
    # Any exception inside means "not on the fast path": the caller falls back to fastavro,
    # which reads or writes the input properly or raises the real error.
    inner = "\n".join("        " + line for line in body.lines)
    return (
        f"def {name}({argument}):\n"
        f"    try:\n{inner}\n"
        f"    except Exception as error:\n"
        f"        raise FastPathMiss({failure!r}) from error\n"
    )
