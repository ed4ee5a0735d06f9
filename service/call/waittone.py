"""A tone filler for business tool calls (``service.call.toolcalls.Filler``): after ``after_ms``
of silence (counted from the start, or from when the bot's own audio, e.g. "let me check", ended),
a soft chime pattern plays (``service.audio.tones.waiting_chime_pcm16``, 4 s);
``stop`` flushes the provider if the chime may still be sounding.

Guarantees: the chime goes out without playback markers and never enters the ``PlaybackLedger``,
so truncation of the model's items stays exact; it starts only while no bot audio is playing;
``stop`` is cheap when nothing is pending (one timer per call, the clip once per codec). A wait
longer than the clip falls silent at its end (bounded: a filler is not hold music).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import lru_cache

import structlog

from service import metrics
from service.audio.tones import waiting_chime_pcm16
from service.call.legs import BotLeg

log = structlog.get_logger(__name__)


DEFAULT_AFTER_MS = 700  # a tool without filler_after_ms (docs/tools.md)
_RECHECK_S = 0.1  # while the bot is still audible when the filler is due


@lru_cache(maxsize=1)
def _clip() -> bytes:
    return waiting_chime_pcm16()


class WaitTone:
    """The chime filler of one call. Event-loop only."""

    def __init__(self, bot: BotLeg, clock: Callable[[], float]) -> None:
        self._bot, self._clock = bot, clock
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._sounding_until = 0.0
        self._reason = ""
        self._after_s = 0.7
        self._bot_was_audible = False
        self.plays = 0

    @property
    def waiting(self) -> bool:
        return self._timer is not None

    def start(self, reason: str, after_ms: int | None = None) -> None:
        if self._timer is not None:
            return  # a wait is already under way: keep its deadline
        self._reason = reason
        self._after_s = (after_ms if after_ms is not None else DEFAULT_AFTER_MS) / 1000
        self._bot_was_audible = False
        self._timer = asyncio.get_running_loop().call_later(self._after_s, self._due)

    def _due(self) -> None:
        loop = asyncio.get_running_loop()
        if self._bot.playing:  # the bot is audible ("let me check..."): look again shortly
            self._bot_was_audible = True
            self._timer = loop.call_later(_RECHECK_S, self._due)
            return
        if self._bot_was_audible:  # the silence counts from when the bot went quiet
            self._bot_was_audible = False
            self._timer = loop.call_later(self._after_s, self._due)
            return
        self._timer = None
        self._task = loop.create_task(self._play())

    async def _play(self) -> None:
        try:
            duration = await self._bot.play_tone(_clip())
        except Exception as error:  # the provider socket may be gone: nothing to fill then
            log.info("tool.filler_not_played", error=repr(error)[:200])
            return
        self._sounding_until = self._clock() + duration + 0.3
        self.plays += 1
        metrics.TOOL_FILLERS.labels(self._reason[:32] or "tool").inc()
        log.info("tool.filler_played", reason=self._reason[:32], duration_ms=round(duration * 1000))

    async def stop(self, reason: str) -> None:
        """Cancel a pending chime; if one may still sound, clear the provider's buffer first."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            task, self._task = self._task, None
            if not task.done():
                await asyncio.gather(task, return_exceptions=True)  # its send is in flight: order it first
        if self._sounding_until and self._clock() < self._sounding_until:
            self._sounding_until = 0.0
            await self._bot.clear_tone()
            log.info("tool.filler_stopped", reason=reason[:32])
        self._sounding_until = 0.0
