"""Graceful drain on SIGTERM: stop taking calls, let active calls finish, hand off the rest, exit 0.

Sequence (guaranteed order): ``/readyz`` turns 503 and new webhooks are redirected at once; active
calls run until they end or ``CALLBRIDGE_DRAIN_TIMEOUT`` passes; calls still active then are let go
to resume on another replica (``CALLBRIDGE_DRAIN_MODE=resume``, the default, with Redis: their stream
ends and the provider's after-stream reconnects them, docs/resume.md) or handed to the human queue
(``handoff``, or without Redis: an escalation with trigger ``drain``), never dropped; state writes and the
escalation outbox are flushed; only then is uvicorn told to exit. A second SIGTERM/SIGINT exits at
once (uvicorn's own force-exit).
"""

from __future__ import annotations

import asyncio
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI

from service import metrics
from service.state.resume import DRAINED

log = structlog.get_logger(__name__)


async def drain_gateway(app: FastAPI) -> None:
    gateway = app.state.gateway
    gateway.draining = True
    if gateway.state_store is not None:  # the heartbeat tells the console's fleet view
        gateway.state_store.draining = True
    metrics.DRAINING.set(1)
    started = time.monotonic()
    timeout = gateway.settings.drain_timeout
    log.info("drain.started", active_calls=len(gateway.calls), timeout_s=timeout)
    while gateway.calls and time.monotonic() - started < timeout:
        gateway.calls_changed.clear()
        try:
            await asyncio.wait_for(gateway.calls_changed.wait(), timeout=max(0.0, timeout - (time.monotonic() - started)))
        except TimeoutError:
            break
    remaining = list(gateway.calls.values())
    settings = gateway.settings
    resume = settings.drain_mode == "resume" and settings.resume_calls and gateway.state_store is not None
    for session in remaining:
        try:
            if resume:  # the provider's after-stream reconnects it to another replica (docs/resume.md)
                await session.let_go(DRAINED)
            else:
                await session.hand_off(reason="replica draining")
        except Exception as error:  # one call's failure never blocks the drain of the others
            log.error("drain.handoff_failed", call_id=getattr(session, "call_id", ""), error=repr(error))
    if remaining:
        deadline = time.monotonic() + 30
        while gateway.calls and time.monotonic() < deadline:
            gateway.calls_changed.clear()
            try:
                await asyncio.wait_for(gateway.calls_changed.wait(), timeout=deadline - time.monotonic())
            except TimeoutError:
                break
    log.info("drain.finished", handed_off=len(remaining), waited_s=round(time.monotonic() - started, 2))


def install_drain(server: uvicorn.Server, app: FastAPI) -> None:
    """Make the first SIGTERM/SIGINT drain before uvicorn shuts down."""
    original = server.handle_exit
    state: dict[str, Any] = {"task": None}

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        if state["task"] is not None:
            original(sig, frame)  # second signal: let uvicorn force its exit
            return
        loop = asyncio.get_event_loop()

        async def _drain_then_exit() -> None:
            try:
                await drain_gateway(app)
            finally:
                server.should_exit = True

        state["task"] = loop.create_task(_drain_then_exit())

    server.handle_exit = handle_exit  # type: ignore[method-assign]
