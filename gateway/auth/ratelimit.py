"""Per-key rate limits: order commands per second, all requests per minute (issue #14).

Token buckets, one pair per key: a bucket holds up to ``limit`` tokens and refills at
``limit`` per window (so 50 order commands a second allows a burst of 50, then 50 a second;
6,000 requests a minute a burst of 6,000, then 100 a second). A request takes one token from
each bucket it counts against, or none when one is empty; then ``Retry-After`` is the whole
seconds until that bucket holds a token again. Each gateway limits what it serves (a client
spread over N gateways gets N times the limit, as with any per-node limiter); operators are
exempt (the gate does not ask for them).

Why not the ``limits`` library, which the project would otherwise use: its in-memory storage
expires entries from a timer thread it re-creates every 10 ms, which cost the gateway about
45 us of CPU per request at 2k requests/s over 256 keys (its moving window far more: it
copies every key's list of hits); a token bucket is two numbers per key and a few arithmetic
operations on the event loop, with the clock injected, so the tests control time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_ORDERS_PER_SECOND = 50
DEFAULT_REQUESTS_PER_MINUTE = 6_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """The limits; 0 turns one off."""

    orders_per_second: int = DEFAULT_ORDERS_PER_SECOND
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE


class _Buckets:
    """One bucket per key: ``capacity`` tokens, refilled at ``rate`` tokens a second."""

    __slots__ = ("capacity", "rate", "state")

    def __init__(self, limit: int, window_s: float) -> None:
        self.capacity = float(limit)
        self.rate = limit / window_s
        self.state: dict[str, list[float]] = {}  # key -> [tokens, as of (monotonic s)]

    def level(self, key: str, now: float) -> list[float]:
        """The key's bucket, refilled up to ``now``."""
        bucket = self.state.get(key)
        if bucket is None:
            bucket = self.state[key] = [self.capacity, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.capacity else self.capacity
            bucket[1] = now
        return bucket

    def wait_s(self, bucket: list[float]) -> float:
        return (1.0 - bucket[0]) / self.rate


class RateLimiter:
    """:meth:`check` counts a request of a key, or says how long to wait. Event loop only."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._orders = _Buckets(limits.orders_per_second, 1.0) if limits.orders_per_second else None
        self._requests = (
            _Buckets(limits.requests_per_minute, 60.0) if limits.requests_per_minute else None
        )
        self._clock = clock

    def check(self, api_key: str, order_command: bool) -> int | None:
        """None when the request may go on (one token taken from each of its buckets); else
        ``Retry-After`` in whole seconds (at least 1), and nothing is taken."""
        now = self._clock()
        wait = 0.0
        requests = orders = None
        if self._requests is not None:
            requests = self._requests.level(api_key, now)
            if requests[0] < 1.0:
                wait = self._requests.wait_s(requests)
        if order_command and self._orders is not None:
            orders = self._orders.level(api_key, now)
            if orders[0] < 1.0:
                wait = max(wait, self._orders.wait_s(orders))
        if wait > 0.0:
            return max(1, math.ceil(wait))
        if requests is not None:
            requests[0] -= 1.0
        if orders is not None:
            orders[0] -= 1.0
        return None
