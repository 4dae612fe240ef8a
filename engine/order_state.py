"""The order status state machine, as data.

Theory of operation
-------------------
Every order the engine hears of starts in ``NEW``: a ``PlaceOrder`` that passes validation is
NEW before it touches the book, and one that fails validation goes NEW -> REJECTED without ever
entering the book. From then on only the triggers below move it:

* ``PARTIAL_FILL`` - a trade filled part of what remained (NEW or PARTIALLY_FILLED ->
  PARTIALLY_FILLED; the self-loop is deliberate, one per trade);
* ``FILL``   - a trade filled all that remained (-> FILLED);
* ``CANCEL`` - the owner cancelled it, or self-trade prevention removed it as a maker
  (-> CANCELLED);
* ``EXPIRE`` - its time in force ended it: IOC/MARKET remainder, FOK that cannot fill, or
  self-trade prevention ended it as a taker (-> EXPIRED);
* ``REJECT`` - validation refused it (NEW -> REJECTED).

FILLED, CANCELLED, REJECTED and EXPIRED are terminal: no trigger leaves them. Asking for any
pair not in :data:`TRANSITIONS` is a bug in the caller, so :func:`next_status` raises
:class:`~engine.errors.IllegalTransition` and nothing is changed. The table is the whole truth:
the engine never assigns a status except through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from engine.enums import CompletionReason, OrderStatus
from engine.errors import IllegalTransition


class Trigger(StrEnum):
    PARTIAL_FILL = "PARTIAL_FILL"
    FILL = "FILL"
    CANCEL = "CANCEL"
    EXPIRE = "EXPIRE"
    REJECT = "REJECT"


_S = OrderStatus
_T = Trigger

_TABLE: dict[tuple[OrderStatus, Trigger], OrderStatus] = {
    (_S.NEW, _T.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.NEW, _T.FILL): _S.FILLED,
    (_S.NEW, _T.CANCEL): _S.CANCELLED,
    (_S.NEW, _T.EXPIRE): _S.EXPIRED,
    (_S.NEW, _T.REJECT): _S.REJECTED,
    (_S.PARTIALLY_FILLED, _T.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, _T.FILL): _S.FILLED,
    (_S.PARTIALLY_FILLED, _T.CANCEL): _S.CANCELLED,
    (_S.PARTIALLY_FILLED, _T.EXPIRE): _S.EXPIRED,
}
# Read-only view for everyone else; the private dict is the lookup on the hot path.
TRANSITIONS: Final[Mapping[tuple[OrderStatus, Trigger], OrderStatus]] = MappingProxyType(_TABLE)

TERMINAL: Final[frozenset[OrderStatus]] = frozenset(
    {_S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}
)

# The completion an order reports when it reaches each terminal status.
COMPLETION_REASON: Final[Mapping[OrderStatus, CompletionReason]] = MappingProxyType(
    {
        _S.FILLED: CompletionReason.FILLED,
        _S.CANCELLED: CompletionReason.CANCELLED,
        _S.REJECTED: CompletionReason.REJECTED,
        _S.EXPIRED: CompletionReason.EXPIRED,
    }
)


def next_status(status: OrderStatus, trigger: Trigger) -> OrderStatus:
    """The status ``trigger`` leads to from ``status``; IllegalTransition if the table says no."""
    nxt = _TABLE.get((status, trigger))
    if nxt is None:
        raise IllegalTransition(f"order status {status} has no transition on {trigger}")
    return nxt
