"""Bytes the codec cannot read raise DecodeError, with a clear message, and nothing else.

The fuzz tests call the decoders bare: any exception other than DecodeError fails them.
"""

from __future__ import annotations

import re
from contextlib import suppress

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.commands import PlaceOrder
from engine.events import EngineOutput
from exchange.codec import Codec
from exchange.errors import DecodeError, ExchangeError

FUZZ = settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])


def test_decode_output_when_value_empty_raises_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="empty value"):
        codec.decode_output(b"")


def test_decode_output_when_value_is_none_raises_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="expected bytes, got NoneType"):
        codec.decode_output(None)  # type: ignore[arg-type]  # a tombstone's value, unguarded


@pytest.mark.parametrize("buffer", [bytearray, memoryview])
def test_decode_output_when_value_is_a_bytes_like_buffer_decodes_it(
    codec: Codec, full_output: EngineOutput, buffer: type[bytearray] | type[memoryview]
) -> None:
    data = buffer(codec.encode_output(full_output))
    assert codec.decode_output(data) == full_output  # type: ignore[arg-type]  # bytes-like


def test_decode_output_when_marker_wrong_raises_decode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = b"\xc3\x02" + codec.encode_output(full_output)[2:]
    with pytest.raises(DecodeError, match="wrong marker c3 02"):
        codec.decode_output(data)


def test_decode_command_when_value_is_json_raises_wrong_marker_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="wrong marker"):
        codec.decode_command(b'{"side": "BUY"}', command_id=1)


@pytest.mark.parametrize("size", range(1, 10))
def test_decode_output_when_header_truncated_raises_decode_error(
    codec: Codec, full_output: EngineOutput, size: int
) -> None:
    with pytest.raises(DecodeError, match="truncated header"):
        codec.decode_output(codec.encode_output(full_output)[:size])


def test_decode_output_when_fingerprint_unknown_raises_decode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = codec.encode_output(full_output)
    forged = data[:2] + bytes(8) + data[10:]
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint 0000000000000000"):
        codec.decode_output(forged)


@pytest.mark.parametrize("schema_id", [0, 1, 2**31 - 1])
def test_decode_output_when_confluent_framed_raises_not_supported_decode_error(
    codec: Codec, full_output: EngineOutput, schema_id: int
) -> None:
    body = codec.encode_output(full_output)[10:]
    data = b"\x00" + schema_id.to_bytes(4, "big") + body
    with pytest.raises(DecodeError, match=f"Confluent framing not supported yet.*{schema_id}"):
        codec.decode_output(data)


def test_decode_command_when_confluent_framed_raises_not_supported_decode_error(
    codec: Codec, place_order: PlaceOrder
) -> None:
    data = b"\x00\x00\x00\x00\x07" + codec.encode_command(place_order)[10:]
    with pytest.raises(DecodeError, match="Confluent framing not supported yet"):
        codec.decode_command(data, command_id=1)


def test_decode_output_when_given_a_command_record_raises_decode_error_naming_it(
    codec: Codec, place_order: PlaceOrder
) -> None:
    with pytest.raises(
        DecodeError,
        match=re.escape("record is exchange.v1.OrderCommand, expected exchange.v1.EngineOutput"),
    ):
        codec.decode_output(codec.encode_command(place_order))


def test_decode_command_when_given_an_output_record_raises_decode_error_naming_it(
    codec: Codec, full_output: EngineOutput
) -> None:
    with pytest.raises(
        DecodeError,
        match=re.escape("record is exchange.v1.EngineOutput, expected exchange.v1.OrderCommand"),
    ):
        codec.decode_command(codec.encode_output(full_output), command_id=1)


def test_decode_output_when_trailing_bytes_raises_decode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        codec.decode_output(codec.encode_output(full_output) + b"\x00\x00")


def test_decode_output_when_body_truncated_anywhere_raises_decode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = codec.encode_output(full_output)
    for size in range(10, len(data)):
        with pytest.raises(DecodeError) as info:
            codec.decode_output(data[:size])
        assert isinstance(info.value, ExchangeError)


def test_decode_command_when_body_truncated_anywhere_raises_decode_error(
    codec: Codec, place_order: PlaceOrder
) -> None:
    data = codec.encode_command(place_order)
    for size in range(10, len(data)):
        with pytest.raises(DecodeError):
            codec.decode_command(data[:size], command_id=1)


def test_decode_output_when_body_corrupt_chains_the_fastavro_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = codec.encode_output(full_output)
    with pytest.raises(DecodeError, match="corrupt or truncated") as info:
        codec.decode_output(data[:-3])
    assert info.value.__cause__ is not None


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"\xc3\x01")
@example(data=b"\x00")
def test_decode_when_bytes_arbitrary_raises_only_decode_error(codec: Codec, data: bytes) -> None:
    for decode in (codec.decode_output, lambda d: codec.decode_command(d, command_id=0)):
        with suppress(DecodeError):
            decode(data)


@FUZZ
@given(body=st.binary(max_size=300))
def test_decode_when_header_valid_and_body_arbitrary_raises_only_decode_error(
    codec: Codec, body: bytes
) -> None:
    with suppress(DecodeError):
        codec.decode_output(b"\xc3\x01" + codec.output_fingerprint + body)
    with suppress(DecodeError):
        codec.decode_command(b"\xc3\x01" + codec.command_fingerprint + body, command_id=0)


@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    mutations=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=4
    ),
)
def test_decode_output_when_valid_record_mutated_or_truncated_raises_only_decode_error(
    codec: Codec, full_output: EngineOutput, cut: int, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(codec.encode_output(full_output))
    for position, value in mutations:
        data[10 + position % (len(data) - 10)] = value  # keep the header: reach the body
    try:
        decoded = codec.decode_output(bytes(data[: len(data) - cut % len(data)]))
    except DecodeError:
        return
    assert isinstance(decoded, EngineOutput)


@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    mutations=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=4
    ),
)
def test_decode_command_when_valid_record_mutated_or_truncated_raises_only_decode_error(
    codec: Codec, place_order: PlaceOrder, cut: int, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(codec.encode_command(place_order))
    for position, value in mutations:
        data[10 + position % (len(data) - 10)] = value
    with suppress(DecodeError):
        codec.decode_command(bytes(data[: len(data) - cut % len(data)]), command_id=0)
