"""The .avsc files stay in step with the engine's domain types, and load only through the codec.

The wire schemas mirror the dataclasses field for field, so a change on either side that the
other does not follow fails here, before any record reaches Kafka.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import avro.schema  # binds the top-level `avro` package too
import pytest

from engine import enums
from engine.commands import (
    AddApiKey,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    CreateUser,
    Deposit,
    PlaceOrder,
    RevokeApiKey,
    Withdraw,
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
from exchange.codec import (
    COMMAND_SCHEMA_NAME,
    OUTPUT_SCHEMA_NAME,
    Codec,
    default_schema_dir,
    load_schemas,
)
from exchange.errors import ExchangeError, SchemaError

REPO = Path(__file__).resolve().parents[2]
AVRO_DIR = REPO / "avro"
NAMESPACE = "exchange.v1"


def avsc(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((AVRO_DIR / f"{NAMESPACE}.{name}.avsc").read_text())
    return loaded


def field_names(name: str) -> list[str]:
    return [field["name"] for field in avsc(name)["fields"]]


def dataclass_fields(cls: Any, *, without: tuple[str, ...] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in without]


def test_import_avro_when_repo_has_avro_schema_dir_gets_apache_package() -> None:
    # avro/ holds .avsc files and no __init__.py, so it must never shadow Apache's package.
    assert not (AVRO_DIR / "__init__.py").exists()
    assert avro.__file__ is not None
    assert Path(avro.__file__).resolve().parent != AVRO_DIR
    assert callable(avro.schema.parse)


def test_default_schema_dir_when_resolved_is_the_repo_avro_dir() -> None:
    assert default_schema_dir() == AVRO_DIR


def test_schema_files_when_listed_are_named_by_full_name() -> None:
    for path in AVRO_DIR.glob("*.avsc"):
        schema = json.loads(path.read_text())
        assert path.name == f"{schema['namespace']}.{schema['name']}.avsc"
        assert schema["namespace"] == NAMESPACE


def test_schema_files_when_loaded_are_all_reachable_from_a_top_level_schema() -> None:
    schemas = load_schemas()
    reachable = (
        set(schemas.command["__named_schemas"])
        | set(schemas.output["__named_schemas"])
        | {COMMAND_SCHEMA_NAME, OUTPUT_SCHEMA_NAME}
    )
    on_disk = {path.name.removesuffix(".avsc") for path in AVRO_DIR.glob("*.avsc")}
    assert on_disk == reachable


@pytest.mark.parametrize(
    "enum",
    [
        enums.Side,
        enums.OrderType,
        enums.TimeInForce,
        enums.StpMode,
        enums.OrderStatus,
        enums.CompletionReason,
        enums.CommandKind,
        enums.RejectReason,
        enums.Role,
    ],
)
def test_enum_symbols_when_compared_with_engine_enum_match_in_order(enum: type[Enum]) -> None:
    schema = avsc(enum.__name__)
    assert schema["type"] == "enum"
    assert schema["symbols"] == [member.value for member in enum]


@pytest.mark.parametrize(
    ("record", "cls"),
    [
        ("TradeExecuted", TradeExecuted),
        ("OrderPlaced", OrderPlaced),
        ("OrderUpdated", OrderUpdated),
        ("OrderCompleted", OrderCompleted),
        ("BalanceUpdated", BalanceUpdated),
        ("CommandRejected", CommandRejected),
        ("UserCreated", UserCreated),
        ("ApiKeyUpdated", ApiKeyUpdated),
        ("LevelUpdated", LevelUpdated),
        ("DepthUpdated", DepthUpdated),
        ("EngineOutput", EngineOutput),
    ],
)
def test_event_record_fields_when_compared_with_dataclass_match_in_order(
    record: str, cls: Any
) -> None:
    assert field_names(record) == dataclass_fields(cls)


@pytest.mark.parametrize(
    ("record", "cls", "without"),
    [
        # The offset gives command_id, and a new order's id; the wrapper carries timestamp_ms.
        ("PlaceOrderCommand", PlaceOrder, ("command_id", "timestamp_ms", "order_id")),
        ("CancelOrderCommand", CancelOrder, ("command_id", "timestamp_ms")),
        ("DepositCommand", Deposit, ("command_id", "timestamp_ms")),
        ("WithdrawCommand", Withdraw, ("command_id", "timestamp_ms")),
        ("CreateUserCommand", CreateUser, ("command_id", "timestamp_ms")),
        ("AddApiKeyCommand", AddApiKey, ("command_id", "timestamp_ms")),
        ("RevokeApiKeyCommand", RevokeApiKey, ("command_id", "timestamp_ms")),
        ("CancelAllOrdersCommand", CancelAllOrders, ("command_id", "timestamp_ms")),
        ("AmendOrderCommand", AmendOrder, ("command_id", "timestamp_ms")),
    ],
)
def test_command_record_fields_when_compared_with_dataclass_match_without_ids(
    record: str, cls: Any, without: tuple[str, ...]
) -> None:
    assert field_names(record) == dataclass_fields(cls, without=without)


def test_order_command_when_loaded_wraps_timestamp_and_union_of_commands() -> None:
    fields = avsc("OrderCommand")["fields"]
    assert [f["name"] for f in fields] == ["timestamp_ms", "command"]
    assert fields[1]["type"] == [
        "PlaceOrderCommand",
        "CancelOrderCommand",
        "DepositCommand",
        "WithdrawCommand",
        "CreateUserCommand",
        "AddApiKeyCommand",
        "RevokeApiKeyCommand",
        "CancelAllOrdersCommand",
        "AmendOrderCommand",
    ]


def test_load_schemas_when_directory_missing_raises_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="schema file not found"):
        load_schemas(tmp_path / "nowhere")


def test_load_schemas_when_named_type_file_missing_raises_schema_error(tmp_path: Path) -> None:
    shutil.copytree(AVRO_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / f"{NAMESPACE}.Side.avsc").unlink()
    with pytest.raises(SchemaError, match="invalid schema"):
        load_schemas(tmp_path)


def test_load_schemas_when_file_is_not_json_raises_schema_error(tmp_path: Path) -> None:
    shutil.copytree(AVRO_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / f"{NAMESPACE}.BalanceUpdated.avsc").write_text("{not json")
    with pytest.raises(SchemaError):
        load_schemas(tmp_path)


def test_codec_when_built_from_directory_override_uses_those_schemas(tmp_path: Path) -> None:
    shutil.copytree(AVRO_DIR, tmp_path, dirs_exist_ok=True)
    assert Codec(load_schemas(tmp_path)).output_fingerprint == Codec().output_fingerprint


def test_codec_when_given_swapped_schemas_raises_schema_error() -> None:
    schemas = load_schemas()
    swapped = dataclasses.replace(schemas, command=schemas.output, output=schemas.command)
    with pytest.raises(SchemaError):
        Codec(swapped)


def test_codec_errors_when_raised_share_the_exchange_root() -> None:
    assert issubclass(SchemaError, ExchangeError)


def test_import_codec_when_no_codec_built_reads_no_schema_file() -> None:
    # No I/O at import time: the .avsc files are read when a Codec is built, not before.
    probe = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' else None)\n"
        "import exchange.codec\n"
        "print(sum(p.endswith('.avsc') for p in opened))\n"
        "exchange.codec.Codec()\n"
        "print(sum(p.endswith('.avsc') for p in opened))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    at_import, after_codec = (int(n) for n in result.stdout.split())
    assert at_import == 0
    assert after_codec >= 2
