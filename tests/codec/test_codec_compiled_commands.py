"""The generated command encoder and decoder are the general path, only faster.

The general path (fastavro into a dict, then the codec's ``_*_from_wire`` mapping) is the
reference for decoding: for any bytes, the generated decoder either returns exactly the command
it returns, or raises ``FastPathMiss`` and the codec runs it, so results and errors do not
change. Expected bytes come from fastavro's ``schemaless_writer`` over a dict built here from
the schema and the dataclass (not with the codec's own mapping). The generated functions are
called directly where the test is about them (a ``FastPathMiss`` there would hide behind the
codec's fallback), and through the codec where the test is about what callers see.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from enum import Enum, StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from codec_testkit import BOUNDARY_LONGS as _BOUNDARY_LONGS
from codec_testkit import FUZZ, LONG_MAX, LONG_MIN, NAMESPACE, TS, evolved_codec
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.commands import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
    Withdraw,
)
from engine.enums import OrderType, Role, Side, StpMode, TimeInForce
from exchange.codec import Codec
from exchange.codec.compiled import (
    CompiledEnvelope,
    FastPathMiss,
    UnsupportedSchema,
    _HighMemo,
    compile_envelope,
    compile_record,
    encode_long,
)
from exchange.errors import DecodeError, EncodeError

BOUNDARY_LONGS = sorted({*_BOUNDARY_LONGS, TS})  # and a real timestamp
ADDRESS = re.compile(r"0x[0-9a-f]+")
TEXTS = ["", "BTC_USDT", "ünïcödé", "日本語", "🚀" * 40, "x" * 10_000]


# --------------------------------------------------------------------------- helpers


def compiled(codec: Codec) -> CompiledEnvelope:
    """The codec's generated command functions (private: the codec never exposes them)."""
    envelope = codec._command_compiled
    assert envelope is not None, "the command schema did not compile"
    return envelope


def wire(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def branch_schemas(codec: Codec) -> dict[str, dict[str, Any]]:
    """Full name -> parsed record of every branch of the command union."""
    (union,) = [f["type"] for f in codec.schemas.command["fields"] if f["name"] == "command"]
    return {branch["name"]: branch for branch in union}


def branch_name(command: Command) -> str:
    return f"{NAMESPACE}.{type(command).__name__}Command"


def fastavro_bytes(codec: Codec, command: Command) -> bytes:
    """The framed record fastavro writes, the wire fields read from the branch's schema."""
    name = branch_name(command)
    fields = branch_schemas(codec)[name]["fields"]
    record = {
        "timestamp_ms": command.timestamp_ms,
        "command": (name, {f["name"]: wire(getattr(command, f["name"])) for f in fields}),
    }
    body = BytesIO()
    schemaless_writer(body, codec.schemas.command, record)
    return b"\xc3\x01" + codec.command_fingerprint + body.getvalue()


def as_offset(command: Command, offset: int) -> Command:
    """``command`` as the decoder rebuilds it from the record at ``offset`` (built normally,
    through the dataclass constructor)."""
    if isinstance(command, PlaceOrder):
        return dataclasses.replace(command, command_id=offset, order_id=offset)
    return dataclasses.replace(command, command_id=offset)


def assert_same_types(decoded: Any, expected: Any) -> None:
    """Equal is not enough (a StrEnum member equals its string): every field must have the
    type of its counterpart, so enums are members and the class is the domain class."""
    assert type(decoded) is type(expected), (decoded, expected)
    for field in dataclasses.fields(expected):
        got, want = getattr(decoded, field.name), getattr(expected, field.name)
        assert type(got) is type(want), (field.name, got, want)


def outcome(call: Callable[[], Any]) -> Any:
    """What a call returns, or the type and message of the codec error it raises (object
    addresses, which fastavro's messages may quote, masked)."""
    try:
        return call()
    except (DecodeError, EncodeError) as e:
        return (type(e), ADDRESS.sub("0x?", str(e)))


def fast_or_miss(codec: Codec, data: bytes, command_id: int) -> Command | None:
    try:
        decoded: Command = compiled(codec).decode(data, command_id)
    except FastPathMiss:
        return None
    return decoded


def assert_decodes_like_general(codec: Codec, data: bytes, command_id: int) -> None:
    """The fast path returns the general path's command or defers, and the codec's answer
    (command or DecodeError message) is the general path's."""
    general = outcome(lambda: codec._decode_command_general(data, command_id))
    fast = fast_or_miss(codec, data, command_id)
    if fast is not None:
        assert fast == general
        assert_same_types(fast, general)
    assert outcome(lambda: codec.decode_command(data, command_id=command_id)) == general


# --------------------------------------------------------------------------- strategies

longs = st.one_of(st.integers(LONG_MIN, LONG_MAX), st.sampled_from(BOUNDARY_LONGS))
texts = st.one_of(st.text(max_size=12), st.text(max_size=300), st.sampled_from(TEXTS))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


COMMANDS: st.SearchStrategy[Command] = st.one_of(
    st.builds(
        PlaceOrder,
        command_id=longs,
        timestamp_ms=longs,
        order_id=longs,
        user_id=longs,
        symbol=texts,
        side=st.sampled_from(Side),
        order_type=st.sampled_from(OrderType),
        time_in_force=st.sampled_from(TimeInForce),
        post_only=st.booleans(),
        price=optional(longs),
        quantity=longs,
        client_order_id=optional(texts),
        stp_mode=optional(st.sampled_from(StpMode)),
    ),
    st.builds(
        CancelOrder,
        command_id=longs,
        timestamp_ms=longs,
        user_id=longs,
        symbol=texts,
        order_id=optional(longs),
        client_order_id=optional(texts),
    ),
    st.builds(
        Deposit, command_id=longs, timestamp_ms=longs, user_id=longs, asset=texts, amount=longs
    ),
    st.builds(
        Withdraw, command_id=longs, timestamp_ms=longs, user_id=longs, asset=texts, amount=longs
    ),
    st.builds(
        CreateUser,
        command_id=longs,
        timestamp_ms=longs,
        api_key=texts,
        public_key=texts,
        role=st.sampled_from(Role),
        label=optional(texts),
    ),
    st.builds(
        AddApiKey,
        command_id=longs,
        timestamp_ms=longs,
        user_id=longs,
        api_key=texts,
        public_key=texts,
    ),
    st.builds(RevokeApiKey, command_id=longs, timestamp_ms=longs, api_key=texts),
    st.builds(CancelAllOrders, command_id=longs, timestamp_ms=longs, user_id=longs, symbol=texts),
    st.builds(
        AmendOrder,
        command_id=longs,
        timestamp_ms=longs,
        user_id=longs,
        symbol=texts,
        order_id=optional(longs),
        client_order_id=optional(texts),
        quantity=longs,
    ),
)


def place(**changes: Any) -> PlaceOrder:
    fields: dict[str, Any] = {
        "command_id": 42,
        "timestamp_ms": TS,
        "order_id": 42,
        "user_id": 7,
        "symbol": "BTC_USDT",
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "time_in_force": TimeInForce.IOC,
        "post_only": True,
        "price": 5_000_010,
        "quantity": 5,
        "client_order_id": "client-1",
        "stp_mode": StpMode.EXPIRE_MAKER,
    }
    return PlaceOrder(**{**fields, **changes})


EDGE_COMMANDS: dict[str, Command] = {
    "place-full": place(),
    "place-optionals-none": place(price=None, client_order_id=None, stp_mode=None),
    "place-market-defaults": PlaceOrder(
        command_id=5,
        timestamp_ms=TS,
        order_id=5,
        user_id=1,
        symbol="ETH_USDT",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        quantity=2,
    ),
    "place-extreme-longs": place(
        timestamp_ms=LONG_MIN, user_id=LONG_MAX, price=LONG_MIN, quantity=LONG_MAX
    ),
    "place-negative-longs": place(timestamp_ms=-1, user_id=-8193, price=-8192, quantity=-64),
    "place-unicode": place(symbol="日本語-🚀", client_order_id="ünïcödé " * 20),
    "place-empty-strings": place(symbol="", client_order_id=""),
    "place-long-strings": place(symbol="x" * 10_000, client_order_id="🚀" * 40),
    **{
        f"place-stp-{mode}": place(stp_mode=mode, time_in_force=tif)
        for mode, tif in zip(StpMode, TimeInForce, strict=True)
    },
    "cancel-by-order-id": CancelOrder(
        command_id=50, timestamp_ms=TS, user_id=7, symbol="BTC_USDT", order_id=42
    ),
    "cancel-by-client-order-id": CancelOrder(
        command_id=51, timestamp_ms=TS, user_id=7, symbol="BTC_USDT", client_order_id="c-1"
    ),
    "cancel-both-none": CancelOrder(command_id=52, timestamp_ms=TS, user_id=7, symbol="ünï"),
    "cancel-extreme-longs": CancelOrder(
        command_id=LONG_MAX,
        timestamp_ms=LONG_MAX,
        user_id=LONG_MIN,
        symbol="BTC_USDT",
        order_id=LONG_MIN,
        client_order_id="🚀",
    ),
    "deposit": Deposit(command_id=3, timestamp_ms=TS, user_id=9, asset="USDT", amount=10**14),
    "deposit-extremes": Deposit(
        command_id=0, timestamp_ms=0, user_id=LONG_MIN, asset="", amount=LONG_MAX
    ),
    "withdraw": Withdraw(command_id=4, timestamp_ms=TS, user_id=9, asset="BTC", amount=1),
    "withdraw-negative": Withdraw(
        command_id=-1, timestamp_ms=-TS, user_id=-1, asset="日本語", amount=-(10**18)
    ),
    "create-user-trader-defaults": CreateUser(
        command_id=60,
        timestamp_ms=TS,
        api_key="k0123456789abcdef01234567",
        public_key="GyZ0rG9Dz7g0hTqjvHvE8cGz4OEGZpMcd1q8LZ8C9uI=",
    ),
    "create-user-operator-labelled": CreateUser(
        command_id=61,
        timestamp_ms=TS,
        api_key="k" * 200,
        public_key="",
        role=Role.OPERATOR,
        label="desk ünïcödé 🚀",
    ),
    "add-api-key": AddApiKey(
        command_id=62, timestamp_ms=TS, user_id=3, api_key="kabc", public_key="cHVi"
    ),
    "add-api-key-extremes": AddApiKey(
        command_id=LONG_MAX, timestamp_ms=LONG_MIN, user_id=LONG_MIN, api_key="", public_key=""
    ),
    "revoke-api-key": RevokeApiKey(command_id=63, timestamp_ms=TS, api_key="kabc"),
    "cancel-all": CancelAllOrders(command_id=64, timestamp_ms=TS, user_id=7, symbol="BTC_USDT"),
    "cancel-all-extremes": CancelAllOrders(
        command_id=0, timestamp_ms=-1, user_id=LONG_MAX, symbol="日本語"
    ),
    "amend-by-order-id": AmendOrder(
        command_id=60, timestamp_ms=TS, user_id=7, symbol="BTC_USDT", order_id=42, quantity=3
    ),
    "amend-by-client-order-id": AmendOrder(
        command_id=61,
        timestamp_ms=TS,
        user_id=7,
        symbol="BTC_USDT",
        client_order_id="ünïcödé",
        quantity=LONG_MAX,
    ),
    "amend-extreme-longs": AmendOrder(
        command_id=LONG_MIN,
        timestamp_ms=LONG_MIN,
        user_id=LONG_MAX,
        symbol="",
        order_id=LONG_MAX,
        client_order_id=None,
        quantity=LONG_MIN,
    ),
}


# --------------------------------------------------------------------------- equivalence


def test_codec_when_built_from_the_repo_schemas_compiles_the_command_fast_path(
    codec: Codec,
) -> None:
    envelope = compiled(codec)
    assert envelope.arguments == ("command_id",)
    assert "def encode(o)" in envelope.source and "def decode(d, " in envelope.source


@pytest.mark.parametrize("name", list(EDGE_COMMANDS))
def test_fast_path_when_command_has_edge_values_matches_fastavro_and_general_path(
    codec: Codec, name: str
) -> None:
    command = EDGE_COMMANDS[name]
    data = compiled(codec).encode(command)
    assert data == fastavro_bytes(codec, command) == codec._encode_command_general(command)
    for offset in (command.command_id, 0, 1_000, LONG_MAX):
        decoded = compiled(codec).decode(data, offset)
        expected = as_offset(command, offset)
        assert decoded == expected == codec._decode_command_general(data, offset)
        assert_same_types(decoded, expected)
        assert codec.decode_command(data, command_id=offset) == expected


@pytest.mark.parametrize(
    "name", ["place-full", "cancel-by-order-id", "deposit", "withdraw", "amend-by-order-id"]
)
def test_fast_decode_when_decoded_returns_a_real_frozen_hashable_command(
    codec: Codec, name: str
) -> None:
    command = EDGE_COMMANDS[name]
    decoded = compiled(codec).decode(codec.encode_command(command), command.command_id)
    assert type(decoded) is type(command)
    assert decoded == command and hash(decoded) == hash(command)
    assert dataclasses.replace(decoded) == command  # fields readable through the dataclass
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.user_id = 99


def test_fast_decode_when_place_order_given_an_offset_uses_it_as_command_and_order_id(
    codec: Codec,
) -> None:
    decoded = compiled(codec).decode(codec.encode_command(place()), 1_000)
    assert isinstance(decoded, PlaceOrder)
    assert (decoded.command_id, decoded.order_id) == (1_000, 1_000)


def test_fast_decode_when_cancel_given_an_offset_keeps_the_order_id_on_the_wire(
    codec: Codec,
) -> None:
    decoded = compiled(codec).decode(codec.encode_command(EDGE_COMMANDS["cancel-by-order-id"]), 9)
    assert isinstance(decoded, CancelOrder)
    assert (decoded.command_id, decoded.order_id) == (9, 42)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(command=COMMANDS, offset=longs)
def test_fast_path_when_any_command_round_trips_matches_fastavro_and_general_path(
    codec: Codec, command: Command, offset: int
) -> None:
    expected_bytes = fastavro_bytes(codec, command)
    assert compiled(codec).encode(command) == expected_bytes
    assert codec.encode_command(command) == expected_bytes
    decoded = compiled(codec).decode(expected_bytes, offset)
    expected = as_offset(command, offset)
    assert decoded == expected == codec._decode_command_general(expected_bytes, offset)
    assert_same_types(decoded, expected)


@pytest.mark.parametrize("value", BOUNDARY_LONGS)
@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("place-full", "timestamp_ms"),
        ("place-full", "user_id"),
        ("place-full", "price"),
        ("place-full", "quantity"),
        ("cancel-by-order-id", "order_id"),
        ("deposit", "amount"),
    ],
)
def test_fast_path_when_long_is_at_a_varint_boundary_matches_fastavro(
    codec: Codec, name: str, field: str, value: int
) -> None:
    command = dataclasses.replace(EDGE_COMMANDS[name], **{field: value})
    data = compiled(codec).encode(command)
    assert data == fastavro_bytes(codec, command)
    assert compiled(codec).decode(data, command.command_id) == command


@pytest.mark.parametrize("buffer", [bytearray, memoryview])
def test_decode_command_when_value_is_a_bytes_like_buffer_decodes_it(
    codec: Codec, buffer: type[bytearray] | type[memoryview]
) -> None:
    command = EDGE_COMMANDS["place-full"]
    data = buffer(codec.encode_command(command))
    assert codec.decode_command(data, command_id=42) == command  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fallback


def test_decode_command_when_body_truncated_anywhere_raises_the_general_decode_error(
    codec: Codec,
) -> None:
    for command in EDGE_COMMANDS.values():
        data = codec.encode_command(command)
        for size in range(len(data)):
            with pytest.raises(FastPathMiss):
                compiled(codec).decode(data[:size], 0)
            with pytest.raises(DecodeError):
                codec.decode_command(data[:size], command_id=0)
            assert_decodes_like_general(codec, data[:size], 0)


def test_decode_command_when_trailing_bytes_raises_the_general_decode_error(
    codec: Codec,
) -> None:
    data = codec.encode_command(EDGE_COMMANDS["deposit"]) + b"\x00\x00"
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(data, 0)
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        codec.decode_command(data, command_id=0)
    assert_decodes_like_general(codec, data, 0)


@pytest.mark.parametrize(
    "index",
    [b"\x0a", b"\x0c", b"\x7e", b"\x80\x00", b"\x86\x00", b"\xff\xff\x01"],
    ids=["5", "6", "63", "non-minimal-0", "non-minimal-3", "huge"],
)
@pytest.mark.parametrize("name", ["place-full", "withdraw"])
def test_decode_command_when_union_index_unknown_or_unusual_defers_to_the_general_path(
    codec: Codec, name: str, index: bytes
) -> None:
    data = codec.encode_command(EDGE_COMMANDS[name])
    body_at = 10 + len(encode_long(EDGE_COMMANDS[name].timestamp_ms))
    forged = data[:body_at] + index + data[body_at + 1 :]
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(forged, 0)
    assert_decodes_like_general(codec, forged, 0)


@pytest.mark.parametrize("index", [b"\x01", b"\x03", b"\x05", b"\x07"], ids=[-1, -2, -3, -4])
def test_decode_command_when_union_index_negative_returns_what_the_general_path_returns(
    codec: Codec, index: bytes
) -> None:
    # fastavro indexes the branch list with the raw long, so -1 reads the last branch. The
    # fast path refuses negative indexes and leaves that reading (whatever it is) to fastavro.
    data = codec.encode_command(EDGE_COMMANDS["withdraw"])
    body_at = 10 + len(encode_long(TS))
    assert data[body_at] == 6  # WithdrawCommand, the fourth branch
    forged = data[:body_at] + index + data[body_at + 1 :]
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(forged, 0)
    assert_decodes_like_general(codec, forged, 0)


@pytest.mark.parametrize("flag", [2, 0x7F, 0xFF])
def test_decode_command_when_boolean_byte_is_neither_0_nor_1_defers_to_the_general_path(
    codec: Codec, flag: int
) -> None:
    data = bytearray(codec.encode_command(place(post_only=False)))
    # timestamp, branch 0, user 7, "BTC_USDT", side, order type, time in force (IOC), post_only
    at = 10 + len(encode_long(TS)) + 1 + 1 + 1 + len("BTC_USDT") + 3
    assert (data[at - 1], data[at]) == (2, 0)
    data[at] = flag
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(bytes(data), 0)
    assert_decodes_like_general(codec, bytes(data), 0)


@pytest.mark.parametrize(
    "varint",
    [b"\x81\x80\x00", b"\x81\x80\x80\x80\x00", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00"],
    ids=["3-bytes", "5-bytes", "10-bytes"],
)
def test_decode_command_when_timestamp_varint_not_minimal_reads_it_like_fastavro(
    codec: Codec, varint: bytes
) -> None:
    data = codec.encode_command(EDGE_COMMANDS["deposit"])
    forged = data[:10] + varint + data[10 + len(encode_long(TS)) :]
    timestamp = -1 if varint[0] == 0x81 else 0  # zig-zag 1 is -1
    expected = dataclasses.replace(EDGE_COMMANDS["deposit"], timestamp_ms=timestamp)
    assert compiled(codec).decode(forged, 3) == expected
    assert_decodes_like_general(codec, forged, 3)


@pytest.mark.parametrize(
    "varint",
    [b"\x80" * 10 + b"\x00", b"\xff" * 9 + b"\x02", b"\xff" * 12],
    ids=["11-bytes", "beyond-64-bits", "unterminated"],
)
def test_decode_command_when_timestamp_varint_invalid_defers_to_the_general_path(
    codec: Codec, varint: bytes
) -> None:
    data = codec.encode_command(EDGE_COMMANDS["deposit"])
    forged = data[:10] + varint + data[10 + len(encode_long(TS)) :]
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(forged, 0)
    assert_decodes_like_general(codec, forged, 0)


@pytest.mark.parametrize(
    "utf8", [b"\xff", b"\xed\xa0\x80", b"\xc3"], ids=["ff", "surrogate", "cut"]
)
def test_decode_command_when_string_is_not_utf8_defers_to_the_general_path(
    codec: Codec, utf8: bytes
) -> None:
    data = codec.encode_command(
        Deposit(command_id=1, timestamp_ms=1, user_id=1, asset="ab", amount=1)
    )
    assert data[10:] == b"\x02\x04\x02\x04ab\x02"
    forged = data[:13] + encode_long(len(utf8)) + utf8 + b"\x02"
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(forged, 0)
    assert_decodes_like_general(codec, forged, 0)


@FUZZ
@given(
    name=st.sampled_from(sorted(EDGE_COMMANDS)),
    cut=st.integers(min_value=0, max_value=10_000),
    mutations=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=4
    ),
)
def test_fast_decode_when_record_mutated_returns_the_general_result_or_defers(
    codec: Codec, name: str, cut: int, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(codec.encode_command(EDGE_COMMANDS[name]))
    for position, value in mutations:
        data[10 + position % (len(data) - 10)] = value
    framed = bytes(data[: len(data) - cut % (len(data) - 10)])
    assert_decodes_like_general(codec, framed, 17)


@FUZZ
@given(body=st.binary(max_size=200), offset=longs)
@example(body=b"\x02\x04\x02\x04ab\x02", offset=0)
@example(body=b"\x02\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00", offset=0)
def test_fast_decode_when_body_arbitrary_returns_the_general_result_or_defers(
    codec: Codec, body: bytes, offset: int
) -> None:
    assert_decodes_like_general(codec, b"\xc3\x01" + codec.command_fingerprint + body, offset)


@FUZZ
@given(data=st.binary(max_size=60))
@example(data=b"")
@example(data=b"\xc3\x01")
def test_decode_command_when_bytes_arbitrary_raises_the_general_decode_error(
    codec: Codec, data: bytes
) -> None:
    assert_decodes_like_general(codec, data, 0)


# --------------------------------------------------------------------------- encode fallback


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp_ms", True),  # fastavro writes a bool as a long: 1
        ("timestamp_ms", 7.0),  # ... and an integral float
        ("timestamp_ms", 7.9),  # ... and truncates any other float
        ("timestamp_ms", 2**63),
        ("timestamp_ms", LONG_MIN - 1),
        ("timestamp_ms", None),
        ("timestamp_ms", "7"),
        ("price", True),  # a union refuses a bool where it would take an int
        ("price", 7.0),
        ("price", 2**64),
        ("quantity", None),
        ("side", "SIDEWAYS"),
        ("side", "SELL"),  # a plain symbol string is fine
        ("side", 1),
        ("time_in_force", None),
        ("stp_mode", "EXPIRE_BOTH"),
        ("stp_mode", "NOPE"),
        ("post_only", None),  # fastavro writes the truth value
        ("post_only", "yes"),
        ("symbol", None),
        ("symbol", b"BTC"),
        ("symbol", "\ud800"),  # a lone surrogate is not UTF-8
        ("client_order_id", 7),
        ("command_id", "not written"),
        ("order_id", None),
    ],
)
def test_encode_command_when_value_is_off_type_behaves_exactly_like_fastavro(
    codec: Codec, field: str, value: Any
) -> None:
    # Frozen dataclasses take any value at runtime; the codec must then write what the
    # general (fastavro) path writes, or raise the same EncodeError, never something else.
    command = dataclasses.replace(place(), **{field: value})
    fast = outcome(lambda: codec.encode_command(command))
    assert fast == outcome(lambda: codec._encode_command_general(command))


@pytest.mark.parametrize(("field", "value"), [("amount", 2**63), ("user_id", None), ("asset", 5)])
def test_encode_command_when_balance_command_value_off_type_raises_the_general_error(
    codec: Codec, field: str, value: Any
) -> None:
    command = dataclasses.replace(EDGE_COMMANDS["withdraw"], **{field: value})
    with pytest.raises(FastPathMiss):
        compiled(codec).encode(command)
    fast = outcome(lambda: codec.encode_command(command))
    assert fast[0] is EncodeError
    assert fast == outcome(lambda: codec._encode_command_general(command))


def test_encode_command_when_object_is_a_subclass_raises_not_a_command(codec: Codec) -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Gift(Deposit):
        pass

    gift = Gift(command_id=1, timestamp_ms=TS, user_id=1, asset="USDT", amount=1)
    with pytest.raises(FastPathMiss):
        compiled(codec).encode(gift)
    with pytest.raises(EncodeError, match="not a command: Gift"):
        codec.encode_command(gift)


def test_encode_command_when_not_a_command_raises_encode_error(codec: Codec) -> None:
    with pytest.raises(FastPathMiss):
        compiled(codec).encode("place order")
    with pytest.raises(EncodeError, match="not a command: str"):
        codec.encode_command("place order")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evolution


def test_codec_when_command_gains_a_field_the_dataclass_lacks_stays_on_fastavro(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def add_trace(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})

    with caplog.at_level(logging.WARNING, logger="exchange.codec"):
        codec = evolved_codec(tmp_path / "avro", "PlaceOrderCommand", add_trace)
    assert codec._command_compiled is None and codec._output_compiled is not None
    warnings = [r for r in caplog.records if "OrderCommand fast path disabled" in r.message]
    assert len(warnings) == 1 and "trace_id" in warnings[0].message
    for command in EDGE_COMMANDS.values():
        data = codec.encode_command(command)
        assert codec.decode_command(data, command_id=command.command_id) == as_offset(
            command, command.command_id
        )


def test_codec_when_stp_mode_gains_a_symbol_the_engine_lacks_decodes_it_as_decode_error(
    tmp_path: Path,
) -> None:
    def add_symbol(schema: dict[str, Any]) -> None:
        schema["symbols"].append("DECREMENT")

    codec = evolved_codec(tmp_path / "avro", "StpMode", add_symbol)
    command = place(stp_mode=StpMode.EXPIRE_BOTH)
    data = compiled(codec).encode(command)
    assert data == fastavro_bytes(codec, command)
    assert codec.decode_command(data, command_id=42) == command
    forged = fastavro_bytes(codec, dataclasses.replace(command, stp_mode="DECREMENT"))  # type: ignore[arg-type]
    with pytest.raises(FastPathMiss):
        compiled(codec).decode(forged, 42)
    with pytest.raises(DecodeError, match="does not map to a command"):
        codec.decode_command(forged, command_id=42)
    assert_decodes_like_general(codec, forged, 42)


def test_decode_command_when_written_by_another_registered_schema_uses_fastavro(
    tmp_path: Path,
) -> None:
    def add_trace(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})

    new = evolved_codec(tmp_path / "avro", "PlaceOrderCommand", add_trace)
    old = Codec()
    old.register_writer_schema(new.schemas.command)
    command = place()
    assert old.decode_command(new.encode_command(command), command_id=42) == command


# --------------------------------------------------------------------------- the generator


class Color(StrEnum):
    RED = "RED"
    BLUE = "BLUE"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    offset: int
    again: int
    before: int
    after: Color
    seq: int
    note: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)  # no slots: built through its constructor
class Pong:
    offset: int
    partition: int
    before: int
    after: Color
    flags: tuple[bool, ...]

    def __post_init__(self) -> None:
        if self.partition < 0:
            raise ValueError("negative partition")


ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "t.Envelope",
    "fields": [
        {"name": "before", "type": "long"},
        {
            "name": "body",
            "type": [
                {
                    "type": "record",
                    "name": "t.Ping",
                    "fields": [
                        {"name": "seq", "type": "long"},
                        {"name": "note", "type": ["null", "string"]},
                    ],
                },
                {
                    "type": "record",
                    "name": "t.Pong",
                    "fields": [{"name": "flags", "type": {"type": "array", "items": "boolean"}}],
                },
            ],
        },
        {"name": "after", "type": {"type": "enum", "name": "t.Color", "symbols": ["RED", "BLUE"]}},
    ],
}
ENVELOPE_CLASSES: dict[str, type] = {"t.Ping": Ping, "t.Pong": Pong, "t.Color": Color}
ENVELOPE_SUPPLIED = {
    "t.Ping": {"offset": "offset", "again": "offset"},
    "t.Pong": {"offset": "offset", "partition": "partition"},
}


def envelope_bytes(message: Ping | Pong) -> bytes:
    schema = parse_schema(ENVELOPE_SCHEMA)
    if isinstance(message, Ping):
        body: Any = ("t.Ping", {"seq": message.seq, "note": message.note})
    else:
        body = ("t.Pong", {"flags": list(message.flags)})
    record = {"before": message.before, "body": body, "after": message.after.value}
    out = BytesIO()
    schemaless_writer(out, schema, record)
    return b"H" + out.getvalue()


def compile_sample(
    *,
    schema: dict[str, Any] = ENVELOPE_SCHEMA,
    classes: dict[str, type] = ENVELOPE_CLASSES,
    supplied: dict[str, dict[str, str]] = ENVELOPE_SUPPLIED,
    fresh_longs: bool = False,
) -> CompiledEnvelope:
    return compile_envelope(
        parse_schema(schema), classes, supplied=supplied, header=b"H", fresh_longs=fresh_longs
    )


MESSAGES = st.one_of(
    st.builds(
        Ping,
        offset=longs,
        again=longs,
        before=longs,
        after=st.sampled_from(Color),
        seq=longs,
        note=optional(texts),
    ),
    st.builds(
        Pong,
        offset=longs,
        partition=st.integers(0, LONG_MAX),
        before=longs,
        after=st.sampled_from(Color),
        flags=st.lists(st.booleans(), max_size=3).map(tuple),
    ),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(message=MESSAGES, offset=longs, partition=st.integers(0, 100), fresh_longs=st.booleans())
def test_compile_envelope_when_union_is_between_envelope_fields_matches_fastavro(
    message: Ping | Pong, offset: int, partition: int, fresh_longs: bool
) -> None:
    envelope = compile_sample(fresh_longs=fresh_longs)
    assert envelope.arguments == ("offset", "partition")
    data = envelope.encode(message)
    assert data == envelope_bytes(message)
    decoded = envelope.decode(data, offset, partition)
    if isinstance(message, Ping):
        expected: Ping | Pong = dataclasses.replace(message, offset=offset, again=offset)
    else:
        expected = dataclasses.replace(message, offset=offset, partition=partition)
    assert decoded == expected
    assert_same_types(decoded, expected)


def test_compile_envelope_when_class_has_post_init_builds_through_its_constructor() -> None:
    envelope = compile_sample()
    data = envelope.encode(Pong(offset=1, partition=0, before=2, after=Color.BLUE, flags=()))
    assert envelope.decode(data, 1, 0) == Pong(
        offset=1, partition=0, before=2, after=Color.BLUE, flags=()
    )
    with pytest.raises(FastPathMiss) as info:
        envelope.decode(data, 1, -5)
    assert isinstance(info.value.__cause__, ValueError)


def test_compile_envelope_when_no_supplied_fields_decodes_with_the_bytes_alone() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Bare:
        before: int
        after: Color
        seq: int
        note: str | None

    schema = json.loads(json.dumps(ENVELOPE_SCHEMA))
    schema["fields"][1]["type"] = schema["fields"][1]["type"][:1]  # the Ping branch alone
    envelope = compile_envelope(parse_schema(schema), {"t.Ping": Bare, "t.Color": Color})
    assert envelope.arguments == ()
    bare = Bare(before=1, after=Color.RED, seq=-5, note="n")
    assert envelope.decode(envelope.encode(bare)) == bare


def _with_body(body_type: Any) -> dict[str, Any]:
    schema = json.loads(json.dumps(ENVELOPE_SCHEMA))
    schema["fields"][1]["type"] = body_type
    return schema


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"schema": _with_body("long")}, "exactly one field that is a union of records"),
        ({"schema": _with_body(["null", "long"])}, "exactly one field that is a union of"),
        ({"supplied": {"t.Ping": {"offset": "offset"}}}, "do not match"),
        ({"supplied": {**ENVELOPE_SUPPLIED, "t.Other": {"x": "x"}}}, "outside the union"),
        (
            {
                "supplied": {
                    **ENVELOPE_SUPPLIED,
                    "t.Ping": dict.fromkeys(["offset", "again", "seq"], "o"),
                }
            },
            "two places",
        ),
        (
            {
                "schema": _with_body(
                    [
                        ENVELOPE_SCHEMA["fields"][1]["type"][0],
                        {"type": "enum", "name": "t.Shade", "symbols": ["X"]},
                    ]
                )
            },
            "exactly one field that is a union of records",
        ),
        ({"classes": {**ENVELOPE_CLASSES, "t.Pong": Ping}}, "do not match"),
        ({"classes": {"t.Ping": Ping, "t.Color": Color}}, "no dataclass for the record t.Pong"),
    ],
    ids=[
        "no-union",
        "optional-union",
        "missing-field",
        "unknown-record",
        "twice",
        "record-and-enum",
        "wrong-class",
        "no-class",
    ],
)
def test_compile_envelope_when_schema_or_mapping_unsupported_raises_unsupported_schema(
    changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(UnsupportedSchema, match=match):
        compile_sample(**changes)


def test_compile_envelope_when_two_branches_map_to_one_class_raises_unsupported_schema() -> None:
    ping = ENVELOPE_SCHEMA["fields"][1]["type"][0]
    schema = _with_body([ping, {**ping, "name": "t.Echo"}])  # the same fields, another name
    with pytest.raises(UnsupportedSchema, match="one class"):
        compile_sample(
            schema=schema,
            classes={"t.Ping": Ping, "t.Echo": Ping, "t.Color": Color},
            supplied={"t.Ping": ENVELOPE_SUPPLIED["t.Ping"], "t.Echo": ENVELOPE_SUPPLIED["t.Ping"]},
        )


# --------------------------------------------------------------------------- fresh longs


def long_record(fresh_longs: bool) -> Any:
    @dataclasses.dataclass(frozen=True, slots=True)
    class One:
        x: int

    schema = parse_schema(
        {"type": "record", "name": "t.One", "fields": [{"name": "x", "type": "long"}]}
    )
    return One, compile_record(schema, {"t.One": One}, fresh_longs=fresh_longs)


@given(value=longs)
@example(value=TS)
@example(value=-TS)
def test_compile_record_when_fresh_longs_decodes_every_long_like_fastavro(value: int) -> None:
    one, record = long_record(fresh_longs=True)
    data = record.encode(one(value))
    assert data == encode_long(value)
    assert record.decode(data) == one(value)
    assert schemaless_reader(BytesIO(data), "long", None) == value


@pytest.mark.parametrize(
    "varint",
    [b"\x80" * 10 + b"\x00", b"\xff" * 9 + b"\x02", b"\xff\xff\xff", b""],
    ids=["11-bytes", "beyond-64-bits", "unterminated", "empty"],
)
@pytest.mark.parametrize("fresh_longs", [False, True])
def test_compile_record_when_varint_invalid_raises_fast_path_miss(
    varint: bytes, fresh_longs: bool
) -> None:
    _, record = long_record(fresh_longs)
    with pytest.raises(FastPathMiss):
        record.decode(varint)


@pytest.mark.parametrize(
    "high",
    [b"", b"\x80" * 8 + b"\x00", b"\xff" * 7 + b"\x7f"],
    ids=["empty", "9-bytes", "beyond-64-bits"],
)
def test_high_memo_when_not_the_high_part_of_a_64_bit_varint_raises_value_error(
    high: bytes,
) -> None:
    memo = _HighMemo()
    with pytest.raises(ValueError):
        memo[high]
    assert high not in memo


def test_high_memo_when_key_is_the_high_part_holds_half_its_value_and_its_negation() -> None:
    varint = encode_long(TS)  # zig-zag 2 * TS: even, so the sign bit (first byte's low bit) is 0
    half, negated = _HighMemo()[varint[2:]]
    low = (varint[0] & 0x7F) | (varint[1] & 0x7F) << 7
    assert half + (low >> 1) == TS and negated == -half
