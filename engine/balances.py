"""Balances: per user and asset, what is available and what open orders have locked.

Exchange mode, as in exchange-core: an order locks what it could spend when it rests (a BUY
its limit notional in quote, a SELL its quantity in base), fills move funds between the two
users at the maker's price, and cancel or expiry returns exactly what is still locked.

``supply`` per asset is deposits minus withdrawals; the engine keeps it so that money
conservation (``sum(available + locked) == supply``) can be checked at any time, and so that no
single balance or sum can ever leave a signed 64-bit integer (deposits beyond it are refused).
"""

from __future__ import annotations

from collections.abc import Iterator


class Balance:
    """One user's holding of one asset, in minor units. Mutable on purpose: the hot path
    updates it in place, and resting orders keep a direct reference to the ones they use."""

    __slots__ = ("asset", "available", "locked", "user_id")

    def __init__(self, user_id: int, asset: str, available: int = 0, locked: int = 0) -> None:
        self.user_id = user_id
        self.asset = asset
        self.available = available
        self.locked = locked

    def __repr__(self) -> str:
        return (
            f"Balance(user_id={self.user_id}, asset={self.asset!r}, "
            f"available={self.available}, locked={self.locked})"
        )


class Ledger:
    """All balances. A missing balance reads as zero; reads never create one, so a rejected
    command leaves the ledger exactly as it found it."""

    __slots__ = ("_accounts", "supply")

    def __init__(self, assets: list[str]) -> None:
        self._accounts: dict[int, dict[str, Balance]] = {}
        self.supply: dict[str, int] = {asset: 0 for asset in assets}

    def get(self, user_id: int, asset: str) -> Balance | None:
        account = self._accounts.get(user_id)
        return None if account is None else account.get(asset)

    def available(self, user_id: int, asset: str) -> int:
        account = self._accounts.get(user_id)
        if account is None:
            return 0
        balance = account.get(asset)
        return 0 if balance is None else balance.available

    def get_or_create(self, user_id: int, asset: str) -> Balance:
        """Only on paths that have already been accepted (validate, then mutate)."""
        account = self._accounts.get(user_id)
        if account is None:
            account = self._accounts[user_id] = {}
        balance = account.get(asset)
        if balance is None:
            balance = account[asset] = Balance(user_id, asset)
        return balance

    def __iter__(self) -> Iterator[Balance]:
        """Every balance, zero ones included, ordered by (user_id, asset)."""
        for user_id in sorted(self._accounts):
            account = self._accounts[user_id]
            for asset in sorted(account):
                yield account[asset]
