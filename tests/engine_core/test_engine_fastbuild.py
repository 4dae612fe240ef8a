"""engine.fastbuild: the one fast constructor of frozen slotted dataclasses (engine and codec)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engine.commands import PlaceOrder
from engine.errors import InvariantError
from engine.events import BalanceUpdated
from engine.fastbuild import positional_constructor, slot_twin


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


def test_positional_constructor_when_names_match_builds_an_equal_instance() -> None:
    build = positional_constructor(BalanceUpdated, ("user_id", "asset", "available", "locked"))
    built = build(1, "BTC", 2, 3)
    assert type(built) is BalanceUpdated
    assert built == BalanceUpdated(user_id=1, asset="BTC", available=2, locked=3)


def test_positional_constructor_when_names_out_of_order_raises_at_build_time() -> None:
    with pytest.raises(InvariantError, match="BalanceUpdated"):
        positional_constructor(BalanceUpdated, ("asset", "user_id", "available", "locked"))


def test_slot_twin_when_class_validates_in_post_init_is_none() -> None:
    assert slot_twin(_Checked) is None
    assert slot_twin(PlaceOrder) is not None
