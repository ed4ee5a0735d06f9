"""The GPT-Live wire dialect, sans I/O (docs/models/live.md, cited as "live §N").

GPT-Live is a full-duplex model with its own API: the client speaks first (``session.start``), audio
flows both ways for the whole session (output is a real-time paced stream with digital silence
between utterances), and there are no turn, response, cancel or truncate events (live §1, §6, §7).
``LiveDialect`` implements the gateway's ``RealtimeDialect`` interface so the call core stays
unchanged: it translates the two continuous streams into the neutral turn events the core already
understands:

- a run of non-silent output deltas is one bot turn: ``ResponseCreated`` + ``AudioDelta``s, and at
  its end (``LiveOptions.bot_silence_ms`` of silent output) ``TranscriptDone`` + ``ResponseDone``.
  Silent deltas are never forwarded as audio;
- output that turns silent after the caller talked over it (the caller was loud when the last
  non-silent delta arrived and still is; caller energy is measured on the audio we append, only
  while the bot speaks) is the model yielding: ``OutputYielded`` first, so the core flushes
  whatever the provider still queues, then the turn ends with status ``cancelled``;
- caller transcript fragments are joined into caller turns by the timing rules of live §8
  (``InputTranscriptionCompleted``);
- the model's escalation arrives as a ``escalate_to_human`` function call from the Responses
  backend, or as a Decisions predicate trigger over the caller transcript (``LiveOptions.escalation``);
  both become ``FunctionCallArgumentsDone`` + ``ResponseDone`` of a synthetic response, so the core
  runs its escalation tool path;
- ``session.usage.updated`` (cumulative seconds) becomes a ``ResponseDone`` whose usage holds the
  new seconds (``{"session_seconds": n}``), so per-call cost adds up without double counting.

One ``parse`` may yield several neutral events; they come back as one ``EventGroup`` (in order).
The session state machine (``LiveState``) raises ``LiveProtocolError`` on an event the current
state does not allow, and ``InvalidTransition`` for a client event built in the wrong state.
Memory per session is bounded: the transcript accumulators are capped at ``MAX_TURN_CHARS`` each,
at most ``MAX_OPEN_CALLS`` backend function calls are remembered.
"""

from __future__ import annotations

import base64
import binascii
import enum
import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.call.machine import InvalidTransition, Machine
from service.realtime.events import (
    AudioDelta,
    EventGroup,
    FunctionCallArgumentsDone,
    FunctionTool,
    InputTranscriptionCompleted,
    OtherEvent,
    OutputYielded,
    RealtimeError,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    SessionUpdated,
    TranscriptDone,
    load_server_event,
)

__all__ = [
    "AZURE_LIVE_PATH",
    "OPENAI_LIVE_URL",
    "LiveDialect",
    "LiveOptions",
    "LiveProtocolError",
    "LiveState",
]

OPENAI_LIVE_URL = "wss://api.openai.com/v1/live/sessions"
AZURE_LIVE_PATH = "/openai/v1/live/sessions"
MAX_TURN_CHARS = 4000
MAX_OPEN_CALLS = 16
MAX_APPEND_CHARS = 1500  # a context append is capped at 500 tokens (live §9); ~3 chars per token, kept short
MAX_HISTORY_MESSAGES = 128  # startup ``input`` (live §3.1)

_LOUD_RUN_GAP_MS = 200  # quiet shorter than this (pauses between words) does not end the caller's speech
_APPEND_HEAD = '{"type":"session.input_audio.append","audio":"'
_APPEND_TAIL = '"}'


class LiveProtocolError(RealtimeProtocolError):
    """A server message that is not a valid GPT-Live event, or not valid in the session's state."""


class LiveState(enum.Enum):
    IDLE = "idle"  # nothing sent yet
    STARTING = "starting"  # session.start sent, waiting for session.started
    ACTIVE = "active"  # session.started received
    CLOSING = "closing"  # session.close sent
    CLOSED = "closed"  # session.closed received


LIVE_EVENTS = ("start", "started", "close", "closed")
LIVE_TRANSITIONS: dict[tuple[LiveState, str], LiveState] = {
    # ``start`` from any state: a replacement session on the same dialect instance (live §15).
    **{(state, "start"): LiveState.STARTING for state in LiveState},
    (LiveState.STARTING, "started"): LiveState.ACTIVE,
    (LiveState.ACTIVE, "close"): LiveState.CLOSING,
    (LiveState.ACTIVE, "closed"): LiveState.CLOSED,
    (LiveState.CLOSING, "closed"): LiveState.CLOSED,
    (LiveState.STARTING, "closed"): LiveState.CLOSED,
}
# Server event types allowed per state (``error`` and ``info`` are allowed in every state).
_STREAM_STATES = (LiveState.ACTIVE, LiveState.CLOSING)


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What a deployment chooses for its Live sessions (docs/configuration.md)."""

    model: str = "gpt-live-1"
    audio_format: Literal["pcm16", "pcmu"] = "pcm16"
    escalation: Literal["responses", "trigger", "off"] = "responses"
    backend_model: str = "gpt-5.5"  # the Responses model behind ``responses`` delegation
    trigger_threshold: float = 0.8  # predicate probability at or above which the trigger escalates
    bot_silence_ms: int = 300  # silent output that ends a bot turn (live §6)
    caller_gap_ms: int = 800  # transcript gap that ends a caller turn (live §8)
    caller_quiet_ms: int = 1500  # caller turn also ends after this much caller audio with no new fragment
    yield_window_ms: int = 600  # caller loud this recently when the output turns silent = the model yielded
    caller_loud_rms: float = 900.0  # PCM16 RMS of a caller frame counted as speech (about -31 dBFS)


_ESCALATION_TOOL = "escalate_to_human"


def _mulaw_table() -> np.ndarray:
    """G.711 mu-law byte -> linear PCM16 (docs/audio.md)."""
    codes = np.arange(256, dtype=np.int32) ^ 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.float32)


_MULAW = _mulaw_table()


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _req(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise LiveProtocolError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _opt(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    if obj.get(key) is None:
        return default
    return _req(obj, key, kind, where)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


class LiveDialect:
    """The GPT-Live dialect (see the module docstring). One instance per call: it keeps the turn
    state of the current session; ``session_update`` (= ``session.start``) begins a new session and
    resets it. Not thread-safe; the call's event loop owns it."""

    name = "live"
    client_speaks_first = True

    def __init__(self, options: LiveOptions | None = None) -> None:
        self.options = options or LiveOptions()
        self.machine: Machine[LiveState] = Machine("live_session", LiveState.IDLE, LIVE_TRANSITIONS)
        self._ids = itertools.count(1)
        self._turns = itertools.count(1)
        self.last_event_id = ""
        self.session_id = ""
        self.expires_at: int | None = None
        self.history: list[tuple[str, str]] = []  # set by the caller before a replacement start
        pcmu = self.options.audio_format == "pcmu"
        self._bytes_per_ms = 8 if pcmu else 48
        self._silence_bytes = b"\xff\x7f" if pcmu else b"\x00"
        self._reset_session()

    # --- per-session state ------------------------------------------------------------------------
    def _reset_session(self) -> None:
        self.input_ms = 0.0  # caller audio appended in this session (the session timeline, live §6)
        self.output_ms = 0.0
        self.usage_seconds = 0.0
        self._bot_turn: str | None = None
        self._bot_text: list[str] = []
        self._bot_chars = 0
        self._silent_ms = 0.0
        self._caller_loud_at = -1e9
        self._talked_over = False  # the caller was loud when the latest non-silent delta arrived
        self._caller_text: list[str] = []
        self._caller_chars = 0
        self._caller_end_ms = 0
        self._caller_arrived_at = 0.0  # input_ms when the latest caller fragment arrived
        self._open_calls: dict[str, str] = {}  # backend call_id -> delegation id
        # synthetic ResponseDones (backend, trigger, usage) held while a bot turn is active: the core
        # reads any ResponseDone as "the reply is over", so they follow the turn's own (bounded: one
        # per open call or trigger, usage merged into one)
        self._deferred: list[ResponseDone] = []
        self._synthetic_calls: set[str] = set()
        self._continue_owed = False  # a function output went to the backend; no response.create yet

    @property
    def model_audio(self) -> tuple[str, int]:
        return ("mulaw", 8000) if self.options.audio_format == "pcmu" else ("pcm16", 24000)

    @property
    def state(self) -> LiveState:
        return self.machine.state

    @property
    def bot_speaking(self) -> bool:
        return self._bot_turn is not None

    def _event(self, kind: str, **fields: Any) -> str:
        self.last_event_id = f"cb_{next(self._ids)}"
        return _dumps({"type": kind, "event_id": self.last_event_id, **fields})

    def _require_active(self, what: str) -> None:
        if self.state is not LiveState.ACTIVE and self.state is not LiveState.STARTING:
            raise InvalidTransition("live_session", self.state, what)

    # --- client events ----------------------------------------------------------------------------
    def session_update(self, config: SessionConfig) -> str:
        """``session.start`` (live §3.1): the persona, voice, one audio format both ways, the startup
        history (``history``, for a replacement session), and the delegation that lets the model
        escalate. Always the first message of a session; starts a new session's state."""
        self.machine.fire("start")
        unfinished = self._caller_text  # a caller turn the lost session did not finish is not dropped:
        self._reset_session()  # it closes on the new session's timeline
        self._caller_text, self._caller_chars = unfinished, sum(len(t) for t in unfinished)
        fmt: dict[str, Any] = (
            {"type": "audio/pcmu", "rate": 8000}
            if self.options.audio_format == "pcmu"
            else {"type": "audio/pcm", "rate": 24000}
        )
        # the escalation tool only when the model escalates through the backend; business tools always
        backend_tools = [tool for tool in config.tools
                         if tool.name != _ESCALATION_TOOL or self.options.escalation == "responses"]
        session: dict[str, Any] = {
            "model": self.options.model,
            "instructions": config.instructions + _delegation_policy(backend_tools),
            "audio": {"format": fmt, "output": {"voice": config.voice}},
        }
        if backend_tools:  # function tools run in a Responses backend the voice model delegates to (live §10)
            session["delegation"] = {
                "type": "responses",
                "responses": {
                    "model": self.options.backend_model,
                    "instructions": "Call the matching tool for what the caller needs (escalate_to_human when "
                    "they want a person or are very upset); otherwise answer briefly.",
                    "tools": [{"type": "function", "name": tool.name, "description": tool.description,
                               "parameters": tool.parameters} for tool in backend_tools],
                    "tool_choice": "auto",
                    "parallel_tool_calls": False,
                },
            }
        else:
            session["delegation"] = {"type": "client"}
        if self.options.escalation == "trigger":
            session["triggers"] = [{
                "type": "decisions",
                "event_type": "session.input_transcript.delta",
                "decisions": {"questions": [{
                    "type": "predicate", "name": "wants_human",
                    "instructions": "Does the caller ask to speak to a human, a person or an agent, "
                    "or sound very upset?",
                }]},
            }]
        history = self.history[-MAX_HISTORY_MESSAGES:]
        if history:
            session["input"] = [_history_item(role, text) for role, text in history]
        return self._event("session.start", session=session)

    def audio_append(self, pcm16: bytes) -> str:
        """``session.input_audio.append`` of raw session-format audio (live §6)."""
        return self.audio_append_b64(base64.b64encode(pcm16).decode("ascii"))

    def audio_append_b64(self, pcm16_b64: str) -> str:
        """``session.input_audio.append`` for already-encoded audio in the session format. Hot path:
        counts the session timeline, and measures the caller's level only while the bot speaks (to
        recognise the model yielding). No ``event_id`` (appends are never acknowledged)."""
        size = len(pcm16_b64) * 3 // 4 - pcm16_b64.count("=", -2)
        self.input_ms += size / self._bytes_per_ms
        if self._bot_turn is not None and self._loud(pcm16_b64):
            self._caller_loud_at = self.input_ms
        return _APPEND_HEAD + pcm16_b64 + _APPEND_TAIL

    def _loud(self, b64: str) -> bool:
        raw = base64.b64decode(b64)
        if self.options.audio_format == "pcmu":
            samples = _MULAW[np.frombuffer(raw, dtype=np.uint8)]
        else:
            samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32)
        if samples.size == 0:
            return False
        return float(np.sqrt(np.mean(samples * samples))) >= self.options.caller_loud_rms

    def response_create(self, instructions: str | None = None) -> str:
        """The voice model speaks on its own; asking it to say something is a speakable context
        append (``session.commentary.append``, live §9): the greeting, a resume line, the hand-off
        line. The next bot turn is the reply. After backend function outputs, a plain request
        (``instructions`` None: the core's "answer now") is ``response.create``: the backend
        continues and the voice model speaks its answer (live §10.3)."""
        self._require_active("response_create")
        if instructions is None and self._continue_owed:
            self._continue_owed = False
            return self._event("response.create")
        text = instructions or "Greet the caller now, briefly; do not wait for them to speak first."
        return self._event("session.commentary.append", content=text[:MAX_APPEND_CHARS], delegation_id=None)

    def response_cancel(self, response_id: str | None = None) -> str:
        """Never needed: the model stops by itself (live §7); the core only cancels on turn events
        this dialect never emits."""
        raise NotImplementedError("GPT-Live has no response.cancel (docs/models/live.md, barge-in)")

    def item_truncate(self, item_id: str, audio_end_ms: int) -> str:
        raise NotImplementedError("GPT-Live has no conversation.item.truncate (docs/models/live.md, barge-in)")

    def item_delete(self, item_id: str) -> str:
        """Never needed: the interruption decider that deletes noise turns runs only on turn-based
        dialects (docs/interruptions.md); GPT-Live takes turns itself."""
        raise NotImplementedError("GPT-Live has no conversation.item.delete (docs/models/live.md, barge-in)")

    def input_audio_clear(self) -> str:
        raise NotImplementedError("GPT-Live has no input buffer to clear (docs/models/live.md, audio)")

    def user_text_item(self, text: str) -> str:
        """Caller-side context (a keypad press) as silent context: ``session.thinking.append``."""
        self._require_active("user_text_item")
        return self._event("session.thinking.append", content=text[:MAX_APPEND_CHARS], delegation_id=None)

    def system_text_item(self, text: str) -> str:
        """A standing rule: ``session.instructions.append`` (live §9)."""
        self._require_active("system_text_item")
        return self._event("session.instructions.append", content=text[:MAX_APPEND_CHARS], delegation_id=None)

    def function_call_output(self, call_id: str, output: str) -> str:
        """The answer to a backend function call: ``response.item.create`` (live §10.3). A call that
        came from a Decisions trigger has nobody to answer; the model is told instead (silent)."""
        self._require_active("function_call_output")
        if call_id in self._synthetic_calls:
            self._synthetic_calls.discard(call_id)
            return self._event("session.thinking.append", content=f"Tool result: {output}"[:MAX_APPEND_CHARS],
                               delegation_id=None)
        self._open_calls.pop(call_id, None)
        self._continue_owed = True
        return self._event("response.item.create",
                           item={"type": "function_call_output", "call_id": call_id, "output": output})

    def backend_continue(self) -> str:
        """``response.create``: let the backend continue once every open call has its output."""
        self._require_active("backend_continue")
        return self._event("response.create")

    def session_close(self) -> str:
        self.machine.fire("close")
        return self._event("session.close")

    # --- server events ----------------------------------------------------------------------------
    def parse(self, message: str | bytes) -> ServerEvent:
        """One server frame -> a neutral event (an ``EventGroup`` when it means several). Raises
        ``LiveProtocolError`` for non-JSON, type-less, mistyped or out-of-state events; unknown but
        well-formed types are ``OtherEvent`` (live §5: ignore them)."""
        event, kind = load_server_event(message, LiveProtocolError)
        handler = _HANDLERS.get(kind)
        if handler is None:
            return OtherEvent(type=kind)
        if kind not in ("error", "info", "session.started", "session.closed") and self.state not in _STREAM_STATES:
            raise LiveProtocolError(f"{kind}: not valid in session state {self.state.value!r}")
        out: list[ServerEvent] = []
        handler(self, event, kind, out)
        self._maybe_close_caller_turn(out)
        if not out:
            return OtherEvent(type=kind)
        return out[0] if len(out) == 1 else EventGroup(tuple(out))

    def _started(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        if self.state is not LiveState.STARTING:
            raise LiveProtocolError(f"{where}: not valid in session state {self.state.value!r}")
        session = _req(ev, "session", dict, where)
        self.session_id = _opt(session, "id", str, where + ".session", "")
        expires = _opt(session, "expires_at", (int, float), where + ".session", None)
        self.expires_at = int(expires) if expires is not None else None
        self.machine.fire("started")
        out.append(SessionUpdated(session=session))

    def _updated(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        out.append(SessionUpdated(session=_req(ev, "session", dict, where)))

    def _audio(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        delta = _req(ev, "delta", str, where)
        try:
            audio = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError) as error:
            raise LiveProtocolError(f"{where}: field 'delta' is not valid base64 ({error})") from None
        ms = len(audio) / self._bytes_per_ms
        self.output_ms += ms
        silent = not audio.strip(self._silence_bytes)
        if not silent:
            self._silent_ms = 0.0
            self._talked_over = self.input_ms - self._caller_loud_at <= _LOUD_RUN_GAP_MS
            if self._bot_turn is None:
                self._bot_turn = f"live_turn_{next(self._turns)}"
                out.append(ResponseCreated(response_id=self._bot_turn))
            out.append(AudioDelta(response_id=self._bot_turn, item_id=self._bot_turn, audio=audio))
            return
        if self._bot_turn is None:
            return
        if self._silent_ms == 0.0 and self._talked_over and \
                self.input_ms - self._caller_loud_at <= self.options.yield_window_ms:
            out.append(OutputYielded())
            self._end_bot_turn(out, "cancelled")
            return
        self._silent_ms += ms
        if self._silent_ms >= self.options.bot_silence_ms:
            self._end_bot_turn(out, "completed")

    def _end_bot_turn(self, out: list[ServerEvent], status: str) -> None:
        turn = self._bot_turn
        assert turn is not None
        self._bot_turn = None
        self._silent_ms = 0.0
        self._talked_over = False
        out.append(TranscriptDone(response_id=turn, item_id=turn, transcript="".join(self._bot_text).strip()))
        out.append(ResponseDone(response_id=turn, status=status, reason="turn_detected" if status == "cancelled" else ""))
        self._bot_text, self._bot_chars = [], 0
        out.extend(self._deferred)
        self._deferred = []

    def _done(self, done: ResponseDone, out: list[ServerEvent]) -> None:
        """Emit a synthetic ``ResponseDone`` now, or after the active bot turn's own."""
        if self._bot_turn is None:
            out.append(done)
            return
        for index, held in enumerate(self._deferred):
            if held.response_id == done.response_id == "live_usage":
                seconds = held.usage["session_seconds"] + done.usage["session_seconds"]
                self._deferred[index] = ResponseDone("live_usage", "completed", usage={"session_seconds": seconds})
                return
        if len(self._deferred) < 2 * MAX_OPEN_CALLS:
            self._deferred.append(done)

    def _input_transcript(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        delta = _req(ev, "delta", str, where)
        start = _req(ev, "start_ms", int, where)
        end = _req(ev, "end_ms", int, where)
        if self._caller_text and start - self._caller_end_ms > self.options.caller_gap_ms:
            self._close_caller_turn(out)
        if self._caller_chars < MAX_TURN_CHARS:
            self._caller_text.append(delta[: MAX_TURN_CHARS - self._caller_chars])
            self._caller_chars += len(delta)
        self._caller_end_ms = max(self._caller_end_ms, end)
        self._caller_arrived_at = self.input_ms

    def _output_transcript(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        delta = _req(ev, "delta", str, where)
        _req(ev, "start_ms", int, where)
        _req(ev, "end_ms", int, where)
        if self._bot_chars < MAX_TURN_CHARS:
            self._bot_text.append(delta[: MAX_TURN_CHARS - self._bot_chars])
            self._bot_chars += len(delta)

    def _maybe_close_caller_turn(self, out: list[ServerEvent]) -> None:
        if self._caller_text and self.input_ms - self._caller_arrived_at > self.options.caller_quiet_ms:
            self._close_caller_turn(out)

    def _close_caller_turn(self, out: list[ServerEvent]) -> None:
        text = "".join(self._caller_text).strip()
        self._caller_text, self._caller_chars = [], 0
        if text:
            out.append(InputTranscriptionCompleted(item_id=f"live_caller_{next(self._turns)}", transcript=text))

    def _delegation(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        delegation = _req(ev, "delegation", dict, where)
        _req(delegation, "id", str, where + ".delegation")
        _req(delegation, "target", str, where + ".delegation")
        self._close_caller_turn(out)  # the model acts on what the caller said so far: that is the turn

    def _response_event(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        inner = _req(ev, "event", dict, where)
        delegation_id = _opt(ev, "delegation_id", str, where, "")
        iw = where + ".event"
        kind = _req(inner, "type", str, iw)
        if kind == "response.output_item.done":
            item = _req(inner, "item", dict, iw)
            if item.get("type") != "function_call" or item.get("status", "completed") != "completed":
                return
            call_id = _req(item, "call_id", str, iw + ".item")
            name = _req(item, "name", str, iw + ".item")
            arguments = _req(item, "arguments", str, iw + ".item")
            if len(self._open_calls) >= MAX_OPEN_CALLS:
                del self._open_calls[next(iter(self._open_calls))]
            self._open_calls[call_id] = delegation_id
            self._close_caller_turn(out)
            out.append(FunctionCallArgumentsDone(response_id=_backend_id(delegation_id), item_id=call_id,
                                                 call_id=call_id, name=name, arguments=arguments))
        elif kind in ("response.completed", "response.failed", "response.incomplete"):
            # the backend response is over: the core runs its calls now (it waits for this ResponseDone)
            response = _opt(inner, "response", dict, iw, {})
            self._done(ResponseDone(response_id=_backend_id(delegation_id), status=kind.removeprefix("response."),
                                    usage={"backend": response.get("usage") or {}}), out)

    def _decision(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        inner = _req(ev, "event", dict, where)
        decision = _opt(inner, "decision", dict, where + ".event", {})
        answers = _opt(decision, "answers", list, where + ".event.decision", [])
        trigger = _opt(ev, "trigger_id", str, where, "") or _opt(ev, "source_event_id", str, where, "") or "trigger"
        for answer in answers:
            if not isinstance(answer, dict) or answer.get("type") != "predicate" or answer.get("name") != "wants_human":
                continue
            probability = answer.get("probability")
            if not isinstance(probability, (int, float)) or isinstance(probability, bool):
                raise LiveProtocolError(f"{where}: predicate probability must be a number")
            if probability >= self.options.trigger_threshold and self.options.escalation == "trigger":
                call_id = f"decision_{trigger}"
                self._synthetic_calls.add(call_id)
                self._close_caller_turn(out)  # the escalation record carries what the caller said
                args = json.dumps({"reason": f"the caller wants a human (p={probability:.2f})",
                                   "caller_mood": "frustrated"})
                out.append(FunctionCallArgumentsDone(response_id=call_id, item_id=call_id, call_id=call_id,
                                                     name=_ESCALATION_TOOL, arguments=args))
                self._done(ResponseDone(response_id=call_id, status="completed"), out)

    def _usage(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        usage = _req(ev, "usage", dict, where)
        seconds = _req(usage, "seconds", (int, float), where + ".usage")
        self._add_usage(float(seconds), out)

    def _add_usage(self, seconds: float, out: list[ServerEvent]) -> None:
        new = seconds - self.usage_seconds  # cumulative (live §13): count only what is new
        if new > 0:
            self.usage_seconds = seconds
            self._done(ResponseDone(response_id="live_usage", status="completed", usage={"session_seconds": new}), out)

    def _closed(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        reason = _req(ev, "reason", str, where)
        usage = _opt(ev, "usage", dict, where, {})
        seconds = _opt(usage, "seconds", (int, float), where + ".usage", None)
        if self.state not in (LiveState.ACTIVE, LiveState.CLOSING, LiveState.STARTING):
            raise LiveProtocolError(f"{where}: not valid in session state {self.state.value!r}")
        self.machine.fire("closed")
        if seconds is not None:
            self._add_usage(float(seconds), out)
        if self._bot_turn is not None:
            self._end_bot_turn(out, "completed")
        self._close_caller_turn(out)
        out.append(OtherEvent(type=f"session.closed:{reason[:40]}"))

    def _error(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        error = _req(ev, "error", dict, where)
        ew = where + ".error"
        out.append(RealtimeError(
            type=_req(error, "type", str, ew),
            code=_opt(error, "code", str, ew, ""),
            message=_req(error, "message", str, ew),
            param=_opt(error, "param", str, ew, ""),
            event_id=_opt(error, "client_event_id", str, ew, "") or _opt(ev, "client_event_id", str, where, ""),
        ))

    def _ack(self, ev: dict[str, Any], where: str, out: list[ServerEvent]) -> None:
        """Acknowledgements and notices the core does not act on (placement acks, mute, fixtures)."""


def _backend_id(delegation_id: str) -> str:
    return f"live_backend_{delegation_id}" if delegation_id else "live_backend"


def _history_item(role: str, text: str) -> dict[str, Any]:
    if role == "caller":
        return {"role": "user", "content": [{"type": "input_text", "text": text[:MAX_TURN_CHARS]}]}
    return {"role": "assistant", "content": [{"type": "output_text", "text": text[:MAX_TURN_CHARS]}]}


def _delegation_policy(tools: list[FunctionTool]) -> str:
    """The voice model delegates only when its prompt says so (live §10.1)."""
    if not tools:
        return ""
    listed = "; ".join(f"{tool.name} ({tool.description[:160]})" for tool in tools)
    return ("\n\nDelegation policy: you have no tools of your own. Backend tools: " + listed + ". "
            "Delegate when the caller needs one of them (escalate_to_human: the caller asks for a human or is "
            "very upset).")

_HANDLERS: dict[str, Any] = {
    "session.started": LiveDialect._started,
    "session.updated": LiveDialect._updated,
    "session.output_audio.delta": LiveDialect._audio,
    "session.input_transcript.delta": LiveDialect._input_transcript,
    "session.output_transcript.delta": LiveDialect._output_transcript,
    "session.delegation.created": LiveDialect._delegation,
    "response.event": LiveDialect._response_event,
    "decision.event": LiveDialect._decision,
    "session.usage.updated": LiveDialect._usage,
    "session.closed": LiveDialect._closed,
    "error": LiveDialect._error,
    "info": LiveDialect._ack,
    "session.instructions.appended": LiveDialect._ack,
    "session.thinking.appended": LiveDialect._ack,
    "session.commentary.appended": LiveDialect._ack,
    "session.input_audio.muted": LiveDialect._ack,
    "session.input_audio.unmuted": LiveDialect._ack,
    "session.output_audio.fixture.playing": LiveDialect._ack,
    "session.output_audio.fixture.played": LiveDialect._ack,
    "decision.item.created": LiveDialect._ack,
    "decision.item.deleted": LiveDialect._ack,
}
