"""The one poll-until helper of the tests: wait for a condition, never for a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``check`` every ``interval_s`` until it holds; return what it returned.

    A check holds when it returns without raising AssertionError and its result is not
    ``False``: both ``lambda: x == y`` and assert-style checks (which return None) work.
    At the deadline the last AssertionError is raised, or one naming ``what``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result is not False:
                return result
            failure: AssertionError = AssertionError(f"timed out waiting for {what}")
        except AssertionError as e:
            failure = e
        if time.monotonic() >= deadline:
            raise failure
        time.sleep(interval_s)


async def eventually_async(
    check: Callable[[], T],
    timeout_s: float = 30.0,
    interval_s: float = 0.01,
    what: str = "condition",
) -> T:
    """:func:`eventually` for coroutines: the event loop runs while it waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result is not False:
                return result
            failure: AssertionError = AssertionError(f"timed out waiting for {what}")
        except AssertionError as e:
            failure = e
        if time.monotonic() >= deadline:
            raise failure
        await asyncio.sleep(interval_s)
