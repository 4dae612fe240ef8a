"""The single mapper between domain objects and the Avro bytes on Kafka.

Theory of operation
-------------------
The ``.avsc`` files in the repository's ``avro/`` directory are the source of truth for every
record on Kafka. There is one file per named type, called ``<namespace>.<name>.avsc`` (the
layout fastavro's ``load_schema`` resolves references with), and two top-level schemas:

* ``exchange.v1.OrderCommand``: the value of every record on the ``orders`` topic, a wrapper
  record ``{timestamp_ms, command}`` whose ``command`` is a union of ``PlaceOrderCommand``,
  ``CancelOrderCommand``, ``DepositCommand``, ``WithdrawCommand``, ``CreateUserCommand``,
  ``AddApiKeyCommand``, ``RevokeApiKeyCommand``, ``CancelAllOrdersCommand`` and
  ``AmendOrderCommand``. A wrapper rather than a top-level union, so envelope fields can be
  added later with defaults. The wire command has no ``command_id`` and a new order no
  ``order_id``: the engine adapter sets both to the record's offset, which is what
  :meth:`Codec.decode_command` takes as ``command_id``. (``CancelOrderCommand.order_id`` and
  ``AmendOrderCommand.order_id`` name an existing order and do travel.)
* ``exchange.v1.EngineOutput``: one engine output, with all of its event lists.

Both are loaded once, when a :class:`Codec` is built (never at import time).

Every record is framed with Avro single-object encoding: the marker ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the
Avro binary body. The decoder keeps a registry from that 10-byte header to (writer schema,
reader schema), so a record written by another known version of a schema is read through
Avro schema resolution; :meth:`Codec.register_writer_schema` adds versions. A record framed for
the Confluent Schema Registry (magic byte ``00`` + 4-byte schema id) is detected and refused
with a clear :class:`DecodeError` until that framing is supported.

Decoding reads untrusted bytes, so every failure there (framing, unknown fingerprint,
truncated or corrupt body) surfaces as :class:`DecodeError`, never as another type. Encoding
failures are bugs upstream and surface as :class:`EncodeError`.

Hot path: commands and engine outputs do not go through fastavro at all when they use the
codec's own schemas. At construction the codec hands the parsed ``EngineOutput`` schema to
:func:`exchange.codec.compiled.compile_record`, and the ``OrderCommand`` schema to
:func:`exchange.codec.compiled.compile_envelope`, which generate straight-line encoders and
decoders (no dict in between; see that module's theory of operation). The command decoder
dispatches on the union branch and builds the domain command directly, with ``command_id``
(and a new order's ``order_id``) set from the offset it is given, the same rules as the
``_*_from_wire`` functions. They produce exactly fastavro's bytes and objects, and defer to
fastavro for anything else: a value they cannot write or bytes they cannot read raise
``FastPathMiss``, and the codec then runs the general path below, which writes the same
bytes, or reads the record, or raises the proper :class:`EncodeError` / :class:`DecodeError`
(so errors read exactly as they would without the fast path). A record framed with another
registered writer schema always goes through fastavro's schema resolution. Should a schema
ever leave what the generator supports (or stop matching the dataclasses), the codec logs one
warning and simply stays on fastavro for those records.

The general path: the domain <-> dict mapping is written field by field
(``dataclasses.asdict`` is slow and deep-copies), enum members go to fastavro as they are (a
``StrEnum`` member *is* its symbol) and come back through prebuilt symbol -> member dicts, and
a decode is one slice and one dict lookup before fastavro runs. A :class:`Codec` keeps no
per-call state (the generated code's memo dicts only cache value -> encoding, identical for
every caller), so one instance may be shared between threads once all schemas are registered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import load_schema, parse_schema, to_parsing_canonical_form

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
from engine.enums import (
    CommandKind,
    CompletionReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Role,
    Side,
    StpMode,
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
from engine.fastbuild import slot_twin
from exchange.codec.compiled import (
    CompiledEnvelope,
    CompiledRecord,
    FastPathMiss,
    UnsupportedSchema,
    compile_envelope,
    compile_record,
)
from exchange.errors import DecodeError, EncodeError, SchemaError

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

ParsedSchema = dict[str, Any]
"""A record schema as returned by fastavro's ``load_schema``/``parse_schema``."""

log = logging.getLogger(__name__)

NAMESPACE = "exchange.v1"
COMMAND_SCHEMA_NAME = f"{NAMESPACE}.OrderCommand"
OUTPUT_SCHEMA_NAME = f"{NAMESPACE}.EngineOutput"

SINGLE_OBJECT_MARKER = b"\xc3\x01"
HEADER_SIZE = 10  # marker (2) + CRC-64-AVRO fingerprint (8)
CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER_SIZE = 5  # magic (1) + big-endian schema id (4)

_PLACE = f"{NAMESPACE}.PlaceOrderCommand"
_CANCEL = f"{NAMESPACE}.CancelOrderCommand"
_DEPOSIT = f"{NAMESPACE}.DepositCommand"
_WITHDRAW = f"{NAMESPACE}.WithdrawCommand"
_CREATE_USER = f"{NAMESPACE}.CreateUserCommand"
_ADD_API_KEY = f"{NAMESPACE}.AddApiKeyCommand"
_REVOKE_API_KEY = f"{NAMESPACE}.RevokeApiKeyCommand"
_CANCEL_ALL = f"{NAMESPACE}.CancelAllOrdersCommand"
_AMEND = f"{NAMESPACE}.AmendOrderCommand"


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True, slots=True)
class WireSchemas:
    """The two parsed top-level schemas, each self-contained (named types inlined)."""

    command: ParsedSchema
    output: ParsedSchema


def default_schema_dir() -> Path:
    """The repository's ``avro/`` directory, found next to the ``exchange`` package.

    A function, not a constant: resolving the path touches the file system, and importing
    this module must do no I/O.
    """
    return Path(__file__).resolve().parent.parent.parent / "avro"


def load_schemas(directory: str | os.PathLike[str] | None = None) -> WireSchemas:
    """Load and parse the top-level schemas from ``directory`` (default: the repo's ``avro/``).

    Named types are resolved from ``<fullname>.avsc`` files in the same directory. Raises
    :class:`SchemaError` if a file is missing, is not valid JSON, or is not a valid schema.
    """
    root = default_schema_dir() if directory is None else Path(directory)
    return WireSchemas(
        command=_load_top_level(root, COMMAND_SCHEMA_NAME),
        output=_load_top_level(root, OUTPUT_SCHEMA_NAME),
    )


def _load_top_level(root: Path, fullname: str) -> ParsedSchema:
    path = root / f"{fullname}.avsc"
    if not path.is_file():
        raise SchemaError(f"schema file not found: {path}")
    try:
        # A fresh named_schemas per top-level schema, so each one inlines every named type
        # it uses and its canonical form (hence its fingerprint) stands on its own.
        schema = load_schema(str(path), named_schemas={})
    except Exception as e:  # fastavro raises several unrelated types for a bad schema
        raise SchemaError(f"invalid schema {path}: {e}") from e
    if not isinstance(schema, dict) or schema.get("name") != fullname:
        raise SchemaError(f"{path} must define the record {fullname}")
    return schema


def schema_fingerprint(schema: ParsedSchema) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form."""
    try:
        canonical = to_parsing_canonical_form(schema)
    except Exception as e:  # an unparseable schema: several fastavro error types
        raise SchemaError(f"cannot compute the canonical form of a schema: {e}") from e
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


# --------------------------------------------------------------------------- enum lookups

_E = TypeVar("_E", bound=Enum)


def _members(enum: type[_E]) -> dict[str, _E]:
    # Indexing a prebuilt dict is several times faster than calling Enum(value).
    return {member.value: member for member in enum}


_SIDE = _members(Side)
_ORDER_TYPE = _members(OrderType)
_TIME_IN_FORCE = _members(TimeInForce)
_STP_MODE = _members(StpMode)
_ORDER_STATUS = _members(OrderStatus)
_COMPLETION_REASON = _members(CompletionReason)
_COMMAND_KIND = _members(CommandKind)
_REJECT_REASON = _members(RejectReason)
_ROLE = _members(Role)

# Avro full name -> domain class, for the generated output encoder and decoder.
_OUTPUT_CLASSES: dict[str, type] = {
    f"{NAMESPACE}.{cls.__name__}": cls
    for cls in (
        EngineOutput,
        TradeExecuted,
        OrderPlaced,
        OrderUpdated,
        OrderCompleted,
        BalanceUpdated,
        CommandRejected,
        UserCreated,
        ApiKeyUpdated,
        DepthUpdated,
        LevelUpdated,
        Side,
        OrderType,
        TimeInForce,
        OrderStatus,
        CompletionReason,
        CommandKind,
        RejectReason,
        Role,
    )
}


# --------------------------------------------------------------------------- commands
# Domain -> wire: (union branch name, record). The tuple tells fastavro which branch to write
# without trying each one. command_id and PlaceOrder.order_id are deliberately not written.


def _place_to_wire(c: PlaceOrder) -> tuple[str, dict[str, Any]]:
    return (
        _PLACE,
        {
            "user_id": c.user_id,
            "symbol": c.symbol,
            "side": c.side,
            "order_type": c.order_type,
            "time_in_force": c.time_in_force,
            "post_only": c.post_only,
            "price": c.price,
            "quantity": c.quantity,
            "client_order_id": c.client_order_id,
            "stp_mode": c.stp_mode,
        },
    )


def _cancel_to_wire(c: CancelOrder) -> tuple[str, dict[str, Any]]:
    return (
        _CANCEL,
        {
            "user_id": c.user_id,
            "symbol": c.symbol,
            "order_id": c.order_id,
            "client_order_id": c.client_order_id,
        },
    )


def _deposit_to_wire(c: Deposit) -> tuple[str, dict[str, Any]]:
    return (_DEPOSIT, {"user_id": c.user_id, "asset": c.asset, "amount": c.amount})


def _withdraw_to_wire(c: Withdraw) -> tuple[str, dict[str, Any]]:
    return (_WITHDRAW, {"user_id": c.user_id, "asset": c.asset, "amount": c.amount})


def _create_user_to_wire(c: CreateUser) -> tuple[str, dict[str, Any]]:
    return (
        _CREATE_USER,
        {"api_key": c.api_key, "public_key": c.public_key, "role": c.role, "label": c.label},
    )


def _add_api_key_to_wire(c: AddApiKey) -> tuple[str, dict[str, Any]]:
    return (_ADD_API_KEY, {"user_id": c.user_id, "api_key": c.api_key, "public_key": c.public_key})


def _revoke_api_key_to_wire(c: RevokeApiKey) -> tuple[str, dict[str, Any]]:
    return (_REVOKE_API_KEY, {"api_key": c.api_key})


def _cancel_all_to_wire(c: CancelAllOrders) -> tuple[str, dict[str, Any]]:
    return (_CANCEL_ALL, {"user_id": c.user_id, "symbol": c.symbol})


def _amend_to_wire(c: AmendOrder) -> tuple[str, dict[str, Any]]:
    return (
        _AMEND,
        {
            "user_id": c.user_id,
            "symbol": c.symbol,
            "order_id": c.order_id,
            "client_order_id": c.client_order_id,
            "quantity": c.quantity,
        },
    )


_COMMAND_TO_WIRE: dict[type, Callable[[Any], tuple[str, dict[str, Any]]]] = {
    PlaceOrder: _place_to_wire,
    CancelOrder: _cancel_to_wire,
    Deposit: _deposit_to_wire,
    Withdraw: _withdraw_to_wire,
    CreateUser: _create_user_to_wire,
    AddApiKey: _add_api_key_to_wire,
    RevokeApiKey: _revoke_api_key_to_wire,
    CancelAllOrders: _cancel_all_to_wire,
    AmendOrder: _amend_to_wire,
}


# Wire -> domain: (record, command_id, timestamp_ms) -> command. A new order's id is its
# command id.


# Building a frozen, slotted command through its __init__ costs ~5 us (one
# object.__setattr__ per field) on the engine's hot path. A plain class with the same slot
# layout, filled directly and then relabelled, gives an equal, equally frozen object for ~1 us
# (engine.fastbuild.slot_twin, as the engine does for its events). Without a twin (layout
# changed), __init__.
_PLACE_TWIN = slot_twin(PlaceOrder)
_CANCEL_TWIN = slot_twin(CancelOrder)


def _place_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> PlaceOrder:
    stp_mode = r["stp_mode"]
    if _PLACE_TWIN is None:
        return PlaceOrder(
            command_id=command_id,
            timestamp_ms=timestamp_ms,
            order_id=command_id,
            user_id=r["user_id"],
            symbol=r["symbol"],
            side=_SIDE[r["side"]],
            order_type=_ORDER_TYPE[r["order_type"]],
            time_in_force=_TIME_IN_FORCE[r["time_in_force"]],
            post_only=r["post_only"],
            price=r["price"],
            quantity=r["quantity"],
            client_order_id=r["client_order_id"],
            stp_mode=None if stp_mode is None else _STP_MODE[stp_mode],
        )
    o: Any = _PLACE_TWIN()
    o.command_id = command_id
    o.timestamp_ms = timestamp_ms
    o.order_id = command_id
    o.user_id = r["user_id"]
    o.symbol = r["symbol"]
    o.side = _SIDE[r["side"]]
    o.order_type = _ORDER_TYPE[r["order_type"]]
    o.time_in_force = _TIME_IN_FORCE[r["time_in_force"]]
    o.post_only = r["post_only"]
    o.price = r["price"]
    o.quantity = r["quantity"]
    o.client_order_id = r["client_order_id"]
    o.stp_mode = None if stp_mode is None else _STP_MODE[stp_mode]
    o.__class__ = PlaceOrder
    return o


def _cancel_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> CancelOrder:
    if _CANCEL_TWIN is None:
        return CancelOrder(
            command_id=command_id,
            timestamp_ms=timestamp_ms,
            user_id=r["user_id"],
            symbol=r["symbol"],
            order_id=r["order_id"],
            client_order_id=r["client_order_id"],
        )
    o: Any = _CANCEL_TWIN()
    o.command_id = command_id
    o.timestamp_ms = timestamp_ms
    o.user_id = r["user_id"]
    o.symbol = r["symbol"]
    o.order_id = r["order_id"]
    o.client_order_id = r["client_order_id"]
    o.__class__ = CancelOrder
    return o


def _deposit_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> Deposit:
    return Deposit(
        command_id=command_id,
        timestamp_ms=timestamp_ms,
        user_id=r["user_id"],
        asset=r["asset"],
        amount=r["amount"],
    )


def _withdraw_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> Withdraw:
    return Withdraw(
        command_id=command_id,
        timestamp_ms=timestamp_ms,
        user_id=r["user_id"],
        asset=r["asset"],
        amount=r["amount"],
    )


def _create_user_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> CreateUser:
    return CreateUser(
        command_id=command_id,
        timestamp_ms=timestamp_ms,
        api_key=r["api_key"],
        public_key=r["public_key"],
        role=_ROLE[r["role"]],
        label=r["label"],
    )


def _add_api_key_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> AddApiKey:
    return AddApiKey(
        command_id=command_id,
        timestamp_ms=timestamp_ms,
        user_id=r["user_id"],
        api_key=r["api_key"],
        public_key=r["public_key"],
    )


def _revoke_api_key_from_wire(
    r: dict[str, Any], command_id: int, timestamp_ms: int
) -> RevokeApiKey:
    return RevokeApiKey(command_id=command_id, timestamp_ms=timestamp_ms, api_key=r["api_key"])


def _cancel_all_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> CancelAllOrders:
    return CancelAllOrders(
        command_id=command_id, timestamp_ms=timestamp_ms, user_id=r["user_id"], symbol=r["symbol"]
    )


def _amend_from_wire(r: dict[str, Any], command_id: int, timestamp_ms: int) -> AmendOrder:
    return AmendOrder(
        command_id=command_id,
        timestamp_ms=timestamp_ms,
        user_id=r["user_id"],
        symbol=r["symbol"],
        order_id=r["order_id"],
        client_order_id=r["client_order_id"],
        quantity=r["quantity"],
    )


_COMMAND_FROM_WIRE: dict[str, Callable[[dict[str, Any], int, int], Command]] = {
    _PLACE: _place_from_wire,
    _CANCEL: _cancel_from_wire,
    _DEPOSIT: _deposit_from_wire,
    _WITHDRAW: _withdraw_from_wire,
    _CREATE_USER: _create_user_from_wire,
    _ADD_API_KEY: _add_api_key_from_wire,
    _REVOKE_API_KEY: _revoke_api_key_from_wire,
    _CANCEL_ALL: _cancel_all_from_wire,
    _AMEND: _amend_from_wire,
}

# For the generated command encoder and decoder: Avro full name -> domain class (the union
# branches and their enums), and, per branch, the command fields that are not on the wire and
# the argument that supplies them. The same rules as the *_from_wire functions above: every
# command_id, and a new order's order_id, is the offset the decoder is given.
_COMMAND_CLASSES: dict[str, type] = {
    _PLACE: PlaceOrder,
    _CANCEL: CancelOrder,
    _DEPOSIT: Deposit,
    _WITHDRAW: Withdraw,
    _CREATE_USER: CreateUser,
    _ADD_API_KEY: AddApiKey,
    _REVOKE_API_KEY: RevokeApiKey,
    _CANCEL_ALL: CancelAllOrders,
    _AMEND: AmendOrder,
    **{f"{NAMESPACE}.{cls.__name__}": cls for cls in (Side, OrderType, TimeInForce, StpMode, Role)},
}
_COMMAND_SUPPLIED: dict[str, dict[str, str]] = {
    _PLACE: {"command_id": "command_id", "order_id": "command_id"},
    _CANCEL: {"command_id": "command_id"},
    _DEPOSIT: {"command_id": "command_id"},
    _WITHDRAW: {"command_id": "command_id"},
    _CREATE_USER: {"command_id": "command_id"},
    _ADD_API_KEY: {"command_id": "command_id"},
    _REVOKE_API_KEY: {"command_id": "command_id"},
    _CANCEL_ALL: {"command_id": "command_id"},
    _AMEND: {"command_id": "command_id"},
}


# --------------------------------------------------------------------------- engine output
# One function per list, with the per-item mapping inlined in a comprehension: a function
# call per item would cost more than the dict literal itself.


def _output_to_wire(o: EngineOutput) -> dict[str, Any]:
    return {
        "sequence": o.sequence,
        "command_id": o.command_id,
        "command_kind": o.command_kind,
        "timestamp_ms": o.timestamp_ms,
        "trades": [
            {
                "trade_id": t.trade_id,
                "symbol": t.symbol,
                "price": t.price,
                "quantity": t.quantity,
                "quote_quantity": t.quote_quantity,
                "maker_order_id": t.maker_order_id,
                "taker_order_id": t.taker_order_id,
                "maker_user_id": t.maker_user_id,
                "taker_user_id": t.taker_user_id,
                "taker_side": t.taker_side,
                "maker_fee": t.maker_fee,
                "maker_fee_asset": t.maker_fee_asset,
                "taker_fee": t.taker_fee,
                "taker_fee_asset": t.taker_fee_asset,
                "executed_at": t.executed_at,
            }
            for t in o.trades
        ],
        "order_placements": [
            {
                "order_id": p.order_id,
                "client_order_id": p.client_order_id,
                "user_id": p.user_id,
                "symbol": p.symbol,
                "side": p.side,
                "order_type": p.order_type,
                "time_in_force": p.time_in_force,
                "post_only": p.post_only,
                "price": p.price,
                "quantity": p.quantity,
                "created_at": p.created_at,
            }
            for p in o.order_placements
        ],
        "order_updates": [
            {
                "order_id": u.order_id,
                "client_order_id": u.client_order_id,
                "user_id": u.user_id,
                "symbol": u.symbol,
                "side": u.side,
                "order_type": u.order_type,
                "time_in_force": u.time_in_force,
                "price": u.price,
                "quantity": u.quantity,
                "status": u.status,
                "filled_quantity": u.filled_quantity,
                "remaining_quantity": u.remaining_quantity,
                "cumulative_quote": u.cumulative_quote,
                "avg_fill_price": u.avg_fill_price,
                "last_fill_price": u.last_fill_price,
                "last_fill_quantity": u.last_fill_quantity,
                "reject_reason": u.reject_reason,
                "created_at": u.created_at,
                "updated_at": u.updated_at,
            }
            for u in o.order_updates
        ],
        "order_completions": [
            {
                "order_id": c.order_id,
                "user_id": c.user_id,
                "symbol": c.symbol,
                "reason": c.reason,
                "completed_at": c.completed_at,
            }
            for c in o.order_completions
        ],
        "balance_updates": [
            {"user_id": b.user_id, "asset": b.asset, "available": b.available, "locked": b.locked}
            for b in o.balance_updates
        ],
        "rejections": [
            {
                "command_id": r.command_id,
                "kind": r.kind,
                "user_id": r.user_id,
                "reason": r.reason,
                "order_id": r.order_id,
                "client_order_id": r.client_order_id,
                "message": r.message,
            }
            for r in o.rejections
        ],
        "user_creations": [
            {"user_id": u.user_id, "role": u.role, "label": u.label, "created_at": u.created_at}
            for u in o.user_creations
        ],
        "api_key_updates": [
            {
                "api_key": k.api_key,
                "user_id": k.user_id,
                "role": k.role,
                "public_key": k.public_key,
                "revoked": k.revoked,
                "updated_at": k.updated_at,
            }
            for k in o.api_key_updates
        ],
        "depth_updates": [
            {
                "symbol": d.symbol,
                "update_id": d.update_id,
                "levels": [
                    {
                        "side": lv.side,
                        "price": lv.price,
                        "quantity": lv.quantity,
                        "order_count": lv.order_count,
                    }
                    for lv in d.levels
                ],
            }
            for d in o.depth_updates
        ],
    }


def _output_from_wire(r: dict[str, Any]) -> EngineOutput:
    side = _SIDE
    order_type = _ORDER_TYPE
    time_in_force = _TIME_IN_FORCE
    reject_reason = _REJECT_REASON
    return EngineOutput(
        sequence=r["sequence"],
        command_id=r["command_id"],
        command_kind=_COMMAND_KIND[r["command_kind"]],
        timestamp_ms=r["timestamp_ms"],
        trades=tuple(
            [
                TradeExecuted(
                    trade_id=t["trade_id"],
                    symbol=t["symbol"],
                    price=t["price"],
                    quantity=t["quantity"],
                    quote_quantity=t["quote_quantity"],
                    maker_order_id=t["maker_order_id"],
                    taker_order_id=t["taker_order_id"],
                    maker_user_id=t["maker_user_id"],
                    taker_user_id=t["taker_user_id"],
                    taker_side=side[t["taker_side"]],
                    maker_fee=t["maker_fee"],
                    maker_fee_asset=t["maker_fee_asset"],
                    taker_fee=t["taker_fee"],
                    taker_fee_asset=t["taker_fee_asset"],
                    executed_at=t["executed_at"],
                )
                for t in r["trades"]
            ]
        ),
        order_placements=tuple(
            [
                OrderPlaced(
                    order_id=p["order_id"],
                    client_order_id=p["client_order_id"],
                    user_id=p["user_id"],
                    symbol=p["symbol"],
                    side=side[p["side"]],
                    order_type=order_type[p["order_type"]],
                    time_in_force=time_in_force[p["time_in_force"]],
                    post_only=p["post_only"],
                    price=p["price"],
                    quantity=p["quantity"],
                    created_at=p["created_at"],
                )
                for p in r["order_placements"]
            ]
        ),
        order_updates=tuple(
            [
                OrderUpdated(
                    order_id=u["order_id"],
                    client_order_id=u["client_order_id"],
                    user_id=u["user_id"],
                    symbol=u["symbol"],
                    side=side[u["side"]],
                    order_type=order_type[u["order_type"]],
                    time_in_force=time_in_force[u["time_in_force"]],
                    price=u["price"],
                    quantity=u["quantity"],
                    status=_ORDER_STATUS[u["status"]],
                    filled_quantity=u["filled_quantity"],
                    remaining_quantity=u["remaining_quantity"],
                    cumulative_quote=u["cumulative_quote"],
                    avg_fill_price=u["avg_fill_price"],
                    last_fill_price=u["last_fill_price"],
                    last_fill_quantity=u["last_fill_quantity"],
                    reject_reason=(
                        None if u["reject_reason"] is None else reject_reason[u["reject_reason"]]
                    ),
                    created_at=u["created_at"],
                    updated_at=u["updated_at"],
                )
                for u in r["order_updates"]
            ]
        ),
        order_completions=tuple(
            [
                OrderCompleted(
                    order_id=c["order_id"],
                    user_id=c["user_id"],
                    symbol=c["symbol"],
                    reason=_COMPLETION_REASON[c["reason"]],
                    completed_at=c["completed_at"],
                )
                for c in r["order_completions"]
            ]
        ),
        balance_updates=tuple(
            [
                BalanceUpdated(
                    user_id=b["user_id"],
                    asset=b["asset"],
                    available=b["available"],
                    locked=b["locked"],
                )
                for b in r["balance_updates"]
            ]
        ),
        rejections=tuple(
            [
                CommandRejected(
                    command_id=x["command_id"],
                    kind=_COMMAND_KIND[x["kind"]],
                    user_id=x["user_id"],
                    reason=reject_reason[x["reason"]],
                    order_id=x["order_id"],
                    client_order_id=x["client_order_id"],
                    message=x["message"],
                )
                for x in r["rejections"]
            ]
        ),
        user_creations=tuple(
            [
                UserCreated(
                    user_id=u["user_id"],
                    role=_ROLE[u["role"]],
                    label=u["label"],
                    created_at=u["created_at"],
                )
                # .get: a codec whose own schema predates users (an older reader) has none.
                for u in r.get("user_creations", ())
            ]
        ),
        api_key_updates=tuple(
            [
                ApiKeyUpdated(
                    api_key=k["api_key"],
                    user_id=k["user_id"],
                    role=_ROLE[k["role"]],
                    public_key=k["public_key"],
                    revoked=k["revoked"],
                    updated_at=k["updated_at"],
                )
                for k in r.get("api_key_updates", ())
            ]
        ),
        depth_updates=tuple(
            [
                DepthUpdated(
                    symbol=d["symbol"],
                    update_id=d["update_id"],
                    levels=tuple(
                        [
                            LevelUpdated(
                                side=side[lv["side"]],
                                price=lv["price"],
                                quantity=lv["quantity"],
                                order_count=lv["order_count"],
                            )
                            for lv in d["levels"]
                        ]
                    ),
                )
                for d in r.get("depth_updates", ())
            ]
        ),
    )


# --------------------------------------------------------------------------- fast path


# Long fields of EngineOutput whose values are nearly always new (gap-free counters, ids that
# are offsets, balances after a change): encoded without the memo. Only a speed choice; the
# bytes are the same either way (tests/codec checks the fast path against fastavro).
_FRESH_OUTPUT_FIELDS = frozenset(
    {
        "sequence",
        "command_id",
        "trade_id",
        "maker_order_id",
        "taker_order_id",
        "order_id",
        "quote_quantity",
        "cumulative_quote",
        "available",
        "locked",
        "update_id",
    }
)


def _compile_output(schema: ParsedSchema, header: bytes) -> CompiledRecord | None:
    """The generated encoder/decoder of ``schema``, or None if it is outside their subset.

    None is not an error: an evolved schema the generator (or the dataclasses) cannot follow
    yet still works, through fastavro only.
    """
    try:
        return compile_record(
            schema, _OUTPUT_CLASSES, header=header, fresh_fields=_FRESH_OUTPUT_FIELDS
        )
    except UnsupportedSchema as e:
        # Once per codec (per process): a schema change that silently cost the fast path
        # would otherwise only show up as a throughput drop.
        log.warning("EngineOutput fast path disabled, outputs go through fastavro: %s", e)
        return None


def _compile_command(schema: ParsedSchema, header: bytes) -> CompiledEnvelope | None:
    """The generated encoder/decoder of the ``OrderCommand`` envelope, or None (fastavro)."""
    try:
        # fresh_longs: a command's long varints are mostly new values close to earlier
        # ones (its timestamp, a cancel's order id), which the whole-varint memo would miss.
        compiled = compile_envelope(
            schema, _COMMAND_CLASSES, supplied=_COMMAND_SUPPLIED, header=header, fresh_longs=True
        )
    except UnsupportedSchema as e:
        log.warning("OrderCommand fast path disabled, commands go through fastavro: %s", e)
        return None
    if compiled.arguments != ("command_id",):  # cannot happen with the mapping above
        log.warning("OrderCommand fast path disabled: it takes %s", compiled.arguments)
        return None
    return compiled


# --------------------------------------------------------------------------- codec

_Reader = tuple[ParsedSchema, ParsedSchema | None]
"""(writer schema, reader schema or None when the writer *is* the reader schema)."""


class Codec:
    """Encodes commands and engine outputs to framed Avro bytes, and decodes them back.

    Build one per process at the composition root: construction loads and parses the
    schemas (from ``schemas``, default :func:`load_schemas`), which is the only I/O it does.
    """

    __slots__ = (
        "_command_compiled",
        "_command_decode",
        "_command_encode",
        "_command_fingerprint",
        "_command_header",
        "_command_readers",
        "_output_compiled",
        "_output_decode",
        "_output_encode",
        "_output_fingerprint",
        "_output_header",
        "_output_readers",
        "_schemas",
    )

    def __init__(self, schemas: WireSchemas | None = None) -> None:
        schemas = load_schemas() if schemas is None else schemas
        if schemas.command.get("name") != COMMAND_SCHEMA_NAME:
            raise SchemaError(f"the command schema must be the record {COMMAND_SCHEMA_NAME}")
        if schemas.output.get("name") != OUTPUT_SCHEMA_NAME:
            raise SchemaError(f"the output schema must be the record {OUTPUT_SCHEMA_NAME}")
        self._schemas = schemas
        self._command_fingerprint = schema_fingerprint(schemas.command)
        self._output_fingerprint = schema_fingerprint(schemas.output)
        self._command_header = SINGLE_OBJECT_MARKER + self._command_fingerprint
        self._output_header = SINGLE_OBJECT_MARKER + self._output_fingerprint
        # Keyed by the whole 10-byte header: one slice and one lookup check marker and
        # fingerprint together on the fast path.
        self._command_readers: dict[bytes, _Reader] = {
            self._command_header: (schemas.command, None)
        }
        self._output_readers: dict[bytes, _Reader] = {self._output_header: (schemas.output, None)}
        # The generated fast path for the codec's own output schema (None: stay on fastavro).
        self._output_compiled = _compile_output(schemas.output, self._output_header)
        compiled = self._output_compiled
        self._output_encode = None if compiled is None else compiled.encode
        self._output_decode = None if compiled is None else compiled.decode
        # The same for the command envelope: decode(data, command_id) -> command.
        self._command_compiled = _compile_command(schemas.command, self._command_header)
        command = self._command_compiled
        self._command_encode = None if command is None else command.encode
        self._command_decode = None if command is None else command.decode

    # ----------------------------------------------------------------- schema registry

    @property
    def schemas(self) -> WireSchemas:
        """The schemas this codec writes with, and reads into."""
        return self._schemas

    @property
    def command_fingerprint(self) -> bytes:
        """CRC-64-AVRO fingerprint (8 bytes, little-endian) of the command writer schema."""
        return self._command_fingerprint

    @property
    def output_fingerprint(self) -> bytes:
        """CRC-64-AVRO fingerprint (8 bytes, little-endian) of the output writer schema."""
        return self._output_fingerprint

    def register_writer_schema(self, schema: ParsedSchema) -> bytes:
        """Accept records written with ``schema``, another version of a top-level schema.

        Records framed with its fingerprint are read through Avro schema resolution into
        this codec's own schema. Returns the fingerprint. Registering a schema twice is a
        no-op. Call this while wiring the process, before sharing the codec between threads.
        """
        try:
            parsed = parse_schema(schema)
        except Exception as e:  # several fastavro error types for an invalid schema
            raise SchemaError(f"invalid writer schema: {e}") from e
        if not isinstance(parsed, dict):
            raise SchemaError("a writer schema must be a record, not a union or primitive")
        name = parsed.get("name")
        if name == COMMAND_SCHEMA_NAME:
            readers, own = self._command_readers, self._schemas.command
        elif name == OUTPUT_SCHEMA_NAME:
            readers, own = self._output_readers, self._schemas.output
        else:
            raise SchemaError(
                f"a writer schema must be the record {COMMAND_SCHEMA_NAME} or "
                f"{OUTPUT_SCHEMA_NAME}, not {name!r}"
            )
        fingerprint = schema_fingerprint(parsed)
        # setdefault: the codec's own header (reader None, no resolution) is never replaced.
        readers.setdefault(SINGLE_OBJECT_MARKER + fingerprint, (parsed, own))
        return fingerprint

    # ----------------------------------------------------------------- commands

    def encode_command(self, command: Command) -> bytes:
        """Frame ``command`` as an ``OrderCommand`` record.

        ``command_id`` (and a ``PlaceOrder``'s ``order_id``) are not written: the engine
        adapter assigns them from the record's offset when it decodes.
        """
        encode = self._command_encode
        if encode is not None:
            try:
                return encode(command)
            except FastPathMiss:
                pass  # not a command, or a value the generated code does not write
        return self._encode_command_general(command)

    def decode_command(self, data: bytes, *, command_id: int) -> Command:
        """Rebuild the domain command from a framed ``OrderCommand`` record.

        ``command_id`` is the record's offset in the orders topic; a ``PlaceOrder`` gets it
        as its ``order_id`` too. Raises :class:`DecodeError` for anything unreadable.
        """
        decode = self._command_decode
        if decode is not None:
            if type(data) is not bytes and isinstance(data, bytearray | memoryview):
                data = bytes(data)
            if type(data) is bytes and data[:HEADER_SIZE] == self._command_header:
                try:
                    return decode(data, command_id)
                except FastPathMiss:
                    pass  # corrupt, or unusual Avro: fastavro decides
        return self._decode_command_general(data, command_id)

    def _encode_command_general(self, command: Command) -> bytes:
        """Through a dict and fastavro: the reference the generated encoder must equal."""
        to_wire = _COMMAND_TO_WIRE.get(type(command))
        if to_wire is None:
            raise EncodeError(f"not a command: {type(command).__name__}")
        record = {"timestamp_ms": command.timestamp_ms, "command": to_wire(command)}
        return self._write(self._command_header, self._schemas.command, record)

    def _decode_command_general(self, data: bytes, command_id: int) -> Command:
        """Through fastavro (with schema resolution for another writer) and a dict."""
        record = self._read(data, self._command_readers, COMMAND_SCHEMA_NAME)
        try:
            name, body = record["command"]
            return _COMMAND_FROM_WIRE[name](body, command_id, record["timestamp_ms"])
        except (KeyError, TypeError, ValueError) as e:
            raise DecodeError(f"{COMMAND_SCHEMA_NAME} does not map to a command: {e!r}") from e

    # ----------------------------------------------------------------- engine outputs

    def encode_output(self, output: EngineOutput) -> bytes:
        """Frame ``output`` as an ``EngineOutput`` record, every list included."""
        if type(output) is not EngineOutput:
            raise EncodeError(f"not an EngineOutput: {type(output).__name__}")
        encode = self._output_encode
        if encode is not None:
            try:
                return encode(output)
            except FastPathMiss:
                pass  # a value the generated code does not write: fastavro's path decides
        return self._encode_output_general(output)

    def decode_output(self, data: bytes) -> EngineOutput:
        """Rebuild the :class:`EngineOutput` from a framed record.

        Raises :class:`DecodeError` for anything unreadable.
        """
        decode = self._output_decode
        if decode is not None:
            if type(data) is not bytes and isinstance(data, bytearray | memoryview):
                data = bytes(data)
            if type(data) is bytes and data[:HEADER_SIZE] == self._output_header:
                try:
                    return decode(data)
                except FastPathMiss:
                    pass  # corrupt, or unusual Avro (a negative block count): fastavro decides
        return self._decode_output_general(data)

    def _encode_output_general(self, output: EngineOutput) -> bytes:
        """Through a dict and fastavro: the reference the generated encoder must equal."""
        try:
            record = _output_to_wire(output)
        except (AttributeError, TypeError) as e:  # a list holds other things, or is no list
            raise EncodeError(f"cannot encode {OUTPUT_SCHEMA_NAME}: {e}") from e
        return self._write(self._output_header, self._schemas.output, record)

    def _decode_output_general(self, data: bytes) -> EngineOutput:
        """Through fastavro (with schema resolution for another writer) and a dict."""
        record = self._read(data, self._output_readers, OUTPUT_SCHEMA_NAME)
        try:
            return _output_from_wire(record)
        except (KeyError, TypeError, ValueError) as e:
            raise DecodeError(f"{OUTPUT_SCHEMA_NAME} does not map to an output: {e!r}") from e

    # ----------------------------------------------------------------- framing

    @staticmethod
    def _write(header: bytes, schema: ParsedSchema, record: dict[str, Any]) -> bytes:
        buffer = BytesIO()
        buffer.write(header)
        try:
            schemaless_writer(buffer, schema, record)
        except (TypeError, ValueError, OverflowError) as e:
            raise EncodeError(f"cannot encode {schema['name']}: {e}") from e
        return buffer.getvalue()

    def _read(self, data: bytes, readers: dict[bytes, _Reader], expected: str) -> dict[str, Any]:
        try:
            reader = readers.get(data[:HEADER_SIZE])
        except TypeError:  # a bytearray/memoryview slice is unhashable; anything else is no value
            if not isinstance(data, bytearray | memoryview):
                raise DecodeError(f"expected bytes, got {type(data).__name__}") from None
            return self._read(bytes(data), readers, expected)
        if reader is None:
            raise DecodeError(self._diagnose(data, expected))
        stream = BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            # return_record_name: the OrderCommand union comes back as (branch name, record).
            record = schemaless_reader(stream, reader[0], reader[1], return_record_name=True)
        except Exception as e:  # corrupt input makes fastavro raise many unrelated types
            raise DecodeError(
                f"corrupt or truncated {expected} body ({len(data)} bytes): {e!r}"
            ) from e
        if stream.tell() != len(data):
            raise DecodeError(
                f"{len(data) - stream.tell()} trailing bytes after the {expected} record"
            )
        if not isinstance(record, dict):
            raise DecodeError(f"{expected} did not decode to a record")
        return record

    def _diagnose(self, data: bytes, expected: str) -> str:
        """Say why ``data`` has no known header. Off the hot path."""
        if len(data) == 0:
            return f"empty value where a {expected} record was expected"
        if data[0] == CONFLUENT_MAGIC:
            schema_id = (
                int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
                if len(data) >= CONFLUENT_HEADER_SIZE
                else None
            )
            return (
                "Confluent framing not supported yet (magic byte 0x00, schema id "
                f"{schema_id}); expected Avro single-object encoding (marker C3 01)"
            )
        marker = data[:2]
        if marker != SINGLE_OBJECT_MARKER[: len(marker)]:
            return f"wrong marker {marker.hex(' ')}: expected Avro single-object encoding (C3 01)"
        if len(data) < HEADER_SIZE:
            return f"truncated header: {len(data)} bytes, a single-object header has {HEADER_SIZE}"
        header = data[:HEADER_SIZE]
        fingerprint = header[2:].hex()
        other, other_name = (
            (self._output_readers, OUTPUT_SCHEMA_NAME)
            if expected == COMMAND_SCHEMA_NAME
            else (self._command_readers, COMMAND_SCHEMA_NAME)
        )
        if header in other:
            return f"the record is {other_name}, expected {expected} (fingerprint {fingerprint})"
        return (
            f"unknown writer schema fingerprint {fingerprint} for {expected}; "
            "register that schema version with Codec.register_writer_schema"
        )
