"""The call bridge: one object per call between a telephony media stream and a Realtime session.

State machine (named states, named transitions; ``TRANSITIONS`` is the whole table):

    CONNECTING --session_ready--> LISTENING --bot_audio--> BOT_SPEAKING --playback_done--> LISTENING
    BOT_SPEAKING --barge_in--> INTERRUPTED --bot_audio--> BOT_SPEAKING
    INTERRUPTED --playback_done--> LISTENING
    LISTENING | BOT_SPEAKING | INTERRUPTED --escalate--> ESCALATING
    any live state --hang_up--> ENDING --closed--> ENDED

Guarantees:
- Inbound frames are decoded, resampled and appended to the Realtime session in arrival order, each
  without waiting for anything but the socket send (no Redis, HTTP or logging per frame).
- Outbound: each audio delta is resampled and sent to the provider at once, followed by a mark
  (``PlaybackLedger``), so the bridge always knows what the caller has heard.
- Barge-in (``_barge_in``) follows realtime-api.md 6.2: provider ``clear`` first, then
  ``response.cancel`` if a response is still in progress, then ``conversation.item.truncate`` for the
  playing item with the heard ms (only if something was cut), late deltas dropped, the outbound
  resampler reset.
- Escalation (``escalate``) is one step: state ESCALATING, the observer records it (outbox), the bot
  says the hand-off line, and once that has played the stream is ended for the provider's transfer.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from service import metrics
from service.audio.resample import CallerToModel, InboundAudio, ModelToCaller, OutboundAudio
from service.call.observer import CallObserver, EscalationRequest, NullObserver
from service.call.playback import PlaybackLedger
from service.providers.base import (
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    TelephonyEvent,
)
from service.realtime import events as rt
from service.realtime.events import (
    ImmediateSend,
    RealtimeClosed,
    RealtimeDialect,
    RealtimeProtocolError,
    SessionConfig,
)

log = structlog.get_logger(__name__)

# callbridge_frames_in_total is incremented per 50 frames (1 s of audio) and at the end of the call:
# one metric update per frame cost more than the rest of the counter's use is worth.
_FRAMES_IN_REPORT_EVERY = 50
SendText = Callable[[str], Awaitable[None]]

# Pre-buffer of caller frames while the Realtime session connects: 50 x 160 B = 8 KB (1 s).
_PREBUFFER_FRAMES = 50
# Error codes that are expected races, not failures (realtime-api.md 9.2).
_BENIGN_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
)
_HANDOFF_PLAYBACK_GUARD_S = 20.0
# Turns of conversation kept to re-seed a replacement Realtime session (~20 short strings).
_HISTORY_TURNS = 20


ESCALATION_TOOL_NAME = "escalate_to_human"


class _Handoff(enum.Enum):
    """Progress of the hand-off line within the ESCALATING state."""

    NONE = "none"
    PENDING = "pending"  # waiting for the active response to finish
    SPEAKING = "speaking"  # response.create for the line sent
    SPOKEN = "spoken"  # its response.done arrived; transfer once playback drains


class CallState(enum.StrEnum):
    CONNECTING = "connecting"
    LISTENING = "listening"
    BOT_SPEAKING = "bot_speaking"
    INTERRUPTED = "interrupted"
    ESCALATING = "escalating"
    ENDING = "ending"
    ENDED = "ended"


_LIVE = (CallState.LISTENING, CallState.BOT_SPEAKING, CallState.INTERRUPTED)
TRANSITIONS: dict[tuple[CallState, str], CallState] = {
    (CallState.CONNECTING, "session_ready"): CallState.LISTENING,
    (CallState.LISTENING, "bot_audio"): CallState.BOT_SPEAKING,
    (CallState.INTERRUPTED, "bot_audio"): CallState.BOT_SPEAKING,
    (CallState.BOT_SPEAKING, "playback_done"): CallState.LISTENING,
    (CallState.INTERRUPTED, "playback_done"): CallState.LISTENING,
    (CallState.BOT_SPEAKING, "barge_in"): CallState.INTERRUPTED,
    **{(state, "escalate"): CallState.ESCALATING for state in (*_LIVE, CallState.CONNECTING)},
    **{(state, "hang_up"): CallState.ENDING for state in (CallState.CONNECTING, *_LIVE, CallState.ESCALATING)},
    (CallState.ENDING, "closed"): CallState.ENDED,
}


class InvalidTransition(RuntimeError):
    pass


@dataclass
class CallStats:
    """Figures for the one ``call.summary`` line per call."""

    started_at: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    malformed_frames: int = 0
    barge_ins: int = 0
    truncates: int = 0
    dropped_deltas: int = 0
    provider_sends_dropped: int = 0  # messages for a provider socket that had already closed
    responses: int = 0
    response_latencies_ms: list[float] = field(default_factory=list)
    barge_in_reactions_ms: list[float] = field(default_factory=list)
    errors: int = 0
    dtmf: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.response_latencies_ms)
        return {
            "duration_s": round(time.monotonic() - self.started_at, 2),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bot_audio_ms": self.bytes_out // 8,
            "malformed_frames": self.malformed_frames,
            "barge_ins": self.barge_ins,
            "truncates": self.truncates,
            "provider_sends_dropped": self.provider_sends_dropped,
            "responses": self.responses,
            "first_audio_ms_median": round(lat[len(lat) // 2], 1) if lat else None,
            "first_audio_ms_max": round(lat[-1], 1) if lat else None,
            "barge_in_reaction_ms_max": round(max(self.barge_in_reactions_ms), 2) if self.barge_in_reactions_ms else None,
            "errors": self.errors,
            "dtmf_digits": "".join(self.dtmf),
        }


class CallBridge:
    """Bridges one call. Not thread-safe; all methods run on the call's event loop.

    ``to_provider``/``to_model`` send one text frame each (ordered). ``on_provider_message`` and
    ``on_realtime_message`` take raw frames; each is called from its own reader task.
    """

    def __init__(
        self,
        *,
        call_id: str,
        provider: TelephonyDialect,
        realtime: RealtimeDialect,
        session_config: SessionConfig,
        to_provider: SendText,
        close_provider: Callable[[int, str], Awaitable[None]],
        greeting: bool = True,
        handoff_line: str = "",
        observer: CallObserver | None = None,
        rest_transfer: Callable[[], Awaitable[bool]] | None = None,
        max_malformed_frames: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.state = CallState.CONNECTING
        self.stats = CallStats()
        self.end_reason = ""
        self.outcome = "completed"
        self.ended = asyncio.Event()
        self._provider = provider
        self._rt = realtime
        self._config = session_config
        self._to_provider = to_provider
        self._close_provider = close_provider
        self._to_model: SendText | None = None
        self._audio_to_model: SendText | None = None  # set once the session is configured
        self._immediate: ImmediateSend | None = None
        self._audio_now: ImmediateSend | None = None  # ``_immediate`` once the session is configured
        # perf_counter time since when caller audio is forwarded live (frames received earlier were
        # held while the Realtime session was set up: not counted in the frame-forward histogram)
        self._live_since = math.inf
        self._frames_in_reported = 0  # callbridge_frames_in_total is added to once a second per call
        self._greeting = greeting
        self._handoff_line = handoff_line
        self._observer: CallObserver = observer or NullObserver()
        self._rest_transfer = rest_transfer
        self._max_malformed = max_malformed_frames
        self._clock = clock
        self._inbound: InboundAudio = CallerToModel()
        self._outbound: OutboundAudio = ModelToCaller()
        self._ledger = PlaybackLedger()
        self._prebuffer: deque[bytes] = deque(maxlen=_PREBUFFER_FRAMES)
        self._active_response: str | None = None
        self._create_in_flight = False
        self._pending_create: str | None = None  # instructions of a response.create waiting for response.done
        self._dropped_responses: deque[str] = deque(maxlen=16)
        self._tool_names: dict[str, str] = {}
        self._tool_calls: dict[str, list[tuple[str, str, str]]] = {}  # response_id -> [(call_id, name, args)]
        self._speech_stopped_at: float | None = None
        self._escalation: EscalationRequest | None = None
        self._handoff = _Handoff.NONE
        self._handoff_response_id: str | None = None
        self._handoff_guard: asyncio.TimerHandle | None = None
        self._transfer_started = False
        # (role, text, item_id) for re-seeding a replacement session; bot text shortened to what was heard
        self._history: deque[tuple[str, str, str]] = deque(maxlen=_HISTORY_TURNS)
        self._reconnected = False

    # ------------------------------------------------------------------------------------------------
    # state machine

    def _transition(self, name: str) -> bool:
        """Apply a named transition; return False (and change nothing) where it does not apply."""
        target = TRANSITIONS.get((self.state, name))
        if target is None:
            return False
        previous, self.state = self.state, target
        self._observer.state_changed(target.value, previous.value)
        return True

    # ------------------------------------------------------------------------------------------------
    # provider side

    def parse_provider(self, message: str | bytes) -> TelephonyEvent | ProtocolError:
        """The provider dialect's typed event for one frame, or the ``ProtocolError`` it raised."""
        try:
            return self._provider.parse(message)
        except ProtocolError as error:
            return error

    def forward_media_now(self, payload: bytes, received: float) -> bool:
        """Inbound hot path without a task switch: forward one caller frame to the model at once if
        the model leg can take it without waiting (session configured, write buffer not full).
        False means nothing was done and the frame must go through ``on_provider_event``.
        Callers guarantee order: nothing received earlier may still be waiting to be handled."""
        sender = self._audio_now
        if sender is None or not sender.can_send_now():
            return False
        self._count_frame_in()
        try:
            sender.send_now(self._rt.audio_append_b64(self._inbound.process_b64(payload)))
        except RealtimeClosed:
            self.realtime_lost()  # the Realtime reader replaces the session; this frame is lost
            return True
        self._frame_forwarded(payload, received)
        return True

    def _count_frame_in(self) -> None:
        self.stats.frames_in += 1
        if self.stats.frames_in - self._frames_in_reported >= _FRAMES_IN_REPORT_EVERY:
            self._report_frames_in()

    def _frame_forwarded(self, payload: bytes, received: float) -> None:
        """After a caller frame went to the model: latency (live frames only) and side work."""
        if received >= self._live_since:  # frames held while the session was set up are not "live"
            metrics.FRAME_FORWARD.observe(time.perf_counter() - received)
        self._observer.caller_audio(payload)

    async def on_provider_message(self, message: str | bytes) -> None:
        """Handle one provider frame. Malformed frames are logged and skipped; a flood closes 1008."""
        received = time.perf_counter()
        await self.on_provider_event(self.parse_provider(message), received)

    async def on_provider_event(self, event: TelephonyEvent | ProtocolError, received: float) -> None:
        """Handle one parsed provider frame (``received``: its ``perf_counter`` arrival time)."""
        if isinstance(event, ProtocolError):
            await self._malformed(event)
            return
        if isinstance(event, MediaReceived):
            self._count_frame_in()
            if self._audio_to_model is None:
                self._prebuffer.append(event.payload)  # session not configured yet (bounded: 1 s)
                return
            try:
                await self._audio_to_model(self._rt.audio_append_b64(self._inbound.process_b64(event.payload)))
            except RealtimeClosed:
                self.realtime_lost()  # the Realtime reader replaces the session; this frame is lost
                return
            self._frame_forwarded(event.payload, received)
        elif isinstance(event, MarkEchoed):
            if self._mark_echoed(event.name) and self._handoff is _Handoff.SPOKEN:
                await self._transfer()  # the hand-off line has been heard: transfer now
        elif isinstance(event, DtmfReceived):
            await self._dtmf(event.digit)
        elif isinstance(event, StreamStopped):
            await self.end("caller hung up")
        elif isinstance(event, (StreamConnected, StreamStarted)):
            log.warning("provider.unexpected_handshake", event_type=type(event).__name__)

    async def _malformed(self, error: ProtocolError) -> None:
        self.stats.malformed_frames += 1
        metrics.MALFORMED_FRAMES.labels(self._provider.name).inc()
        log.warning("provider.malformed_frame", error=str(error), count=self.stats.malformed_frames)
        if self.stats.malformed_frames >= self._max_malformed:
            self.outcome = "error"
            await self.end("too many malformed frames", close_code=1008)

    async def _dtmf(self, digit: str) -> None:
        self.stats.dtmf.append(digit)
        log.info("call.dtmf", digit=digit)
        await self._send_model(self._rt.user_text_item(f"[The caller pressed the keypad key {digit}]"))
        self._observer.dtmf(digit)

    # ------------------------------------------------------------------------------------------------
    # realtime side

    async def attach_realtime(self, to_model: SendText, immediate: ImmediateSend | None = None) -> None:
        """The Realtime session is connected; caller audio flows once ``session.update`` is sent.
        ``immediate``: the transport's synchronous send, if it has one (enables ``forward_media_now``)."""
        self._to_model = to_model
        self._immediate = immediate

    async def reattach_realtime(self, to_model: SendText, immediate: ImmediateSend | None = None) -> None:
        """A replacement Realtime session after the old one dropped (realtime-api.md 10: there is
        no resume). Response bookkeeping of the old session is forgotten; the new session gets the
        same configuration plus the conversation so far in its instructions; caller audio is held
        (bounded pre-buffer) until its ``session.update`` is sent; the provider leg never stops.
        A hand-off line that had not been spoken yet is requested again."""
        self._to_model = to_model
        self._immediate = immediate
        self._audio_to_model = None
        self._audio_now = None
        self._live_since = math.inf
        self._active_response = None
        self._create_in_flight = False
        self._pending_create = None
        self._tool_calls.clear()
        self._tool_names.clear()
        self._speech_stopped_at = None
        self._reconnected = True
        if self._handoff is _Handoff.SPEAKING:
            self._handoff = _Handoff.PENDING
            self._handoff_response_id = None

    def _config_for_session(self) -> SessionConfig:
        """The session configuration; after a reconnect, the instructions carry the conversation so
        far (the new session starts empty; seeding it as items risks text-only replies, 10.3)."""
        if not self._reconnected or not self._history:
            return self._config
        lines = "\n".join(f"{role}: {text}" for role, text, _item in self._history)
        note = (
            "\n\nThe phone connection to you was re-established mid-call. The conversation so far "
            "(most recent last) was:\n" + lines + "\nContinue naturally from there; do not greet again."
        )
        return replace(self._config, instructions=self._config.instructions + note)

    async def _open_audio(self) -> None:
        """After ``session.update``: flush pre-buffered caller audio in order, then forward live."""
        assert self._to_model is not None
        while self._prebuffer:
            await self._to_model(self._rt.audio_append_b64(self._inbound.process_b64(self._prebuffer.popleft())))
        self._audio_to_model = self._to_model
        self._audio_now = self._immediate
        self._live_since = time.perf_counter()

    async def on_realtime_message(self, message: str | bytes) -> None:
        try:
            event = self._rt.parse(message)
        except RealtimeProtocolError as error:
            self.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("malformed_event").inc()
            log.warning("realtime.malformed_event", error=str(error))
            return
        await self.on_realtime_event(event)

    async def on_realtime_event(self, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.AudioDelta):
            await self._bot_audio(event)
        elif isinstance(event, rt.SpeechStarted):
            self._observer.caller_speech_started(event.audio_start_ms)
            await self._barge_in()
        elif isinstance(event, rt.SpeechStopped):
            self._speech_stopped_at = self._clock()
            self._observer.caller_speech_stopped(event.audio_end_ms)
        elif isinstance(event, rt.ResponseCreated):
            self._active_response = event.response_id
            self._create_in_flight = False
            self.stats.responses += 1
            if self._handoff is _Handoff.SPEAKING and self._handoff_response_id is None:
                self._handoff_response_id = event.response_id
        elif isinstance(event, rt.ResponseDone):
            await self._response_done(event)
        elif isinstance(event, rt.OutputItemAdded):
            if event.item_type == "function_call":
                self._tool_names[event.call_id] = event.name
        elif isinstance(event, rt.FunctionCallArgumentsDone):
            name = event.name or self._tool_names.pop(event.call_id, "")
            self._tool_names.pop(event.call_id, None)  # bounded: one entry per call in flight
            self._tool_calls.setdefault(event.response_id, []).append((event.call_id, name, event.arguments))
        elif isinstance(event, rt.InputTranscriptionCompleted):
            self._history.append(("caller", event.transcript, event.item_id))
            self._observer.caller_transcript(event.item_id, event.transcript)
        elif isinstance(event, rt.TranscriptDone):
            self._history.append(("assistant", event.transcript, event.item_id))
            self._observer.bot_transcript(event.item_id, event.transcript)
        elif isinstance(event, rt.SessionCreated):
            await self._send_model(self._rt.session_update(self._config_for_session()))
            await self._open_audio()
        elif isinstance(event, rt.SessionUpdated):
            if self._transition("session_ready"):
                log.info("call.session_ready")
                if self._greeting:
                    await self._request_response(None)
            elif self._handoff is _Handoff.PENDING and self._active_response is None:
                await self._speak_handoff()  # the replacement session says the hand-off line
        elif isinstance(event, rt.ItemTruncated):
            log.info("realtime.item_truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms)
        elif isinstance(event, rt.RealtimeError):
            await self._realtime_error(event)
        elif isinstance(event, rt.InputTranscriptionFailed):
            log.warning("realtime.transcription_failed", item_id=event.item_id, error=event.message)

    async def _bot_audio(self, delta: rt.AudioDelta) -> None:
        if delta.response_id in self._dropped_responses:
            self.stats.dropped_deltas += 1
            return
        mulaw = self._outbound.process(delta.audio)
        if not mulaw:
            return
        now = self._clock()
        await self._to_provider(self._provider.build_media(mulaw))
        mark = self._ledger.on_audio_sent(delta.item_id, len(mulaw), now)
        await self._to_provider(self._provider.build_mark(mark))
        self.stats.frames_out += 1
        self.stats.bytes_out += len(mulaw)
        metrics.FRAMES_OUT.inc()
        if self._speech_stopped_at is not None:
            latency = now - self._speech_stopped_at
            self._speech_stopped_at = None
            self.stats.response_latencies_ms.append(latency * 1000)
            metrics.FIRST_AUDIO_SECONDS.observe(latency)
        self._transition("bot_audio")

    def mark_echoed_now(self, name: str) -> bool:
        """A mark echo handled without awaiting (same ordering contract as ``forward_media_now``).
        False, with nothing done, only while the hand-off line plays: its last echo starts the
        transfer, which must be awaited through ``on_provider_event``."""
        if self._handoff is _Handoff.SPOKEN:
            return False
        self._mark_echoed(name)
        return True

    def _mark_echoed(self, name: str) -> bool:
        """Apply an echoed mark to the playback ledger; True if it ended playback (all heard)."""
        if self._ledger.on_mark_echoed(name, self._clock()) and self._ledger.outstanding_marks == 0:
            self._transition("playback_done")
            return True
        return False

    # ------------------------------------------------------------------------------------------------
    # barge-in (realtime-api.md 6.2; telephony-streams.md 1.4)

    async def _barge_in(self) -> None:
        now = self._clock()
        if not self._ledger.is_playing(now):
            # Nothing queued or playing: no clear, no truncate. A response still generating is
            # cancelled (the server does so too with interrupt_response) and its in-flight deltas
            # are dropped, so they cannot start playing over the caller.
            if self._active_response is not None:
                self._dropped_responses.append(self._active_response)
                await self._send_model(self._rt.response_cancel(self._active_response))
            return
        queued = self._ledger.queued_items()  # head first: the playing item, then items never started
        item_id = queued[0] if queued else self._ledger.playing_item()
        await self._to_provider(self._provider.build_clear())
        cleared_at = self._clock()
        reaction = cleared_at - now
        # The caller kept hearing audio until the clear went out: measure the heard position then.
        heard = self._ledger.heard(item_id, cleared_at) if item_id else None
        self._ledger.on_clear(cleared_at)
        self._outbound.reset()
        self.stats.barge_ins += 1
        self.stats.barge_in_reactions_ms.append(reaction * 1000)
        metrics.BARGE_INS.inc()
        metrics.BARGE_IN_REACTION_SECONDS.observe(reaction)
        if self._active_response is not None:
            self._dropped_responses.append(self._active_response)
            await self._send_model(self._rt.response_cancel(self._active_response))
        if heard is not None and heard.cut:
            await self._send_model(self._rt.item_truncate(heard.item_id, heard.heard_ms))
            self.stats.truncates += 1
            self._observer.bot_truncated(heard.item_id, heard.heard_ms, heard.sent_ms)
        if heard is not None and heard.cut:
            self._shorten_history(heard.item_id, heard.heard_ms, heard.sent_ms)
        for unheard in queued[1:]:  # later items of the reply that never started playing
            self._shorten_history(unheard, 0, 1)
            await self._send_model(self._rt.item_truncate(unheard, 0))
            self.stats.truncates += 1
            self._observer.bot_truncated(unheard, 0, self._ledger.heard(unheard, cleared_at).sent_ms)
        log.info(
            "call.barge_in",
            item_id=item_id,
            heard_ms=heard.heard_ms if heard else None,
            sent_ms=heard.sent_ms if heard else None,
            reaction_ms=round(reaction * 1000, 3),
        )
        self._transition("barge_in")

    # ------------------------------------------------------------------------------------------------
    # responses and tools (realtime-api.md 7)

    async def _request_response(self, instructions: str | None) -> None:
        """``response.create`` now, or after the active response's ``response.done``."""
        if self._active_response is not None or self._create_in_flight:
            self._pending_create = instructions or ""
            return
        self._create_in_flight = True
        await self._send_model(self._rt.response_create(instructions))

    async def _response_done(self, done: rt.ResponseDone) -> None:
        if done.response_id == self._active_response:
            self._active_response = None
        if done.usage:
            self._observer.usage(done.usage)
        if done.status == "failed":
            self.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("response_failed").inc()
            log.warning("realtime.response_failed", response_id=done.response_id, reason=done.reason)
        tool_calls = self._tool_calls.pop(done.response_id, [])
        if done.status == "completed":
            for call_id, name, arguments in tool_calls:
                await self._run_tool(call_id, name, arguments)
            if tool_calls and self._handoff is _Handoff.NONE and self._pending_create is None:
                self._pending_create = ""  # a function output never triggers a response by itself
        if self._handoff is _Handoff.SPEAKING and done.response_id == self._handoff_response_id:
            self._handoff = _Handoff.SPOKEN
            if not self._ledger.is_playing(self._clock()) and self._ledger.outstanding_marks == 0:
                await self._transfer()
            return
        if self._handoff is _Handoff.PENDING:
            await self._speak_handoff()
        elif self._pending_create is not None and self._handoff is _Handoff.NONE:
            instructions, self._pending_create = self._pending_create, None
            await self._request_response(instructions or None)

    async def _run_tool(self, call_id: str, name: str, arguments: str) -> None:
        """Answer every tool call with a function_call_output; the escalation tool escalates at once."""
        output = self._observer.tool_call(name, arguments)
        await self._send_model(self._rt.function_call_output(call_id, output))
        if name == ESCALATION_TOOL_NAME:
            args = parse_tool_arguments(arguments)
            reason = str(args.get("reason") or "the model asked for a human")
            await self.escalate(EscalationRequest(trigger="model_tool", reason=reason, inputs=args))

    async def _realtime_error(self, error: rt.RealtimeError) -> None:
        if error.code in _BENIGN_ERRORS or "already shorter" in error.message:
            if error.code == "conversation_already_has_active_response" and self._create_in_flight:
                self._create_in_flight = False
                self._pending_create = self._pending_create or ""
            log.info("realtime.benign_error", code=error.code, message=error.message)
            return
        self.stats.errors += 1
        metrics.REALTIME_ERRORS.labels(error.code or error.type or "error").inc()
        log.error("realtime.error", type=error.type, code=error.code, message=error.message, param=error.param)
        if self.state is CallState.CONNECTING:
            await self.fail("realtime error: " + (error.code or error.type))
        # session_expired is followed by a close (1001); the session reconnects then (realtime-api.md 9-10)

    # ------------------------------------------------------------------------------------------------
    # escalation (one step)

    async def escalate(self, request: EscalationRequest) -> None:
        """Hand the caller to a human: record, say the hand-off line, then end the stream for transfer.

        Idempotent (one escalation per call). The hand-off line is spoken by the model (so it sounds
        like the bot) as soon as no response is active; after it has played, ``_transfer`` runs. A
        guard timer transfers anyway if the line never finishes (model failure)."""
        if self._escalation is not None or not self._transition("escalate"):
            return
        self._escalation = request
        self.outcome = "escalated"
        metrics.ESCALATIONS.labels(request.trigger).inc()
        log.info("call.escalating", trigger=request.trigger, reason=request.reason)
        self._observer.escalation_started(request)
        if self._to_model is None:
            await self._transfer()
            return
        loop = asyncio.get_running_loop()
        self._handoff_guard = loop.call_later(_HANDOFF_PLAYBACK_GUARD_S, lambda: loop.create_task(self._transfer()))
        self._handoff = _Handoff.PENDING
        if self._active_response is None and not self._create_in_flight:
            await self._speak_handoff()

    async def _speak_handoff(self) -> None:
        line = self._handoff_line or "Let me connect you with a colleague. Please hold."
        self._handoff = _Handoff.SPEAKING
        self._pending_create = None
        await self._request_response(f'Say this to the caller, in the caller\'s language, and nothing else: "{line}"')

    async def _transfer(self) -> None:
        """End the media stream so the provider runs the transfer TwiML (telephony-streams.md 1.6)."""
        if self._transfer_started:
            return
        self._transfer_started = True
        if self._handoff_guard is not None:
            self._handoff_guard.cancel()
        via = "stream_end"
        if self._rest_transfer is not None:
            try:
                via = "rest" if await self._rest_transfer() else "stream_end"
            except Exception as error:  # fall back to ending the stream: the <Redirect> still transfers
                log.warning("call.rest_transfer_failed", error=repr(error))
        log.info("call.transfer", trigger=self._escalation.trigger if self._escalation else "", via=via)
        await self.end("transferred to a human", close_code=1000)

    async def hand_off(self, reason: str) -> None:
        """Drain: a call still active when the drain timeout passes goes to the human queue."""
        if self.state in (CallState.ENDING, CallState.ENDED):
            return
        if self.state is CallState.ESCALATING:
            await self._transfer()
            return
        # The hand-off line plays first; the escalation's guard timer bounds the wait (20 s).
        await self.escalate(EscalationRequest(trigger="drain", reason=reason))

    @property
    def escalated(self) -> bool:
        return self._escalation is not None

    # ------------------------------------------------------------------------------------------------
    # ending and failure

    async def fail(self, reason: str) -> None:
        """Failure path: log, play a short apology tone if the stream is up, end cleanly."""
        if self.state in (CallState.ENDING, CallState.ENDED):
            return
        self.outcome = "error"
        self.stats.errors += 1
        log.error("call.failed", reason=reason)
        try:
            tone = _apology_tone()
            await self._to_provider(self._provider.build_media(tone))
            await asyncio.sleep(len(tone) / 8000)  # let the tone play before closing (no event to wait on)
        except Exception as error:  # the stream may already be gone
            log.info("call.apology_not_played", error=repr(error))
        await self.end(reason, close_code=1011)

    async def end(self, reason: str, close_code: int = 1000) -> None:
        """End the call from either side. Idempotent; the session cancels the reader tasks."""
        if not self._transition("hang_up"):
            return
        self.end_reason = reason
        if self._handoff_guard is not None:
            self._handoff_guard.cancel()
        try:
            await self._close_provider(close_code, reason[:120])
        except Exception as error:
            log.debug("provider.close_failed", error=repr(error))
        self.ended.set()

    def _report_frames_in(self) -> None:
        metrics.FRAMES_IN.inc(self.stats.frames_in - self._frames_in_reported)
        self._frames_in_reported = self.stats.frames_in

    def finish(self) -> dict[str, Any]:
        """Mark ENDED and produce the call summary (logged once by the session)."""
        self._report_frames_in()
        self._transition("closed")
        summary = {**self.stats.summary(), "outcome": self.outcome, "end_reason": self.end_reason}
        self._observer.ended(summary)
        return summary

    def _shorten_history(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        """Keep only the heard share of a truncated bot turn (realtime-api.md 10, step 1)."""
        for index, (role, text, item) in enumerate(self._history):
            if item == item_id and role == "assistant":
                words = text.split()
                kept = " ".join(words[: round(len(words) * heard_ms / max(sent_ms, 1))])
                self._history[index] = (role, f"{kept}... [interrupted by the caller]", item)

    async def _send_model(self, text: str) -> None:
        """Send a client event; dropped (logged) while the session is being replaced."""
        if self._to_model is None:
            log.info("realtime.event_dropped", reason="no session", event_type=text[9:60])
            return
        try:
            await self._to_model(text)
        except RealtimeClosed:
            self.realtime_lost()
            log.info("realtime.event_dropped", reason="session closed", event_type=text[9:60])

    def realtime_lost(self) -> None:
        """The Realtime session is gone: hold caller audio (bounded pre-buffer) and drop other client
        events until ``reattach_realtime``."""
        self._to_model = None
        self._audio_to_model = None
        self._audio_now = None
        self._immediate = None


def _apology_tone() -> bytes:
    """0.6 s descending two-note chime at -12 dBFS as 8 kHz mu-law (the caller hears something)."""
    import numpy as np

    from service.audio.g711 import pcm16_to_ulaw

    rate = 8000
    t = np.arange(int(0.3 * rate)) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    notes = [np.sin(2 * math.pi * f * t) * env for f in (660.0, 440.0)]
    samples = (np.concatenate(notes) * 8000).astype(np.int16)
    return pcm16_to_ulaw(samples)


def parse_tool_arguments(arguments: str) -> dict[str, Any]:
    """Tool arguments are a JSON string that may be invalid after a cut response."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
