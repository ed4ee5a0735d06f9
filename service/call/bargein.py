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
from service.call.playback import HeardPosition
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
        queued at the provider is stale, so flush it (if anything is). No cancel or truncate (the
        model did that). Counted as a barge-in either way: real-time paced output often has nothing
        left to flush."""
        p = self._p
        started = p.clock()
        positions = await p.bot.flush() if p.bot.playing else []
        self._counted(started, positions[0] if positions else None)

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
        self._counted(started, positions[0] if positions else None, reaction)

    def _counted(self, started: float, first: HeardPosition | None, reaction: float | None = None) -> None:
        """Count, measure and log one barge-in (``reaction``: event -> provider flush sent)."""
        p = self._p
        reaction = p.clock() - started if reaction is None else reaction
        p.stats.barge_ins += 1
        p.stats.barge_in_reactions_ms.append(reaction * 1000)
        metrics.BARGE_INS.inc()
        metrics.BARGE_IN_REACTION_SECONDS.observe(reaction)
        log.info("call.barge_in", item_id=first.item_id if first else "", heard_ms=first.heard_ms if first else 0,
                 sent_ms=first.sent_ms if first else 0, reaction_ms=round(reaction * 1000, 3))
        if p.phase.accepts("barge_in"):  # not once playback has drained (listening again)
            p.phase.fire("barge_in")
