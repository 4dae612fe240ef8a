"""Per-key rate limits: order commands per second, all requests per minute (issue #14).

Sliding-window counters from the ``limits`` library, in memory (each gateway limits what it
serves; a client spread over N gateways gets N times the limit, as with any per-node
limiter). Operators are exempt (the gate does not ask for them).

Why sliding-window *counters* and not ``limits``' exact moving window: its in-memory moving
window keeps one entry per request (up to 6,000 per key for the per-minute limit) and its
expiry thread copies every key's list about a hundred times a second, which cost the
gateway about 200 us of CPU per request at 2k requests/s over 256 keys (bench/gateway.py).
The counter keeps two numbers per key and window, and weights the previous window's count
by how much of it still overlaps: the same limits, with a bounded error at window edges.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

DEFAULT_ORDERS_PER_SECOND = 50
DEFAULT_REQUESTS_PER_MINUTE = 6_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """The limits; 0 turns one off."""

    orders_per_second: int = DEFAULT_ORDERS_PER_SECOND
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE


class RateLimiter:
    """:meth:`check` counts a request of a key and says how long to wait when over a limit."""

    def __init__(self, limits: RateLimits) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._orders: RateLimitItem | None = (
            RateLimitItemPerSecond(limits.orders_per_second) if limits.orders_per_second else None
        )
        self._requests: RateLimitItem | None = (
            RateLimitItemPerMinute(limits.requests_per_minute)
            if limits.requests_per_minute
            else None
        )

    def check(self, api_key: str, order_command: bool) -> int | None:
        """None when the request may go on (and is counted); else ``Retry-After`` seconds.

        A refused request is not counted, so a client that waits as told gets through.
        """
        limiter = self._limiter
        orders = self._orders if order_command else None
        if orders is not None and not limiter.test(orders, "o", api_key):
            return self._retry_after(orders, "o", api_key)
        if self._requests is not None and not limiter.hit(self._requests, "r", api_key):
            return self._retry_after(self._requests, "r", api_key)
        if orders is not None:
            limiter.hit(orders, "o", api_key)  # one thread (the event loop): no race with test
        return None

    def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        reset = self._limiter.get_window_stats(item, *keys).reset_time
        return max(1, math.ceil(reset - time.time()))
