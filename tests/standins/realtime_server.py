"""A protocol-exact stand-in for the OpenAI / Azure OpenAI Realtime WebSocket service.

A real ``websockets`` server on 127.0.0.1 (port 0) that speaks both dialects the way the services do
(``docs/models/realtime.md``, cited by its anchors as "spec #anchor"). Use it wherever a test needs "the
model" on the far side of a real socket::

    behaviour = ScriptedBehaviour(transcripts=["I want to cancel my order"], reply_ms=800)
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", "Bearer sk-test")) as server:
        settings = Settings(realtime_provider="openai", realtime_api_key="sk-test",
                            realtime_url=server.url)            # or azure_endpoint=server.azure_endpoint
        ... run the code under test ...
        session = await server.wait_for_session()
        await session.wait_until(lambda: session.responses_done >= 1, timeout_s=5)
        assert server.violations == []

Handshake (spec #urls-and-headers): the dialect is decided from the request exactly as the services do: path
``/v1/realtime?model=M`` is OpenAI (beta iff header ``OpenAI-Beta: realtime=v1``), Azure preview
``/openai/realtime?api-version=V&deployment=D`` is beta, Azure GA ``/openai/v1/realtime?model=D`` is
GA (an ``api-version`` there is a 400). Other paths get 404, missing query parameters 400, a missing
or wrong ``require_auth`` header 401, and ``reject_status`` rejects every handshake with that status.
Every handshake is recorded in ``server.handshakes``.

Validation: every client frame is checked against the ``openai`` package's own client event types of
the session's dialect (GA ``openai.types.realtime``, beta ``openai.types.beta.realtime``) strictly:
the ``TypeAdapter`` must accept it, no model in the tree may hold unknown (extra) fields, and the
SDK model must dump back to exactly what was sent. Failures go to ``session.violations`` and
``server.violations`` and are answered with an ``error`` event (``event_id`` echoed) like the real
service. Outgoing server events are built as dicts, validated the same way against the dialect's
server event types, and serialised by the SDK model (a failure there is recorded as a stand-in bug).

Behaviour, per session:
- ``session.created`` (then ``conversation.created``) first; ``session.update`` is answered with
  ``session.updated`` carrying the full effective session (a rejected update changes nothing).
- Energy VAD over the appended PCM16 24 kHz audio in 20 ms frames (RMS >= ``vad_rms_threshold``
  is speech). ``speech_started.audio_start_ms`` = onset - ``prefix_padding_ms`` (>= 0);
  ``speech_stopped.audio_end_ms`` = end of the last voiced frame + ``silence_duration_ms``; both in
  ms of audio appended since the session began (spec #turn-detection). Then ``input_audio_buffer.committed``,
  the user item (GA ``conversation.item.added`` + ``.done``, beta ``conversation.item.created``),
  ``...input_audio_transcription.completed`` with the next scripted transcript (when transcription is
  on and one is scripted) and, with ``create_response``, an automatic response.
- Latency knobs: ``handshake_delay_ms`` holds the upgrade answer, ``session_delay_ms`` delays
  ``session.created`` and each ``session.updated``, ``first_delta_delay_ms`` delays a response's
  first audio (a slow model). All are plain sleeps on the server side (simulated latency).
- A response: ``response.created``, ``rate_limits.updated``, ``response.output_item.added``, item
  added/created, ``response.content_part.added``, transcript + audio deltas paced at ``pacing`` x
  real time in ``chunk_ms`` chunks, then audio/transcript/content_part/output_item done and
  ``response.done`` with status and usage (spec #event-order). With ``interrupt_response``, speech start
  during a response cancels it (``cancelled``/``turn_detected``); ``response.cancel`` gives
  ``cancelled``/``client_cancelled``. A response can be scripted to be a function call.
- Protocol errors as the service reports them: ``conversation_already_has_active_response``,
  ``response_cancel_not_active``, "Audio content of X ms is already shorter than Y ms" for a truncate
  beyond the item's audio, unknown items, commits of < 100 ms (``input_audio_buffer_commit_empty``).
- Records: ``received`` (every client event with a monotonic timestamp; append payloads replaced by
  ``audio_bytes``), ``sent`` (type + time), ``truncates``, ``responses``, ``function_outputs``,
  the last ``input_audio_keep_s`` seconds of input audio.

CPU (measured on the shared 2-core box): ~30-40 us per received 20 ms append (strict validation +
numpy RMS), ~60-90 us per sent event with ``validate_outgoing`` (a 4x-paced reply in 100 ms chunks
sends 40 deltas/s); 20 concurrent sessions with real-time caller audio and one reply each cost
~0.7 s CPU over 2.8 s wall, client side included. Replies are paced by sleeps. Memory per session: ``input_audio_keep_s`` x 48 kB/s plus the event records
(disable ``record_appends`` for long load runs).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Dialect = Literal["ga", "beta"]

PCM16_RATE = 24000
BYTES_PER_MS = 48  # PCM16 mono 24 kHz (spec #audio-formats)
FRAME_MS = 20
FRAME_SAMPLES = PCM16_RATE * FRAME_MS // 1000

# ---------------------------------------------------------------------------------------------------
# Strict validation against the openai package's own types


def _union_members(union: Any) -> dict[str, type[BaseModel]]:
    """``Annotated[Union[A, B, ...], PropertyInfo]`` -> {type literal: model}."""
    members = typing.get_args(typing.get_args(union)[0])
    out: dict[str, type[BaseModel]] = {}
    for member in members:
        out[typing.get_args(member.model_fields["type"].annotation)[0]] = member
    return out


def _first_diff(sent: Any, dumped: Any, path: str) -> str | None:
    if isinstance(sent, dict) and isinstance(dumped, dict):
        for key in sorted(set(sent) | set(dumped)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in dumped:
                return f"{sub} was dropped by the SDK type"
            if key not in sent:
                return f"{sub} was added by the SDK type"
            found = _first_diff(sent[key], dumped[key], sub)
            if found:
                return found
        return None
    if isinstance(sent, list) and isinstance(dumped, list):
        if len(sent) != len(dumped):
            return f"{path}: list length changed"
        for index, (a, b) in enumerate(zip(sent, dumped, strict=True)):
            found = _first_diff(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    if type(sent) is not type(dumped) and not (
        isinstance(sent, int | float) and isinstance(dumped, int | float) and not isinstance(sent, bool)
    ):
        return f"{path}: {sent!r} ({type(sent).__name__}) was coerced to {dumped!r} ({type(dumped).__name__})"
    if sent != dumped:
        return f"{path}: {sent!r} was changed to {dumped!r}"
    return None


def _extras(value: Any, path: str, allowed: frozenset[str], out: list[str]) -> None:
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            sub = f"{path}.{key}" if path else key
            if sub not in allowed:
                out.append(f"unknown field {sub!r}")
        for name in type(value).model_fields:
            _extras(getattr(value, name), f"{path}.{name}" if path else name, allowed, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _extras(item, f"{path}[{index}]", allowed, out)


class EventValidator:
    """Strict checker for one union of event types (client or server, GA or beta).

    ``check(obj)`` returns a list of problems (empty = valid): unknown ``type``, a pydantic
    validation error, unknown fields anywhere in the tree (``allowed_extra`` lists dotted paths that
    are tolerated, e.g. ``session.id``), or a value the SDK model does not preserve verbatim.
    """

    def __init__(self, union: Any, *, allowed_extra: frozenset[str] = frozenset()) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(union)
        self.by_type = _union_members(union)
        self.allowed_extra = allowed_extra

    def validate(self, obj: Any) -> tuple[BaseModel | None, list[str]]:
        if not isinstance(obj, dict):
            return None, [f"event is a JSON {type(obj).__name__}, not an object"]
        kind = obj.get("type")
        if not isinstance(kind, str):
            return None, ["event has no string 'type'"]
        if kind not in self.by_type:
            return None, [f"unknown event type {kind!r}"]
        try:
            # The union is discriminated by the ``type`` literal, so validating against the one member
            # that carries this literal is what the union does, minus trying 40-odd other members.
            model = self.by_type[kind].model_validate(obj)
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:3])
            return None, [f"{kind}: {details}"]
        problems: list[str] = []
        _extras(model, "", self.allowed_extra, problems)
        diff = _first_diff(obj, model.model_dump(mode="json", exclude_unset=True), "")
        if diff:
            problems.append(diff)
        return model, [f"{kind}: {p}" for p in problems]

    def check(self, obj: Any) -> list[str]:
        return self.validate(obj)[1]


CLIENT_VALIDATORS: dict[Dialect, EventValidator] = {
    "ga": EventValidator(ga_types.RealtimeClientEvent),
    "beta": EventValidator(beta_types.RealtimeClientEvent),
}
_SESSION_EXTRAS = frozenset({"session.id", "session.object", "session.expires_at"})
SERVER_VALIDATORS: dict[Dialect, EventValidator] = {
    "ga": EventValidator(ga_types.RealtimeServerEvent, allowed_extra=_SESSION_EXTRAS),
    "beta": EventValidator(beta_types.RealtimeServerEvent, allowed_extra=_SESSION_EXTRAS),
}


def validate_client_event(dialect: Dialect, event: str | bytes | dict[str, Any]) -> list[str]:
    """Problems of one client event (JSON text or decoded object) in ``dialect``; [] when valid."""
    if isinstance(event, str | bytes):
        try:
            event = json.loads(event)
        except ValueError as error:
            return [f"not JSON: {error}"]
    return CLIENT_VALIDATORS[dialect].check(event)


def validate_server_event(dialect: Dialect, event: str | bytes | dict[str, Any]) -> list[str]:
    """Problems of one server event in ``dialect`` (tolerates session id/object/expires_at)."""
    if isinstance(event, str | bytes):
        event = json.loads(event)
    return SERVER_VALIDATORS[dialect].check(event)


# ---------------------------------------------------------------------------------------------------
# Scripting


@dataclass
class FunctionCallScript:
    """Make a response a function call (spec #function-calling). ``with_message`` speaks the reply audio first."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None
    with_message: bool = False

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(dict(self.arguments))


@dataclass
class ScriptedBehaviour:
    """What the stand-in "model" does. Shared by all sessions of a server; per-session progress
    (transcript index, response count, queued function calls) lives in ``StandInSession``."""

    reply_audio: bytes | None = None  # PCM16 24 kHz mono reply; None = a tone of reply_ms
    reply_ms: int = 1200
    reply_tone_hz: float = 440.0
    reply_text: str = "Sure, I can help you with that."
    chunk_ms: int = 100  # audio per delta
    pacing: float = 4.0  # deltas at pacing x real time; 0 = as fast as the socket takes them
    first_delta_delay_ms: int = 0  # "model latency" before the first delta (the response delay)
    handshake_delay_ms: int = 0  # time to accept the WebSocket upgrade (TLS, routing, a busy front end)
    session_delay_ms: int = 0  # server time to create a session, and again to apply a session.update
    transcripts: Sequence[str] = ()  # input transcription per committed user turn, in order
    cycle_transcripts: bool = False
    function_calls: Mapping[int, FunctionCallScript] = field(default_factory=dict)  # 1-based response no.
    vad_rms_threshold: float = 600.0  # int16 RMS of a 20 ms frame that counts as speech (~ -35 dBFS)
    auto_response: bool = True  # False: never respond on speech stop, whatever create_response says
    send_conversation_created: bool = True
    record_appends: bool = True
    validate_appends: bool = True  # strict SDK validation of every append (~25 us each); load runs switch it off
    validate_outgoing: bool = True  # ~60 us per server event; load runs may switch it off
    input_audio_keep_s: float = 30.0  # bound of session.input_audio
    model: str = "gpt-realtime"
    _pcm: bytes | None = field(default=None, init=False, repr=False)

    def reply_pcm(self) -> bytes:
        """The reply audio (computed once): ``reply_audio`` or a faded sine at -12 dBFS."""
        if self.reply_audio is not None:
            return self.reply_audio
        if self._pcm is None:
            n = PCM16_RATE * self.reply_ms // 1000
            t = np.arange(n, dtype=np.float64) / PCM16_RATE
            wave = 0.25 * np.sin(2 * np.pi * self.reply_tone_hz * t)
            fade = min(n // 2, PCM16_RATE // 100)
            if fade:
                ramp = np.linspace(0.0, 1.0, fade)
                wave[:fade] *= ramp
                wave[n - fade :] *= ramp[::-1]
            self._pcm = (wave * 32767).astype("<i2").tobytes()
        return self._pcm


def tone_pcm16(ms: int, hz: float = 300.0, amplitude: float = 0.3) -> bytes:
    """PCM16 24 kHz sine of ``ms`` milliseconds (test helper for "speech")."""
    n = PCM16_RATE * ms // 1000
    t = np.arange(n, dtype=np.float64) / PCM16_RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def silence_pcm16(ms: int) -> bytes:
    return bytes(PCM16_RATE * ms // 1000 * 2)


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class HandshakeRecord:
    path: str
    headers: dict[str, str]  # lower-cased names
    status: int  # 101 when accepted
    dialect: Dialect | None


@dataclass(frozen=True)
class ReceivedEvent:
    at: float  # time.monotonic()
    type: str
    event: dict[str, Any]  # as sent; an append's "audio" is replaced by "audio_bytes"


@dataclass(frozen=True)
class SentEvent:
    at: float
    type: str


@dataclass(frozen=True)
class TruncateRecord:
    item_id: str
    audio_end_ms: int
    at: float  # time.monotonic() when received
    wall_time: float  # time.time() when received
    item_audio_ms: int  # the item's audio length before the truncate
    accepted: bool


@dataclass(frozen=True)
class Violation:
    session: int
    event_type: str
    problem: str


@dataclass
class ResponseRecord:
    id: str
    started_at: float
    function_call: FunctionCallScript | None
    status: str = "in_progress"
    reason: str = ""
    item_ids: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    done_at: float | None = None


@dataclass
class _Item:
    id: str
    type: str
    role: str
    audio_bytes: int = 0
    transcript: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // BYTES_PER_MS


@dataclass
class _ActiveResponse:
    record: ResponseRecord
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str = ""
    task: asyncio.Task[None] | None = None


# ---------------------------------------------------------------------------------------------------
# Effective session


_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


def _default_session(dialect: Dialect, session_id: str, model: str) -> dict[str, Any]:
    if dialect == "ga":
        pcm = {"type": "audio/pcm", "rate": PCM16_RATE}
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": dict(pcm),
                    "noise_reduction": None,
                    "transcription": None,
                    "turn_detection": dict(_SERVER_VAD_DEFAULTS),
                },
                "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "expires_at": int(time.time()) + 3600,
        }
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": "gpt-4o-realtime-preview",
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": dict(_SERVER_VAD_DEFAULTS),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
    }


def _with_vad_defaults(td: Any) -> Any:
    if isinstance(td, dict) and td.get("type") == "server_vad":
        return {**_SERVER_VAD_DEFAULTS, **td}
    if isinstance(td, dict) and td.get("type") == "semantic_vad":
        return {"create_response": True, "interrupt_response": True, "eagerness": "auto", **td}
    return td


def _apply_update(dialect: Dialect, session: dict[str, Any], update: dict[str, Any]) -> None:
    """Only fields present change (spec #session-configuration); GA ``audio.input/output`` merge field by field."""
    for key, value in update.items():
        if dialect == "ga" and key == "audio" and isinstance(value, dict):
            audio = session.setdefault("audio", {})
            for side in ("input", "output"):
                if isinstance(value.get(side), dict):
                    target = audio.setdefault(side, {})
                    for sub, subvalue in value[side].items():
                        target[sub] = _with_vad_defaults(subvalue) if sub == "turn_detection" else subvalue
        elif key == "turn_detection":
            session[key] = _with_vad_defaults(value)
        else:
            session[key] = value


# ---------------------------------------------------------------------------------------------------
# Session


_NAMES: dict[Dialect, dict[str, str]] = {
    "ga": {
        "audio_delta": "response.output_audio.delta",
        "audio_done": "response.output_audio.done",
        "transcript_delta": "response.output_audio_transcript.delta",
        "transcript_done": "response.output_audio_transcript.done",
        "assistant_audio": "output_audio",
    },
    "beta": {
        "audio_delta": "response.audio.delta",
        "audio_done": "response.audio.done",
        "transcript_delta": "response.audio_transcript.delta",
        "transcript_done": "response.audio_transcript.done",
        "assistant_audio": "audio",
    },
}


class StandInSession:
    """One accepted WebSocket = one Realtime session (spec #wire-basics). Created by ``RealtimeStandIn``."""

    def __init__(
        self, server: RealtimeStandIn, ws: ServerConnection, index: int, dialect: Dialect, path: str, headers: dict[str, str]
    ) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.dialect: Dialect = dialect
        self.path = path
        self.headers = headers
        self.behaviour = server.behaviour
        self.session = _default_session(dialect, f"sess_{index:04d}", server.behaviour.model)
        self.received: list[ReceivedEvent] = []
        self.sent: list[SentEvent] = []
        self.violations: list[Violation] = []
        self.truncates: list[TruncateRecord] = []
        self.responses: list[ResponseRecord] = []
        self.function_outputs: list[dict[str, Any]] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.input_audio = bytearray()
        self.appended_bytes = 0
        self._closed = False
        self.close_code: int | None = None
        self._changed = asyncio.Condition()
        self._ids = 0
        self._items: dict[str, _Item] = {}
        self._order: list[str] = []
        self._active: _ActiveResponse | None = None
        self._queued_calls: list[FunctionCallScript] = []
        self._turns = 0
        self._user_audio_ms_total = 0
        # VAD state
        self._carry = b""
        self._frames = 0  # 20 ms frames analysed so far
        self._speaking = False
        self._speech_item = ""
        self._last_voiced_end_ms = 0
        self._buffer_start_ms = 0  # start of the uncommitted input buffer

    # -- public helpers for tests --------------------------------------------------------------

    @property
    def buffer_ms(self) -> int:
        """Milliseconds of audio appended since the session began."""
        return self.appended_bytes // BYTES_PER_MS

    @property
    def closed(self) -> bool:
        """True once the connection has ended (``close_code`` is then set)."""
        return self._closed

    @property
    def responses_done(self) -> int:
        return sum(1 for r in self.responses if r.done_at is not None)

    @property
    def response_active(self) -> bool:
        return self._active is not None

    def item_audio_ms(self, item_id: str) -> int:
        return self._items[item_id].audio_ms

    def received_types(self) -> list[str]:
        return [r.type for r in self.received]

    def sent_types(self) -> list[str]:
        return [s.type for s in self.sent]

    def queue_function_call(self, script: FunctionCallScript) -> None:
        """The next response of this session becomes this function call."""
        self._queued_calls.append(script)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait (no polling) until ``predicate()`` holds; re-checked after every event in or out."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def wait_for_received(self, event_type: str, count: int = 1, timeout_s: float = 5.0) -> ReceivedEvent:
        await self.wait_until(lambda: sum(r.type == event_type for r in self.received) >= count, timeout_s)
        return [r for r in self.received if r.type == event_type][count - 1]

    async def wait_for_sent(self, event_type: str, count: int = 1, timeout_s: float = 5.0) -> SentEvent:
        await self.wait_until(lambda: sum(s.type == event_type for s in self.sent) >= count, timeout_s)
        return [s for s in self.sent if s.type == event_type][count - 1]

    async def send_error(
        self, type: str = "server_error", code: str | None = None, message: str = "The server had an error.",
        param: str | None = None, event_id: str | None = None,
    ) -> None:
        """Emit an ``error`` event (spec #errors) on demand."""
        await self._error(type, code, message, param=param, event_id=event_id)

    async def send_raw(self, text: str) -> None:
        """Send any text frame unvalidated (for malformed-input tests)."""
        await self.ws.send(text)
        await self._note_sent("<raw>")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the server side with ``code`` (e.g. 1001 after ``session_expired``)."""
        await self.ws.close(code, reason)

    # -- plumbing --------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self.index:03d}{self._ids:05d}"

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _note_sent(self, kind: str) -> None:
        self.sent.append(SentEvent(time.monotonic(), kind))
        await self._notify()

    def _violation(self, event_type: str, problem: str) -> None:
        v = Violation(self.index, event_type, problem)
        self.violations.append(v)
        self.server.violations.append(v)

    async def _emit(self, event: dict[str, Any]) -> None:
        """Validate ``event`` against the dialect's server types and send it as the SDK serialises it."""
        event = {"event_id": self._new_id("event"), **event}
        if self.behaviour.validate_outgoing:
            model, problems = SERVER_VALIDATORS[self.dialect].validate(event)
            for problem in problems:
                self._violation(event["type"], f"stand-in bug (outgoing): {problem}")
            text = model.model_dump_json(exclude_unset=True) if model is not None else json.dumps(event)
        else:
            text = json.dumps(event, separators=(",", ":"))
        await self.ws.send(text)  # ConnectionClosed propagates: the session is over
        await self._note_sent(event["type"])

    async def _error(
        self, type: str, code: str | None, message: str, *, param: str | None = None, event_id: str | None = None
    ) -> None:
        error: dict[str, Any] = {"type": type, "code": code, "message": message, "param": param, "event_id": event_id}
        self.errors_sent.append(error)
        await self._emit({"type": "error", "error": error})

    # -- main loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.behaviour.session_delay_ms:  # the server creating the session (a simulated latency)
                await asyncio.sleep(self.behaviour.session_delay_ms / 1000)
            await self._emit({"type": "session.created", "session": self.session})
            if self.behaviour.send_conversation_created:
                await self._emit({"type": "conversation.created",
                                  "conversation": {"id": self._new_id("conv"), "object": "realtime.conversation"}})
            async for message in self.ws:
                await self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            active = self._active
            if active is not None and active.task is not None:
                active.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await active.task
            self.close_code = self.ws.close_code
            self._closed = True
            await self._notify()

    async def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(message, bytes):
            self._violation("<binary>", "binary frame (the Realtime API uses text frames only, spec #wire-basics)")
            await self._error("invalid_request_error", "invalid_value", "Binary frames are not supported.")
            return
        try:
            obj = json.loads(message)
        except ValueError:
            self._violation("<text>", "client frame is not JSON")
            await self._error("invalid_request_error", "invalid_json", "The message is not valid JSON.")
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        kind = kind if isinstance(kind, str) else "<no type>"
        event_id = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
        if kind == "input_audio_buffer.append" and isinstance(obj.get("audio"), str):
            audio_b64 = obj["audio"]
            record: dict[str, Any] = {k: v for k, v in obj.items() if k != "audio"}
            record["audio_bytes"] = len(audio_b64) * 3 // 4 - audio_b64[-2:].count("=")
            if self.behaviour.record_appends:
                self.received.append(ReceivedEvent(now, kind, record))
        else:
            self.received.append(ReceivedEvent(now, kind, obj if isinstance(obj, dict) else {"value": obj}))
        skip = kind == "input_audio_buffer.append" and not self.behaviour.validate_appends
        problems = [] if skip else CLIENT_VALIDATORS[self.dialect].check(obj)
        if problems:
            for problem in problems:
                self._violation(kind, problem)
            await self._notify()
            first = problems[0]
            code = "unknown_parameter" if "unknown field" in first else "invalid_value"
            await self._error("invalid_request_error", code, first, event_id=event_id)
            return
        handler = getattr(self, "_on_" + kind.replace(".", "_"), None)
        if handler is None:
            await self._error(
                "invalid_request_error", "unsupported", f"{kind} is not supported over WebSocket by this server.",
                event_id=event_id,
            )
        else:
            try:
                await handler(obj, event_id)
            except ConnectionClosed:
                raise
            except Exception as error:  # a stand-in bug must fail the test, not kill the socket silently
                self._violation(kind, f"stand-in bug (handler): {type(error).__name__}: {error}")
                await self._error("server_error", None, "The server had an error while processing your request.",
                                  event_id=event_id)
        await self._notify()

    # -- session -------------------------------------------------------------------------------------

    async def _on_session_update(self, obj: dict[str, Any], event_id: str | None) -> None:
        update = obj["session"]
        if self.dialect == "ga" and update.get("type") != "realtime":
            self._violation("session.update", "stand-in supports only session.type 'realtime'")
            await self._error("invalid_request_error", "invalid_value", "Only realtime sessions are supported here.",
                              param="session.type", event_id=event_id)
            return
        if self.behaviour.session_delay_ms:  # applying the update takes server time too
            await asyncio.sleep(self.behaviour.session_delay_ms / 1000)
        candidate = json.loads(json.dumps(self.session))
        _apply_update(self.dialect, candidate, update)
        if self._input_format(candidate) != "pcm16":
            self._violation("session.update", "stand-in supports only PCM16 24 kHz input audio")
        self.session = candidate
        await self._emit({"type": "session.updated", "session": self.session})

    def _input_format(self, session: dict[str, Any]) -> str:
        if self.dialect == "ga":
            fmt = session.get("audio", {}).get("input", {}).get("format") or {}
            return "pcm16" if fmt.get("type") == "audio/pcm" and fmt.get("rate", PCM16_RATE) == PCM16_RATE else str(fmt)
        return str(session.get("input_audio_format"))

    def _turn_detection(self) -> dict[str, Any] | None:
        td = (self.session.get("audio", {}).get("input", {}) if self.dialect == "ga" else self.session).get(
            "turn_detection"
        )
        return td if isinstance(td, dict) else None

    def _transcription_on(self) -> bool:
        if self.dialect == "ga":
            return bool(self.session.get("audio", {}).get("input", {}).get("transcription"))
        return bool(self.session.get("input_audio_transcription"))

    # -- input audio and VAD --------------------------------------------------------------------------

    async def _on_input_audio_buffer_append(self, obj: dict[str, Any], event_id: str | None) -> None:
        try:
            pcm = base64.b64decode(obj["audio"], validate=True)
        except (binascii.Error, ValueError):
            self._violation("input_audio_buffer.append", "audio is not valid base64")
            await self._error("invalid_request_error", "invalid_value", "Invalid base64 audio.", param="audio",
                              event_id=event_id)
            return
        self.appended_bytes += len(pcm)
        keep = int(self.behaviour.input_audio_keep_s * PCM16_RATE) * 2
        if keep:
            self.input_audio += pcm
            if len(self.input_audio) > keep:
                del self.input_audio[: len(self.input_audio) - keep]
        data = self._carry + pcm
        n_frames = len(data) // (FRAME_SAMPLES * 2)
        self._carry = data[n_frames * FRAME_SAMPLES * 2 :]
        td = self._turn_detection()
        if n_frames == 0:
            return
        if td is None:  # no VAD: frames are just counted
            self._frames += n_frames
            return
        samples = np.frombuffer(data[: n_frames * FRAME_SAMPLES * 2], dtype="<i2").astype(np.float32)
        rms = np.sqrt(np.mean(np.square(samples.reshape(n_frames, FRAME_SAMPLES)), axis=1))
        threshold = self.behaviour.vad_rms_threshold
        silence_ms = int(td.get("silence_duration_ms", 500))
        for value in rms:
            start_ms = self._frames * FRAME_MS
            self._frames += 1
            end_ms = start_ms + FRAME_MS
            voiced = bool(value >= threshold)
            if not self._speaking:
                if voiced:
                    self._speaking = True
                    self._last_voiced_end_ms = end_ms
                    self._speech_item = self._new_id("item")
                    audio_start = max(self._buffer_start_ms, start_ms - int(td.get("prefix_padding_ms", 300)))
                    await self._emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start,
                                      "item_id": self._speech_item})
                    if td.get("interrupt_response", True) and self._active is not None:
                        self._cancel_active("turn_detected")
            elif voiced:
                self._last_voiced_end_ms = end_ms
            elif end_ms - self._last_voiced_end_ms >= silence_ms:
                self._speaking = False
                audio_end = self._last_voiced_end_ms + silence_ms
                await self._emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end,
                                  "item_id": self._speech_item})
                await self._commit_turn(self._speech_item, audio_end, td)

    async def _commit_turn(self, item_id: str, end_ms: int, td: dict[str, Any] | None) -> None:
        """Committed -> user item -> transcript -> auto response (spec #event-order)."""
        self._user_audio_ms_total += max(0, end_ms - self._buffer_start_ms)
        self._buffer_start_ms = end_ms
        previous = self._order[-1] if self._order else None
        await self._emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        self._add_item(_Item(item_id, "message", "user", payload=item))
        await self._emit_item_added(item, previous)
        transcript = self._next_transcript()
        if transcript is not None and self._transcription_on():
            self._items[item_id].transcript = transcript
            await self._emit({
                "type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                "content_index": 0, "transcript": transcript,
                "usage": {"type": "duration", "seconds": round(self._user_audio_ms_total / 1000, 3)},
            })
        if td is not None and td.get("create_response", True) and self.behaviour.auto_response:
            if self._active is not None:
                await self._error("invalid_request_error", "conversation_already_has_active_response",
                                  "Conversation already has an active response in progress.")
            else:
                self._start_response()

    def _next_transcript(self) -> str | None:
        scripted = self.behaviour.transcripts
        turn = self._turns
        self._turns += 1
        if not scripted:
            return None
        if turn < len(scripted):
            return scripted[turn]
        return scripted[turn % len(scripted)] if self.behaviour.cycle_transcripts else None

    async def _on_input_audio_buffer_commit(self, obj: dict[str, Any], event_id: str | None) -> None:
        pending_ms = self.buffer_ms - self._buffer_start_ms
        if pending_ms < 100:
            await self._error("invalid_request_error", "input_audio_buffer_commit_empty",
                              f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                              f"audio, but buffer only has {max(0, pending_ms)}.00ms of audio.", event_id=event_id)
            return
        item_id = self._speech_item if self._speaking else self._new_id("item")
        self._speaking = False
        await self._commit_turn(item_id, self.buffer_ms, None)

    async def _on_input_audio_buffer_clear(self, obj: dict[str, Any], event_id: str | None) -> None:
        self._speaking = False
        self._buffer_start_ms = self.buffer_ms
        await self._emit({"type": "input_audio_buffer.cleared"})

    # -- conversation items ----------------------------------------------------------------------------

    def _add_item(self, item: _Item, previous: str | None = None) -> None:
        self._items[item.id] = item
        if previous is None or previous not in self._order:
            if previous == "root":
                self._order.insert(0, item.id)
            else:
                self._order.append(item.id)
        else:
            self._order.insert(self._order.index(previous) + 1, item.id)

    async def _emit_item_added(self, item: dict[str, Any], previous: str | None) -> None:
        if self.dialect == "ga":
            await self._emit({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
            await self._emit({"type": "conversation.item.done", "item": item, "previous_item_id": previous})
        else:
            await self._emit({"type": "conversation.item.created", "item": item, "previous_item_id": previous})

    async def _on_conversation_item_create(self, obj: dict[str, Any], event_id: str | None) -> None:
        item = dict(obj["item"])
        previous = obj.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            await self._error("invalid_request_error", "item_not_found",
                              f"Previous item with id '{previous}' not found.", param="previous_item_id",
                              event_id=event_id)
            return
        item.setdefault("id", self._new_id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if item.get("type") == "function_call_output":
            self.function_outputs.append(item)
        self._add_item(_Item(item["id"], str(item.get("type")), str(item.get("role", "")), payload=item), previous)
        prev_for_event = previous if previous is not None else (self._order[-2] if len(self._order) > 1 else None)
        await self._emit_item_added(item, prev_for_event)

    async def _on_conversation_item_delete(self, obj: dict[str, Any], event_id: str | None) -> None:
        item_id = obj["item_id"]
        if item_id not in self._items:
            await self._error("invalid_request_error", "item_not_found", f"Item with item_id '{item_id}' not found.",
                              param="item_id", event_id=event_id)
            return
        del self._items[item_id]
        self._order.remove(item_id)
        await self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_conversation_item_retrieve(self, obj: dict[str, Any], event_id: str | None) -> None:
        item = self._items.get(obj["item_id"])
        if item is None:
            await self._error("invalid_request_error", "item_not_found",
                              f"Item with item_id '{obj['item_id']}' not found.", param="item_id", event_id=event_id)
            return
        await self._emit({"type": "conversation.item.retrieved", "item": item.payload})

    async def _on_conversation_item_truncate(self, obj: dict[str, Any], event_id: str | None) -> None:
        item_id, end_ms = obj["item_id"], obj["audio_end_ms"]
        now, wall = time.monotonic(), time.time()
        item = self._items.get(item_id)
        if item is None:
            self.truncates.append(TruncateRecord(item_id, end_ms, now, wall, -1, False))
            await self._error("invalid_request_error", "item_truncate_invalid_item_id",
                              f"Item with item_id '{item_id}' not found.", param="item_id", event_id=event_id)
            return
        audio_ms = item.audio_ms
        if item.role != "assistant" or obj["content_index"] != 0:
            self.truncates.append(TruncateRecord(item_id, end_ms, now, wall, audio_ms, False))
            await self._error("invalid_request_error", "invalid_value",
                              "Only the audio content (content_index 0) of an assistant message can be truncated.",
                              param="content_index", event_id=event_id)
            return
        if end_ms > audio_ms or end_ms < 0:
            self.truncates.append(TruncateRecord(item_id, end_ms, now, wall, audio_ms, False))
            await self._error("invalid_request_error", "invalid_value",
                              f"Audio content of {audio_ms} ms is already shorter than {end_ms} ms",
                              param="audio_end_ms", event_id=event_id)
            return
        self.truncates.append(TruncateRecord(item_id, end_ms, now, wall, audio_ms, True))
        item.audio_bytes = end_ms * BYTES_PER_MS
        item.transcript = ""  # the server deletes the item's transcript (spec #barge-in-client)
        await self._emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                          "audio_end_ms": end_ms})

    # -- responses -------------------------------------------------------------------------------------

    async def _on_response_create(self, obj: dict[str, Any], event_id: str | None) -> None:
        if self._active is not None:
            await self._error("invalid_request_error", "conversation_already_has_active_response",
                              f"Conversation already has an active response in progress: {self._active.record.id}. "
                              "Wait until the response is finished before creating a new one.", event_id=event_id)
            return
        self._start_response()

    async def _on_response_cancel(self, obj: dict[str, Any], event_id: str | None) -> None:
        wanted = obj.get("response_id")
        active = self._active
        if active is None or active.cancelled.is_set() or (wanted is not None and wanted != active.record.id):
            await self._error("invalid_request_error", "response_cancel_not_active",
                              "Cancellation failed: no active response found", event_id=event_id)
            return
        self._cancel_active("client_cancelled")

    async def _on_output_audio_buffer_clear(self, obj: dict[str, Any], event_id: str | None) -> None:
        await self._error("invalid_request_error", "invalid_value",
                          "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.",
                          event_id=event_id)

    def _cancel_active(self, reason: str) -> None:
        active = self._active
        if active is not None and not active.cancelled.is_set():
            active.cancel_reason = reason
            active.cancelled.set()

    def _start_response(self) -> None:
        number = len(self.responses) + 1
        script = self._queued_calls.pop(0) if self._queued_calls else self.behaviour.function_calls.get(number)
        record = ResponseRecord(id=self._new_id("resp"), started_at=time.monotonic(), function_call=script)
        self.responses.append(record)
        active = _ActiveResponse(record)
        self._active = active
        active.task = asyncio.get_running_loop().create_task(self._run_response(active))

    async def _pause(self, active: _ActiveResponse, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0 and not active.cancelled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(active.cancelled.wait(), delay)

    async def _run_response(self, active: _ActiveResponse) -> None:
        record = active.record
        script = record.function_call
        output: list[dict[str, Any]] = []
        try:
            await self._emit({"type": "response.created", "response": self._response_obj(record, "in_progress", [])})
            await self._emit({"type": "rate_limits.updated", "rate_limits": [
                {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
                {"name": "tokens", "limit": 100000, "remaining": 95000, "reset_seconds": 3.0},
            ]})
            if script is None or script.with_message:
                output.append(await self._stream_message(active, len(output)))
            if script is not None and not active.cancelled.is_set():
                output.append(await self._stream_function_call(active, script, len(output)))
            status = "cancelled" if active.cancelled.is_set() else "completed"
            record.status, record.reason = status, active.cancel_reason
            response = self._response_obj(record, status, output)
            # the response is no longer active once response.done is on its way
            self._active = None
            await self._emit({"type": "response.done", "response": response})
            record.done_at = time.monotonic()
        except ConnectionClosed:
            record.status = "connection_closed"
        finally:
            if self._active is active:
                self._active = None
            await self._notify()

    def _response_obj(self, record: ResponseRecord, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        response: dict[str, Any] = {"id": record.id, "object": "realtime.response", "status": status,
                                    "output": output, "conversation_id": "conv_default", "metadata": None}
        if status == "cancelled":
            response["status_details"] = {"type": "cancelled", "reason": record.reason or "client_cancelled"}
        elif status == "completed":
            response["status_details"] = None
        if self.dialect == "ga":
            response["output_modalities"] = ["audio"]
            response["max_output_tokens"] = self.session.get("max_output_tokens", "inf")
        else:
            response["modalities"] = ["text", "audio"]
            response["max_output_tokens"] = self.session.get("max_response_output_tokens", "inf")
            response["voice"] = self.session.get("voice", "alloy")
            response["output_audio_format"] = "pcm16"
            response["temperature"] = self.session.get("temperature", 0.8)
        if status != "in_progress":
            response["usage"] = self._usage(record)
        else:
            response["usage"] = None
        return response

    def _usage(self, record: ResponseRecord) -> dict[str, Any]:
        audio_out = math.ceil(record.audio_bytes / BYTES_PER_MS / 50)  # 1 token / 50 ms (spec #usage-and-cost)
        text_out = len(self.behaviour.reply_text.split()) if record.audio_bytes else 8
        audio_in = self._user_audio_ms_total // 100
        text_in = 40 + len(str(self.session.get("instructions", ""))) // 4
        input_details: dict[str, Any] = {"text_tokens": text_in, "audio_tokens": audio_in, "cached_tokens": 0}
        if self.dialect == "ga":
            input_details["image_tokens"] = 0
            input_details["cached_tokens_details"] = {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}
        return {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    async def _stream_message(self, active: _ActiveResponse, output_index: int) -> dict[str, Any]:
        record, names, behaviour = active.record, _NAMES[self.dialect], self.behaviour
        item_id = self._new_id("item")
        record.item_ids.append(item_id)
        previous = self._order[-1] if self._order else None
        item = _Item(item_id, "message", "assistant")
        self._add_item(item)
        ids = {"response_id": record.id, "item_id": item_id, "output_index": output_index, "content_index": 0}
        head = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        item.payload = head
        await self._emit({"type": "response.output_item.added", "response_id": record.id,
                          "output_index": output_index, "item": head})
        if self.dialect == "ga":
            await self._emit({"type": "conversation.item.added", "item": head, "previous_item_id": previous})
        else:
            await self._emit({"type": "conversation.item.created", "item": head, "previous_item_id": previous})
        await self._emit({"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}})
        pcm = behaviour.reply_pcm()
        chunk = max(1, behaviour.chunk_ms) * BYTES_PER_MS
        chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        words = behaviour.reply_text.split()
        said: list[str] = []
        start = time.monotonic() + behaviour.first_delta_delay_ms / 1000
        step = behaviour.chunk_ms / 1000 / behaviour.pacing if behaviour.pacing > 0 else 0.0
        for index, piece in enumerate(chunks):
            await self._pause(active, start + index * step)
            if active.cancelled.is_set():
                break
            upto = len(words) * (index + 1) // len(chunks)
            if upto > len(said):
                delta = (" " if said else "") + " ".join(words[len(said) : upto])
                said.extend(words[len(said) : upto])
                await self._emit({"type": names["transcript_delta"], **ids, "delta": delta})
            item.audio_bytes += len(piece)
            record.audio_bytes += len(piece)
            await self._emit({"type": names["audio_delta"], **ids,
                              "delta": base64.b64encode(piece).decode("ascii")})
        transcript = " ".join(said)
        item.transcript = transcript
        status = "incomplete" if active.cancelled.is_set() else "completed"
        await self._emit({"type": names["audio_done"], **ids})
        await self._emit({"type": names["transcript_done"], **ids, "transcript": transcript})
        await self._emit({"type": "response.content_part.done", **ids,
                          "part": {"type": "audio", "transcript": transcript}})
        final = {**head, "status": status, "content": [{"type": names["assistant_audio"], "transcript": transcript}]}
        item.payload = final
        await self._emit({"type": "response.output_item.done", "response_id": record.id,
                          "output_index": output_index, "item": final})
        if self.dialect == "ga":
            await self._emit({"type": "conversation.item.done", "item": final, "previous_item_id": previous})
        return final

    async def _stream_function_call(
        self, active: _ActiveResponse, script: FunctionCallScript, output_index: int
    ) -> dict[str, Any]:
        record = active.record
        item_id, call_id = self._new_id("item"), script.call_id or self._new_id("call")
        record.item_ids.append(item_id)
        previous = self._order[-1] if self._order else None
        arguments = script.arguments_json()
        head = {"id": item_id, "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": script.name, "arguments": ""}
        self._add_item(_Item(item_id, "function_call", "", payload=head))
        await self._emit({"type": "response.output_item.added", "response_id": record.id,
                          "output_index": output_index, "item": head})
        if self.dialect == "ga":
            await self._emit({"type": "conversation.item.added", "item": head, "previous_item_id": previous})
        else:
            await self._emit({"type": "conversation.item.created", "item": head, "previous_item_id": previous})
        ids = {"response_id": record.id, "item_id": item_id, "output_index": output_index, "call_id": call_id}
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            if piece:
                await self._emit({"type": "response.function_call_arguments.delta", **ids, "delta": piece})
        done: dict[str, Any] = {"type": "response.function_call_arguments.done", **ids, "arguments": arguments}
        if self.dialect == "ga":
            done["name"] = script.name  # the beta type has no name (spec #dialect-names)
        await self._emit(done)
        final = {**head, "status": "completed", "arguments": arguments}
        self._items[item_id].payload = final
        await self._emit({"type": "response.output_item.done", "response_id": record.id,
                          "output_index": output_index, "item": final})
        if self.dialect == "ga":
            await self._emit({"type": "conversation.item.done", "item": final, "previous_item_id": previous})
        return final


# ---------------------------------------------------------------------------------------------------
# Server


def _dialect_of(path: str, query: dict[str, list[str]], headers: Headers) -> tuple[Dialect | None, int]:
    """(dialect, HTTP status) for a handshake request, as the services decide it (spec #urls-and-headers)."""
    if path == "/v1/realtime":
        if not query.get("model"):
            return None, 400
        return ("beta" if headers.get("OpenAI-Beta", "").strip() == "realtime=v1" else "ga"), 101
    if path == "/openai/realtime":
        if not query.get("api-version") or not (query.get("deployment") or query.get("model")):
            return None, 400
        return "beta", 101
    if path == "/openai/v1/realtime":
        if query.get("api-version") or not query.get("model"):
            return None, 400
        return "ga", 101
    return None, 404


class RealtimeStandIn:
    """The stand-in server. ``async with RealtimeStandIn(...) as server`` starts and stops it.

    - ``url``: ``ws://127.0.0.1:<port>/v1/realtime?model=<model>`` (OpenAI-style path);
      ``azure_endpoint``: ``http://127.0.0.1:<port>`` (for ``provider=azure``; ``connection_params``
      turns it into the Azure preview or GA path).
    - ``require_auth=(header, value)``: handshakes without exactly that header value get HTTP 401.
    - ``reject_status``: answer every handshake with this HTTP status (e.g. 403, 404, 429, 503).
    - ``sessions``, ``handshakes``, ``violations``: what happened, in order.
    """

    def __init__(
        self,
        behaviour: ScriptedBehaviour | None = None,
        *,
        require_auth: tuple[str, str] | None = None,
        reject_status: int | None = None,
    ) -> None:
        self.behaviour = behaviour or ScriptedBehaviour()
        self.require_auth = require_auth
        self.reject_status = reject_status
        self.sessions: list[StandInSession] = []
        self.handshakes: list[HandshakeRecord] = []
        self.violations: list[Violation] = []
        self._server: Server | None = None
        self._port = 0
        self._changed = asyncio.Condition()
        self._pending: dict[int, tuple[Dialect, str, dict[str, str]]] = {}

    async def start(self) -> None:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=None, compression=None
        )
        self._port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RealtimeStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1/realtime?model={self.behaviour.model}"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def wait_for_session(self, index: int = 0, timeout_s: float = 5.0) -> StandInSession:
        """The ``index``-th accepted session, waiting for it to connect."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sessions) > index), timeout_s)
        return self.sessions[index]

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.behaviour.handshake_delay_ms:  # a slow front end: the upgrade answer waits
            await asyncio.sleep(self.behaviour.handshake_delay_ms / 1000)
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        dialect, status = _dialect_of(parts.path, query, request.headers)
        if status == 101 and self.require_auth is not None:
            name, value = self.require_auth
            if request.headers.get(name) != value:
                status = 401
        if status == 101 and self.reject_status is not None:
            status = self.reject_status
        self.handshakes.append(HandshakeRecord(request.path, headers, status, dialect if status == 101 else None))
        if status != 101:
            return connection.respond(HTTPStatus(status), f"stand-in rejected the handshake ({status})\n")
        assert dialect is not None
        self._pending[id(connection)] = (dialect, request.path, headers)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        dialect, path, headers = self._pending.pop(id(ws))
        session = StandInSession(self, ws, len(self.sessions), dialect, path, headers)
        async with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()
        await session.run()
