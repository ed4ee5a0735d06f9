"""No dead air: a short filler ("hmm") when the bot is slow to start talking (docs/first-words.md).

Public interface, for the bridge and for anything else that makes the caller wait (a business tool):

- ``Filler.start(reason, after_ms=None)``: a wait began (``reason``: ``turn`` when the caller's turn
  ended, ``tool`` while a tool runs, ...). If no bot audio has started ``after_ms`` later (default
  ``CALLBRIDGE_FILLER_AFTER_MS``) and the bot is not audible, the clip plays; while the wait goes on it
  is repeated after ``CALLBRIDGE_FILLER_REPEAT_MS`` of silence, at most ``MAX_PLAYS`` times per wait.
  A second ``start`` during a wait keeps the first deadline. ``repeat_ms`` (a business tool's wait,
  docs/tools.md) shortens the repeat of this wait, also of one already running. Synchronous and cheap.
- ``await Filler.stop(reason)``: the wait is over (real bot audio is about to be sent, the caller
  speaks, the call escalates). If the clip may still be sounding, the provider's buffer is flushed
  first, so real audio queued after it never overlaps it. Cheap when nothing is pending (the
  bridge calls it before every chunk of bot audio).
- ``Filler.cancel()``: the call ends; timers are dropped (synchronous).

Guarantees: the clip is sent to the provider without playback markers and never enters the
``PlaybackLedger``, so what the ledger says the caller heard of the model's items (and so every
truncate) stays exact. The clip only starts while no bot audio is audible. Ordered with the bridge:
``stop`` waits for a clip send in flight before it flushes. Memory: the clip once per process (one
wire encoding per codec in use, about 4.4 KB for 550 ms of mu-law), one timer per call.

``FillerPlan`` is the pure state machine (``IDLE -> WAITING -> PLAYING -> IDLE``, raising on an
invalid event); ``Filler`` is its thin asyncio driver.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from service import metrics
from service.audio.codecs import make_outbound
from service.audio.filler_clip import load_wav_clip, synthesize_hmm
from service.call.machine import Machine
from service.call.stats import CallStats

log = structlog.get_logger(__name__)

#: Plays of the clip per wait (the first and its repeats): a filler bounds dead air, it is not hold music.
MAX_PLAYS = 4
#: While the bot is still audible when the filler is due (a tool started during the bot's "let me
#: check"), look again this often; the silence is then counted from when the bot went quiet.
AUDIBLE_RECHECK_S = 0.1
#: A played clip is assumed to possibly still sound this long after its nominal end (network and
#: provider jitter): a stop within it flushes the provider.
SOUNDING_MARGIN_S = 0.3


class FillerState(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    PLAYING = "playing"


#: Reasons counted under their own label in ``callbridge_fillers_total``; any other is ``other``.
FILLER_REASONS = ("turn", "tool")
FILLER_EVENTS = ("start", "due", "stop")
FILLER_TRANSITIONS: dict[tuple[FillerState, str], FillerState] = {
    (FillerState.IDLE, "start"): FillerState.WAITING,
    (FillerState.WAITING, "start"): FillerState.WAITING,
    (FillerState.PLAYING, "start"): FillerState.PLAYING,
    (FillerState.WAITING, "due"): FillerState.PLAYING,
    (FillerState.PLAYING, "due"): FillerState.PLAYING,
    (FillerState.IDLE, "stop"): FillerState.IDLE,
    (FillerState.WAITING, "stop"): FillerState.IDLE,
    (FillerState.PLAYING, "stop"): FillerState.IDLE,
}


@dataclass(frozen=True, slots=True)
class StopDecision:
    """What ``FillerPlan.stop`` found: whether to flush the provider, and what was played."""

    flush: bool
    plays: int
    reason: str  # the reason of the wait that ended ("" if there was none)


class FillerPlan:
    """The filler's timing, pure (times are passed in; ``clip_s`` is the clip's duration).

    ``start`` returns the deadline to wake at (or None: a wait is already running); ``due(now,
    audible)`` returns True when the clip should play now, else the caller asks ``next_deadline``.
    """

    def __init__(self, *, after_s: float, repeat_s: float, clip_s: float, max_plays: int = MAX_PLAYS) -> None:
        self.machine: Machine[FillerState] = Machine("filler", FillerState.IDLE, FILLER_TRANSITIONS)
        self.after_s, self.repeat_s, self.clip_s, self.max_plays = after_s, repeat_s, clip_s, max_plays
        self.wait_repeat_s: float | None = None  # a shorter repeat asked for by this wait (a tool's)
        self.reason = ""
        self.started_at = 0.0
        self.plays = 0
        self.sounding_until = 0.0  # the last clip's end, plus the margin
        self.deadline: float | None = None

    @property
    def state(self) -> FillerState:
        return self.machine.state

    def start(self, reason: str, now: float, after_s: float | None = None,
              repeat_s: float | None = None) -> float | None:
        """``repeat_s`` (a business tool's wait) shortens the repeat of this wait, also of one already
        running (never lengthens it); the running wait's deadline is kept."""
        fresh = self.machine.fire("start") is FillerState.WAITING and self.deadline is None
        if fresh:
            self.reason, self.started_at, self.plays, self.wait_repeat_s = reason, now, 0, None
        if repeat_s is not None and 0 < repeat_s < self._repeat_s:
            self.wait_repeat_s = repeat_s
            if self.state is FillerState.PLAYING and self.deadline is not None:  # the next play comes sooner
                self.deadline = min(self.deadline, self.sounding_until - SOUNDING_MARGIN_S + repeat_s)
        if fresh:
            self.deadline = now + (self.after_s if after_s is None else after_s)
            return self.deadline
        return None

    @property
    def _repeat_s(self) -> float:
        return self.wait_repeat_s if self.wait_repeat_s is not None else self.repeat_s

    def due(self, now: float, audible: bool) -> bool:
        """The deadline passed. True: play the clip now (and ``played`` follows). False: see ``deadline``
        (a later check, or None when this wait plays no more)."""
        if self.state is FillerState.IDLE:
            self.deadline = None
            return False
        if audible:  # the bot still talks: the silence starts when it stops
            self.deadline = now + AUDIBLE_RECHECK_S
            return False
        if self.plays >= self.max_plays or (self.plays and self._repeat_s <= 0):
            self.deadline = None
            return False
        self.machine.fire("due")
        return True

    def played(self, now: float) -> None:
        """The clip went out at ``now``: schedule the repeat (if any)."""
        self.plays += 1
        self.sounding_until = now + self.clip_s + SOUNDING_MARGIN_S
        more = self._repeat_s > 0 and self.plays < self.max_plays
        self.deadline = now + self.clip_s + self._repeat_s if more else None

    def stop(self, now: float) -> StopDecision:
        was_playing = self.state is FillerState.PLAYING
        self.machine.fire("stop")
        decision = StopDecision(flush=was_playing and now < self.sounding_until, plays=self.plays, reason=self.reason)
        self.deadline = None
        self.reason = ""
        self.wait_repeat_s = None
        return decision


class FillerClip:
    """The filler audio: PCM16 24 kHz mono, encoded once per wire codec (cached, bounded by the
    handful of codecs the providers use)."""

    def __init__(self, pcm24k: bytes) -> None:
        if len(pcm24k) < 2:
            raise ValueError("empty filler clip")
        self.pcm24k = pcm24k
        self.duration_s = len(pcm24k) / 2 / 24000
        self._wire: dict[tuple[str, int], bytes] = {}

    def wire(self, codec: tuple[str, int]) -> bytes:
        cached = self._wire.get(codec)
        if cached is None:
            outbound = make_outbound(*codec)
            # 40 ms of silence pushes out what the resampler holds back, so the clip ends complete.
            cached = outbound.process(self.pcm24k) + outbound.process(bytes(2 * 24000 // 25))
            self._wire[codec] = cached
        return cached


@dataclass(frozen=True, slots=True)
class FillerSettings:
    """What a call's filler needs from the configuration (``filler_settings``)."""

    clip: FillerClip
    after_ms: int
    repeat_ms: int


_CLIPS: dict[Path | None, FillerClip] = {}


def filler_settings(after_ms: int, repeat_ms: int, clip_file: Path | None) -> FillerSettings | None:
    """The filler for calls (None when ``after_ms`` is 0: no filler). The clip is synthesised or read
    and resampled once per process (``ClipError`` for an unusable file)."""
    if after_ms <= 0:
        return None
    clip = _CLIPS.get(clip_file)
    if clip is None:
        clip = FillerClip(load_wav_clip(clip_file) if clip_file is not None else synthesize_hmm())
        _CLIPS[clip_file] = clip
    return FillerSettings(clip, after_ms, repeat_ms)


class Filler:
    """One call's filler driver (see the module docstring for the interface and guarantees).

    ``send_clip(wire)`` sends one provider media message (no marker); ``flush()`` sends the provider's
    clear; ``audible()`` says whether bot audio is queued or playing at the provider."""

    def __init__(self, *, clip: FillerClip, codec: tuple[str, int], after_ms: int, repeat_ms: int,
                 send_clip: Callable[[bytes], Awaitable[None]], flush: Callable[[], Awaitable[None]],
                 audible: Callable[[], bool], clock: Callable[[], float], stats: CallStats | None = None) -> None:
        self.plan = FillerPlan(after_s=after_ms / 1000, repeat_s=repeat_ms / 1000, clip_s=clip.duration_s)
        self._clip, self._codec = clip, codec
        self._send_clip, self._flush, self._audible, self._clock = send_clip, flush, audible, clock
        self._stats = stats
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self.plays_total = 0

    @property
    def active(self) -> bool:
        return self.plan.state is not FillerState.IDLE

    def start(self, reason: str, after_ms: int | None = None, repeat_ms: int | None = None) -> None:
        before = self.plan.deadline
        deadline = self.plan.start(reason, self._clock(), None if after_ms is None else after_ms / 1000,
                                   None if repeat_ms is None else repeat_ms / 1000)
        if deadline is not None:
            self._arm(deadline)
        elif self.plan.deadline is not None and self.plan.deadline != before and self._timer is not None:
            self._arm(self.plan.deadline)  # a shorter repeat brought the next play forward

    async def stop(self, reason: str) -> None:
        if self.plan.state is FillerState.IDLE:
            return
        if self._sending is not None and not self._sending.done():
            await asyncio.shield(self._sending)  # the clip's send goes out first: then flush it
        self._disarm()
        decision = self.plan.stop(self._clock())
        if decision.flush:
            await self._flush()
        if decision.plays:
            log.info("call.filler_stopped", reason=reason, wait=decision.reason, plays=decision.plays,
                     flushed=decision.flush)

    def cancel(self) -> None:
        self._disarm()
        if self._sending is not None:
            self._sending.cancel()
        if self.plan.state is not FillerState.IDLE:
            self.plan.stop(self._clock())

    def _arm(self, deadline: float) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_due)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_due(self) -> None:
        self._timer = None
        now = self._clock()
        if self.plan.due(now, self._audible()):
            self._sending = asyncio.get_running_loop().create_task(self._play(now))
        elif self.plan.deadline is not None:
            self._arm(self.plan.deadline)

    async def _play(self, due_at: float) -> None:
        waited_ms = round((due_at - self.plan.started_at) * 1000)
        try:
            await self._send_clip(self._clip.wire(self._codec))
        except Exception as error:  # the provider socket failed: the call's own readers end the call
            log.warning("call.filler_failed", reason=self.plan.reason, error=repr(error)[:200])
            return
        self.plan.played(self._clock())
        self.plays_total += 1
        if self._stats is not None:
            self._stats.fillers += 1
        metrics.FILLERS.labels(self.plan.reason if self.plan.reason in FILLER_REASONS else "other").inc()
        log.info("call.filler", reason=self.plan.reason, waited_ms=waited_ms, play=self.plan.plays)
        if self.plan.deadline is not None and self.plan.state is not FillerState.IDLE:
            self._arm(self.plan.deadline)


class NoFiller:
    """The filler of a call with ``CALLBRIDGE_FILLER_AFTER_MS=0``: the same interface, doing nothing."""

    active = False
    plays_total = 0

    def start(self, reason: str, after_ms: int | None = None, repeat_ms: int | None = None) -> None:
        return None

    async def stop(self, reason: str) -> None:
        return None

    def cancel(self) -> None:
        return None


def make_filler(settings: FillerSettings | None, codec: tuple[str, int], *,
                send_clip: Callable[[bytes], Awaitable[None]], flush: Callable[[], Awaitable[None]],
                audible: Callable[[], bool], clock: Callable[[], float], stats: CallStats | None = None,
                ) -> Filler | NoFiller:
    """The call's filler driver, or ``NoFiller`` when the filler is off. ``stats.fillers`` counts plays."""
    if settings is None:
        return NoFiller()
    return Filler(clip=settings.clip, codec=codec, after_ms=settings.after_ms, repeat_ms=settings.repeat_ms,
                  send_clip=send_clip, flush=flush, audible=audible, clock=clock, stats=stats)
