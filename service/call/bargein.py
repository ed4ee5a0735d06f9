"""Barge-in: the caller talks while the bot's audio plays (docs/interruptions.md;
docs/models/realtime.md, "Barge-in"; docs/providers/twilio.md, "Marks and clear").

Two policies:

- **immediate** (no ``InterruptPolicy``; the session has ``interrupt_response``/``create_response``
  on): every speech start flushes the provider, cancels the reply and truncates each item at what
  was heard; the server answers the caller's turn by itself.
- **pause, then decide** (an ``InterruptPolicy``; both flags off, so the server neither cancels nor
  answers by itself): a speech start while bot audio plays or is held flushes the provider at once
  and pauses; the ``InterruptionDecider`` judges the speech within ``confirm_ms`` from the caller's
  levels (a tap on the caller leg, only while paused), the transcript and the lexicon. Real: cancel,
  truncate at what was heard, drop the held audio, and answer the caller's committed turn. False:
  resume from the heard sample, and delete the caller's committed item so nothing answers it.
  Every committed turn that was not judged false gets one ``response.create``.

Guarantees: the flush is the first send after a speech start; a decision is made by the deadline
(a loop timer) and acted on once; every decision is logged (``call.interruption``, inputs but never
the transcript) and counted; the set of turns judged false is bounded (16 item ids).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from service import metrics
from service.audio.codecs import wire_level_dbfs
from service.call.handoff import HandoffState
from service.call.interruption import Decision, InterruptionDecider, InterruptPolicy, InterruptState
from service.call.legs import CallerLeg
from service.call.machine import InvalidTransition
from service.call.parts import CallParts
from service.call.playback import HeardPosition
from service.realtime import events as rt

log = structlog.get_logger(__name__)

_FALSE_ITEMS_KEPT = 16


class BargeIn:
    """Reacts to caller speech for one call. ``request_response`` asks for a reply (``Responses.request``)."""

    def __init__(self, parts: CallParts, caller: CallerLeg, policy: InterruptPolicy | None = None,
                 request_response: Callable[[str | None], Awaitable[None]] | None = None) -> None:
        self._p = parts
        self._caller = caller
        self._decider = InterruptionDecider(policy) if policy is not None else None
        self._request = request_response
        self._positions: list[HeardPosition] = []
        self._paused_items: set[str] = set()  # caller items spoken during the pause (usually one)
        self._committed: set[str] = set()  # of those, the ones already committed (awaiting the decision)
        self._false_items: deque[str] = deque(maxlen=_FALSE_ITEMS_KEPT)
        # The last decisions with the positions heard at their pause (tests, benchmark), bounded.
        self.decisions: deque[tuple[Decision, tuple[HeardPosition, ...]]] = deque(maxlen=_FALSE_ITEMS_KEPT)
        self._timer: asyncio.TimerHandle | None = None
        self._reaction_ms = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def session_flags(config: rt.SessionConfig, policy: InterruptPolicy | None) -> rt.SessionConfig:
        """The session's ``interrupt_response``/``create_response``: on for the immediate policy,
        off for pause-then-decide (the server must neither cancel nor answer by itself)."""
        on = policy is None
        return replace(config, interrupt_response=on, create_response=on)

    @property
    def deciding(self) -> bool:
        return self._decider is not None and self._decider.state is InterruptState.PAUSED

    async def speech_started(self, event: rt.SpeechStarted) -> None:
        self._p.observer.caller_speech_started(event.audio_start_ms)
        if self._p.filler.active:  # the caller talks: the filler's wait is over (it clears its clip)
            await self._p.filler.stop("caller_speech")
        if self.deciding:  # more speech within the same pause: decided together
            self._paused_items.add(event.item_id)
        elif self._decider is None or not self._p.bot.playing:
            await self.interrupt()  # immediate policy, or nothing audible to protect
        else:
            self._paused_items.add(event.item_id)
            await self._pause()

    async def output_yielded(self) -> None:
        """A full-duplex model stopped talking because the caller talked over it: whatever is still
        queued at the provider is stale, so flush it (if anything is). No cancel or truncate (the
        model did that). Counted as a barge-in either way: real-time paced output often has nothing
        left to flush."""
        p = self._p
        started = p.clock()
        positions = await p.bot.flush() if p.bot.playing else []
        p.bot.discard()
        self._observe_reaction(p.clock() - started)
        first = positions[0] if positions else None
        p.stats.barge_ins += 1
        metrics.BARGE_INS.inc()
        log.info("call.barge_in", item_id=first.item_id if first else "", heard_ms=first.heard_ms if first else 0,
                 sent_ms=first.sent_ms if first else 0, reaction_ms=round(self._reaction_ms, 3))
        if p.phase.accepts("barge_in"):  # not once playback has drained (listening again)
            p.phase.fire("barge_in")

    async def interrupt(self) -> None:
        """Flush the provider first, then cancel the reply and truncate each item at what was heard.
        With nothing playing, only a reply still generating is cancelled (its deltas dropped)."""
        p = self._p
        started = p.clock()
        positions = await p.bot.flush() if p.bot.playing else None
        reaction = p.clock() - started
        p.bot.discard()
        await self._cancel_and_truncate(positions or [])
        if positions:
            self._observe_reaction(reaction)
            p.phase.fire("barge_in")

    # --- pause, then decide ---------------------------------------------------------------------------
    async def _pause(self) -> None:
        assert self._decider is not None
        p = self._p
        started = p.clock()
        self._positions = await p.bot.flush()
        self._observe_reaction(p.clock() - started)
        self._decider.pause(p.clock())
        self._caller.tap = self._caller_frame
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, self._decider.deadline - p.clock()), self._poll_soon, True)
        p.phase.fire("barge_in")

    def _caller_frame(self, payload: bytes) -> None:
        """The caller leg's tap while paused: one frame's level for the decider (no awaiting here)."""
        if self._decider is None:
            return
        self._decider.caller_frame(wire_level_dbfs(self._caller.spec, payload),
                                   len(payload) // self._caller.bytes_per_ms)
        if self._decider.state is InterruptState.PAUSED and self._decider.poll(self._p.clock()) is not None:
            self._poll_soon()

    def _poll_soon(self, at_deadline: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._act_logged(at_deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def speech_stopped(self, event: rt.SpeechStopped,
                             turn_ended: Callable[[rt.SpeechStopped], Awaitable[None]]) -> None:
        """The caller stopped: ``turn_ended`` (``Speaking``: answer latency, the filler's wait) runs,
        unless the speech was already judged false: no answer is coming, so no filler may cover it."""
        await turn_ended(event)
        if event.item_id in self._false_items and self._p.filler.active:
            await self._p.filler.stop("false_interruption")

    async def transcript(self, event: rt.InputTranscriptionCompleted) -> None:
        """The caller's words for an item spoken during the pause may decide it."""
        if self.deciding and event.item_id in self._paused_items:
            assert self._decider is not None
            self._decider.transcript(event.transcript)
            await self._act()

    async def committed(self, event: rt.InputCommitted) -> None:
        """A caller turn was committed (``create_response`` is off): answer it, delete it (judged
        false), or wait for the pending decision. Nothing to do under the immediate policy."""
        if self._decider is None:
            return
        if event.item_id in self._false_items:
            self._false_items.remove(event.item_id)
            await self._p.send_model(self._p.dialect.item_delete(event.item_id))
        elif self.deciding and event.item_id in self._paused_items:
            self._committed.add(event.item_id)
        else:
            await self._answer()

    async def _act_logged(self, at_deadline: bool) -> None:
        try:
            await self._act(at_deadline)
        except InvalidTransition as error:  # the call moved on meanwhile (ending, escalating)
            log.warning("call.invalid_transition", source="interruption", machine=error.machine,
                        state=error.state.value, event_name=error.event)

    async def _act(self, at_deadline: bool = False) -> None:
        """Apply the decision, if there is one now (the timer, a frame or a transcript made it). The
        timer may fire a hair before the deadline by the clock: it decides at the deadline."""
        decider = self._decider
        if decider is None or self._p.closing:
            return
        now = max(self._p.clock(), decider.deadline) if at_deadline else self._p.clock()
        decision = decider.decision if decider.state is not InterruptState.PAUSED else decider.poll(now)
        if decision is None or decider.state is InterruptState.IDLE:
            return
        decider.reset()
        self._caller.tap = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, committed = self._paused_items, self._committed
        self._paused_items, self._committed = set(), set()
        self._log(decision)
        self.decisions.append((decision, tuple(self._positions)))
        if decision.real:
            self._p.bot.discard()
            await self._cancel_and_truncate(self._positions)
            if committed:
                await self._answer()
            return
        for item_id in items:
            if item_id in committed:
                await self._p.send_model(self._p.dialect.item_delete(item_id))
            else:
                self._false_items.append(item_id)
        if self._p.filler.active:  # a wait started by this speech's end: no answer is coming
            await self._p.filler.stop("false_interruption")
        await self._p.bot.resume()
        self._p.phase.fire("bot_audio" if self._p.bot.playing else "playback_done")

    async def _answer(self) -> None:
        """Ask for the reply to the caller's turn (not once the call is being handed to a human)."""
        if self._request is not None and self._p.handoff.state is HandoffState.NONE:
            await self._request(None)

    async def _cancel_and_truncate(self, positions: list[HeardPosition]) -> None:
        p = self._p
        if (response := p.replies.drop_active()) is not None:
            await p.send_model(p.dialect.response_cancel(response))
        for cut in (c for c in positions if c.cut):
            await p.send_model(p.dialect.item_truncate(cut.item_id, cut.heard_ms))
            p.stats.truncates += 1
            p.observer.bot_truncated(cut.item_id, cut.heard_ms, cut.sent_ms)
            p.history.shorten(cut.item_id, cut.heard_ms, cut.total_ms)
        if positions:
            p.stats.barge_ins += 1
            metrics.BARGE_INS.inc()
            log.info("call.barge_in", item_id=positions[0].item_id, heard_ms=positions[0].heard_ms,
                     sent_ms=positions[0].sent_ms, reaction_ms=round(self._reaction_ms, 3))

    def _observe_reaction(self, reaction: float) -> None:
        self._reaction_ms = reaction * 1000
        self._p.stats.barge_in_reactions_ms.append(reaction * 1000)
        metrics.BARGE_IN_REACTION_SECONDS.observe(reaction)

    def _log(self, decision: Decision) -> None:
        metrics.INTERRUPTIONS.labels(decision.kind).inc()
        head = self._positions[0] if self._positions else None
        log.info("call.interruption", kind=decision.kind, reason=decision.reason, decided_after_ms=decision.after_ms,
                 voiced_ms=decision.voiced_ms, peak_dbfs=decision.peak_dbfs,
                 transcript_words=len(decision.transcript.split()), item_id=head.item_id if head else None,
                 heard_ms=head.heard_ms if head else None)

    def session_replaced(self) -> None:
        """The model session was replaced while deciding: its items are gone; forget the pause and
        the held reply (the new session never generated it)."""
        if self.deciding and self._decider is not None:
            self._decider.reset()
            self._p.bot.discard()
        self._caller.tap = None
        self._paused_items.clear()
        self._committed.clear()

    def close(self) -> None:
        """The call ended: no timer, no task, no tap left behind."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._caller.tap = None
        self._p.bot.close()
