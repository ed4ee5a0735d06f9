"""Dialect-neutral typed Realtime server events, the session configuration, and the dialect interface.

Both wire dialects (GA ``openai.types.realtime`` and beta ``openai.types.beta.realtime``) parse into
these events, named after the GA event they come from (docs/models/realtime.md, section 5). The call bridge
only ever sees these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

# ---------------------------------------------------------------------------------------------------
# Session configuration (docs/models/realtime.md, section 3)


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What the bridge asks of a session. Audio is always PCM16 24 kHz mono both ways."""

    instructions: str
    voice: str = "alloy"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    temperature: float = 0.8  # beta only; GA has no temperature (section 3.1)
    max_output_tokens: int | Literal["inf"] = 1024
    transcription_model: str = "gpt-4o-transcribe"  # "" = no input transcription
    reasoning_effort: str = ""  # GA only, reasoning-capable models; "" = not sent
    transcription_language: str = ""
    tools: tuple[FunctionTool, ...] = ()
    vad_type: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    noise_reduction: Literal["", "near_field", "far_field"] = ""  # "" = not sent
    # False, False: the bridge decides interruptions and asks for every response itself
    # (docs/interruptions.md); True, True: the server cancels on speech start and answers on stop.
    interrupt_response: bool = True
    create_response: bool = True


# ---------------------------------------------------------------------------------------------------
# Server events


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """GA conversation.item.added / .done, beta conversation.item.created."""

    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InputTranscriptionCompleted:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptionFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str  # "message" | "function_call" | ...
    name: str = ""  # function name, for function_call items
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """PCM16 24 kHz audio bytes (base64-decoded) of one assistant item."""

    response_id: str
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone:
    response_id: str
    item_id: str
    call_id: str
    name: str  # "" when the (beta) server did not send it; take it from OutputItemAdded
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    output: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class RealtimeError:
    type: str
    code: str
    message: str
    param: str = ""
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class OutputYielded:
    """A full-duplex model stopped its own output because the caller talked over it (it has no
    response to cancel and nothing to truncate): audio still queued at the provider is stale."""


@dataclass(frozen=True, slots=True)
class EventGroup:
    """Several events from one server frame, to be handled in order (a full-duplex dialect turns one
    output delta into, e.g., ``OutputYielded`` + ``TranscriptDone`` + ``ResponseDone``)."""

    events: tuple[ServerEvent, ...]


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A valid event the bridge does not act on (rate_limits.updated, content parts, ...)."""

    type: str


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | ItemAdded
    | InputTranscriptionCompleted
    | InputTranscriptionFailed
    | ResponseCreated
    | OutputItemAdded
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionCallArgumentsDone
    | ResponseDone
    | ItemTruncated
    | RealtimeError
    | OutputYielded
    | EventGroup
    | OtherEvent
)


class RealtimeProtocolError(ValueError):
    """A server message that is not valid JSON or not a Realtime event."""


def load_server_event(message: str | bytes, error: type[RealtimeProtocolError] = RealtimeProtocolError,
                      ) -> tuple[dict[str, Any], str]:
    """One server frame as a JSON object and its non-empty string ``type``, or ``error`` (every model
    dialect's first step; orjson: deltas carry ~100 KB of base64, ~3x faster than json here)."""
    try:
        event = orjson.loads(message)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"server message is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise error(f"server message is not a JSON object but {type(event).__name__}")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise error("server message has no string 'type' field")
    return event, kind


class RealtimeDialect(Protocol):
    """One model wire dialect (Realtime GA or beta; a full-duplex dialect implements the same
    interface and simply never emits the turn events). Pure: dicts/strings in and out, no I/O.

    Builders return JSON text ready to send. ``audio_append``/``audio_append_b64`` are on the
    per-frame hot path and must be cheap (no dict building + json.dumps per frame).
    """

    @property
    def name(self) -> str: ...

    @property
    def client_speaks_first(self) -> bool:
        """Who opens the session: False = the server sends ``session.created`` and we answer with
        the configuration (Realtime); True = the configuration is our first message (GPT-Live)."""
        ...

    @property
    def model_audio(self) -> tuple[str, int]:
        """The model's audio, both ways, as (codec, rate): ``("pcm16", 24000)`` for Realtime. A carrier
        codec (``("mulaw", 8000)``, GPT-Live's ``pcmu``) is passed through untouched, no DSP at all,
        and only ever chosen for calls whose wire audio is that codec."""
        ...

    def session_update(self, config: SessionConfig) -> str: ...

    def audio_append(self, pcm16: bytes) -> str: ...

    def audio_append_b64(self, pcm16_b64: str) -> str: ...

    def response_create(self, instructions: str | None = None) -> str: ...

    def response_cancel(self, response_id: str | None = None) -> str: ...

    def item_truncate(self, item_id: str, audio_end_ms: int) -> str: ...

    def user_text_item(self, text: str) -> str: ...

    def system_text_item(self, text: str) -> str: ...

    def function_call_output(self, call_id: str, output: str) -> str: ...

    def input_audio_clear(self) -> str: ...

    def item_delete(self, item_id: str) -> str: ...

    def parse(self, message: str | bytes) -> ServerEvent: ...


class RealtimeClosed(Exception):
    """The Realtime session's connection ended (``code``/``reason`` as the WebSocket close gave them)."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"realtime connection closed ({code}) {reason}".strip())
        self.code = code
        self.reason = reason


@runtime_checkable
class ImmediateSend(Protocol):
    """A transport's synchronous send, for the inbound audio hot path (no await, no task switch).

    ``can_send_now`` says whether ``send_now`` would go out without waiting (open, write buffer
    below its high-water mark, no sender queued ahead); ``send_now`` writes one text frame at once
    and raises ``RealtimeClosed`` once the connection is closing or closed."""

    def can_send_now(self) -> bool: ...

    def send_now(self, text: str) -> None: ...


class RealtimeTransport(Protocol):
    """A connected Realtime session carrying JSON text frames, either over WebSocket (cloud, or any
    server) or in-process (the embedded local engine). ``recv`` raises ``RealtimeClosed`` at the end.
    ``send`` is ordered; ``close`` is idempotent and cancel-safe."""

    async def send(self, text: str) -> None: ...

    async def recv(self) -> str: ...

    async def close(self) -> None: ...
