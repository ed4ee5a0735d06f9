"""Barge-in: the caller talks while the bot's audio plays (docs/models/realtime.md, "Barge-in";
docs/providers/twilio.md, "Marks and clear").

Guarantees: the provider is flushed first (one send, before anything else is awaited), then the
active reply is cancelled and every item the caller had started to hear is truncated at exactly the
heard position from the playback ledger; items never started are cut to 0 ms. A full-duplex model
that yields by itself only gets the flush (it cancels and truncates on its own side).
"""

from __future__ import annotations

import structlog

from service import metrics
from service.call.parts import CallParts
from service.realtime import events as rt

log = structlog.get_logger(__name__)


class BargeIn:
    """Reacts to caller speech for one call; stateless beyond ``CallParts``."""

    def __init__(self, parts: CallParts) -> None:
        self._p = parts

    async def speech_started(self, event: rt.SpeechStarted) -> None:
        self._p.observer.caller_speech_started(event.audio_start_ms)
        if self._p.filler.active:  # the caller talks: the filler's wait is over (it clears its clip)
            await self._p.filler.stop("caller_speech")
        await self.interrupt()

    async def output_yielded(self) -> None:
        """A full-duplex model stopped talking because the caller talked over it: whatever is still
        queued at the provider is stale, so flush it. No cancel or truncate (the model did that)."""
        if self._p.bot.playing:
            await self._p.bot.flush()
            self._p.phase.fire("barge_in")

    async def interrupt(self) -> None:
        """Flush the provider first, then cancel the reply and truncate each item at what was heard.
        With nothing playing, only a reply still generating is cancelled (its deltas dropped)."""
        p = self._p
        started = p.clock()
        positions = await p.bot.flush() if p.bot.playing else None
        reaction = p.clock() - started
        if (response := p.replies.drop_active()) is not None:
            await p.send_model(p.dialect.response_cancel(response))
        if positions is None:
            return
        for cut in (c for c in positions if c.cut):
            await p.send_model(p.dialect.item_truncate(cut.item_id, cut.heard_ms))
            p.stats.truncates += 1
            p.observer.bot_truncated(cut.item_id, cut.heard_ms, cut.sent_ms)
            p.history.shorten(cut.item_id, cut.heard_ms, cut.sent_ms)
        p.stats.barge_ins += 1
        p.stats.barge_in_reactions_ms.append(reaction * 1000)
        metrics.BARGE_INS.inc()
        metrics.BARGE_IN_REACTION_SECONDS.observe(reaction)
        log.info("call.barge_in", item_id=positions[0].item_id, heard_ms=positions[0].heard_ms,
                 sent_ms=positions[0].sent_ms, reaction_ms=round(reaction * 1000, 3))
        p.phase.fire("barge_in")
