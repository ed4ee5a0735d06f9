"""The call's side of the provider media stream: typed provider events into the call
(docs/providers/twilio.md, "Marks and clear", and each carrier's page).

Guarantees: caller audio is forwarded in arrival order (``forward_media_now``/``mark_echoed_now``
run without a task switch when nothing earlier is waiting, see ``ProviderPump``); a playback marker
echo that drains playback after the hand-off line starts the transfer; a refused transition is
reported through ``refused`` and the call goes on; more than ``max_malformed`` malformed frames end
the call with 1008.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from service import metrics
from service.call.handoff import HandoffState
from service.call.legs import CallerLeg
from service.call.machine import InvalidTransition
from service.call.parts import CallParts
from service.providers import base as pv

log = structlog.get_logger(__name__)


class ProviderSide:
    """``playback_drained`` is awaited when the caller has heard everything sent (``Escalating``)."""

    def __init__(self, parts: CallParts, dialect: pv.TelephonyDialect, caller: CallerLeg, *,
                 playback_drained: Callable[[], Awaitable[None]],
                 refused: Callable[[InvalidTransition, str], None], max_malformed: int = 50) -> None:
        self._p = parts
        self.dialect = dialect
        self._caller = caller
        self._drained = playback_drained
        self._refused = refused
        self._max_malformed = max_malformed

    def parse(self, message: str | bytes | memoryview) -> pv.TelephonyEvent | pv.ProtocolError:
        """The provider dialect's typed event for one frame, or the ``ProtocolError`` it raised."""
        try:
            return self.dialect.parse(message)
        except pv.ProtocolError as error:
            return error

    def forward_media_now(self, payload: bytes, received: float) -> bool:
        """Inbound hot path without a task switch (``CallerLeg.forward_now``). Callers guarantee
        order: nothing received earlier is still waiting."""
        return self._caller.forward_now(payload, received)

    def mark_echoed_now(self, name: str) -> bool:
        """A playback marker echo handled without awaiting (same ordering contract as
        ``forward_media_now``). False, with nothing done, once the hand-off line has been spoken:
        its last echo starts the transfer, which must be awaited through ``on_event``."""
        if self._p.closing:
            return True  # nothing to do once the call is ending
        if self._p.handoff.state is HandoffState.SPOKEN:
            return False
        try:
            self._mark_echoed(name)
        except InvalidTransition as error:
            self._refused(error, "provider")
        return True

    async def on_event(self, event: pv.TelephonyEvent | pv.ProtocolError, received: float) -> None:
        """Handle one parsed provider frame (``received``: its ``perf_counter`` arrival time)."""
        if self._p.closing:
            return
        try:
            await self._event(event, received)
        except InvalidTransition as error:
            self._refused(error, "provider")

    async def _event(self, event: pv.TelephonyEvent | pv.ProtocolError, received: float) -> None:
        p = self._p
        if isinstance(event, pv.MediaReceived):
            await self._caller.forward(event.payload, received)
        elif isinstance(event, pv.MarkEchoed):
            if self._mark_echoed(event.name):
                await self._drained()  # after the hand-off line: transfer now
        elif isinstance(event, pv.DtmfReceived):
            p.stats.dtmf += 1
            log.info("call.dtmf", count=p.stats.dtmf)
            await p.send_model(p.dialect.user_text_item(f"[The caller pressed the keypad key {event.digit}]"))
            p.observer.dtmf(event.digit)
        elif isinstance(event, pv.StreamStopped):
            await p.end("caller hung up", 1000)
        elif isinstance(event, pv.ClearAcknowledged):
            pass  # the carrier confirmed our flush (Plivo, Vonage); the ledger counted it cleared when sent
        elif isinstance(event, pv.ProtocolError):
            p.stats.malformed_frames += 1
            metrics.MALFORMED_FRAMES.labels(self.dialect.name).inc()
            log.warning("provider.malformed_frame", error=str(event), count=p.stats.malformed_frames)
            if p.stats.malformed_frames >= self._max_malformed:
                p.outcome = "error"
                await p.end("too many malformed frames", 1008)
        else:  # a second handshake, or a provider notice the core does not act on
            log.warning("provider.unexpected_event", event_type=type(event).__name__)

    def _mark_echoed(self, name: str) -> bool:
        """Apply an echo to the ledger; True if it drained playback (the caller heard everything)."""
        if self._p.bot.echoed(name):
            self._p.phase.fire("playback_done")
            return True
        return False
