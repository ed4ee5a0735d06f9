"""Bot audio out, and the silences around it (docs/first-words.md).

Sends each chunk of model audio to the caller (``BotLeg``: a playback marker follows every chunk)
and keeps the timings a caller notices: the first words of the call (``FirstWords``), the time from
the end of each caller turn to the bot's first audio (``callbridge_first_audio_seconds``), and the
filler that covers a slow answer (``service.call.filler``): started when the caller's turn ends,
stopped before the first chunk of real audio so the two never overlap.

Guarantees: chunks go out in the order the model sent them; deltas of a reply cancelled by barge-in
are dropped (counted); the filler's ``stop`` (a flush when its clip may still sound) happens before
the chunk is sent, on the same ordered provider socket.
"""

from __future__ import annotations

from service import metrics
from service.call.filler import Filler, NoFiller
from service.call.firstwords import FirstWords
from service.call.parts import CallParts
from service.realtime import events as rt


class Speaking:
    """One call's bot-audio driver; ``filler`` is the call's (``NoFiller`` when off)."""

    def __init__(self, parts: CallParts, filler: Filler | NoFiller, first_words: FirstWords) -> None:
        self._p = parts
        self.filler = filler
        self.first_words = first_words
        self._speech_stopped_at: float | None = None

    async def audio(self, delta: rt.AudioDelta) -> None:
        p = self._p
        if p.replies.is_dropped(delta.response_id):
            p.stats.dropped_deltas += 1
            return
        if self.filler.active:
            await self.filler.stop("bot_audio")
        if not await p.bot.play(delta.item_id, delta.audio):
            return
        if p.stats.first_words_ms is None:
            self.first_words.sent()
            p.stats.first_words_ms = self.first_words.ms
        if self._speech_stopped_at is not None:
            latency, self._speech_stopped_at = p.clock() - self._speech_stopped_at, None
            p.stats.response_latencies_ms.append(latency * 1000)
            metrics.FIRST_AUDIO_SECONDS.observe(latency)
        p.phase.fire("bot_audio")

    async def speech_stopped(self, event: rt.SpeechStopped) -> None:
        """The caller's turn ended: the answer's latency starts, and so does the filler's wait."""
        self._speech_stopped_at = self._p.clock()
        self._p.observer.caller_speech_stopped(event.audio_end_ms)
        self.filler.start("turn")

    async def response_done(self, done: rt.ResponseDone) -> None:
        """A response that ended without calling a tool will not be followed by more of its audio: a
        filler still waiting for it would cover nothing (it never plays into an answer that is not coming)."""
        if self.filler.active and not any(item.get("type") == "function_call" for item in done.output):
            await self.filler.stop("response_done")

    def session_replaced(self) -> None:
        self._speech_stopped_at = None
