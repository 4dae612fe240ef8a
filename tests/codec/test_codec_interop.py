"""Records written by the codec are plain Avro: Apache's reference implementation reads them.

Apache's package builds its schemas from the .avsc text alone (nothing from fastavro or the
codec), computes the fingerprint itself, and decodes the body after the 10-byte
single-object header. The decoded datum must equal the domain object field for field.
"""

from __future__ import annotations

import dataclasses
import io
import json
from enum import Enum
from pathlib import Path
from typing import Any

import avro.io
import avro.name
import avro.schema
import pytest

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
from engine.enums import OrderType, Side
from engine.events import EngineOutput
from exchange.codec import Codec

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
TS = 1_700_000_000_000


def _references(node: Any, namespace: str) -> list[str]:
    """Full names of the named types a schema node refers to (not those it defines)."""
    if isinstance(node, str):
        if node in PRIMITIVES:
            return []
        return [node if "." in node else f"{namespace}.{node}"]
    if isinstance(node, list):
        return [name for branch in node for name in _references(branch, namespace)]
    kind = node["type"]
    if kind == "record":
        return [name for f in node["fields"] for name in _references(f["type"], namespace)]
    if kind == "array":
        return _references(node["items"], namespace)
    if kind == "map":
        return _references(node["values"], namespace)
    if kind in ("enum", "fixed"):
        return []
    return _references(kind, namespace)


def apache_schemas(directory: Path) -> dict[str, avro.schema.Schema]:
    """Every .avsc in ``directory`` parsed by Apache avro, references before referrers.

    ``avro.schema.parse`` takes one self-contained text; ``make_avsc_object`` (which ``parse``
    wraps) takes a shared ``Names``, which is how one-file-per-named-type schemas are read.
    """
    texts = {path.name.removesuffix(".avsc"): path.read_text() for path in directory.glob("*.avsc")}
    names = avro.name.Names()
    parsed: dict[str, avro.schema.Schema] = {}

    def parse(fullname: str) -> None:
        if fullname in parsed:
            return
        data = json.loads(texts[fullname])
        for dependency in _references(data, data["namespace"]):
            parse(dependency)
        parsed[fullname] = avro.schema.make_avsc_object(data, names)

    for fullname in sorted(texts):
        parse(fullname)
    return parsed


@pytest.fixture(scope="module")
def apache() -> dict[str, avro.schema.Schema]:
    return apache_schemas(AVRO_DIR)


def apache_read(schema: avro.schema.Schema, data: bytes) -> Any:
    body = data[10:]  # strip the single-object header: marker (2) + fingerprint (8)
    return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))


def as_wire(value: Any) -> Any:
    """A domain value as Apache avro returns it: dicts, lists, enum symbols as str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [as_wire(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def command_as_wire(command: Command) -> dict[str, Any]:
    """What the wire carries: no command_id, and no order_id for a new order."""
    body = as_wire(command)
    del body["command_id"], body["timestamp_ms"]
    if isinstance(command, PlaceOrder):
        del body["order_id"]
    return {"timestamp_ms": command.timestamp_ms, "command": body}


def test_header_fingerprint_when_computed_by_apache_avro_matches(
    codec: Codec,
    apache: dict[str, avro.schema.Schema],
    full_output: EngineOutput,
    place_order: PlaceOrder,
) -> None:
    output_fingerprint = apache["exchange.v1.EngineOutput"].fingerprint("CRC-64-AVRO")
    command_fingerprint = apache["exchange.v1.OrderCommand"].fingerprint("CRC-64-AVRO")
    assert codec.encode_output(full_output)[2:10] == output_fingerprint
    assert codec.encode_command(place_order)[2:10] == command_fingerprint
    assert (codec.output_fingerprint, codec.command_fingerprint) == (
        output_fingerprint,
        command_fingerprint,
    )


def test_output_when_read_by_apache_avro_equals_domain_fields(
    codec: Codec, apache: dict[str, avro.schema.Schema], full_output: EngineOutput
) -> None:
    datum = apache_read(apache["exchange.v1.EngineOutput"], codec.encode_output(full_output))
    assert datum == as_wire(full_output)


@pytest.mark.parametrize(
    "command",
    [
        PlaceOrder(
            command_id=42,
            timestamp_ms=TS,
            order_id=42,
            user_id=7,
            symbol="BTC-USDT",
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            price=100,
            quantity=1,
            client_order_id="c",
        ),
        CancelOrder(command_id=43, timestamp_ms=TS, user_id=7, symbol="BTC-USDT", order_id=42),
        Deposit(command_id=44, timestamp_ms=TS, user_id=7, asset="USDT", amount=5),
        Withdraw(command_id=45, timestamp_ms=TS, user_id=7, asset="USDT", amount=5),
        CreateUser(command_id=46, timestamp_ms=TS, api_key="kabc", public_key="cHVi", label="l"),
        AddApiKey(command_id=47, timestamp_ms=TS, user_id=7, api_key="kdef", public_key="cHVj"),
        RevokeApiKey(command_id=48, timestamp_ms=TS, api_key="kabc"),
        CancelAllOrders(command_id=49, timestamp_ms=TS, user_id=7, symbol="BTC-USDT"),
        AmendOrder(
            command_id=46,
            timestamp_ms=TS,
            user_id=7,
            symbol="BTC-USDT",
            client_order_id="c",
            quantity=3,
        ),
    ],
    ids=lambda c: type(c).__name__,
)
def test_command_when_read_by_apache_avro_equals_domain_fields_without_ids(
    codec: Codec, apache: dict[str, avro.schema.Schema], command: Command
) -> None:
    datum = apache_read(apache["exchange.v1.OrderCommand"], codec.encode_command(command))
    assert datum == command_as_wire(command)


def test_decode_output_when_body_written_by_apache_avro_returns_domain_output(
    codec: Codec, apache: dict[str, avro.schema.Schema], full_output: EngineOutput
) -> None:
    schema = apache["exchange.v1.EngineOutput"]
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(as_wire(full_output), avro.io.BinaryEncoder(body))
    framed = b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + body.getvalue()
    assert codec.decode_output(framed) == full_output
