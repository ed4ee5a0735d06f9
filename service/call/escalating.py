"""The escalation flow: from the decision to the transfer (docs/escalation.md, docs/transfer.md).

Drives the ``Handoff`` state object: one escalation per call; the hand-off line is asked of the
model once no reply is active (again of a replacement session), and the transfer starts once the
caller has heard the line (playback drained), or at once without a model, or when the guard timer
(20 s) fires. The transfer is REST first when the provider offers it, else the end of the stream
(the provider's after-stream markup transfers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from service import metrics
from service.call.handoff import HandoffState
from service.call.observer import EscalationRequest
from service.call.parts import CallParts
from service.call.phase import CallState
from service.escalation import defaults as escalation_defaults

log = structlog.get_logger(__name__)

HANDOFF_PLAYBACK_GUARD_S = 20.0


class Escalating:
    """``request_response(instructions)`` asks the model for a reply (``Responses.request``);
    ``rest_transfer()`` transfers over the provider's REST API, True if it did."""

    def __init__(self, parts: CallParts, request_response: Callable[[str | None], Awaitable[None]], *,
                 handoff_line: str = "", rest_transfer: Callable[[], Awaitable[bool]] | None = None) -> None:
        self._p = parts
        self._request = request_response
        self._line = handoff_line or escalation_defaults.HANDOFF_LINE
        self._rest_transfer = rest_transfer
        self._guard: asyncio.TimerHandle | None = None

    async def escalate(self, request: EscalationRequest) -> None:
        """Record, say the hand-off line, then transfer. Later calls (and calls once the call is
        ending) do nothing. A guard timer transfers anyway if the line never finishes."""
        p = self._p
        if p.handoff.state is not HandoffState.NONE or not p.phase.accepts("escalate"):
            return
        p.phase.fire("escalate")
        p.handoff.escalate(request)
        p.outcome = "escalated"
        metrics.ESCALATIONS.labels(request.trigger).inc()
        log.info("call.escalating", trigger=request.trigger, reason=request.reason)
        p.observer.escalation_started(request)
        if p.link.send is None:
            await self.transfer()
            return
        loop = asyncio.get_running_loop()
        self._guard = loop.call_later(HANDOFF_PLAYBACK_GUARD_S, lambda: loop.create_task(self.transfer()))
        if not p.replies.busy:
            await self.speak_line()

    async def speak_line(self) -> None:
        self._p.handoff.speak()
        self._p.replies.pending = None
        await self._request(f'Say this to the caller, in the caller\'s language, and nothing else: "{self._line}"')

    async def session_ready(self) -> None:
        """A replacement session is configured: it says a line that was never spoken."""
        if self._p.handoff.state is HandoffState.PENDING and not self._p.replies.busy:
            await self.speak_line()

    async def response_done(self, response_id: str) -> bool:
        """After a ``response.done``: True if a hand-off is under way (no other reply may start)."""
        p = self._p
        if p.handoff.response_done(response_id):  # the line has been generated
            if not p.bot.playing:
                await self.transfer()
            return True
        if p.handoff.state is HandoffState.PENDING:
            await self.speak_line()
        return p.handoff.state is not HandoffState.NONE

    async def playback_drained(self) -> None:
        """The caller heard everything sent: after the line, that starts the transfer."""
        if self._p.handoff.state is HandoffState.SPOKEN:
            await self.transfer()

    async def transfer(self) -> None:
        """End the media stream so the provider runs its transfer (or transfer over REST first)."""
        p = self._p
        if p.closing or not p.handoff.transfer():
            return
        self.cancel_guard()
        via = "stream_end"
        if self._rest_transfer is not None:
            try:
                via = "rest" if await self._rest_transfer() else "stream_end"
            except Exception as error:  # fall back to ending the stream: the provider still transfers
                log.warning("call.rest_transfer_failed", error=repr(error)[:300])
        request = p.handoff.request
        log.info("call.transfer", trigger=request.trigger if request else "", via=via)
        await p.end("transferred to a human", 1000)

    async def hand_off(self, reason: str) -> None:
        """Drain: a call still active when the drain timeout passes goes to the human queue."""
        if self._p.closing:
            return
        if self._p.phase.state is CallState.ESCALATING:
            await self.transfer()
        else:  # the hand-off line plays first; the guard timer bounds the wait
            await self.escalate(EscalationRequest(trigger="drain", reason=reason))

    async def model_unavailable(self, reason: str, action: str) -> None:
        """No model session for this call (``reason``: cap, connect_failed, quota, reconnect_failed). The
        caller is never just dropped: ``human`` escalates (trigger ``model_unavailable``; with no model
        to say a hand-off line the transfer starts at once), ``message`` ends the stream with outcome
        ``overflow`` so the provider plays the overflow message."""
        p = self._p
        if p.closing:
            return
        metrics.MODEL_UNAVAILABLE.labels(reason).inc()
        log.warning("call.model_unavailable", reason=reason, action=action)
        if p.link.machine.accepts("lost"):
            p.link.lost()
        if action == "human":
            await self.escalate(EscalationRequest(trigger="model_unavailable", reason=f"no model session ({reason})"))
            await self.transfer()  # at once: escalate() only waits for a line a model would say
        else:
            p.outcome = "overflow"
            await p.end("model unavailable", 1000)

    def cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
