"""The process-wide ``Gateway``: settings, the Redis state store, the escalation outbox and its
delivery worker, the registry of active calls and the draining flag. Shared by the app, the provider
routes, the call side work and the lifecycle; it imports none of them (no import cycles)."""

from __future__ import annotations

import asyncio
import json
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
    tool_runner: Any = None  # service.tools.runner.ToolRunner, created on the first call with a tools file
    prewarm_pool: Any = None  # service.realtime.prewarm.PrewarmPool, created on the first voice webhook
    overflowed_recently: dict[str, float] = field(default_factory=dict)  # calls told "try later" (bounded)
    _prices: dict[str, dict[str, float]] | None = None  # service.realtime.prices, loaded on first use
    _background: list[asyncio.Task[Any]] = field(default_factory=list)
    calls_changed: asyncio.Event = field(default_factory=asyncio.Event)

    escalated_recently: dict[str, float] = field(default_factory=dict)
    escalation_records: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # bounded: remember_record
    agent_machines: dict[str, int] = field(default_factory=dict)  # call -> transfer step a voicemail answered
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

    def remember_record(self, call_id: str, body: bytes) -> None:
        """Keep the call's escalation record body (bounded: 1,000 calls, ~5 KB each) for the warm
        transfer's briefing when it is asked on this replica; other replicas read it from Redis."""
        self.escalation_records[call_id] = (time.time(), body)
        if len(self.escalation_records) > 1000:
            for key in sorted(self.escalation_records, key=lambda c: self.escalation_records[c][0])[:100]:
                self.escalation_records.pop(key, None)

    def mark_agent_machine(self, call_id: str, step: int) -> None:
        """A voicemail answered transfer step ``step`` of this call (bounded: 1,000 calls)."""
        self.agent_machines[call_id] = step
        while len(self.agent_machines) > 1000:
            self.agent_machines.pop(next(iter(self.agent_machines)))

    def returned_to_bot(self, call_id: str) -> None:
        """A failed transfer brought the call back to the bot: it is no longer escalated here."""
        self.escalated_recently.pop(call_id, None)

    async def escalation_payload(self, call_id: str) -> dict[str, Any] | None:
        """The call's escalation record payload: local memory, then the call hash in Redis; None when
        unknown or unreadable (the transfer then goes on without a briefing)."""
        local = self.escalation_records.get(call_id)
        body: Any = local[1] if local else None
        if body is None and self.state_store is not None and call_id:
            try:
                body = await asyncio.wait_for(
                    self.state_store.redis.hget(self.state_store.keys.call(call_id), "escalation_record"), timeout=2.0)
            except Exception as error:
                log.warning("transfer.record_lookup_failed", call_id=call_id, error=repr(error)[:200])
                return None
        if not body:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            log.warning("transfer.record_unreadable", call_id=call_id)
            return None
        return payload if isinstance(payload, dict) else None

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
        """Did this call escalate? Local memory first, then Redis (another replica may have served it).
        A call a failed transfer brought back to the bot after this replica saw it escalate is not
        escalated any more (``transfer_returned_at`` in the call hash is later than the local mark)."""
        if call_id in self.escalated_recently:
            return not await self._returned_since(call_id, self.escalated_recently[call_id])
        if self.state_store is None or not call_id:
            return False
        try:
            snapshot = await asyncio.wait_for(self.state_store.load_call(call_id), timeout=2.0)
            status = snapshot.fields.get("escalation_status", "none") if snapshot is not None else "none"
            return status not in ("", "none", "returned")
        except Exception as error:
            log.warning("state.escalation_lookup_failed", call_id=call_id, error=repr(error))
            return False

    async def _returned_since(self, call_id: str, escalated_at: float) -> bool:
        if self.state_store is None:
            return False
        try:
            value = await asyncio.wait_for(
                self.state_store.redis.hget(self.state_store.keys.call(call_id), "transfer_returned_at"), timeout=2.0)
            return value is not None and float(value) >= escalated_at
        except Exception as error:  # Redis down: trust the local memory (transfer, as before)
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
