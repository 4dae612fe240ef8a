"""The full invariant check of an :class:`~engine.engine.Engine`: for tests, never the hot path.

Book order, level totals, the order and client-id indexes, statuses, locks against the
ledger, money conservation (balances sum to deposits minus withdrawals), and the user registry
(every balance and order belongs to a known user, every key to a created user). The property and
scenario tests call :func:`check_invariants` after every step. It reads the engine's private
state on purpose: it is the engine's own checker, kept beside it rather than in it.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.engine import Engine
from engine.enums import OrderStatus, OrderType, Side, TimeInForce
from engine.errors import InvariantError
from engine.markets import INT64_MAX

_BUY = Side.BUY
_LIMIT = OrderType.LIMIT
_GTC = TimeInForce.GTC


def check_invariants(engine: Engine) -> None:
    """Every structural and money invariant; for tests after each step, never the hot path.

    Raises InvariantError describing the first violation found.
    """

    def fail(message: str) -> None:
        raise InvariantError(message)

    expected_locked: dict[tuple[int, str], int] = {}
    seen_ids: set[int] = set()
    with_client_id = 0
    for name, market in engine._markets.items():
        book = market.book
        for is_buy, side_book in ((True, book.bids), (False, book.asks)):
            keys = list(side_book.keys())
            if keys != sorted(keys):
                fail(f"{name}: price levels out of order")
            for price, level in side_book.items():
                if level.price != price:
                    fail(f"{name}: level {level.price} filed under {price}")
                if not level.orders:
                    fail(f"{name}: empty level {price}")
                total = 0
                for order_id, o in level.orders.items():
                    if o.order_id != order_id or engine._orders.get(order_id) is not o:
                        fail(f"{name}: order {order_id} missing from the index")
                    if order_id in seen_ids:
                        fail(f"order {order_id} rests twice")
                    seen_ids.add(order_id)
                    if o.symbol != name or o.is_buy is not is_buy or o.price != price:
                        fail(f"order {order_id} is on the wrong book, side or level")
                    if o.is_buy is not (o.side is _BUY):
                        fail(f"order {order_id}: is_buy disagrees with side")
                    if o.remaining <= 0 or o.filled < 0:
                        fail(f"order {order_id}: remaining {o.remaining}, filled {o.filled}")
                    if o.filled + o.remaining != o.quantity:
                        fail(f"order {order_id}: filled + remaining != quantity")
                    expected_status = OrderStatus.PARTIALLY_FILLED if o.filled else OrderStatus.NEW
                    if o.status is not expected_status:
                        fail(f"order {order_id}: status {o.status} with filled {o.filled}")
                    if o.order_type is not _LIMIT or o.time_in_force is not _GTC:
                        fail(f"order {order_id}: only LIMIT GTC orders rest")
                    if o.cumulative_quote < o.filled * market.qptl:
                        fail(f"order {order_id}: cumulative quote below one tick per lot")
                    lock_per_lot = price * market.qptl if is_buy else market.bpl
                    asset = market.quote if is_buy else market.base
                    if o.lock_per_lot != lock_per_lot:
                        fail(f"order {order_id}: lock per lot {o.lock_per_lot}")
                    if o.lock_balance is not engine._ledger.get(o.user_id, asset):
                        fail(f"order {order_id}: lock balance is not the ledger's")
                    if o.base_balance is not engine._ledger.get(
                        o.user_id, market.base
                    ) or o.quote_balance is not engine._ledger.get(o.user_id, market.quote):
                        fail(f"order {order_id}: balance references are stale")
                    key = (o.user_id, asset)
                    expected_locked[key] = expected_locked.get(key, 0) + o.remaining * (
                        lock_per_lot
                    )
                    if o.client_order_id is not None:
                        with_client_id += 1
                        if engine._client_ids.get((o.user_id, o.client_order_id)) is not o:
                            fail(f"order {order_id}: client order id not indexed")
                    if order_id in engine._completed:
                        fail(f"order {order_id} is both open and completed")
                    total += o.remaining
                if total != level.total:
                    fail(f"{name}: level {price} total {level.total}, orders sum to {total}")
        if book.bids and book.asks and book.bids.peekitem(-1)[0] >= book.asks.peekitem(0)[0]:
            fail(f"{name}: book is crossed")
        if type(market.update_id) is not int or market.update_id < 0:
            fail(f"{name}: update id {market.update_id!r}")
    if len(seen_ids) != len(engine._orders):
        fail("the order index holds orders that are not in any book")
    if with_client_id != len(engine._client_ids):
        fail("the client order id index holds stale entries")
    if len(engine._completed) > engine._completed_capacity:
        fail("the completed-order memory is over capacity")

    totals: dict[str, int] = {asset: 0 for asset in engine._assets}
    for b in engine._ledger:
        if b.asset not in totals:
            fail(f"balance in unknown asset {b.asset!r}")
        if b.available < 0 or b.locked < 0:
            fail(f"negative balance: {b!r}")
        if b.locked != expected_locked.get((b.user_id, b.asset), 0):
            fail(
                f"{b!r}: locked should be {expected_locked.get((b.user_id, b.asset), 0)}, "
                "what its open orders need"
            )
        totals[b.asset] += b.available + b.locked
    for key in expected_locked:
        if engine._ledger.get(*key) is None:
            fail(f"open orders lock funds of a missing balance {key}")
    for asset, total in totals.items():
        supply = engine._ledger.supply[asset]
        if total != supply:
            fail(f"{asset}: balances sum to {total}, deposits - withdrawals is {supply}")
        if not 0 <= supply <= INT64_MAX:
            fail(f"{asset}: supply {supply} outside int64")
    if engine._next_trade_id < 1:
        fail("trade ids start at 1")
    _check_users(engine, fail)


def _check_users(engine: Engine, fail: Callable[[str], None]) -> None:
    users = engine._users
    fee_account = engine._fee_account
    created = dict(users.users())
    if users.known != {*created, fee_account}:
        fail("the known-user set is not the created users plus the fee account")
    if fee_account in created:
        fail(f"the fee account {fee_account} was created as a user")
    if created and users.next_user_id <= max(created):
        fail(f"next user id {users.next_user_id} is not above every created user")
    if users.next_user_id < 1 or users.next_user_id == fee_account:
        fail(f"next user id {users.next_user_id} is not a free id")
    for api_key, key in users.api_keys():
        if key.user_id not in created:
            fail(f"api key {api_key!r} belongs to user {key.user_id}, who was never created")
    for b in engine._ledger:
        if not users.is_known(b.user_id):
            fail(f"{b!r} belongs to an unknown user")
    for order in engine._orders.values():
        if not users.is_known(order.user_id):
            fail(f"order {order.order_id} belongs to unknown user {order.user_id}")
