"""The per-key token buckets (gateway.auth.ratelimit), on a clock the test moves."""

from __future__ import annotations

from gateway.auth.ratelimit import RateLimiter, RateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_order_limit_when_burst_exceeds_it_refuses_with_retry_after_until_a_token_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(orders_per_second=50, requests_per_minute=0), clock)
    assert [limiter.check("a", True) for _ in range(50)] == [None] * 50
    assert limiter.check("a", True) == 1  # whole seconds, at least 1
    assert limiter.check("b", True) is None  # per key
    assert limiter.check("a", False) is None  # reads do not count against the order limit
    clock.now += 0.019  # under 1/50 s: not yet a whole token
    assert limiter.check("a", True) == 1
    clock.now += 0.002
    assert limiter.check("a", True) is None
    assert limiter.check("a", True) == 1


def test_request_limit_when_exceeded_refuses_every_request_and_refused_ones_take_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(orders_per_second=0, requests_per_minute=6), clock)
    assert [limiter.check("a", i % 2 == 0) for i in range(6)] == [None] * 6
    assert limiter.check("a", False) == 10  # one token a 10 s
    assert limiter.check("a", True) == 10
    clock.now += 9.0
    assert limiter.check("a", False) == 1  # refused requests took nothing: 0.9 token now
    clock.now += 1.0
    assert limiter.check("a", False) is None
    clock.now += 3_600.0  # refills to the limit, never beyond
    assert [limiter.check("a", False) for _ in range(7)] == [None] * 6 + [10]


def test_both_limits_when_one_bucket_is_empty_take_no_token_from_the_other() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(orders_per_second=1, requests_per_minute=3), clock)
    assert limiter.check("a", True) is None  # order bucket now empty, request bucket 2
    assert limiter.check("a", True) == 1
    assert limiter.check("a", True) == 1
    assert [limiter.check("a", False) for _ in range(3)] == [None, None, 20]
