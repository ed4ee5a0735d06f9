"""The call bridge: a dispatcher between one provider media stream and one model session.

State lives in small state machines that raise on an invalid event (``service.call.machine``):
``phase`` (the call as operators see it), ``link`` (model socket), ``replies`` (turns), the playback
ledger in the bot leg (what the caller heard), ``handoff``. Drivers act: ``ProviderSide``,
``ModelSide`` (attach, configure, replace, send), ``BargeIn``, ``Responses`` (replies, tool calls),
``Escalating`` (hand-off line, transfer), ``Speaking`` (bot audio out, first words, the filler). The
bridge routes typed events to them and imports no provider and no model dialect: a full-duplex model
simply never emits turn events. Guarantees:
- Caller frames reach the model in arrival order, waiting for nothing but the socket send; frames
  held until the session is configured are bounded (1 s) and sent first.
- Bot audio goes out at most ``playback_lead_ms`` ahead of playback, each chunk followed by a marker,
  so the heard position is known; barge-in clears the provider first, then (at once, or once judged
  real: ``interruptions``) cancels and truncates at exactly what was heard (docs/interruptions.md).
- A peer event a state object refuses is logged (``call.invalid_transition``) and skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from service import metrics
from service.audio.tones import apology_pcm16
from service.call.bargein import BargeIn
from service.call.escalating import Escalating
from service.call.filler import FillerSettings, make_filler
from service.call.firstwords import FirstWords
from service.call.handoff import Handoff, HandoffState
from service.call.history import ConversationHistory
from service.call.interruption import InterruptPolicy
from service.call.legs import BotLeg, CallerLeg, SendFrame
from service.call.link import ModelLink
from service.call.machine import InvalidTransition
from service.call.modelside import ModelSide
from service.call.observer import CallObserver, NullObserver
from service.call.parts import CallParts
from service.call.phase import TRANSITIONS, CallState, call_phase
from service.call.providerside import ProviderSide
from service.call.responses import QUOTA_CODES, Responses
from service.call.speaking import Speaking
from service.call.stats import CallStats
from service.call.toolargs import ESCALATION_TOOL_NAME
from service.call.toolcalls import ToolBackend, ToolCalls
from service.call.turns import ReplyTracker
from service.providers import base as pv
from service.realtime import events as rt

__all__ = ["ESCALATION_TOOL_NAME", "QUOTA_CODES", "TRANSITIONS", "CallBridge", "CallState", "CallStats", "InvalidTransition"]

log = structlog.get_logger(__name__)


class CallBridge:
    """Bridges one call. Not thread-safe; every method runs on the call's event loop.

    ``to_provider`` sends one provider frame (ordered); ``close_provider(code, reason)`` ends the
    stream. ``codec`` is the wire audio as the provider declared it (encoding, rate)."""

    def __init__(
        self,
        *,
        call_id: str,
        provider: pv.TelephonyDialect,
        realtime: rt.RealtimeDialect,
        session_config: rt.SessionConfig,
        to_provider: SendFrame,
        close_provider: Callable[[int, str], Awaitable[None]],
        greeting: bool = True,
        handoff_line: str = "",
        observer: CallObserver | None = None,
        rest_transfer: Callable[[], Awaitable[bool]] | None = None,
        max_malformed_frames: int = 50,
        model_unavailable_action: str = "human",
        codec: tuple[str, int] = (pv.ENCODING_MULAW, 8000),
        resume: tuple[tuple[tuple[str, str], ...], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        filler: FillerSettings | None = None, first_words: FirstWords | None = None,
        tools: ToolBackend | None = None, max_tool_calls: int = 4,
        interruptions: InterruptPolicy | None = None, playback_lead_ms: int = 0,
    ) -> None:
        self.call_id = call_id
        self.stats = CallStats()
        self.end_reason = ""
        self.ended = asyncio.Event()
        self._rt, self._close_provider = realtime, close_provider
        self._greeting = greeting
        self._observer: CallObserver = observer or NullObserver()
        self._unavailable_action = model_unavailable_action
        self._clock = clock
        self.phase = call_phase(lambda new, old: self._observer.state_changed(new.value, old.value))
        self.link = ModelLink()
        self.replies = ReplyTracker()
        self.handoff = Handoff()
        self._history = ConversationHistory()
        # A call resumed on this replica after its stream dropped: (conversation so far, first line).
        self._resume_line = resume[1] if resume else ""
        for role, text in resume[0] if resume else ():
            self._history.add(role, text, "")
        session_config = BargeIn.session_flags(session_config, interruptions)
        self.model = ModelSide(self.link, realtime, session_config, self._history, resumed=bool(resume),
                               on_replaced=self._session_replaced)
        self.caller = CallerLeg(codec, self.link, realtime, self.stats, self._observer, self.model.lost)
        self.model.caller = self.caller
        self.bot = BotLeg(codec, provider, to_provider, self.stats, clock, playback_lead_ms, realtime.model_audio)
        call_filler = make_filler(filler, codec, send_clip=lambda wire: to_provider(provider.build_media(wire)),
                                  flush=lambda: to_provider(provider.build_clear()),
                                  audible=lambda: self.bot.playing, clock=clock, stats=self.stats)
        self.parts = CallParts(realtime, self.phase, self.link, self.replies, self.handoff, self.bot,
                               self._history, self.stats, self._observer, clock, self.model.send,
                               lambda reason, code: self.end(reason, close_code=code), filler=call_filler)
        self.speaking = Speaking(self.parts, call_filler, first_words or FirstWords(clock))
        # business tools (docs/tools.md) run off the audio path:
        self.tools = ToolCalls.for_call(tools, self.parts, lambda: self.responses.request(None), max_tool_calls)
        self.responses = Responses(self.parts, lambda request: self.escalating.escalate(request), self.tools)
        self.barge_in = BargeIn(self.parts, self.caller, interruptions, self.responses.request)
        self.escalating = Escalating(self.parts, self.responses.request, handoff_line=handoff_line,
                                     rest_transfer=rest_transfer)
        self.provider = ProviderSide(self.parts, provider, self.caller, refused=self._refused,
                                     playback_drained=self.escalating.playback_drained,
                                     max_malformed=max_malformed_frames)

    @property
    def state(self) -> CallState:
        return self.phase.state

    @property
    def escalated(self) -> bool:
        return self.handoff.state is not HandoffState.NONE

    @property
    def outcome(self) -> str:
        return self.parts.outcome

    @outcome.setter
    def outcome(self, value: str) -> None:
        self.parts.outcome = value

    def _refused(self, error: InvalidTransition, source: str) -> None:
        self.stats.invalid_transitions += 1
        log.warning("call.invalid_transition", source=source, machine=error.machine, state=error.state.value,
                    event_name=error.event)

    # ------------------------------------------------------------------------------------------------
    # provider side (``ProviderSide``; the pump calls it directly)

    async def on_provider_message(self, message: str | bytes | memoryview) -> None:
        await self.provider.on_event(self.provider.parse(message), time.perf_counter())

    # ------------------------------------------------------------------------------------------------
    # model side (the link is ``ModelSide``)

    def _session_replaced(self) -> None:
        self.replies.reset()
        self.handoff.session_replaced()
        self.barge_in.session_replaced()
        self.speaking.session_replaced()

    async def on_realtime_message(self, message: str | bytes) -> None:
        try:
            event = self._rt.parse(message)
        except rt.RealtimeProtocolError as error:
            self.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("malformed_event").inc()
            log.warning("realtime.malformed_event", error=str(error))
            return
        for each in event.events if isinstance(event, rt.EventGroup) else (event,):  # full-duplex: several
            await self.on_realtime_event(each)

    async def on_realtime_event(self, event: rt.ServerEvent) -> None:
        if self.parts.closing:
            return
        handler = _MODEL_HANDLERS.get(type(event))
        if handler is None:
            return
        try:
            await handler(self, event)
        except InvalidTransition as error:
            self._refused(error, "model")

    async def _session_updated(self, _event: rt.SessionUpdated) -> None:
        self.link.ready()
        if self.phase.state is not CallState.CONNECTING:
            await self.escalating.session_ready()  # a replacement session says an unspoken hand-off line
            return
        self.phase.fire("session_ready")
        log.info("call.session_ready", resumed=bool(self._resume_line))
        if self._resume_line:  # the caller heard the line go quiet: say so first
            await self.responses.request(
                f'Say this to the caller, in the caller\'s language, then continue the conversation: "{self._resume_line}"')
        elif self._greeting:
            await self.responses.request(None)

    async def _response_done(self, done: rt.ResponseDone) -> None:
        await self.speaking.response_done(done)  # first: a tool it starts may begin a new wait
        await self.responses.done(done)  # its tool calls may escalate
        if not await self.escalating.response_done(done.response_id):
            await self.responses.continue_pending()

    async def _caller_transcript(self, event: rt.InputTranscriptionCompleted) -> None:
        self._history.add("caller", event.transcript, event.item_id)
        self._observer.caller_transcript(event.item_id, event.transcript)
        await self.barge_in.transcript(event)

    async def _bot_transcript(self, event: rt.TranscriptDone) -> None:
        self._history.add("assistant", event.transcript, event.item_id)
        self._observer.bot_transcript(event.item_id, event.transcript)

    async def _noted(self, event: rt.ItemTruncated | rt.InputTranscriptionFailed) -> None:
        """Server notices that change nothing here: logged only."""
        if isinstance(event, rt.ItemTruncated):
            log.info("realtime.item_truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms)
        else:
            log.warning("realtime.transcription_failed", item_id=event.item_id, error=event.message[:300])

    async def _realtime_error(self, error: rt.RealtimeError) -> None:
        """An error before the session was ready means no call: no capacity, or a failure."""
        if self.responses.error(error) and self.phase.state is CallState.CONNECTING:
            if error.code in QUOTA_CODES:
                await self.escalating.model_unavailable("quota", self._unavailable_action)
            else:
                await self.fail("realtime error: " + (error.code or error.type)[:64])

    # ------------------------------------------------------------------------------------------------
    # ending (escalation, drain hand-off and no-model paths are ``Escalating``)

    async def let_go(self, reason: str) -> None:
        """Drain with resumption: end the stream without a transfer so that the provider's after-stream
        resumes the call on another replica (``end_reason`` says so; the caller hears a short gap)."""
        if self.parts.closing:
            return
        self.outcome = "handed_over"
        log.info("call.let_go", reason=reason)
        await self.end(reason, close_code=1000)

    async def fail(self, reason: str) -> None:
        """Failure path: log, play a short apology tone if the stream is up, end cleanly."""
        if self.parts.closing:
            return
        self.outcome = "error"
        self.stats.errors += 1
        log.error("call.failed", reason=reason)
        try:
            await asyncio.sleep(await self.bot.play_tone(apology_pcm16()))  # let it play (no event to wait on)
        except Exception as error:  # the stream may already be gone
            log.info("call.apology_not_played", error=repr(error)[:300])
        await self.end(reason, close_code=1011)

    async def end(self, reason: str, close_code: int = 1000) -> None:
        """End the call from either side. Idempotent; the session cancels the reader tasks."""
        if self.parts.closing:
            return
        self.phase.fire("hang_up")
        self.end_reason = reason
        self.escalating.cancel_guard()
        self.parts.filler.cancel()
        await self.tools.close()
        try:
            await self._close_provider(close_code, reason[:120])
        except Exception as error:
            log.debug("provider.close_failed", error=repr(error)[:300])
        self.ended.set()

    def finish(self) -> dict[str, Any]:
        """Mark ENDED, close the link and produce the call summary (logged once by the session)."""
        self.caller.report()
        self.barge_in.close()
        if self.phase.state is CallState.ENDING:
            self.phase.fire("closed")
        self.link.close()
        summary = {**self.stats.summary(), "outcome": self.outcome, "end_reason": self.end_reason}
        self._observer.ended(summary)
        return summary


_MODEL_HANDLERS: dict[type, Callable[[CallBridge, Any], Awaitable[None]]] = {
    rt.AudioDelta: lambda b, e: b.speaking.audio(e),
    rt.AudioDone: lambda b, e: b.bot.finish(e.item_id, dropped=b.replies.is_dropped(e.response_id)),
    rt.SpeechStarted: lambda b, e: b.barge_in.speech_started(e),
    rt.SpeechStopped: lambda b, e: b.barge_in.speech_stopped(e, b.speaking.speech_stopped),
    rt.InputCommitted: lambda b, e: b.barge_in.committed(e),
    rt.OutputYielded: lambda b, e: b.barge_in.output_yielded(),
    rt.ResponseCreated: lambda b, e: b.responses.created(e),
    rt.ResponseDone: CallBridge._response_done,
    rt.OutputItemAdded: lambda b, e: b.responses.item_added(e),
    rt.FunctionCallArgumentsDone: lambda b, e: b.responses.arguments_done(e),
    rt.InputTranscriptionCompleted: CallBridge._caller_transcript,
    rt.TranscriptDone: CallBridge._bot_transcript,
    rt.SessionCreated: lambda b, e: b.model.session_created(),
    rt.SessionUpdated: CallBridge._session_updated,
    rt.ItemTruncated: CallBridge._noted,
    rt.RealtimeError: CallBridge._realtime_error,
    rt.InputTranscriptionFailed: CallBridge._noted,
}

