"""Schema evolution: records written by another known version of a schema still decode.

Each test copies the repo's avro/ directory, edits one .avsc file as a real change would, and
builds a codec from the copy. A codec reads another version's records once that version's
writer schema is registered (the single-object header names the writer by fingerprint).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from enum import Enum
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from engine.commands import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
)
from engine.enums import CommandKind, RejectReason
from engine.events import EngineOutput
from exchange.codec import Codec, load_schemas, schema_fingerprint
from exchange.errors import DecodeError, SchemaError

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
NAMESPACE = "exchange.v1"


def evolve(directory: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Codec:
    """A codec over a copy of avro/ in which ``change`` edited the schema of ``name``."""
    shutil.copytree(AVRO_DIR, directory)
    path = directory / f"{NAMESPACE}.{name}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))
    return Codec(load_schemas(directory))


def add_optional_string(field: str) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": field, "type": ["null", "string"], "default": None})

    return change


def rewrite_body(frame: bytes, schema: dict[str, Any], edit: Callable[[Any], None]) -> bytes:
    """``frame`` with its body decoded under ``schema``, edited, and re-encoded.

    Unions of records come back as (name, record) tuples, which fastavro writes back to the
    same branch.
    """
    record = schemaless_reader(BytesIO(frame[10:]), schema, None, return_record_name=True)
    edit(record)
    body = BytesIO()
    schemaless_writer(body, schema, record)
    return frame[:10] + body.getvalue()


@pytest.fixture
def venue_codec(tmp_path: Path) -> Codec:
    """Version 2 of EngineOutput: TradeExecuted gained an optional ``venue``."""
    return evolve(tmp_path / "avro", "TradeExecuted", add_optional_string("venue"))


def test_evolved_schema_when_field_added_has_a_new_fingerprint(
    codec: Codec, venue_codec: Codec
) -> None:
    assert venue_codec.output_fingerprint != codec.output_fingerprint
    assert venue_codec.command_fingerprint == codec.command_fingerprint


def test_decode_output_when_reader_added_optional_field_reads_old_records(
    codec: Codec, venue_codec: Codec, full_output: EngineOutput
) -> None:
    venue_codec.register_writer_schema(codec.schemas.output)
    assert venue_codec.decode_output(codec.encode_output(full_output)) == full_output


def test_decode_output_when_writer_added_field_old_reader_skips_it(
    venue_codec: Codec, full_output: EngineOutput
) -> None:
    new_schema = venue_codec.schemas.output

    def set_venue(record: Any) -> None:
        record["trades"][0]["venue"] = "XNAS"

    frame = rewrite_body(venue_codec.encode_output(full_output), new_schema, set_venue)
    written = schemaless_reader(BytesIO(frame[10:]), new_schema, None)
    assert isinstance(written, dict) and written["trades"][0]["venue"] == "XNAS"

    old = Codec()
    old.register_writer_schema(new_schema)
    assert old.decode_output(frame) == full_output


def test_decode_output_when_evolved_writer_not_registered_raises_decode_error(
    venue_codec: Codec, full_output: EngineOutput
) -> None:
    data = venue_codec.encode_output(full_output)
    with pytest.raises(DecodeError, match=f"unknown writer schema fingerprint {data[2:10].hex()}"):
        Codec().decode_output(data)


def test_decode_command_when_writer_added_field_old_reader_skips_it(
    tmp_path: Path, place_order: PlaceOrder
) -> None:
    new = evolve(tmp_path / "avro", "PlaceOrderCommand", add_optional_string("trace_id"))

    def set_trace(record: Any) -> None:
        name, body = record["command"]
        assert name == f"{NAMESPACE}.PlaceOrderCommand"
        body["trace_id"] = "t-123"

    frame = rewrite_body(new.encode_command(place_order), new.schemas.command, set_trace)
    old = Codec()
    old.register_writer_schema(new.schemas.command)
    assert old.decode_command(frame, command_id=place_order.command_id) == place_order


def test_decode_command_when_reader_added_optional_field_reads_old_records(
    codec: Codec, tmp_path: Path, place_order: PlaceOrder
) -> None:
    new = evolve(tmp_path / "avro", "PlaceOrderCommand", add_optional_string("trace_id"))
    new.register_writer_schema(codec.schemas.command)
    data = codec.encode_command(place_order)
    assert new.decode_command(data, command_id=place_order.command_id) == place_order


def test_decode_output_when_newer_writer_uses_unknown_enum_symbol_raises_decode_error(
    tmp_path: Path, full_output: EngineOutput
) -> None:
    def add_symbol(schema: dict[str, Any]) -> None:
        schema["symbols"].append("RATE_LIMITED")

    new = evolve(tmp_path / "avro", "RejectReason", add_symbol)
    old = Codec()
    old.register_writer_schema(new.schemas.output)
    # Symbols both versions know still resolve ...
    assert old.decode_output(new.encode_output(full_output)) == full_output

    # ... but one the old reader lacks cannot: a clear DecodeError, not a fastavro error.
    def use_symbol(record: Any) -> None:
        record["rejections"][0]["reason"] = "RATE_LIMITED"

    frame = rewrite_body(new.encode_output(full_output), new.schemas.output, use_symbol)
    with pytest.raises(DecodeError) as info:
        old.decode_output(frame)
    assert info.value.__cause__ is not None


def test_register_writer_schema_when_registered_twice_returns_same_fingerprint(
    venue_codec: Codec,
) -> None:
    old = Codec()
    first = old.register_writer_schema(venue_codec.schemas.output)
    assert old.register_writer_schema(venue_codec.schemas.output) == first
    assert first == venue_codec.output_fingerprint == schema_fingerprint(venue_codec.schemas.output)


def test_register_writer_schema_when_own_schema_given_keeps_decoding(
    full_output: EngineOutput,
) -> None:
    codec = Codec()
    assert codec.register_writer_schema(codec.schemas.output) == codec.output_fingerprint
    assert codec.decode_output(codec.encode_output(full_output)) == full_output


def test_register_writer_schema_when_record_is_not_top_level_raises_schema_error() -> None:
    trade = {"type": "record", "name": "TradeExecuted", "namespace": NAMESPACE, "fields": []}
    with pytest.raises(SchemaError, match="must be the record"):
        Codec().register_writer_schema(trade)


def test_register_writer_schema_when_schema_invalid_raises_schema_error() -> None:
    broken = {"type": "record", "name": "EngineOutput", "fields": [{"name": "x", "type": "Nope"}]}
    with pytest.raises(SchemaError, match="invalid writer schema"):
        Codec().register_writer_schema(broken)


def test_decode_output_when_read_through_resolution_returns_engine_enum_members(
    codec: Codec, venue_codec: Codec, full_output: EngineOutput
) -> None:
    venue_codec.register_writer_schema(codec.schemas.output)
    decoded = venue_codec.decode_output(codec.encode_output(full_output))
    assert decoded == full_output
    assert decoded.rejections[0].reason is RejectReason.INVALID_ORDER
    assert decoded.order_updates[1].reject_reason is RejectReason.INVALID_ORDER


# --------------------------------------------------------------------------- before users (#14)
# The schemas as they were before users, keys and cancel-all: EngineOutput without
# user_creations / api_key_updates, the command union and CommandKind / RejectReason without
# the new branches and symbols. Rebuilt from today's files by undoing exactly those additions.

USER_FIELDS = ("user_creations", "api_key_updates")
USER_BRANCHES = (
    "CreateUserCommand",
    "AddApiKeyCommand",
    "RevokeApiKeyCommand",
    "CancelAllOrdersCommand",
)
USER_KINDS = ("CREATE_USER", "ADD_API_KEY", "REVOKE_API_KEY", "CANCEL_ALL_ORDERS")
USER_REASONS = ("UNKNOWN_USER", "DUPLICATE_API_KEY", "UNKNOWN_API_KEY")


def without_users(directory: Path) -> Codec:
    """A codec over a copy of avro/ as it was before #14."""
    shutil.copytree(AVRO_DIR, directory)

    def edit(name: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = directory / f"{NAMESPACE}.{name}.avsc"
        schema = json.loads(path.read_text())
        change(schema)
        path.write_text(json.dumps(schema, indent=2))

    def drop_fields(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] not in USER_FIELDS]

    def drop_branches(schema: dict[str, Any]) -> None:
        (command,) = [f for f in schema["fields"] if f["name"] == "command"]
        command["type"] = [b for b in command["type"] if b not in USER_BRANCHES]

    def drop_symbols(symbols: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
        def change(schema: dict[str, Any]) -> None:
            schema["symbols"] = [s for s in schema["symbols"] if s not in symbols]

        return change

    edit("EngineOutput", drop_fields)
    edit("OrderCommand", drop_branches)
    edit("CommandKind", drop_symbols(USER_KINDS))
    edit("RejectReason", drop_symbols(USER_REASONS))
    return Codec(load_schemas(directory))


@pytest.fixture
def old_codec(tmp_path: Path) -> Codec:
    return without_users(tmp_path / "avro")


def pre_users(output: EngineOutput) -> EngineOutput:
    """``output`` as an old writer can hold it: no users, no keys."""
    return dataclasses.replace(output, user_creations=(), api_key_updates=())


def test_old_schema_when_rebuilt_differs_from_today_in_both_fingerprints(
    codec: Codec, old_codec: Codec
) -> None:
    assert old_codec.output_fingerprint != codec.output_fingerprint
    assert old_codec.command_fingerprint != codec.command_fingerprint
    names = [f["name"] for f in old_codec.schemas.output["fields"]]
    assert not set(USER_FIELDS) & set(names)


def test_decode_output_when_written_before_users_reads_empty_user_lists(
    codec: Codec, old_codec: Codec, full_output: EngineOutput
) -> None:
    old_output = pre_users(full_output)
    data = old_codec.encode_output(old_output)
    assert data[2:10] == old_codec.output_fingerprint
    new = Codec()
    new.register_writer_schema(old_codec.schemas.output)
    decoded = new.decode_output(data)
    assert decoded == old_output
    assert decoded.user_creations == () and decoded.api_key_updates == ()


def test_decode_output_when_new_writer_has_users_old_reader_skips_them(
    codec: Codec, old_codec: Codec, full_output: EngineOutput
) -> None:
    assert full_output.user_creations and full_output.api_key_updates
    data = codec.encode_output(full_output)
    # What an old consumer's schema reads (Avro resolution skips the new arrays) ...
    record = schemaless_reader(BytesIO(data[10:]), codec.schemas.output, old_codec.schemas.output)
    assert isinstance(record, dict) and not set(USER_FIELDS) & set(record)
    # ... and, through a codec built on the old schemas, the output without users.
    old_codec.register_writer_schema(codec.schemas.output)
    assert old_codec.decode_output(data) == pre_users(full_output)


def test_decode_command_when_written_before_users_new_reader_reads_it(
    old_codec: Codec, place_order: PlaceOrder
) -> None:
    deposit = Deposit(command_id=5, timestamp_ms=1, user_id=7, asset="USDT", amount=10)
    new = Codec()
    new.register_writer_schema(old_codec.schemas.command)
    for command in (place_order, deposit):
        data = old_codec.encode_command(command)
        assert data[2:10] == old_codec.command_fingerprint
        assert new.decode_command(data, command_id=command.command_id) == command


def test_decode_command_when_new_writer_uses_old_kind_old_reader_reads_it(
    codec: Codec, old_codec: Codec, place_order: PlaceOrder
) -> None:
    old_codec.register_writer_schema(codec.schemas.command)
    data = codec.encode_command(place_order)
    assert old_codec.decode_command(data, command_id=place_order.command_id) == place_order


@pytest.mark.parametrize(
    "command",
    [
        CreateUser(command_id=1, timestamp_ms=1, api_key="kabc", public_key="cHVi"),
        AddApiKey(command_id=2, timestamp_ms=1, user_id=1, api_key="kdef", public_key="cHVj"),
        RevokeApiKey(command_id=3, timestamp_ms=1, api_key="kabc"),
        CancelAllOrders(command_id=4, timestamp_ms=1, user_id=1, symbol="BTC_USDT"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_decode_command_when_new_kind_reaches_old_reader_raises_decode_error(
    codec: Codec, old_codec: Codec, command: Any
) -> None:
    # An engine older than the command cannot apply it: a DecodeError (the record goes to the
    # DLQ), never a wrong command.
    old_codec.register_writer_schema(codec.schemas.command)
    with pytest.raises(DecodeError):
        old_codec.decode_command(codec.encode_command(command), command_id=command.command_id)


def test_decode_output_when_new_kind_reaches_old_reader_raises_decode_error(
    codec: Codec, old_codec: Codec, full_output: EngineOutput
) -> None:
    old_codec.register_writer_schema(codec.schemas.output)
    output = dataclasses.replace(pre_users(full_output), command_kind=CommandKind.CREATE_USER)
    with pytest.raises(DecodeError):
        old_codec.decode_output(codec.encode_output(output))


# --------------------------------------------------------------------------- issue 15
# The contract before issue 15: no AmendOrderCommand branch, AMEND_ORDER kind, INVALID_AMEND
# reason or EngineOutput.depth_updates. Records written with it must still decode, and readers
# still on it must read today's records (minus what they do not know).


def before_issue_15(directory: Path) -> Path:
    """A copy of avro/ as it was before issue 15."""
    shutil.copytree(AVRO_DIR, directory)
    for name in ("AmendOrderCommand", "DepthUpdated", "LevelUpdated"):
        (directory / f"{NAMESPACE}.{name}.avsc").unlink()

    def edit(name: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = directory / f"{NAMESPACE}.{name}.avsc"
        schema = json.loads(path.read_text())
        change(schema)
        path.write_text(json.dumps(schema, indent=2))

    edit("CommandKind", lambda s: s["symbols"].remove("AMEND_ORDER"))
    edit("RejectReason", lambda s: s["symbols"].remove("INVALID_AMEND"))
    edit(
        "OrderCommand",
        lambda s: s["fields"][1]["type"].remove("AmendOrderCommand"),
    )
    edit(
        "EngineOutput",
        lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "depth_updates"]),
    )
    return directory


def as_wire(value: Any) -> Any:
    """A domain value as an Avro datum: dicts, lists, enum symbols as str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [as_wire(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def without_depth(output: EngineOutput) -> EngineOutput:
    return dataclasses.replace(output, depth_updates=())


def test_decode_output_when_written_before_depth_updates_reads_them_as_empty(
    codec: Codec, tmp_path: Path, full_output: EngineOutput
) -> None:
    old_schemas = load_schemas(before_issue_15(tmp_path / "avro"))
    old_output = without_depth(full_output)
    body = BytesIO()
    schemaless_writer(body, old_schemas.output, as_wire(old_output))
    frame = b"\xc3\x01" + schema_fingerprint(old_schemas.output) + body.getvalue()

    reader = Codec()
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint"):
        reader.decode_output(frame)
    reader.register_writer_schema(old_schemas.output)
    decoded = reader.decode_output(frame)
    assert decoded == old_output
    assert decoded.depth_updates == ()
    assert codec.output_fingerprint != schema_fingerprint(old_schemas.output)


def test_read_output_when_reader_predates_depth_updates_skips_them(
    codec: Codec, tmp_path: Path, full_output: EngineOutput
) -> None:
    assert full_output.depth_updates, "the fixture must carry depth updates"
    old_schemas = load_schemas(before_issue_15(tmp_path / "avro"))
    frame = codec.encode_output(full_output)
    # Avro schema resolution, as any consumer still on the old contract reads: writer = today.
    read = schemaless_reader(BytesIO(frame[10:]), codec.schemas.output, old_schemas.output)
    expected = as_wire(full_output)
    del expected["depth_updates"]
    assert read == expected


def test_decode_command_when_written_before_amend_existed_reads_it(
    tmp_path: Path, place_order: PlaceOrder
) -> None:
    old_schemas = load_schemas(before_issue_15(tmp_path / "avro"))
    old = Codec(old_schemas)
    frame = old.encode_command(place_order)
    reader = Codec()
    reader.register_writer_schema(old_schemas.command)
    assert reader.decode_command(frame, command_id=place_order.command_id) == place_order


def test_read_command_when_reader_predates_amend_cannot_take_the_new_branch(
    codec: Codec, tmp_path: Path
) -> None:
    old_schemas = load_schemas(before_issue_15(tmp_path / "avro"))
    amend = AmendOrder(
        command_id=5, timestamp_ms=1, user_id=7, symbol="BTC_USDT", order_id=4, quantity=2
    )
    frame = codec.encode_command(amend)
    # An engine still on the old contract cannot apply an amend: resolution refuses the
    # branch (the record then goes to the orders DLQ), it never misreads it as another one.
    with pytest.raises(Exception, match=r"AmendOrderCommand|union"):
        schemaless_reader(BytesIO(frame[10:]), codec.schemas.command, old_schemas.command)
