"""Small asyncio helpers shared by every background loop (state writer, outbox, delivery worker,
call tasks). Each is cancel-safe and bounded in time."""

from __future__ import annotations

import asyncio
from typing import Any


def check_cancelled() -> None:
    """Raise ``CancelledError`` if the current task has a pending cancel request that was swallowed.

    Python 3.11's ``asyncio.wait_for`` (inside redis-py and httpx) can swallow a cancellation racing
    with its inner future; background loops call this after such awaits so one ``task.cancel()``
    still stops them.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_set(event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109 (returns False on timeout)
    """Wait until ``event`` is set; False on timeout. Cancel-safe (the flush waits of store and outbox)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


async def cancel_and_wait(task: asyncio.Task[Any], retry_s: float = 0.5, tries: int = 20) -> bool:
    """Cancel ``task`` and wait for it to finish, re-cancelling every ``retry_s``; True once it is done.

    Python 3.11's ``asyncio.wait_for`` (used inside redis-py and httpx) can swallow a cancellation that
    races with its inner future completing, leaving a ``while True`` loop running: a single
    ``task.cancel()`` is therefore not enough to stop a background loop. Bounded: ``tries`` x ``retry_s``.
    """
    for _ in range(tries):
        if task.done():
            return True
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    return task.done()
