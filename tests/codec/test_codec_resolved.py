"""The resolved, self-contained top-level schemas (avro/resolved/) load alone and match the parts.

A generic Avro reader gets one file: Apache ``avro`` and fastavro each parse it with nothing
else; it is exactly what the generator makes from today's parts (so a part changed without
``make schemas`` fails here); and records the codec writes with the parts read back through it
unchanged, with the same fingerprint and byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import avro.errors
import avro.io
import avro.schema
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from engine.commands import (
    AddApiKey,
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
from exchange.codec import COMMAND_SCHEMA_NAME, OUTPUT_SCHEMA_NAME, Codec, load_schemas
from exchange.codec.resolved import (
    TOP_LEVEL_SCHEMAS,
    check_resolved,
    resolve_schema,
    resolved_path,
)

REPO = Path(__file__).resolve().parents[2]
AVRO_DIR = REPO / "avro"
TS = 1_700_000_000_000

COMMANDS: list[Command] = [
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
]


def resolved_text(fullname: str) -> str:
    return resolved_path(fullname).read_text(encoding="utf-8")


def apache_schema(fullname: str) -> avro.schema.Schema:
    return avro.schema.parse(resolved_text(fullname))


def fastavro_schema(fullname: str) -> Any:
    # A fresh named_schemas: nothing fastavro has seen before may help it resolve a name.
    return parse_schema(json.loads(resolved_text(fullname)), named_schemas={})


def test_resolved_paths_when_listed_cover_both_wire_schemas() -> None:
    assert set(TOP_LEVEL_SCHEMAS) == {COMMAND_SCHEMA_NAME, OUTPUT_SCHEMA_NAME}
    for fullname in TOP_LEVEL_SCHEMAS:
        assert resolved_path(fullname) == AVRO_DIR / "resolved" / f"{fullname}.avsc"


def test_apache_parse_when_given_the_part_alone_fails() -> None:
    # Why the resolved files exist: the part names types defined in other files.
    with pytest.raises(avro.errors.SchemaParseException, match="CommandKind"):
        avro.schema.parse((AVRO_DIR / f"{OUTPUT_SCHEMA_NAME}.avsc").read_text())


@pytest.mark.parametrize("fullname", TOP_LEVEL_SCHEMAS)
def test_apache_parse_when_given_the_resolved_file_alone_succeeds(fullname: str) -> None:
    schema = apache_schema(fullname)
    assert isinstance(schema, avro.schema.RecordSchema)
    assert schema.fullname == fullname


@pytest.mark.parametrize("fullname", TOP_LEVEL_SCHEMAS)
def test_fastavro_parse_when_given_the_resolved_file_alone_equals_the_parts(fullname: str) -> None:
    parts = load_schemas()
    from_parts = parts.command if fullname == COMMAND_SCHEMA_NAME else parts.output
    assert to_parsing_canonical_form(fastavro_schema(fullname)) == to_parsing_canonical_form(
        from_parts
    )


@pytest.mark.parametrize("fullname", TOP_LEVEL_SCHEMAS)
def test_resolved_file_when_compared_with_the_generator_is_current(fullname: str) -> None:
    assert resolved_text(fullname) == resolve_schema(fullname), (
        f"{resolved_path(fullname)} is stale: run `make schemas`"
    )


@pytest.mark.parametrize("seed", ["1", "2"])
def test_module_check_when_run_under_another_hash_seed_passes(seed: str) -> None:
    # fastavro orders a schema's keys by hash seed; the generated text must not depend on it.
    env = {**os.environ, "PYTHONHASHSEED": seed}
    check = [sys.executable, "-m", "exchange.codec.resolved", "--check"]
    run = subprocess.run(check, capture_output=True, text=True, cwd=REPO, env=env)
    assert (run.returncode, run.stderr) == (0, "")


def test_check_when_a_part_changed_without_regenerating_reports_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, directory)
    assert check_resolved(directory) == []
    side = directory / "exchange.v1.Side.avsc"
    schema = json.loads(side.read_text())
    schema["doc"] = "edited"
    side.write_text(json.dumps(schema))
    problems = check_resolved(directory)
    # Side is used by both top-level schemas, so both resolved files are stale.
    assert problems == [
        f"{directory / 'resolved' / f'{name}.avsc'}: differs from the parts"
        for name in TOP_LEVEL_SCHEMAS
    ]


def test_module_check_when_resolved_files_are_stale_exits_1(tmp_path: Path) -> None:
    directory = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, directory)
    (directory / "resolved" / f"{OUTPUT_SCHEMA_NAME}.avsc").unlink()
    run = [sys.executable, "-m", "exchange.codec.resolved", "--dir", str(directory)]
    stale = subprocess.run([*run, "--check"], capture_output=True, text=True, cwd=REPO)
    assert stale.returncode == 1
    assert "missing; run `make schemas`" in stale.stderr
    assert subprocess.run(run, capture_output=True, cwd=REPO).returncode == 0
    assert subprocess.run([*run, "--check"], capture_output=True, cwd=REPO).returncode == 0


@pytest.mark.parametrize("fullname", TOP_LEVEL_SCHEMAS)
def test_fingerprint_when_apache_reads_the_resolved_file_equals_the_codec_header(
    codec: Codec, fullname: str
) -> None:
    expected = (
        codec.command_fingerprint if fullname == COMMAND_SCHEMA_NAME else codec.output_fingerprint
    )
    assert apache_schema(fullname).fingerprint("CRC-64-AVRO") == expected


def roundtrip_through_resolved(fullname: str, framed: bytes) -> None:
    """Read ``framed`` (written with the parts) with the resolved schema; re-encode; compare."""
    header, body = framed[:10], framed[10:]
    parts = load_schemas()
    from_parts = parts.command if fullname == COMMAND_SCHEMA_NAME else parts.output
    expected = schemaless_reader(io.BytesIO(body), from_parts, None)

    apache = apache_schema(fullname)
    assert header == b"\xc3\x01" + apache.fingerprint("CRC-64-AVRO")
    datum = avro.io.DatumReader(apache).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    assert datum == expected
    # Not re-encoded with Apache avro: its union writer picks the first branch the datum fits,
    # and DepositCommand and WithdrawCommand have the same fields.

    fast = fastavro_schema(fullname)
    record = schemaless_reader(io.BytesIO(body), fast, None, return_record_name=True)
    again = io.BytesIO()
    schemaless_writer(again, fast, record)
    assert again.getvalue() == body


def test_output_when_written_with_the_parts_reads_through_resolved_byte_identical(
    codec: Codec, full_output: EngineOutput
) -> None:
    roundtrip_through_resolved(OUTPUT_SCHEMA_NAME, codec.encode_output(full_output))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_when_written_with_the_parts_reads_through_resolved_byte_identical(
    codec: Codec, command: Command
) -> None:
    roundtrip_through_resolved(COMMAND_SCHEMA_NAME, codec.encode_command(command))
