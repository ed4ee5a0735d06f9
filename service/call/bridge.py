"""The call bridge: a dispatcher between one provider media stream and one model session.

All state lives in small state objects, each with named states and a transition table that raises
on an invalid event (``service.call.machine``):

- ``phase`` (``call.phase``): the call as operators see it, connecting -> listening <-> bot_speaking
  -> interrupted ..., escalating, ending, ended;
- ``link`` (``call.link``): the model session socket, and caller audio held while it cannot flow;
- ``replies`` (``call.turns``): responses and tool calls of turn-based dialects;
- ``ledger`` (``call.playback``): what was sent to the provider and what the caller has heard;
- ``handoff`` (``call.handoff``): from the escalation decision to the transfer.

The bridge only routes typed provider events (``service.providers.base``) and typed model events
(``service.realtime.events``) to them and performs the sends they call for. It imports no provider
and no model dialect: a dialect declares what it can do (``client_speaks_first``), and a model that
never emits turn events (full-duplex) simply never triggers barge-in, cancel or truncate here.

Guarantees:
- Caller frames reach the model in arrival order, each without waiting for anything but the socket
  send (no Redis, HTTP or logging per frame); frames held while the session is not configured are
  bounded (1 s) and sent first, in order.
- Every chunk of bot audio sent to the provider is followed by a playback marker, so the heard
  position is known to the chunk; barge-in clears the provider first, then cancels and truncates
  at exactly what was heard (docs/models/realtime.md, "Barge-in").
- A peer event that a state object refuses is logged (``call.invalid_transition``), counted and
  skipped; the call goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from service import metrics
from service.audio.tones import apology_pcm16
from service.call.handoff import Handoff, HandoffState
from service.call.history import ConversationHistory
from service.call.legs import BotLeg, CallerLeg, SendFrame
from service.call.link import LinkState, ModelLink, SendText
from service.call.machine import InvalidTransition
from service.call.observer import CallObserver, EscalationRequest, NullObserver
from service.call.phase import TRANSITIONS, CallState, call_phase
from service.call.stats import CallStats
from service.call.toolargs import ESCALATION_TOOL_NAME, parse_tool_arguments, tool_arguments_problem
from service.call.turns import ReplyState, ReplyTracker
from service.escalation import defaults as escalation_defaults
from service.providers import base as pv
from service.realtime import events as rt
from service.redaction import bounded_free_text

__all__ = ["ESCALATION_TOOL_NAME", "QUOTA_CODES", "TRANSITIONS", "CallBridge", "CallState", "CallStats", "InvalidTransition"]

log = structlog.get_logger(__name__)

# Error codes that are expected races, not failures (docs/models/realtime.md, "Errors").
_BENIGN_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
)
_HANDOFF_PLAYBACK_GUARD_S = 20.0
# Model error codes that mean "no capacity for this call", not a bug (docs/models/realtime.md, "Errors").
QUOTA_CODES = frozenset({"insufficient_quota", "rate_limit_exceeded", "session_limit_reached"})


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
    ) -> None:
        self.call_id = call_id
        self.stats = CallStats()
        self.end_reason = ""
        self.outcome = "completed"
        self.ended = asyncio.Event()
        self._provider, self._rt, self._config = provider, realtime, session_config
        self._to_provider, self._close_provider = to_provider, close_provider
        self._greeting, self._handoff_line = greeting, handoff_line
        self._observer: CallObserver = observer or NullObserver()
        self._rest_transfer = rest_transfer
        self._max_malformed = max_malformed_frames
        self._unavailable_action = model_unavailable_action
        self._clock = clock
        self.phase = call_phase(lambda new, old: self._observer.state_changed(new.value, old.value))
        self.link = ModelLink()
        self.replies = ReplyTracker()
        self.handoff = Handoff()
        self.caller = CallerLeg(codec, self.link, realtime, self.stats, self._observer, self.realtime_lost)
        self.bot = BotLeg(codec, provider, to_provider, self.stats, clock)
        self._handoff_guard: asyncio.TimerHandle | None = None
        self._speech_stopped_at: float | None = None
        self._history = ConversationHistory()
        # A call resumed on this replica after its stream dropped: (conversation so far, first line).
        self._resume_line = resume[1] if resume else ""
        for role, text in resume[0] if resume else ():
            self._history.add(role, text, "")

    @property
    def state(self) -> CallState:
        return self.phase.state

    @property
    def escalated(self) -> bool:
        return self.handoff.state is not HandoffState.NONE

    @property
    def _closing(self) -> bool:
        return self.phase.state in (CallState.ENDING, CallState.ENDED)

    def _refused(self, error: InvalidTransition, source: str) -> None:
        self.stats.invalid_transitions += 1
        log.warning("call.invalid_transition", source=source, machine=error.machine, state=error.state.value,
                    event_name=error.event)

    # ------------------------------------------------------------------------------------------------
    # provider side

    def parse_provider(self, message: str | bytes | memoryview) -> pv.TelephonyEvent | pv.ProtocolError:
        """The provider dialect's typed event for one frame, or the ``ProtocolError`` it raised."""
        try:
            return self._provider.parse(message)
        except pv.ProtocolError as error:
            return error

    def forward_media_now(self, payload: bytes, received: float) -> bool:
        """Inbound hot path without a task switch (``CallerLeg.forward_now``). Callers guarantee
        order: nothing received earlier is still waiting."""
        return self.caller.forward_now(payload, received)

    def mark_echoed_now(self, name: str) -> bool:
        """A playback marker echo handled without awaiting (same ordering contract as
        ``forward_media_now``). False, with nothing done, once the hand-off line has been spoken:
        its last echo starts the transfer, which must be awaited through ``on_provider_event``."""
        if self._closing:
            return True  # nothing to do once the call is ending
        if self.handoff.state is HandoffState.SPOKEN:
            return False
        try:
            self._mark_echoed(name)
        except InvalidTransition as error:
            self._refused(error, "provider")
        return True

    async def on_provider_message(self, message: str | bytes | memoryview) -> None:
        await self.on_provider_event(self.parse_provider(message), time.perf_counter())

    async def on_provider_event(self, event: pv.TelephonyEvent | pv.ProtocolError, received: float) -> None:
        """Handle one parsed provider frame (``received``: its ``perf_counter`` arrival time)."""
        if self._closing:
            return
        try:
            await self._provider_event(event, received)
        except InvalidTransition as error:
            self._refused(error, "provider")

    async def _provider_event(self, event: pv.TelephonyEvent | pv.ProtocolError, received: float) -> None:
        if isinstance(event, pv.MediaReceived):
            await self.caller.forward(event.payload, received)
        elif isinstance(event, pv.MarkEchoed):
            if self._mark_echoed(event.name) and self.handoff.state is HandoffState.SPOKEN:
                await self._transfer()  # the hand-off line has been heard: transfer now
        elif isinstance(event, pv.DtmfReceived):
            self.stats.dtmf += 1
            log.info("call.dtmf", count=self.stats.dtmf)
            await self._send_model(self._rt.user_text_item(f"[The caller pressed the keypad key {event.digit}]"))
            self._observer.dtmf(event.digit)
        elif isinstance(event, pv.StreamStopped):
            await self.end("caller hung up")
        elif isinstance(event, pv.ProtocolError):
            self.stats.malformed_frames += 1
            metrics.MALFORMED_FRAMES.labels(self._provider.name).inc()
            log.warning("provider.malformed_frame", error=str(event), count=self.stats.malformed_frames)
            if self.stats.malformed_frames >= self._max_malformed:
                self.outcome = "error"
                await self.end("too many malformed frames", close_code=1008)
        else:  # a second handshake, or a provider notice the core does not act on
            log.warning("provider.unexpected_event", event_type=type(event).__name__)

    def _mark_echoed(self, name: str) -> bool:
        """Apply an echo to the ledger; True if it drained playback (the caller heard everything)."""
        if self.bot.echoed(name):
            self.phase.fire("playback_done")
            return True
        return False

    # ------------------------------------------------------------------------------------------------
    # model side: the link

    async def attach_realtime(self, to_model: SendText, immediate: rt.ImmediateSend | None = None) -> None:
        """The model session is connected. ``immediate``: the transport's synchronous send, if any."""
        self.link.attach(to_model, immediate)
        if self._rt.client_speaks_first:
            await self._configure()

    async def reattach_realtime(self, to_model: SendText, immediate: rt.ImmediateSend | None = None) -> None:
        """A replacement session after the old one dropped (there is no resume: docs/models/realtime.md,
        "Reconnecting"). It gets the same configuration plus the conversation so far; caller audio is
        held until it is configured; the provider leg never stops; an unspoken hand-off line is asked
        of it again."""
        self.realtime_lost()  # the old session, if nobody said so yet
        self.link.attach(to_model, immediate)
        self.replies.reset()
        self.handoff.session_replaced()
        self._speech_stopped_at = None
        if self._rt.client_speaks_first:
            await self._configure()

    def realtime_lost(self) -> None:
        """The model session is gone: hold caller audio, drop other client events until reattached.
        A no-op before the first attach and after the call closed the link."""
        if self.link.machine.accepts("lost"):
            self.link.lost()

    async def _configure(self) -> None:
        """Send the configuration, then the held caller audio in order, then let audio flow live."""
        await self._send_model(self._rt.session_update(self._config_for_session()))
        self.link.configure()
        await self.caller.send_held(self._send_model)

    def _config_for_session(self) -> rt.SessionConfig:
        """A replacement session's instructions carry the conversation so far (docs/models/realtime.md,
        "Reconnecting": seeding it as items risks text-only replies)."""
        note = self._history.seed_note() if self.link.replaced or self._resume_line else ""
        return replace(self._config, instructions=self._config.instructions + note) if note else self._config

    async def _send_model(self, text: str) -> None:
        """Send a client event; dropped (logged) while there is no session."""
        if self.link.send is None:
            log.info("realtime.event_dropped", reason="no session", event_type=text[9:60])
            return
        try:
            await self.link.send(text)
        except rt.RealtimeClosed:
            self.realtime_lost()
            log.info("realtime.event_dropped", reason="session closed", event_type=text[9:60])

    # ------------------------------------------------------------------------------------------------
    # model side: events

    async def on_realtime_message(self, message: str | bytes) -> None:
        try:
            event = self._rt.parse(message)
        except rt.RealtimeProtocolError as error:
            self.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("malformed_event").inc()
            log.warning("realtime.malformed_event", error=str(error))
            return
        await self.on_realtime_event(event)

    async def on_realtime_event(self, event: rt.ServerEvent) -> None:
        if self._closing:
            return
        handler = _MODEL_HANDLERS.get(type(event))
        if handler is None:
            return
        try:
            await handler(self, event)
        except InvalidTransition as error:
            self._refused(error, "model")

    async def _session_created(self, _event: rt.SessionCreated) -> None:
        if self.link.state is LinkState.AWAITING_SESSION:
            await self._configure()

    async def _session_updated(self, _event: rt.SessionUpdated) -> None:
        self.link.ready()
        if self.phase.state is CallState.CONNECTING:
            self.phase.fire("session_ready")
            log.info("call.session_ready", resumed=bool(self._resume_line))
            if self._resume_line:  # the caller heard the line go quiet: say so first
                await self._request_response(
                    f'Say this to the caller, in the caller\'s language, then continue the conversation: "{self._resume_line}"')
            elif self._greeting:
                await self._request_response(None)
        elif self.handoff.state is HandoffState.PENDING and not self.replies.busy:
            await self._speak_handoff()  # the replacement session says the hand-off line

    async def _bot_audio(self, delta: rt.AudioDelta) -> None:
        if self.replies.is_dropped(delta.response_id):
            self.stats.dropped_deltas += 1
            return
        if not await self.bot.play(delta.item_id, delta.audio):
            return
        if self._speech_stopped_at is not None:
            latency, self._speech_stopped_at = self._clock() - self._speech_stopped_at, None
            self.stats.response_latencies_ms.append(latency * 1000)
            metrics.FIRST_AUDIO_SECONDS.observe(latency)
        self.phase.fire("bot_audio")

    async def _bot_audio_done(self, done: rt.AudioDone) -> None:
        """The item's audio is complete: carriers with fixed chunk sizes get the padded remainder."""
        if not self.replies.is_dropped(done.response_id):
            await self.bot.finish(done.item_id)

    async def _speech_started(self, event: rt.SpeechStarted) -> None:
        self._observer.caller_speech_started(event.audio_start_ms)
        await self._barge_in()

    async def _speech_stopped(self, event: rt.SpeechStopped) -> None:
        self._speech_stopped_at = self._clock()
        self._observer.caller_speech_stopped(event.audio_end_ms)

    async def _output_yielded(self, _event: rt.OutputYielded) -> None:
        """A full-duplex model stopped talking because the caller talked over it: whatever is still
        queued at the provider is stale, so flush it. No cancel or truncate (the model did that)."""
        if self.bot.playing:
            await self.bot.flush()
            self.phase.fire("barge_in")

    async def _response_created(self, event: rt.ResponseCreated) -> None:
        self.replies.created(event.response_id)
        self.handoff.response_created(event.response_id)
        self.stats.responses += 1

    async def _output_item_added(self, event: rt.OutputItemAdded) -> None:
        if event.item_type == "function_call":
            self.replies.tool_call_started(event.call_id, event.name)

    async def _arguments_done(self, event: rt.FunctionCallArgumentsDone) -> None:
        if not self.replies.tool_call_done(event.response_id, event.call_id, event.name, event.arguments):
            log.warning("realtime.tool_call_dropped", reason="too many calls in one response")

    async def _caller_transcript(self, event: rt.InputTranscriptionCompleted) -> None:
        self._history.add("caller", event.transcript, event.item_id)
        self._observer.caller_transcript(event.item_id, event.transcript)

    async def _bot_transcript(self, event: rt.TranscriptDone) -> None:
        self._history.add("assistant", event.transcript, event.item_id)
        self._observer.bot_transcript(event.item_id, event.transcript)

    async def _item_truncated(self, event: rt.ItemTruncated) -> None:
        log.info("realtime.item_truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms)

    async def _transcription_failed(self, event: rt.InputTranscriptionFailed) -> None:
        log.warning("realtime.transcription_failed", item_id=event.item_id, error=event.message[:300])

    # ------------------------------------------------------------------------------------------------
    # barge-in (docs/models/realtime.md, "Barge-in"; docs/providers/twilio.md, "Marks and clear")

    async def _barge_in(self) -> None:
        """Flush the provider first, then cancel the reply and truncate each item at what was heard.
        With nothing playing, only a reply still generating is cancelled (its deltas dropped)."""
        started = self._clock()
        positions = await self.bot.flush() if self.bot.playing else None
        reaction = self._clock() - started
        if (response := self.replies.drop_active()) is not None:
            await self._send_model(self._rt.response_cancel(response))
        if positions is None:
            return
        for cut in (p for p in positions if p.cut):
            await self._send_model(self._rt.item_truncate(cut.item_id, cut.heard_ms))
            self.stats.truncates += 1
            self._observer.bot_truncated(cut.item_id, cut.heard_ms, cut.sent_ms)
            self._history.shorten(cut.item_id, cut.heard_ms, cut.sent_ms)
        self.stats.barge_ins += 1
        self.stats.barge_in_reactions_ms.append(reaction * 1000)
        metrics.BARGE_INS.inc()
        metrics.BARGE_IN_REACTION_SECONDS.observe(reaction)
        log.info("call.barge_in", item_id=positions[0].item_id, heard_ms=positions[0].heard_ms,
                 sent_ms=positions[0].sent_ms, reaction_ms=round(reaction * 1000, 3))
        self.phase.fire("barge_in")

    # ------------------------------------------------------------------------------------------------
    # responses and tools (docs/models/realtime.md, "Function calling")

    async def _request_response(self, instructions: str | None) -> None:
        """``response.create`` now, or after the active response's ``response.done``."""
        if self.replies.request(instructions):
            await self._send_model(self._rt.response_create(instructions))

    async def _response_done(self, done: rt.ResponseDone) -> None:
        self.replies.done(done.response_id)
        if done.usage:
            self._observer.usage(done.usage)
        if done.status == "failed":
            self.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("response_failed").inc()
            log.warning("realtime.response_failed", response_id=done.response_id, reason=done.reason[:200])
        tool_calls = self.replies.pop_tool_calls(done.response_id)
        if done.status == "completed":
            for call_id, name, arguments in tool_calls:
                await self._run_tool(call_id, name, arguments)
            if tool_calls and self.handoff.state is HandoffState.NONE and self.replies.pending is None:
                self.replies.pending = ""  # a function output never triggers a response by itself
        if self.handoff.response_done(done.response_id):  # the hand-off line has been generated
            if not self.bot.playing:
                await self._transfer()
            return
        if self.handoff.state is HandoffState.PENDING:
            await self._speak_handoff()
        elif self.handoff.state is HandoffState.NONE and self.replies.pending is not None:
            await self._request_response(self.replies.take_pending() or None)

    async def _run_tool(self, call_id: str, name: str, arguments: str) -> None:
        """Answer every tool call with a function output; the escalation tool escalates at once.
        Unusable arguments (too large, not a JSON object) get an error output; the call goes on."""
        problem = tool_arguments_problem(arguments)
        if problem is not None:
            log.warning("realtime.tool_arguments_invalid", tool=name[:64], problem=problem, size=len(arguments))
            metrics.REALTIME_ERRORS.labels("tool_arguments").inc()
            output = json.dumps({"error": f"invalid arguments: {problem}"})
            await self._send_model(self._rt.function_call_output(call_id, output))
            return
        await self._send_model(self._rt.function_call_output(call_id, self._observer.tool_call(name, arguments)))
        if name == ESCALATION_TOOL_NAME:
            args = parse_tool_arguments(arguments)
            reason = bounded_free_text(args.get("reason")) or "the model asked for a human"
            await self.escalate(EscalationRequest(trigger="model_tool", reason=reason, inputs=args))

    async def _realtime_error(self, error: rt.RealtimeError) -> None:
        if error.code in _BENIGN_ERRORS or "already shorter" in error.message:
            if error.code == "conversation_already_has_active_response" and self.replies.state is ReplyState.REQUESTED:
                self.replies.refused()
            log.info("realtime.benign_error", code=error.code[:64], message=error.message[:300])
            return
        self.stats.errors += 1
        metrics.REALTIME_ERRORS.labels(metrics.realtime_error_label(error.code, error.type)).inc()
        log.error("realtime.error", type=error.type[:64], code=error.code[:64], message=error.message[:300],
                  param=error.param[:64])  # the server's free text: capped
        if self.phase.state is CallState.CONNECTING and error.code in QUOTA_CODES:
            await self.model_unavailable("quota", self._unavailable_action)
        elif self.phase.state is CallState.CONNECTING:
            await self.fail("realtime error: " + (error.code or error.type)[:64])
        # session_expired is followed by a close (1001): the session is replaced then

    # ------------------------------------------------------------------------------------------------
    # escalation and transfer

    async def escalate(self, request: EscalationRequest) -> None:
        """Hand the caller to a human: record, say the hand-off line, then end the stream for the
        provider's transfer. One escalation per call: later calls (and calls once the call is
        ending) do nothing. A guard timer transfers anyway if the line never finishes."""
        if self.handoff.state is not HandoffState.NONE or not self.phase.accepts("escalate"):
            return
        self.phase.fire("escalate")
        self.handoff.escalate(request)
        self.outcome = "escalated"
        metrics.ESCALATIONS.labels(request.trigger).inc()
        log.info("call.escalating", trigger=request.trigger, reason=request.reason)
        self._observer.escalation_started(request)
        if self.link.send is None:
            await self._transfer()
            return
        loop = asyncio.get_running_loop()
        self._handoff_guard = loop.call_later(_HANDOFF_PLAYBACK_GUARD_S, lambda: loop.create_task(self._transfer()))
        if not self.replies.busy:
            await self._speak_handoff()

    async def _speak_handoff(self) -> None:
        line = self._handoff_line or escalation_defaults.HANDOFF_LINE
        self.handoff.speak()
        self.replies.pending = None
        await self._request_response(f'Say this to the caller, in the caller\'s language, and nothing else: "{line}"')

    async def _transfer(self) -> None:
        """End the media stream so the provider runs its transfer (or transfer over REST first)."""
        if self._closing or not self.handoff.transfer():
            return
        if self._handoff_guard is not None:
            self._handoff_guard.cancel()
        via = "stream_end"
        if self._rest_transfer is not None:
            try:
                via = "rest" if await self._rest_transfer() else "stream_end"
            except Exception as error:  # fall back to ending the stream: the provider still transfers
                log.warning("call.rest_transfer_failed", error=repr(error)[:300])
        request = self.handoff.request
        log.info("call.transfer", trigger=request.trigger if request else "", via=via)
        await self.end("transferred to a human", close_code=1000)

    async def let_go(self, reason: str) -> None:
        """Drain with resumption: end the stream without a transfer so that the provider's after-stream
        resumes the call on another replica (``end_reason`` says so; the caller hears a short gap)."""
        if self._closing:
            return
        self.outcome = "handed_over"
        log.info("call.let_go", reason=reason)
        await self.end(reason, close_code=1000)

    async def hand_off(self, reason: str) -> None:
        """Drain: a call still active when the drain timeout passes goes to the human queue."""
        if self._closing:
            return
        if self.phase.state is CallState.ESCALATING:
            await self._transfer()
        else:  # the hand-off line plays first; the guard timer bounds the wait
            await self.escalate(EscalationRequest(trigger="drain", reason=reason))

    async def model_unavailable(self, reason: str, action: str) -> None:
        """No model session for this call (``reason``: cap, connect_failed, quota, reconnect_failed). The
        caller is never just dropped: ``human`` escalates (trigger ``model_unavailable``; with no model
        to say a hand-off line the transfer starts at once), ``message`` ends the stream with outcome
        ``overflow`` so the provider plays the overflow message."""
        if self._closing:
            return
        metrics.MODEL_UNAVAILABLE.labels(reason).inc()
        log.warning("call.model_unavailable", reason=reason, action=action)
        self.realtime_lost()
        if action == "human":
            await self.escalate(EscalationRequest(trigger="model_unavailable", reason=f"no model session ({reason})"))
            await self._transfer()  # at once: escalate() only waits for a line a model would say
        else:
            self.outcome = "overflow"
            await self.end("model unavailable", close_code=1000)

    # ------------------------------------------------------------------------------------------------
    # ending

    async def fail(self, reason: str) -> None:
        """Failure path: log, play a short apology tone if the stream is up, end cleanly."""
        if self._closing:
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
        if self._closing:
            return
        self.phase.fire("hang_up")
        self.end_reason = reason
        self.bot.stop()
        if self._handoff_guard is not None:
            self._handoff_guard.cancel()
        try:
            await self._close_provider(close_code, reason[:120])
        except Exception as error:
            log.debug("provider.close_failed", error=repr(error)[:300])
        self.ended.set()

    def finish(self) -> dict[str, Any]:
        """Mark ENDED, close the link and produce the call summary (logged once by the session)."""
        self.caller.report()
        if self.phase.state is CallState.ENDING:
            self.phase.fire("closed")
        self.link.close()
        summary = {**self.stats.summary(), "outcome": self.outcome, "end_reason": self.end_reason}
        self._observer.ended(summary)
        return summary


_MODEL_HANDLERS: dict[type, Callable[[CallBridge, Any], Awaitable[None]]] = {
    rt.AudioDelta: CallBridge._bot_audio,
    rt.AudioDone: CallBridge._bot_audio_done,
    rt.SpeechStarted: CallBridge._speech_started,
    rt.SpeechStopped: CallBridge._speech_stopped,
    rt.OutputYielded: CallBridge._output_yielded,
    rt.ResponseCreated: CallBridge._response_created,
    rt.ResponseDone: CallBridge._response_done,
    rt.OutputItemAdded: CallBridge._output_item_added,
    rt.FunctionCallArgumentsDone: CallBridge._arguments_done,
    rt.InputTranscriptionCompleted: CallBridge._caller_transcript,
    rt.TranscriptDone: CallBridge._bot_transcript,
    rt.SessionCreated: CallBridge._session_created,
    rt.SessionUpdated: CallBridge._session_updated,
    rt.ItemTruncated: CallBridge._item_truncated,
    rt.RealtimeError: CallBridge._realtime_error,
    rt.InputTranscriptionFailed: CallBridge._transcription_failed,
}
