"""The generated output encoder and decoder are fastavro, only faster.

fastavro is the reference throughout: expected bytes come from ``schemaless_writer`` over a
dict built here from the dataclass (not with the codec's own mapping), and expected reads from
``schemaless_reader``. The generated functions are called directly where the test is about
them (a ``FastPathMiss`` there would hide behind the codec's fallback), and through the codec
where the test is about what callers see.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from enum import Enum, StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from codec_testkit import (
    BOUNDARY_LONGS,
    FUZZ,
    LONG_MAX,
    LONG_MIN,
    evolved_codec,
)
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    TimeInForce,
)
from engine.events import (
    ApiKeyUpdated,
    BalanceUpdated,
    CommandRejected,
    DepthUpdated,
    EngineOutput,
    LevelUpdated,
    OrderCompleted,
    OrderPlaced,
    OrderUpdated,
    TradeExecuted,
    UserCreated,
)
from exchange.codec import SINGLE_OBJECT_MARKER, Codec
from exchange.codec.codec import _OUTPUT_CLASSES
from exchange.codec.compiled import (
    MEMO_MAX_BYTES,
    CompiledRecord,
    FastPathMiss,
    UnsupportedSchema,
    _Memo,
    _VarintMemo,
    compile_record,
    encode_long,
)
from exchange.errors import DecodeError, EncodeError

# --------------------------------------------------------------------------- helpers


def compiled(codec: Codec) -> CompiledRecord:
    """The codec's generated output functions (private: the codec never exposes them)."""
    record = codec._output_compiled
    assert record is not None, "the output schema did not compile"
    return record


def as_wire(value: Any) -> Any:
    """A domain value as fastavro takes and returns it: dicts, lists, enum symbols as str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [as_wire(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def fastavro_bytes(codec: Codec, output: EngineOutput) -> bytes:
    body = BytesIO()
    schemaless_writer(body, codec.schemas.output, as_wire(output))
    return b"\xc3\x01" + codec.output_fingerprint + body.getvalue()


def fastavro_read(schema: Any, data: bytes, offset: int = 10) -> Any:
    """What fastavro reads from ``data[offset:]``; raises if it fails or leaves bytes over."""
    stream = BytesIO(data)
    stream.seek(offset)
    record = schemaless_reader(stream, schema, None)
    if stream.tell() != len(data):
        raise ValueError("trailing bytes")
    return record


def assert_same_types(decoded: Any, expected: Any) -> None:
    """Equal is not enough (a StrEnum member equals its string): every value, however deep,
    must have the type of its counterpart, so enums are members and lists are tuples."""
    assert type(decoded) is type(expected), (decoded, expected)
    if dataclasses.is_dataclass(expected):
        for field in dataclasses.fields(expected):
            assert_same_types(getattr(decoded, field.name), getattr(expected, field.name))
    elif isinstance(expected, tuple):
        for decoded_item, expected_item in zip(decoded, expected, strict=True):
            assert_same_types(decoded_item, expected_item)


def outcome(call: Callable[[], bytes]) -> bytes | type[Exception]:
    try:
        return call()
    except EncodeError:
        return EncodeError


# --------------------------------------------------------------------------- strategies

longs = st.one_of(st.integers(LONG_MIN, LONG_MAX), st.sampled_from(BOUNDARY_LONGS))
texts = st.one_of(
    st.text(max_size=12),
    st.text(max_size=300),  # lengths past one varint byte and past the string memo's limit
    st.sampled_from(["", "BTC-USDT", "USDT", "ünïcödé", "日本語", "🚀" * 40, "x" * 10_000]),
)


def events(cls: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, **fields)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def lists(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=3).map(tuple)


OUTPUTS = st.builds(
    EngineOutput,
    sequence=longs,
    command_id=longs,
    command_kind=st.sampled_from(CommandKind),
    timestamp_ms=longs,
    trades=lists(
        events(
            TradeExecuted,
            trade_id=longs,
            symbol=texts,
            price=longs,
            quantity=longs,
            quote_quantity=longs,
            maker_order_id=longs,
            taker_order_id=longs,
            maker_user_id=longs,
            taker_user_id=longs,
            taker_side=st.sampled_from(Side),
            maker_fee=longs,
            maker_fee_asset=texts,
            taker_fee=longs,
            taker_fee_asset=texts,
            executed_at=longs,
        )
    ),
    order_placements=lists(
        events(
            OrderPlaced,
            order_id=longs,
            client_order_id=optional(texts),
            user_id=longs,
            symbol=texts,
            side=st.sampled_from(Side),
            order_type=st.sampled_from(OrderType),
            time_in_force=st.sampled_from(TimeInForce),
            post_only=st.booleans(),
            price=optional(longs),
            quantity=longs,
            created_at=longs,
        )
    ),
    order_updates=lists(
        events(
            OrderUpdated,
            order_id=longs,
            client_order_id=optional(texts),
            user_id=longs,
            symbol=texts,
            side=st.sampled_from(Side),
            order_type=st.sampled_from(OrderType),
            time_in_force=st.sampled_from(TimeInForce),
            price=optional(longs),
            quantity=longs,
            status=st.sampled_from(OrderStatus),
            filled_quantity=longs,
            remaining_quantity=longs,
            cumulative_quote=longs,
            avg_fill_price=longs,
            last_fill_price=longs,
            last_fill_quantity=longs,
            reject_reason=optional(st.sampled_from(RejectReason)),
            created_at=longs,
            updated_at=longs,
        )
    ),
    order_completions=lists(
        events(
            OrderCompleted,
            order_id=longs,
            user_id=longs,
            symbol=texts,
            reason=st.sampled_from(CompletionReason),
            completed_at=longs,
        )
    ),
    balance_updates=lists(
        events(BalanceUpdated, user_id=longs, asset=texts, available=longs, locked=longs)
    ),
    rejections=lists(
        events(
            CommandRejected,
            command_id=longs,
            kind=st.sampled_from(CommandKind),
            user_id=longs,
            reason=st.sampled_from(RejectReason),
            order_id=optional(longs),
            client_order_id=optional(texts),
            message=texts,
        )
    ),
    user_creations=lists(
        events(
            UserCreated,
            user_id=longs,
            role=st.sampled_from(Role),
            label=optional(texts),
            created_at=longs,
        )
    ),
    api_key_updates=lists(
        events(
            ApiKeyUpdated,
            api_key=texts,
            user_id=longs,
            role=st.sampled_from(Role),
            public_key=texts,
            revoked=st.booleans(),
            updated_at=longs,
        )
    ),
    depth_updates=lists(
        events(
            DepthUpdated,
            symbol=texts,
            update_id=longs,
            levels=lists(
                events(
                    LevelUpdated,
                    side=st.sampled_from(Side),
                    price=longs,
                    quantity=longs,
                    order_count=longs,
                )
            ),
        )
    ),
)


# --------------------------------------------------------------------------- equivalence


def test_codec_when_built_from_the_repo_schemas_compiles_the_output_fast_path(
    codec: Codec,
) -> None:
    record = compiled(codec)
    assert "def encode(o)" in record.source and "def decode(d)" in record.source


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(output=OUTPUTS)
def test_fast_encode_when_any_output_given_writes_fastavro_bytes(
    codec: Codec, output: EngineOutput
) -> None:
    expected = fastavro_bytes(codec, output)
    assert compiled(codec).encode(output) == expected
    assert codec.encode_output(output) == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(output=OUTPUTS)
def test_fast_decode_when_any_output_encoded_returns_what_fastavro_reads(
    codec: Codec, output: EngineOutput
) -> None:
    data = fastavro_bytes(codec, output)
    decoded = compiled(codec).decode(data)
    assert decoded == output
    assert as_wire(decoded) == fastavro_read(codec.schemas.output, data)
    assert decoded == codec._decode_output_general(data)
    assert_same_types(decoded, output)


def test_fast_path_when_output_is_the_full_fixture_round_trips_byte_for_byte(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = compiled(codec).encode(full_output)
    assert data == fastavro_bytes(codec, full_output)
    decoded = compiled(codec).decode(data)
    assert decoded == full_output
    assert_same_types(decoded, full_output)


@pytest.mark.parametrize("value", BOUNDARY_LONGS)
def test_fast_path_when_long_is_at_a_varint_boundary_matches_fastavro(
    codec: Codec, full_output: EngineOutput, value: int
) -> None:
    trade = dataclasses.replace(full_output.trades[0], price=value, executed_at=-value - 1)
    update = dataclasses.replace(full_output.order_updates[0], price=value)
    output = dataclasses.replace(
        full_output, sequence=value, trades=(trade,), order_updates=(update,)
    )
    data = compiled(codec).encode(output)
    assert data == fastavro_bytes(codec, output)
    assert compiled(codec).decode(data) == output


@pytest.mark.parametrize(
    "text",
    ["", "a", "ü", "日本語", "🚀", "x" * 63, "x" * 64, "x" * 65, "é" * MEMO_MAX_BYTES, "y" * 10**5],
)
def test_fast_path_when_string_is_empty_long_or_non_ascii_matches_fastavro(
    codec: Codec, full_output: EngineOutput, text: str
) -> None:
    rejection = dataclasses.replace(full_output.rejections[0], message=text, client_order_id=text)
    balance = dataclasses.replace(full_output.balance_updates[0], asset=text)
    output = dataclasses.replace(full_output, rejections=(rejection,), balance_updates=(balance,))
    for _ in range(2):  # the second time from the string memo (for the short ones)
        data = compiled(codec).encode(output)
        assert data == fastavro_bytes(codec, output)
        assert compiled(codec).decode(data) == output


def test_fast_path_when_every_list_is_empty_matches_fastavro(codec: Codec) -> None:
    output = EngineOutput(
        sequence=0, command_id=0, command_kind=CommandKind.DEPOSIT, timestamp_ms=0
    )
    data = compiled(codec).encode(output)
    assert data == fastavro_bytes(codec, output)
    assert data[10:] == b"\x00\x00\x04\x00" + b"\x00" * 9  # nine empty lists
    assert compiled(codec).decode(data) == output


def test_fast_decode_when_decoded_returns_frozen_hashable_dataclass_instances(
    codec: Codec, full_output: EngineOutput
) -> None:
    decoded = compiled(codec).decode(codec.encode_output(full_output))
    assert type(decoded) is EngineOutput and type(decoded.trades[0]) is TradeExecuted
    assert hash(decoded.trades[0]) == hash(full_output.trades[0])
    with pytest.raises(FrozenInstanceError):
        decoded.trades[0].price = 1  # type: ignore[misc]
    assert decoded.order_updates[1].reject_reason is RejectReason.INVALID_ORDER


# --------------------------------------------------------------------------- varints


@given(value=st.integers(-(2**70), 2**70))
@example(value=LONG_MAX)
@example(value=LONG_MIN)
@example(value=LONG_MAX + 1)
@example(value=LONG_MIN - 1)
def test_encode_long_when_value_in_or_out_of_range_matches_fastavro(value: int) -> None:
    if LONG_MIN <= value <= LONG_MAX:
        body = BytesIO()
        schemaless_writer(body, parse_schema("long"), value)
        assert encode_long(value) == body.getvalue()
        assert _VarintMemo()[encode_long(value)] == value
    else:
        with pytest.raises(OverflowError):
            encode_long(value)


@pytest.mark.parametrize(
    "encoded",
    [b"", b"\x80" * 10 + b"\x00", b"\xff" * 9 + b"\x02"],
    ids=["empty", "11-bytes", "beyond-64-bits"],
)
def test_varint_memo_when_not_a_varint_of_64_bits_raises_value_error(encoded: bytes) -> None:
    memo = _VarintMemo()
    with pytest.raises(ValueError):
        memo[encoded]
    assert encoded not in memo


def test_varint_memo_when_varint_is_not_minimal_reads_its_value_like_fastavro() -> None:
    encoded = b"\x82\x80\x00"
    assert _VarintMemo()[encoded] == 1 == schemaless_reader(BytesIO(encoded), "long", None)


def test_memo_when_limit_reached_starts_over_from_its_base() -> None:
    memo = _Memo(lambda v: str(v).encode(), {0: b"zero"}, limit=2, max_bytes=3)
    assert [memo[1], memo[2], memo[0]] == [b"1", b"2", b"zero"]
    assert dict(memo) == {0: b"zero", 1: b"1", 2: b"2"}
    assert memo[3] == b"3"  # a third kept miss: back to the base first
    assert dict(memo) == {0: b"zero", 3: b"3"}
    assert memo[1234] == b"1234" and 1234 not in memo  # longer than max_bytes: not kept


# --------------------------------------------------------------------------- fallback


@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    mutations=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=4
    ),
)
def test_fast_decode_when_record_mutated_reads_what_fastavro_reads_or_defers(
    codec: Codec, full_output: EngineOutput, cut: int, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(codec.encode_output(full_output))
    for position, value in mutations:
        data[10 + position % (len(data) - 10)] = value
    framed = bytes(data[: len(data) - cut % (len(data) - 10)])
    try:
        decoded = compiled(codec).decode(framed)
    except FastPathMiss:
        return  # the codec falls back to fastavro: test_codec_decode_errors covers that path
    # Whatever the fast path accepts, fastavro reads the same way, to the last byte.
    assert as_wire(decoded) == fastavro_read(codec.schemas.output, framed)
    assert codec.decode_output(framed) == decoded


@FUZZ
@given(body=st.binary(max_size=200))
@example(body=b"\x02" * 4 + b"\x00" * 7)
def test_fast_decode_when_body_arbitrary_reads_what_fastavro_reads_or_defers(
    codec: Codec, body: bytes
) -> None:
    framed = b"\xc3\x01" + codec.output_fingerprint + body
    try:
        decoded = compiled(codec).decode(framed)
    except FastPathMiss:
        return
    assert as_wire(decoded) == fastavro_read(codec.schemas.output, framed)


def _split_trades(codec: Codec, output: EngineOutput) -> tuple[bytes, bytes, bytes]:
    """(body before the trades array, one trade item, body after the array) of ``output``."""
    assert len(output.trades) == 1
    head = b"".join(encode_long(v) for v in (output.sequence, output.command_id))
    head += encode_long(list(CommandKind).index(output.command_kind))
    head += encode_long(output.timestamp_ms)
    without = codec.encode_output(dataclasses.replace(output, trades=()))[10:]
    with_one = codec.encode_output(output)[10:]
    size = len(with_one) - len(without) - 1  # the block count of 1 is one byte
    assert with_one[: len(head) + 1] == head + b"\x02"
    return head, with_one[len(head) + 1 : len(head) + 1 + size], without[len(head) + 1 :]


@pytest.mark.parametrize("layout", ["two blocks", "negative block count", "non-minimal varints"])
def test_decode_output_when_avro_is_valid_but_unusual_returns_what_fastavro_reads(
    codec: Codec, full_output: EngineOutput, layout: str
) -> None:
    head, item, tail = _split_trades(codec, full_output)
    if layout == "two blocks":
        body = head + encode_long(1) + item + encode_long(1) + item + b"\x00" + tail
    elif layout == "negative block count":  # count -2, then the block's size in bytes
        body = head + encode_long(-2) + encode_long(2 * len(item)) + item + item + b"\x00" + tail
    else:  # sequence 9 as two bytes, and an array count of 2 as three
        assert head[0] == 18
        body = b"\x92\x00" + head[1:] + b"\x84\x80\x00" + item + item + b"\x00" + tail
    framed = b"\xc3\x01" + codec.output_fingerprint + body
    expected = dataclasses.replace(full_output, trades=full_output.trades * 2)
    assert codec.decode_output(framed) == expected
    assert codec._decode_output_general(framed) == expected


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("sequence", True),  # fastavro writes a bool as a long: 1
        ("sequence", 7.0),  # ... and an integral float
        ("sequence", 7.9),  # ... and truncates any other float
        ("sequence", 2**63),
        ("sequence", -(2**63) - 1),
        ("sequence", None),
        ("sequence", "7"),
        ("price", True),  # a union refuses a bool where it would take an int
        ("price", 7.0),
        ("price", 2**64),
        ("reject_reason", "SIDEWAYS"),
        ("reject_reason", "INVALID_ORDER"),  # a plain symbol string is fine
        ("symbol", None),
        ("symbol", b"BTC"),
        ("symbol", "\ud800"),  # a lone surrogate is not UTF-8
        ("client_order_id", 7),
        ("side", "SIDEWAYS"),
        ("side", "SELL"),
        ("status", 1),
        ("trades", [("not", "a", "trade")]),
        ("balance_updates", "not a tuple"),
        ("trades", None),
    ],
)
def test_encode_output_when_value_is_off_type_behaves_exactly_like_fastavro(
    codec: Codec, full_output: EngineOutput, where: str, value: Any
) -> None:
    # Frozen dataclasses take any value at runtime; the codec must then write what the
    # general (fastavro) path writes, or raise the same EncodeError, never something else.
    if where in ("sequence", "trades", "balance_updates"):
        output = dataclasses.replace(full_output, **{where: value})
    else:
        update = dataclasses.replace(full_output.order_updates[1], **{where: value})
        output = dataclasses.replace(full_output, order_updates=(update,))
    fast = outcome(lambda: codec.encode_output(output))
    assert fast == outcome(lambda: codec._encode_output_general(output))


def test_encode_output_when_int_outside_int64_raises_encode_error_with_cause(
    codec: Codec, full_output: EngineOutput
) -> None:
    trade = dataclasses.replace(full_output.trades[0], executed_at=2**63)
    with pytest.raises(FastPathMiss):
        compiled(codec).encode(dataclasses.replace(full_output, trades=(trade,)))
    with pytest.raises(EncodeError) as info:
        codec.encode_output(dataclasses.replace(full_output, trades=(trade,)))
    assert isinstance(info.value.__cause__, OverflowError)


# --------------------------------------------------------------------------- evolution


def test_codec_when_schema_gains_a_field_the_dataclass_lacks_stays_on_fastavro(
    tmp_path: Path, full_output: EngineOutput, caplog: pytest.LogCaptureFixture
) -> None:
    def add_venue(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "venue", "type": ["null", "string"], "default": None})

    with caplog.at_level(logging.WARNING, logger="exchange.codec"):
        codec = evolved_codec(tmp_path / "avro", "TradeExecuted", add_venue)
    assert codec._output_compiled is None
    assert "fast path disabled" in caplog.text and "venue" in caplog.text
    assert codec.decode_output(codec.encode_output(full_output)) == full_output


def test_codec_when_enum_gains_a_symbol_the_engine_lacks_decodes_it_as_decode_error(
    tmp_path: Path, full_output: EngineOutput
) -> None:
    def add_symbol(schema: dict[str, Any]) -> None:
        schema["symbols"].append("RATE_LIMITED")

    codec = evolved_codec(tmp_path / "avro", "RejectReason", add_symbol)
    data = compiled(codec).encode(full_output)
    assert data == fastavro_bytes(codec, full_output)
    assert codec.decode_output(data) == full_output
    # The last index (RATE_LIMITED) in the first rejection: fastavro reads it, no member maps.
    wire = fastavro_read(codec.schemas.output, data)
    wire["rejections"][0]["reason"] = "RATE_LIMITED"
    body = BytesIO()
    schemaless_writer(body, codec.schemas.output, wire)
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(data[:10] + body.getvalue())
    with pytest.raises(DecodeError, match="does not map to an output"):
        codec.decode_output(data[:10] + body.getvalue())


# --------------------------------------------------------------------------- the generator


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    s: str
    maybe: str | None


Big = StrEnum("Big", {f"S{i}": f"S{i}" for i in range(100)})  # indexes past one varint byte


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    n: int
    flag: bool
    inner: Inner
    grid: tuple[tuple[int, ...], ...]
    big: Any
    maybe_big: Any
    inners: tuple[Inner, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)  # no slots: built through its constructor
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


SAMPLE_SCHEMA = {
    "type": "record",
    "name": "t.Sample",
    "fields": [
        {"name": "n", "type": "long"},
        {"name": "flag", "type": "boolean"},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "t.Inner",
                "fields": [
                    {"name": "s", "type": "string"},
                    {"name": "maybe", "type": ["string", "null"]},  # null second
                ],
            },
        },
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "long"}}},
        {"name": "big", "type": {"type": "enum", "name": "t.Big", "symbols": list(Big)}},
        {"name": "maybe_big", "type": ["null", "t.Big"]},
        {"name": "inners", "type": {"type": "array", "items": "t.Inner"}},
    ],
}


def one_field_record(name: str, field: str, field_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": field, "type": field_type}]}


SAMPLE_CLASSES = {"t.Sample": Sample, "t.Inner": Inner, "t.Big": Big}
INNERS = st.builds(Inner, s=texts, maybe=optional(texts))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.builds(
        Sample,
        n=longs,
        flag=st.booleans(),
        inner=INNERS,
        grid=st.lists(st.lists(longs, max_size=3).map(tuple), max_size=3).map(tuple),
        big=st.sampled_from(Big),
        maybe_big=optional(st.sampled_from(Big)),
        inners=st.lists(INNERS, max_size=3).map(tuple),
    )
)
def test_compile_record_when_schema_nests_records_arrays_and_unions_matches_fastavro(
    sample: Sample,
) -> None:
    schema = parse_schema(SAMPLE_SCHEMA)
    record = compile_record(schema, SAMPLE_CLASSES, header=b"H")
    body = BytesIO()
    schemaless_writer(body, schema, as_wire(sample))
    assert record.encode(sample) == b"H" + body.getvalue()
    decoded = record.decode(b"H" + body.getvalue())
    assert decoded == sample
    assert_same_types(decoded, sample)


def test_compile_record_when_class_has_post_init_builds_through_its_constructor() -> None:
    schema = parse_schema(one_field_record("t.Checked", "n", "long"))
    record = compile_record(schema, {"t.Checked": Checked})
    assert record.decode(record.encode(Checked(n=5))) == Checked(n=5)
    with pytest.raises(FastPathMiss) as info:
        record.decode(encode_long(-5))
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "field_type",
    [
        "int",
        "double",
        "bytes",
        {"type": "map", "values": "long"},
        {"type": "long", "logicalType": "timestamp-millis"},
        ["null", "long", "string"],
        ["null", {"type": "array", "items": "long"}],
        {"type": "fixed", "name": "t.F", "size": 2},
    ],
    ids=str,
)
def test_compile_record_when_type_is_outside_the_subset_raises_unsupported_schema(
    field_type: Any,
) -> None:
    @dataclasses.dataclass(frozen=True)
    class One:
        x: Any

    schema = parse_schema(one_field_record("t.One", "x", field_type))
    with pytest.raises(UnsupportedSchema):
        compile_record(schema, {"t.One": One})


def test_compile_record_when_dataclass_fields_differ_raises_unsupported_schema() -> None:
    schema = parse_schema(one_field_record("t.Checked", "m", "long"))
    with pytest.raises(UnsupportedSchema, match="do not match"):
        compile_record(schema, {"t.Checked": Checked})


def test_compile_record_when_record_is_recursive_raises_unsupported_schema() -> None:
    @dataclasses.dataclass(frozen=True)
    class Node:
        children: tuple[Any, ...]

    schema = parse_schema(
        {
            "type": "record",
            "name": "t.Node",
            "fields": [{"name": "children", "type": {"type": "array", "items": "t.Node"}}],
        }
    )
    with pytest.raises(UnsupportedSchema, match="recursive"):
        compile_record(schema, {"t.Node": Node})


@pytest.mark.parametrize("value", BOUNDARY_LONGS)
def test_fast_encode_when_fields_skip_the_long_memo_writes_the_same_bytes(
    codec: Codec, full_output: EngineOutput, value: int
) -> None:
    # The codec writes ids, sequences and balances without the memo (they are nearly always
    # new); only the speed may differ from the memoized encoding, never a byte.
    source = compiled(codec).source
    assert "LONG(o.sequence)" in source and "LONG(x26.available)" in source
    assert "L[o.timestamp_ms]" in source  # timestamps repeat: they keep the memo
    memo_only = compile_record(
        codec.schemas.output,
        _OUTPUT_CLASSES,
        header=SINGLE_OBJECT_MARKER + codec.output_fingerprint,
    )
    balance = dataclasses.replace(full_output.balance_updates[0], available=value, locked=value)
    output = dataclasses.replace(
        full_output, sequence=value, command_id=value, balance_updates=(balance,)
    )
    assert compiled(codec).encode(output) == memo_only.encode(output)
    assert compiled(codec).encode(output) == fastavro_bytes(codec, output)
