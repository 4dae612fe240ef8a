"""Every command and every event survives encode -> decode as an equal domain object.

Equality alone is not enough: a ``StrEnum`` member equals its plain string, so the tests also
check that decoded enums are engine members and decoded lists are tuples.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
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
from engine.events import EngineOutput
from exchange.codec import SINGLE_OBJECT_MARKER, Codec
from exchange.errors import EncodeError

TS = 1_700_000_000_000
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# --------------------------------------------------------------------------- helpers


def assert_domain_types(obj: Any) -> None:
    """Decoded enums are engine enum members (not bare strings) and lists are tuples."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        hint = hints[field.name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        enums = [t for t in options if isinstance(t, type) and issubclass(t, Enum)]
        if enums:
            assert value is None or type(value) is enums[0], (field.name, value)
        if typing.get_origin(hint) is tuple:
            assert type(value) is tuple, field.name
            for item in value:
                assert_domain_types(item)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """Values the wire can carry: ints within Avro long, any text, enum members."""
    if isinstance(hint, types.UnionType):
        return st.one_of(*[strategy_for(option) for option in typing.get_args(hint)])
    if hint is type(None):
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(LONG_MIN, LONG_MAX)
    if hint is str:
        return st.text(max_size=12)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return st.sampled_from(hint)
    if typing.get_origin(hint) is tuple:
        return st.lists(strategy_for(typing.get_args(hint)[0]), max_size=3).map(tuple)
    if dataclasses.is_dataclass(hint):
        return domain(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def domain(cls: Any) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {field.name: strategy_for(hints[field.name]) for field in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


COMMANDS: st.SearchStrategy[Command] = st.one_of(
    # On the wire a new order's id *is* its command id.
    domain(PlaceOrder).map(lambda c: dataclasses.replace(c, order_id=c.command_id)),
    domain(CancelOrder),
    domain(Deposit),
    domain(Withdraw),
    domain(CreateUser),
    domain(AddApiKey),
    domain(RevokeApiKey),
    domain(CancelAllOrders),
    domain(AmendOrder),
)


def round_trip_command(codec: Codec, command: Command) -> Command:
    decoded = codec.decode_command(codec.encode_command(command), command_id=command.command_id)
    assert_domain_types(decoded)
    return decoded


def round_trip_output(codec: Codec, output: EngineOutput) -> EngineOutput:
    decoded = codec.decode_output(codec.encode_output(output))
    assert_domain_types(decoded)
    return decoded


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize("order_type", list(OrderType))
@pytest.mark.parametrize("time_in_force", list(TimeInForce))
def test_decode_command_when_place_order_encoded_returns_equal_command(
    codec: Codec,
    place_order: PlaceOrder,
    side: Side,
    order_type: OrderType,
    time_in_force: TimeInForce,
) -> None:
    command = dataclasses.replace(
        place_order, side=side, order_type=order_type, time_in_force=time_in_force
    )
    assert round_trip_command(codec, command) == command


@pytest.mark.parametrize("stp_mode", [None, *StpMode])
def test_decode_command_when_place_order_has_stp_mode_returns_same_mode(
    codec: Codec, place_order: PlaceOrder, stp_mode: StpMode | None
) -> None:
    command = dataclasses.replace(place_order, stp_mode=stp_mode)
    decoded = round_trip_command(codec, command)
    assert decoded == command
    assert isinstance(decoded, PlaceOrder) and decoded.stp_mode is stp_mode


def test_decode_command_when_place_order_optionals_absent_returns_none_and_defaults(
    codec: Codec,
) -> None:
    command = PlaceOrder(
        command_id=5,
        timestamp_ms=TS,
        order_id=5,
        user_id=1,
        symbol="ETH-USDT",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        quantity=2,
    )
    assert round_trip_command(codec, command) == command


def test_decode_command_when_given_command_id_sets_it_as_order_id(
    codec: Codec, place_order: PlaceOrder
) -> None:
    decoded = codec.decode_command(codec.encode_command(place_order), command_id=1_000)
    assert isinstance(decoded, PlaceOrder)
    assert (decoded.command_id, decoded.order_id) == (1_000, 1_000)
    assert decoded == dataclasses.replace(place_order, command_id=1_000, order_id=1_000)


def test_encode_command_when_only_ids_differ_writes_identical_bytes(
    codec: Codec, place_order: PlaceOrder
) -> None:
    other = dataclasses.replace(place_order, command_id=1, order_id=99)
    assert codec.encode_command(other) == codec.encode_command(place_order)


def test_decode_command_when_cancel_names_order_id_keeps_that_order_id(codec: Codec) -> None:
    command = CancelOrder(command_id=50, timestamp_ms=TS, user_id=7, symbol="BTC-USDT", order_id=42)
    decoded = round_trip_command(codec, command)
    assert decoded == command
    assert isinstance(decoded, CancelOrder) and decoded.order_id == 42


def test_decode_command_when_cancel_names_client_order_id_returns_it(codec: Codec) -> None:
    command = CancelOrder(
        command_id=51, timestamp_ms=TS, user_id=7, symbol="BTC-USDT", client_order_id="c-1"
    )
    assert round_trip_command(codec, command) == command


@pytest.mark.parametrize(
    ("order_id", "client_order_id"), [(42, None), (None, "c-1"), (None, None), (43, "both")]
)
def test_decode_command_when_amend_encoded_returns_equal_amend(
    codec: Codec, order_id: int | None, client_order_id: str | None
) -> None:
    command = AmendOrder(
        command_id=52,
        timestamp_ms=TS,
        user_id=7,
        symbol="BTC-USDT",
        order_id=order_id,
        client_order_id=client_order_id,
        quantity=3,
    )
    decoded = round_trip_command(codec, command)
    assert type(decoded) is AmendOrder and decoded == command
    assert codec._decode_command_general(codec.encode_command(command), 52) == command


@pytest.mark.parametrize("kind", [Deposit, Withdraw])
def test_decode_command_when_balance_command_encoded_returns_same_type(
    codec: Codec, kind: type[Deposit] | type[Withdraw]
) -> None:
    # Deposit and Withdraw have the same fields: only the union branch tells them apart.
    command = kind(command_id=3, timestamp_ms=TS, user_id=9, asset="USDT", amount=10**18)
    decoded = round_trip_command(codec, command)
    assert type(decoded) is kind
    assert decoded == command


@settings(max_examples=300)
@given(command=COMMANDS)
def test_decode_command_when_any_command_encoded_returns_equal_command(
    codec: Codec, command: Command
) -> None:
    assert round_trip_command(codec, command) == command


def test_encode_command_when_framed_starts_with_marker_and_command_fingerprint(
    codec: Codec, place_order: PlaceOrder
) -> None:
    data = codec.encode_command(place_order)
    assert data[:2] == SINGLE_OBJECT_MARKER == b"\xc3\x01"
    assert data[2:10] == codec.command_fingerprint


# --------------------------------------------------------------------------- outputs


def test_decode_output_when_every_list_filled_returns_equal_output(
    codec: Codec, full_output: EngineOutput
) -> None:
    assert round_trip_output(codec, full_output) == full_output


def test_decode_output_when_lists_empty_returns_empty_tuples(codec: Codec) -> None:
    output = EngineOutput(
        sequence=1, command_id=0, command_kind=CommandKind.DEPOSIT, timestamp_ms=TS
    )
    decoded = round_trip_output(codec, output)
    assert decoded == output
    assert decoded.trades == () and decoded.rejections == ()
    assert decoded.user_creations == () and decoded.api_key_updates == ()


@pytest.mark.parametrize("role", list(Role))
def test_decode_command_when_create_user_encoded_returns_same_role_and_label(
    codec: Codec, role: Role
) -> None:
    command = CreateUser(
        command_id=9, timestamp_ms=TS, api_key="kabc", public_key="cHVi", role=role, label=None
    )
    decoded = round_trip_command(codec, command)
    assert decoded == command and decoded.role is role  # type: ignore[union-attr]


def _with_every_member(output: EngineOutput, enum: type[Enum]) -> EngineOutput:
    """``output`` with each member of ``enum`` in every field of that enum type."""
    trade, placement, update = output.trades[0], output.order_placements[0], output.order_updates[0]
    completion, rejection = output.order_completions[0], output.rejections[0]
    members: list[Any] = list(enum)  # the branch below knows which enum it is
    if enum is Side:
        return dataclasses.replace(
            output,
            trades=tuple(dataclasses.replace(trade, taker_side=m) for m in members),
            order_placements=tuple(dataclasses.replace(placement, side=m) for m in members),
            order_updates=tuple(dataclasses.replace(update, side=m) for m in members),
        )
    if enum in (OrderType, TimeInForce):
        name = "order_type" if enum is OrderType else "time_in_force"
        return dataclasses.replace(
            output,
            order_placements=tuple(dataclasses.replace(placement, **{name: m}) for m in members),
            order_updates=tuple(dataclasses.replace(update, **{name: m}) for m in members),
        )
    if enum is OrderStatus:
        return dataclasses.replace(
            output, order_updates=tuple(dataclasses.replace(update, status=m) for m in members)
        )
    if enum is CompletionReason:
        return dataclasses.replace(
            output,
            order_completions=tuple(dataclasses.replace(completion, reason=m) for m in members),
        )
    if enum is CommandKind:
        return dataclasses.replace(
            output,
            command_kind=members[-1],
            rejections=tuple(dataclasses.replace(rejection, kind=m) for m in members),
        )
    if enum is RejectReason:
        return dataclasses.replace(
            output,
            order_updates=tuple(dataclasses.replace(update, reject_reason=m) for m in members),
            rejections=tuple(dataclasses.replace(rejection, reason=m) for m in members),
        )
    if enum is Role:
        created, key = output.user_creations[0], output.api_key_updates[0]
        return dataclasses.replace(
            output,
            user_creations=tuple(dataclasses.replace(created, role=m) for m in members),
            api_key_updates=tuple(dataclasses.replace(key, role=m) for m in members),
        )
    raise AssertionError(enum)


@pytest.mark.parametrize(
    "enum",
    [Side, OrderType, TimeInForce, OrderStatus, CompletionReason, CommandKind, RejectReason, Role],
)
def test_decode_output_when_every_enum_member_used_returns_same_members(
    codec: Codec, full_output: EngineOutput, enum: type[Enum]
) -> None:
    output = _with_every_member(full_output, enum)
    assert round_trip_output(codec, output) == output


@settings(max_examples=200)
@given(output=domain(EngineOutput))
def test_decode_output_when_any_output_encoded_returns_equal_output(
    codec: Codec, output: EngineOutput
) -> None:
    assert round_trip_output(codec, output) == output


def test_encode_output_when_encoded_twice_writes_identical_bytes(
    codec: Codec, full_output: EngineOutput
) -> None:
    # The log is the truth: the same output must always be the same bytes.
    assert codec.encode_output(full_output) == Codec().encode_output(full_output)


def test_encode_output_when_framed_starts_with_marker_and_output_fingerprint(
    codec: Codec, full_output: EngineOutput
) -> None:
    data = codec.encode_output(full_output)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.output_fingerprint


def test_codec_fingerprints_when_built_are_eight_distinct_bytes(codec: Codec) -> None:
    assert len(codec.command_fingerprint) == len(codec.output_fingerprint) == 8
    assert codec.command_fingerprint != codec.output_fingerprint


# --------------------------------------------------------------------------- encode errors


def test_encode_command_when_not_a_command_raises_encode_error(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="not a command: str"):
        codec.encode_command("place order")  # type: ignore[arg-type]


def test_encode_output_when_not_an_output_raises_encode_error(
    codec: Codec, place_order: PlaceOrder
) -> None:
    with pytest.raises(EncodeError, match="not an EngineOutput"):
        codec.encode_output(place_order)  # type: ignore[arg-type]


def test_encode_output_when_int_exceeds_avro_long_raises_encode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    output = dataclasses.replace(full_output, sequence=2**63)
    with pytest.raises(EncodeError) as info:
        codec.encode_output(output)
    assert info.value.__cause__ is not None


def test_encode_output_when_required_field_is_none_raises_encode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    trade = dataclasses.replace(full_output.trades[0], price=None)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        codec.encode_output(dataclasses.replace(full_output, trades=(trade,)))


def test_encode_output_when_list_holds_wrong_event_raises_encode_error(
    codec: Codec, full_output: EngineOutput
) -> None:
    output = dataclasses.replace(full_output, trades=full_output.balance_updates)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        codec.encode_output(output)


def test_encode_command_when_enum_field_holds_unknown_symbol_raises_encode_error(
    codec: Codec, place_order: PlaceOrder
) -> None:
    command = dataclasses.replace(place_order, side="SIDEWAYS")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        codec.encode_command(command)


def test_decode_command_when_built_through_the_fast_path_is_a_real_frozen_command() -> None:
    import dataclasses

    from engine.commands import CancelOrder as Cancel
    from engine.commands import PlaceOrder as Place
    from engine.enums import OrderType as OT
    from engine.enums import Side as S
    from engine.enums import StpMode as Stp
    from engine.enums import TimeInForce as Tif
    from exchange.codec import Codec as C

    codec = C()
    place = Place(
        command_id=7,
        timestamp_ms=1,
        order_id=7,
        user_id=2,
        symbol="BTC_USDT",
        side=S.SELL,
        order_type=OT.LIMIT,
        time_in_force=Tif.IOC,
        post_only=False,
        price=5,
        quantity=3,
        client_order_id="c-1",
        stp_mode=Stp.EXPIRE_BOTH,
    )
    cancel = Cancel(command_id=8, timestamp_ms=1, user_id=2, symbol="BTC_USDT", order_id=7)

    for original in (place, cancel):
        decoded = codec.decode_command(
            codec.encode_command(original), command_id=original.command_id
        )
        assert type(decoded) is type(original)
        assert decoded == original and hash(decoded) == hash(original)
        assert dataclasses.replace(decoded) == original
        with pytest.raises(dataclasses.FrozenInstanceError):
            decoded.user_id = 99  # type: ignore[misc]
