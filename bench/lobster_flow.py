"""A real NASDAQ order flow (LOBSTER) as the REST requests a trading bot would send.

The LOBSTER message file (``../shared/data/lobster/``; see the README beside it) lists every
event of a trading day in time order: ``time, type, order id, size, price, direction``. This
module turns it into the exchange's REST calls, one for one and in log order:

* type 1 (new limit order) -> ``POST /api/v1/order/create``: a GTC ``LIMIT`` order on
  ``BTC_USDT`` with ``client_order_id`` ``<prefix>-<lobster id>``;
* type 3 (deletion) of an order created earlier in the flow -> ``POST /api/v1/order/cancel``
  of that order, by the same ``client_order_id`` (a deletion of an order from before the file
  starts is skipped);
* every other type (partial cancellation, executions, halts) -> nothing: those happen inside
  the exchange (a LOBSTER execution is our engine matching crossing orders).

Scaling: a LOBSTER price is dollars x 10,000, so ``2238100`` is ``223.81`` (two decimals,
the symbol's tick; LOBSTER prices are whole cents); a size in shares becomes
``shares / 1000`` BTC (five decimals, the symbol's step; one share is ``0.00100``). Direction
1 is a buy, -1 a sell. Each LOBSTER order id belongs to one of ``users`` users (``first_user``,
``first_user + 1``, ...; by ``order id % users``), and :func:`funding_calls` deposits enough
of both assets for each of them to rest the whole day's orders (send them first).

A bot knows the id the exchange answered for each of its orders and cancels by it:
:func:`by_order_id` rewrites a cancel that way (``bench/soak.py`` does, with the ``order_id``
of the create's answer). By ``client_order_id`` the gateway finds only open orders, so a cancel
of an order that has already filled waits out the gateway's whole lookup (1 s) before its 404.

Everything here is pure and deterministic (no clock, no I/O but reading the file), so a test
can replay a prefix of the day and know exactly what was sent. Run it to print the first
calls: ``.venv/bin/python bench/lobster_flow.py [--limit N]``.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

DEFAULT_MESSAGES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "lobster"
    / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
)
"""The AMZN day, as the repository sits next to ``shared/`` on the team's machines."""

SYMBOL = "BTC_USDT"
DEFAULT_USERS = 10
DEFAULT_FIRST_USER = 900_001  # far from the load generator's users 1..N
# Per user: far more than the day's orders can lock (about 2,800 orders of 0.1 BTC each).
FUNDING = {"USDT": "100000000", "BTC": "1000000"}

NEW_LIMIT_ORDER = 1
DELETION = 3

CREATE_PATH = "/api/v1/order/create"
CANCEL_PATH = "/api/v1/order/cancel"
DEPOSIT_PATH = "/api/v1/deposit"

CallKind = Literal["deposit", "create", "cancel"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LobsterMessage:
    """One row of a LOBSTER message file."""

    index: int  # 0-based row number in the file
    time_s: float  # seconds after midnight
    kind: int  # event type, 1..7
    order_id: int
    size: int  # shares
    price: int  # dollars x 10,000
    direction: int  # 1 buy, -1 sell


@dataclass(frozen=True, slots=True, kw_only=True)
class RestCall:
    """One REST request: ``POST path`` with JSON ``body``."""

    kind: CallKind
    path: str
    body: dict[str, object]
    message_index: int | None = None  # the LOBSTER row it comes from (None: funding)


def read_messages(path: str | Path = DEFAULT_MESSAGES) -> Iterator[LobsterMessage]:
    """The rows of a LOBSTER message file, in file order."""
    with Path(path).open(newline="") as f:
        for index, row in enumerate(csv.reader(f)):
            yield LobsterMessage(
                index=index,
                time_s=float(row[0]),
                kind=int(row[1]),
                order_id=int(row[2]),
                size=int(row[3]),
                price=int(row[4]),
                direction=int(row[5]),
            )


def price_text(lobster_price: int) -> str:
    """Dollars x 10,000 -> a BTC_USDT price with two decimals (``2238100`` -> ``223.81``)."""
    return str((Decimal(lobster_price) / 10_000).quantize(Decimal("0.01")))


def quantity_text(shares: int) -> str:
    """Shares -> BTC with five decimals, 1,000 shares per BTC (``21`` -> ``0.02100``)."""
    return str((Decimal(shares) / 1_000).quantize(Decimal("0.00001")))


def user_of(lobster_order_id: int, users: int, first_user: int = DEFAULT_FIRST_USER) -> int:
    return first_user + lobster_order_id % users


def funding_calls(
    users: int = DEFAULT_USERS, first_user: int = DEFAULT_FIRST_USER
) -> list[RestCall]:
    """One deposit per user and asset, enough for the whole day; send these first."""
    return [
        RestCall(
            kind="deposit",
            path=DEPOSIT_PATH,
            body={"user_id": user, "asset": asset, "amount": amount},
        )
        for user in range(first_user, first_user + users)
        for asset, amount in FUNDING.items()
    ]


def order_calls(
    messages: Iterable[LobsterMessage],
    *,
    users: int = DEFAULT_USERS,
    first_user: int = DEFAULT_FIRST_USER,
    prefix: str = "lob",
) -> Iterator[RestCall]:
    """The creates and cancels for ``messages``, in order (see the module docstring).

    ``prefix`` starts every ``client_order_id``; give each replay of the same day its own
    (e.g. ``r2``) so a cancel never names an order of an earlier replay.
    """
    open_orders: set[int] = set()
    for m in messages:
        if m.kind == NEW_LIMIT_ORDER:
            if m.order_id in open_orders:
                continue  # a LOBSTER id is never reused; if it were, keep the first order
            open_orders.add(m.order_id)
            yield RestCall(
                kind="create",
                path=CREATE_PATH,
                body={
                    "user_id": user_of(m.order_id, users, first_user),
                    "symbol": SYMBOL,
                    "side": "BUY" if m.direction == 1 else "SELL",
                    "order_type": "LIMIT",
                    "price": price_text(m.price),
                    "quantity": quantity_text(m.size),
                    "time_in_force": "GTC",
                    "client_order_id": f"{prefix}-{m.order_id}",
                },
                message_index=m.index,
            )
        elif m.kind == DELETION and m.order_id in open_orders:
            open_orders.discard(m.order_id)
            yield RestCall(
                kind="cancel",
                path=CANCEL_PATH,
                body={
                    "user_id": user_of(m.order_id, users, first_user),
                    "symbol": SYMBOL,
                    "client_order_id": f"{prefix}-{m.order_id}",
                },
                message_index=m.index,
            )


def by_order_id(call: RestCall, order_id: str) -> RestCall:
    """The cancel ``call`` naming its order by ``order_id`` (the create's answer) instead."""
    if call.kind != "cancel":
        raise ValueError(f"only a cancel names an order, not a {call.kind}")
    body = {"user_id": call.body["user_id"], "symbol": call.body["symbol"], "order_id": order_id}
    return RestCall(kind="cancel", path=call.path, body=body, message_index=call.message_index)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print the REST calls of a LOBSTER day.")
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES)
    parser.add_argument("--limit", type=int, default=10, help="print this many order calls")
    args = parser.parse_args()
    for call in funding_calls():
        print(call.path, json.dumps(call.body))
    for n, call in enumerate(order_calls(read_messages(args.messages))):
        if n >= args.limit:
            break
        print(call.path, json.dumps(call.body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
