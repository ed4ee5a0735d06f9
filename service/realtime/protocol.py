"""The two Realtime wire dialects (GA and beta), sans I/O: client events out as JSON text, server
events in as the typed events of ``service.realtime.events``, and the URL/headers per provider.

Everything here is pure (no sockets, no asyncio, no logging) and follows
``docs/models/realtime.md`` (cited as "spec §N": its numbered sections):

- ``GaDialect`` speaks ``openai.types.realtime`` (OpenAI without ``OpenAI-Beta``, Azure
  ``/openai/v1/realtime``); ``BetaDialect`` speaks ``openai.types.beta.realtime`` (OpenAI with
  ``OpenAI-Beta: realtime=v1``, Azure ``/openai/realtime?api-version=...``) (spec §2.1).
- Builders return compact JSON text. Every event except ``input_audio_buffer.append`` carries an
  ``event_id`` of the form ``cb_<n>`` (``n`` counts up per dialect instance, so use one instance per
  session) so that an ``error.event_id`` can be matched to its cause (spec §1, §9.2).
  ``last_event_id`` is the id of the event built last.
- ``parse`` maps each dialect's server event names onto the GA-named events of ``events.py``
  (spec §5.1); names of the *other* dialect are not translated (they are ``OtherEvent``), because a
  session only ever speaks one dialect.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from service.config import Settings
from service.realtime.events import (
    AudioDelta,
    AudioDone,
    FunctionCallArgumentsDone,
    FunctionTool,
    InputCommitted,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    ItemAdded,
    ItemTruncated,
    OtherEvent,
    OutputItemAdded,
    RealtimeDialect,
    RealtimeError,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    load_server_event,
)

__all__ = [
    "OPENAI_REALTIME_URL",
    "BetaDialect",
    "GaDialect",
    "connection_params",
    "dialect_for",
]

OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"
PCM16_RATE = 24000

_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = '"}'


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------
# Field access for parse: a missing or mistyped required field is a RealtimeProtocolError.


def _req_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RealtimeProtocolError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RealtimeProtocolError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _req_int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RealtimeProtocolError(f"{where}: field {key!r} must be an integer, got {type(value).__name__}")
    return value


def _req_obj(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise RealtimeProtocolError(f"{where}: field {key!r} must be an object, got {type(value).__name__}")
    return value


def _opt_obj(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RealtimeProtocolError(f"{where}: field {key!r} must be an object, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------------
# Per-event parsers (dialect-neutral payloads; spec §5.2). Each takes the decoded event object.


def _p_session_created(ev: dict[str, Any], where: str) -> ServerEvent:
    return SessionCreated(session=_req_obj(ev, "session", where))


def _p_session_updated(ev: dict[str, Any], where: str) -> ServerEvent:
    return SessionUpdated(session=_req_obj(ev, "session", where))


def _p_speech_started(ev: dict[str, Any], where: str) -> ServerEvent:
    return SpeechStarted(audio_start_ms=_req_int(ev, "audio_start_ms", where), item_id=_req_str(ev, "item_id", where))


def _p_speech_stopped(ev: dict[str, Any], where: str) -> ServerEvent:
    return SpeechStopped(audio_end_ms=_req_int(ev, "audio_end_ms", where), item_id=_req_str(ev, "item_id", where))


def _p_committed(ev: dict[str, Any], where: str) -> ServerEvent:
    return InputCommitted(item_id=_req_str(ev, "item_id", where))


def _p_item_added(ev: dict[str, Any], where: str) -> ServerEvent:
    return ItemAdded(item=_req_obj(ev, "item", where))


def _p_transcription_completed(ev: dict[str, Any], where: str) -> ServerEvent:
    return InputTranscriptionCompleted(item_id=_req_str(ev, "item_id", where), transcript=_req_str(ev, "transcript", where))


def _p_transcription_failed(ev: dict[str, Any], where: str) -> ServerEvent:
    error = _opt_obj(ev, "error", where)
    return InputTranscriptionFailed(item_id=_req_str(ev, "item_id", where), message=_opt_str(error, "message", where))


def _p_response_created(ev: dict[str, Any], where: str) -> ServerEvent:
    response = _req_obj(ev, "response", where)
    return ResponseCreated(response_id=_req_str(response, "id", where + ".response"))


def _p_output_item_added(ev: dict[str, Any], where: str) -> ServerEvent:
    item = _req_obj(ev, "item", where)
    iw = where + ".item"
    return OutputItemAdded(
        response_id=_req_str(ev, "response_id", where),
        item_id=_req_str(item, "id", iw),
        item_type=_req_str(item, "type", iw),
        name=_opt_str(item, "name", iw),
        call_id=_opt_str(item, "call_id", iw),
    )


def _p_audio_delta(ev: dict[str, Any], where: str) -> ServerEvent:
    delta = _req_str(ev, "delta", where)
    try:
        audio = base64.b64decode(delta, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RealtimeProtocolError(f"{where}: field 'delta' is not valid base64 ({error})") from None
    return AudioDelta(response_id=_req_str(ev, "response_id", where), item_id=_req_str(ev, "item_id", where), audio=audio)


def _p_audio_done(ev: dict[str, Any], where: str) -> ServerEvent:
    return AudioDone(response_id=_req_str(ev, "response_id", where), item_id=_req_str(ev, "item_id", where))


def _p_transcript_delta(ev: dict[str, Any], where: str) -> ServerEvent:
    return TranscriptDelta(
        response_id=_req_str(ev, "response_id", where),
        item_id=_req_str(ev, "item_id", where),
        delta=_req_str(ev, "delta", where),
    )


def _p_transcript_done(ev: dict[str, Any], where: str) -> ServerEvent:
    return TranscriptDone(
        response_id=_req_str(ev, "response_id", where),
        item_id=_req_str(ev, "item_id", where),
        transcript=_req_str(ev, "transcript", where),
    )


def _p_function_args_done(ev: dict[str, Any], where: str) -> ServerEvent:
    return FunctionCallArgumentsDone(
        response_id=_req_str(ev, "response_id", where),
        item_id=_req_str(ev, "item_id", where),
        call_id=_req_str(ev, "call_id", where),
        name=_opt_str(ev, "name", where),  # absent in the beta type (spec §5.1)
        arguments=_req_str(ev, "arguments", where),
    )


def _p_response_done(ev: dict[str, Any], where: str) -> ServerEvent:
    response = _req_obj(ev, "response", where)
    rw = where + ".response"
    details = _opt_obj(response, "status_details", rw)
    reason = _opt_str(details, "reason", rw + ".status_details")
    if not reason:
        # failed responses carry status_details.error instead of a reason (spec §5.3, §9.2)
        error = _opt_obj(details, "error", rw + ".status_details")
        reason = _opt_str(error, "code", rw + ".status_details.error") or _opt_str(
            error, "type", rw + ".status_details.error"
        )
    output = response.get("output")
    if output is None:
        output = []
    if not isinstance(output, list) or not all(isinstance(item, dict) for item in output):
        raise RealtimeProtocolError(f"{rw}: field 'output' must be a list of objects")
    return ResponseDone(
        response_id=_req_str(response, "id", rw),
        status=_req_str(response, "status", rw),
        reason=reason,
        usage=_opt_obj(response, "usage", rw),
        output=tuple(output),
    )


def _p_truncated(ev: dict[str, Any], where: str) -> ServerEvent:
    return ItemTruncated(item_id=_req_str(ev, "item_id", where), audio_end_ms=_req_int(ev, "audio_end_ms", where))


def _p_error(ev: dict[str, Any], where: str) -> ServerEvent:
    error = _req_obj(ev, "error", where)
    ew = where + ".error"
    return RealtimeError(
        type=_req_str(error, "type", ew),
        code=_opt_str(error, "code", ew),
        message=_req_str(error, "message", ew),
        param=_opt_str(error, "param", ew),
        event_id=_opt_str(error, "event_id", ew),
    )


_Parser = Callable[[dict[str, Any], str], ServerEvent]

_COMMON_PARSERS: dict[str, _Parser] = {
    "session.created": _p_session_created,
    "session.updated": _p_session_updated,
    "input_audio_buffer.speech_started": _p_speech_started,
    "input_audio_buffer.speech_stopped": _p_speech_stopped,
    "input_audio_buffer.committed": _p_committed,
    "conversation.item.created": _p_item_added,
    "conversation.item.input_audio_transcription.completed": _p_transcription_completed,
    "conversation.item.input_audio_transcription.failed": _p_transcription_failed,
    "response.created": _p_response_created,
    "response.output_item.added": _p_output_item_added,
    "response.function_call_arguments.done": _p_function_args_done,
    "response.done": _p_response_done,
    "conversation.item.truncated": _p_truncated,
    "error": _p_error,
}

_GA_PARSERS: dict[str, _Parser] = {
    **_COMMON_PARSERS,
    "conversation.item.added": _p_item_added,
    "conversation.item.done": _p_item_added,
    "response.output_audio.delta": _p_audio_delta,
    "response.output_audio.done": _p_audio_done,
    "response.output_audio_transcript.delta": _p_transcript_delta,
    "response.output_audio_transcript.done": _p_transcript_done,
}

_BETA_PARSERS: dict[str, _Parser] = {
    **_COMMON_PARSERS,
    "response.audio.delta": _p_audio_delta,
    "response.audio.done": _p_audio_done,
    "response.audio_transcript.delta": _p_transcript_delta,
    "response.audio_transcript.done": _p_transcript_done,
}


def _parse_with(parsers: dict[str, _Parser], message: str | bytes) -> ServerEvent:
    event, kind = load_server_event(message)
    parser = parsers.get(kind)
    if parser is None:
        return OtherEvent(type=kind)
    return parser(event, kind)


# ---------------------------------------------------------------------------------------------------
# Dialects


def _tool_json(tool: FunctionTool) -> dict[str, Any]:
    # Flat function tool, identical in both dialects (spec §3.5).
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters}


def _server_vad(config: SessionConfig) -> dict[str, Any]:
    # spec §3.3: both flags always explicit, even though they default to true; with pause-then-decide
    # both are false (docs/interruptions.md). semantic_vad takes an eagerness instead of the knobs.
    flags = {"create_response": config.create_response, "interrupt_response": config.interrupt_response}
    if config.vad_type == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": config.vad_eagerness, **flags}
    return {
        "type": "server_vad",
        "threshold": config.vad_threshold,
        "prefix_padding_ms": config.vad_prefix_padding_ms,
        "silence_duration_ms": config.vad_silence_duration_ms,
        **flags,
    }


def _transcription(config: SessionConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"model": config.transcription_model}
    if config.transcription_language:
        out["language"] = config.transcription_language
    return out


def _message_item(role: Literal["user", "system"], text: str) -> dict[str, Any]:
    # spec §4.1: user and system text items have the same shape in both dialects.
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


class _DialectBase:
    """Builders shared by both dialects (client event names are identical, spec §4)."""

    name: Literal["ga", "beta"]
    client_speaks_first = False  # the server opens with session.created
    model_audio = ("pcm16", PCM16_RATE)
    _parsers: dict[str, _Parser]

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.last_event_id = ""

    def _event(self, kind: str, **fields: Any) -> str:
        self.last_event_id = f"cb_{next(self._ids)}"
        return _dumps({"type": kind, "event_id": self.last_event_id, **fields})

    def audio_append(self, pcm16: bytes) -> str:
        """``input_audio_buffer.append`` for PCM16 24 kHz mono bytes. Hot path (every 20 ms per call):
        string concatenation only, no ``event_id`` (the server never acknowledges appends, spec §4)."""
        return _APPEND_HEAD + base64.b64encode(pcm16).decode("ascii") + _APPEND_TAIL

    def audio_append_b64(self, pcm16_b64: str) -> str:
        """``audio_append`` for audio already base64-encoded (standard alphabet, padded; the caller
        guarantees it, e.g. ``CallerToModel.process_b64``): the bridge's per-frame path."""
        return _APPEND_HEAD + pcm16_b64 + _APPEND_TAIL

    def response_create(self, instructions: str | None = None) -> str:
        """``response.create``, optionally with per-response ``instructions`` (spec §4.2)."""
        if instructions is None:
            return self._event("response.create")
        return self._event("response.create", response={"instructions": instructions})

    def response_cancel(self, response_id: str | None = None) -> str:
        """``response.cancel`` of ``response_id`` or, without it, the in-progress response (spec §6.3)."""
        if response_id is None:
            return self._event("response.cancel")
        return self._event("response.cancel", response_id=response_id)

    def item_truncate(self, item_id: str, audio_end_ms: int) -> str:
        """``conversation.item.truncate`` at ``audio_end_ms`` of the item's audio, content_index 0
        (spec §6.2). The caller clamps to the audio it received; negative values raise ValueError."""
        if audio_end_ms < 0:
            raise ValueError(f"audio_end_ms must be >= 0, got {audio_end_ms}")
        return self._event(
            "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=int(audio_end_ms)
        )

    def user_text_item(self, text: str) -> str:
        """``conversation.item.create`` of a user text message (spec §4.1)."""
        return self._event("conversation.item.create", item=_message_item("user", text))

    def system_text_item(self, text: str) -> str:
        """``conversation.item.create`` of a system text message (spec §4.1)."""
        return self._event("conversation.item.create", item=_message_item("system", text))

    def function_call_output(self, call_id: str, output: str) -> str:
        """``conversation.item.create`` of a ``function_call_output`` item (spec §7). It does not
        trigger a response; send ``response_create`` after the call's ``response.done``."""
        return self._event(
            "conversation.item.create", item={"type": "function_call_output", "call_id": call_id, "output": output}
        )

    def item_delete(self, item_id: str) -> str:
        """``conversation.item.delete`` (answered by ``conversation.item.deleted``): drops a committed
        caller turn that was only noise or a backchannel, so the model never answers it."""
        return self._event("conversation.item.delete", item_id=item_id)

    def input_audio_clear(self) -> str:
        """``input_audio_buffer.clear`` (answered by ``input_audio_buffer.cleared``)."""
        return self._event("input_audio_buffer.clear")

    def parse(self, message: str | bytes) -> ServerEvent:
        """One server frame -> a typed event. Raises ``RealtimeProtocolError`` for non-JSON, non-object
        or type-less frames, for missing/mistyped fields of a known event, and for bad base64 audio.
        Unknown but well-formed types become ``OtherEvent``."""
        return _parse_with(self._parsers, message)


class GaDialect(_DialectBase):
    """The GA dialect (``openai.types.realtime``; spec §3.1 left column, §5.1 GA names)."""

    name: Literal["ga", "beta"] = "ga"
    _parsers = _GA_PARSERS

    def session_update(self, config: SessionConfig) -> str:
        """GA ``session.update``: PCM16 24 kHz both ways, server VAD, audio output only. GA has no
        ``temperature`` (spec §3.1), so ``config.temperature`` is not sent."""
        pcm = {"type": "audio/pcm", "rate": PCM16_RATE}
        audio_input: dict[str, Any] = {"format": dict(pcm), "turn_detection": _server_vad(config)}
        if config.transcription_model:
            audio_input["transcription"] = _transcription(config)
        if config.noise_reduction:
            audio_input["noise_reduction"] = {"type": config.noise_reduction}
        session: dict[str, Any] = {
            "type": "realtime",
            "instructions": config.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_input, "output": {"format": dict(pcm), "voice": config.voice}},
            "tools": [_tool_json(tool) for tool in config.tools],
            "tool_choice": "auto",
            "max_output_tokens": config.max_output_tokens,
        }
        if config.reasoning_effort:  # reasoning-capable models only (e.g. gpt-realtime-2.x)
            session["reasoning"] = {"effort": config.reasoning_effort}
        return self._event("session.update", session=session)


class BetaDialect(_DialectBase):
    """The beta/preview dialect (``openai.types.beta.realtime``; spec §3.1 right column)."""

    name: Literal["ga", "beta"] = "beta"
    _parsers = _BETA_PARSERS

    def session_update(self, config: SessionConfig) -> str:
        """Beta ``session.update``: ``pcm16`` both ways, server VAD, text+audio modalities."""
        session: dict[str, Any] = {
            "instructions": config.instructions,
            "modalities": ["text", "audio"],
            "voice": config.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": _server_vad(config),
        }
        if config.transcription_model:
            session["input_audio_transcription"] = _transcription(config)
        if config.noise_reduction:
            session["input_audio_noise_reduction"] = {"type": config.noise_reduction}
        session["tools"] = [_tool_json(tool) for tool in config.tools]
        session["tool_choice"] = "auto"
        session["temperature"] = config.temperature
        session["max_response_output_tokens"] = config.max_output_tokens
        return self._event("session.update", session=session)


def dialect_for(name: Literal["ga", "beta", "live"]) -> RealtimeDialect:
    """A fresh dialect instance (its own ``event_id`` counter); one per session. ``live`` gets default
    options here; ``service.realtime.sessions.dialect_from`` builds it from settings."""
    if name == "live":
        from service.realtime.live import LiveDialect

        return LiveDialect()
    if name == "ga":
        return GaDialect()
    if name == "beta":
        return BetaDialect()
    raise ValueError(f"unknown realtime dialect {name!r} (expected 'ga' or 'beta')")


# ---------------------------------------------------------------------------------------------------
# Connection parameters (spec §2.1)


def _azure_base(endpoint: str) -> str:
    """``https://res.openai.azure.com[/anything]`` -> ``wss://res.openai.azure.com`` (http -> ws)."""
    parts = urlsplit(endpoint.strip())
    scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError("azure endpoint must be an absolute https:// URL such as https://<resource>.openai.azure.com")
    return f"{scheme}://{parts.netloc}"


def connection_params(settings: Settings) -> tuple[str, dict[str, str]]:
    """WebSocket URL and handshake headers for ``settings`` (pure; spec §2.1 table):

    - openai GA: ``wss://api.openai.com/v1/realtime?model=M``, ``Authorization: Bearer K``
    - openai beta: same, plus ``OpenAI-Beta: realtime=v1``
    - azure beta (preview): ``wss://<host>/openai/realtime?api-version=V&deployment=D``, ``api-key: K``
    - azure GA: ``wss://<host>/openai/v1/realtime?model=D``, ``api-key: K``

    ``settings.realtime_url`` replaces the URL; the headers stay those of the provider/dialect.
    Raises ValueError for provider ``local`` (no socket), a missing API key or a bad Azure endpoint.
    The returned headers contain the secret: never log them.
    """
    provider = settings.provider
    if provider == "local":
        raise ValueError("realtime provider 'local' has no WebSocket connection parameters")
    key = settings.realtime_api_key.get_secret_value()
    dialect = settings.realtime_dialect
    if dialect == "live":
        return _live_params(settings, key)
    if not key:
        raise ValueError(f"realtime provider {provider!r} needs an API key (CALLBRIDGE_REALTIME_API_KEY)")
    model = settings.realtime_model
    headers: dict[str, str]
    if provider == "openai":
        headers = {"Authorization": f"Bearer {key}"}
        if dialect == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        url = f"{OPENAI_REALTIME_URL}?{urlencode({'model': model})}"
    elif provider == "azure":
        headers = {"api-key": key}
        if settings.realtime_url:
            url = ""
        elif dialect == "beta":
            query = urlencode({"api-version": settings.azure_api_version, "deployment": model})
            url = f"{_azure_base(settings.azure_endpoint)}/openai/realtime?{query}"
        else:
            url = f"{_azure_base(settings.azure_endpoint)}/openai/v1/realtime?{urlencode({'model': model})}"
    else:  # pragma: no cover - Settings restricts the provider
        raise ValueError(f"unknown realtime provider {provider!r}")
    if settings.realtime_url:
        url = settings.realtime_url
    return url, headers


def _live_params(settings: Settings, key: str) -> tuple[str, dict[str, str]]:
    """GPT-Live (docs/models/live.md, "Connecting"): no query string, the model goes in ``session.start``.

    - openai: ``wss://api.openai.com/v1/live/sessions``, ``Authorization: Bearer K``
    - azure: ``wss://<host>/openai/v1/live/sessions``, ``Authorization: Bearer <Entra token>`` when
      ``CALLBRIDGE_AZURE_AD_TOKEN`` is set, else ``api-key: K``
    """
    from service.realtime.live import AZURE_LIVE_PATH, OPENAI_LIVE_URL

    token = settings.azure_ad_token.get_secret_value()
    if settings.provider == "azure":
        if token:
            headers = {"Authorization": f"Bearer {token}"}
        elif key:
            headers = {"api-key": key}
        else:
            raise ValueError("azure GPT-Live needs CALLBRIDGE_AZURE_AD_TOKEN or an API key (CALLBRIDGE_REALTIME_API_KEY)")
        url = settings.realtime_url or f"{_azure_base(settings.azure_endpoint)}{AZURE_LIVE_PATH}"
        return url, headers
    if not key:
        raise ValueError("realtime provider 'openai' needs an API key (CALLBRIDGE_REALTIME_API_KEY)")
    return settings.realtime_url or OPENAI_LIVE_URL, {"Authorization": f"Bearer {key}"}
