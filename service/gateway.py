"""The process-wide ``Gateway``: settings, the Redis state store, the escalation outbox and its
delivery worker, the registry of active calls and the draining flag. Shared by the app, the provider
routes, the call side work and the lifecycle; it imports none of them (no import cycles)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from service import metrics
from service.config import Settings
from service.console.auth import agent_link, agent_link_key
from service.realtime.prices import load_prices, prices_for, usage_cost_usd

log = structlog.get_logger(__name__)


class ActiveCall(Protocol):
    """What the gateway needs of a running call (``service.call.session.CallSession``)."""

    async def hand_off(self, reason: str) -> None: ...

    async def let_go(self, reason: str) -> None: ...


@dataclass
class Gateway:
    """Process-wide state shared by every call on this replica."""

    settings: Settings
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    calls: dict[str, ActiveCall] = field(default_factory=dict)
    state_store: Any = None  # service.state.store.StateStore, when Redis is configured
    outbox: Any = None  # service.escalation.outbox.Outbox
    delivery_worker: Any = None
    stream_guard: Any = None  # service.providers.streamguard.StreamGuard, created on the first stream
    model_leases: Any = None  # service.state.model_leases.ModelLeases, created on the first call
    prewarm_pool: Any = None  # service.realtime.prewarm.PrewarmPool, created on the first voice webhook
    overflowed_recently: dict[str, float] = field(default_factory=dict)  # calls told "try later" (bounded)
    _prices: dict[str, dict[str, float]] | None = None  # service.realtime.prices, loaded on first use
    _background: list[asyncio.Task[Any]] = field(default_factory=list)
    calls_changed: asyncio.Event = field(default_factory=asyncio.Event)

    escalated_recently: dict[str, float] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)  # callables (kind, fields) -> None: demo/tools

    def emit(self, kind: str, **fields: Any) -> None:
        """Tell in-process listeners (the demo's live transcript) about a call event. Never raises."""
        for listener in self.listeners:
            try:
                listener(kind, fields)
            except Exception as error:
                log.warning("gateway.listener_failed", kind=kind, error=repr(error))

    def mark_escalated(self, call_id: str) -> None:
        """Remember locally (bounded: 10k calls) that a call escalated, for after-stream TwiML."""
        self.escalated_recently[call_id] = time.time()
        if len(self.escalated_recently) > 10_000:
            oldest = sorted(self.escalated_recently, key=self.escalated_recently.__getitem__)[:1000]
            for key in oldest:
                self.escalated_recently.pop(key, None)

    def mark_overflowed(self, call_id: str) -> None:
        """Remember locally (bounded: 10k calls) that a call found no model, for its after-stream answer."""
        self.overflowed_recently[call_id] = time.time()
        if len(self.overflowed_recently) > 10_000:
            for key in sorted(self.overflowed_recently, key=self.overflowed_recently.__getitem__)[:1000]:
                self.overflowed_recently.pop(key, None)

    async def is_overflowed(self, call_id: str) -> bool:
        """Did this call end for want of a model session (outcome ``overflow``)? Local memory, then Redis."""
        if call_id in self.overflowed_recently:
            return True
        if self.state_store is None or not call_id:
            return False
        try:
            snapshot = await asyncio.wait_for(self.state_store.load_call(call_id), timeout=2.0)
            return snapshot is not None and snapshot.fields.get("outcome") == "overflow"
        except Exception as error:
            log.warning("state.overflow_lookup_failed", call_id=call_id, error=repr(error)[:200])
            return False

    async def is_escalated(self, call_id: str) -> bool:
        """Did this call escalate? Local memory first, then Redis (another replica may have served it)."""
        if call_id in self.escalated_recently:
            return True
        if self.state_store is None or not call_id:
            return False
        try:
            snapshot = await asyncio.wait_for(self.state_store.load_call(call_id), timeout=2.0)
            status = snapshot.fields.get("escalation_status", "none") if snapshot is not None else "none"
            return status not in ("", "none")
        except Exception as error:
            log.warning("state.escalation_lookup_failed", call_id=call_id, error=repr(error))
            return False

    def agent_link(self) -> Callable[[str], str] | None:
        """The signed, expiring console link for an escalation id (for the webhook record), or None
        when the console is off (no ``CALLBRIDGE_CONSOLE_TOKEN``)."""
        settings = self.settings
        token = settings.console_token.get_secret_value()
        if not token:
            return None
        key = agent_link_key(token, settings.agent_link_secret.get_secret_value())
        return lambda escalation_id: agent_link(settings.public_url, key, escalation_id, time.time(),
                                                settings.agent_link_ttl_s)

    def cost_usd(self, model: str, usage: dict[str, Any]) -> float:
        """What one response's usage cost on ``model``; 0 for a model with no price (logged once)."""
        if self._prices is None:
            self._prices = load_prices(self.settings.prices_file)
        prices = prices_for(self._prices, model)
        return usage_cost_usd(usage, prices) if prices is not None else 0.0

    async def redis_ok(self) -> bool:
        if self.state_store is None:
            return True
        try:
            return bool(await asyncio.wait_for(self.state_store.ping(), timeout=1.0))
        except Exception:
            return False

    def register(self, call_id: str, session: ActiveCall) -> None:
        self.calls[call_id] = session
        metrics.ACTIVE_CALLS.set(len(self.calls))
        self.calls_changed.set()

    def unregister(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        metrics.ACTIVE_CALLS.set(len(self.calls))
        self.calls_changed.set()
