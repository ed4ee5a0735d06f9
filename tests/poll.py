"""The one bounded poll for tests, for conditions that expose no event to wait on (Redis state, a
subprocess's socket, transport flags). Prefer waiting on an event where one exists."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0,
                     interval: float = 0.01, what: str = "condition") -> None:
    """Re-check ``check()`` (sync or async) every ``interval`` s until it holds; AssertionError
    naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


def wait_until_sync(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05,
                    what: str = "condition") -> None:
    """``wait_until`` for synchronous code (fixtures starting subprocesses)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)
