"""``LocalSession``: the local engine's Realtime (GA dialect) session as a pure state machine.

Sans-I/O: client event dicts (or JSON text) in; a list of outputs back, each either a server event
dict (GA shape, docs/models/realtime.md#client-events to #function-calling) or a ``Command`` for heavy work the adapter must run
off the event loop (speech recognition, speech synthesis). The adapter reports results back with
``on_transcript``, ``on_audio`` and ``on_audio_done``. All methods are cheap (audio appends cost
~0.1 ms per 20 ms frame: resampling + VAD) and must be called from one thread.

Guarantees: outputs are in emission order; every response that gets ``response.created`` gets
exactly one ``response.done`` (completed or cancelled); bad client events produce ``error`` events,
never exceptions. English only (the recogniser and voice are English).

Not implemented (documented gaps): ``idle_timeout_ms``, ``semantic_vad`` eagerness (treated as
server VAD), out-of-band responses running in parallel (``conversation: "none"`` is honoured for
the history but still occupies the conversation), images, MCP tools.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .asr import AsrResult
from .dialogue import Dialogue, Reply, line_from_instructions
from .dsp import (
    StreamResampler,
    alaw_decode,
    alaw_encode,
    float_to_pcm16,
    pcm16_to_float,
    ulaw_decode,
    ulaw_encode,
)
from .lm import tokenize
from .models import LocalModels
from .tts import VoiceSettings, split_sentences
from .vad import FRAME_BYTES, SpeechStart, SpeechStop, Vad, VadConfig

MODEL_NAME = "callbridge-local"
DELTA_MS = 200  # audio per response.output_audio.delta
MAX_UTTERANCE_MS = 30_000  # a turn longer than this is ended (bounds the recogniser's buffer)
_PREROLL_MS = 1_000  # 16 kHz audio kept before speech start (>= prefix padding + detection delay)

# --- commands for the adapter ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AsrFeed:
    """Decode more 16 kHz PCM16 for utterance ``utterance`` (starting it on first feed)."""

    utterance: int
    pcm16k: bytes


@dataclass(frozen=True, slots=True)
class AsrFinish:
    """End utterance ``utterance``; report the result with ``on_transcript``."""

    utterance: int


@dataclass(frozen=True, slots=True)
class AsrAbort:
    utterance: int


@dataclass(frozen=True, slots=True)
class Synthesize:
    """Speak ``sentences`` in order; report each with ``on_audio`` then ``on_audio_done``."""

    response_id: str
    sentences: tuple[str, ...]
    voice: VoiceSettings


@dataclass(frozen=True, slots=True)
class StopSynthesis:
    response_id: str


Command = AsrFeed | AsrFinish | AsrAbort | Synthesize | StopSynthesis
Output = dict[str, Any] | Command

# --- helpers ---------------------------------------------------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def text_tokens(text: str) -> int:
    """Approximate text tokens: max(words x 1.3, chars / 4), rounded."""
    return round(max(len(text.split()) * 1.3, len(text) / 4)) if text else 0


class ClientEventError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.kind = code, message, param, kind


_FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
_SESSION_KEYS = {"type", "audio", "include", "instructions", "max_output_tokens", "model", "output_modalities",
                 "parallel_tool_calls", "prompt", "reasoning", "tool_choice", "tools", "tracing", "truncation",
                 "id", "object", "expires_at"}


def _check_format(fmt: Any, param: str) -> dict[str, Any]:
    if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
        raise ClientEventError("invalid_value", f"Invalid value for '{param}': expected an object with type "
                               "'audio/pcm', 'audio/pcmu' or 'audio/pcma'.", param)
    if fmt["type"] == "audio/pcm":
        if fmt.get("rate", 24000) != 24000:
            raise ClientEventError("invalid_value", "audio/pcm supports only rate 24000.", f"{param}.rate")
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": fmt["type"]}


@dataclass
class _Utterance:
    id: int
    item_id: str
    start_ms: int
    fed_ms: int = 0
    result: AsrResult | None = None


@dataclass
class _Response:
    id: str
    conversation: bool
    instructions: str | None
    waiting_for: str | None = None  # user item id whose transcript the reply needs
    output: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None  # the assistant message being spoken
    pending_tool: tuple[str, dict[str, Any]] | None = None
    audio_bytes: int = 0
    transcript: str = ""
    text_only: bool = False
    input_tokens: dict[str, int] = field(default_factory=dict)


class LocalSession:
    """One Realtime session of the local engine (see the module docstring for the contract)."""

    def __init__(self, models: LocalModels, *, instructions: str = "", voice: str = "alloy",
                 vad: VadConfig | None = None) -> None:
        self.models = models
        self.dialogue = Dialogue.create(models.script, models.matcher, instructions)
        vad = vad or VadConfig()
        self.id = _id("sess")
        self.session: dict[str, Any] = {
            "type": "realtime", "object": "realtime.session", "id": self.id, "model": MODEL_NAME,
            "output_modalities": ["audio"], "instructions": instructions,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                          "noise_reduction": None,
                          "turn_detection": {"type": "server_vad", "threshold": vad.threshold,
                                             "prefix_padding_ms": vad.prefix_padding_ms,
                                             "silence_duration_ms": vad.silence_duration_ms,
                                             "create_response": True, "interrupt_response": True,
                                             "idle_timeout_ms": None}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": voice, "speed": 1.0},
            },
            "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "truncation": "auto",
            "tracing": None, "prompt": None, "expires_at": int(time.time()) + 3600,
        }
        self.vad = Vad(vad)
        self.items: list[dict[str, Any]] = []
        self._item_meta: dict[str, dict[str, Any]] = {}  # audio ms etc. per item id
        self.active: _Response | None = None
        self._produced_audio = False
        self._in_res: StreamResampler | None = None
        self._out_res: StreamResampler | None = None
        self._input_bytes = 0  # bytes appended (input format)
        self._preroll = bytearray()  # recent 16 kHz audio (bounded to _PREROLL_MS)
        self._preroll_start_ms = 0
        self._utt_counter = 0
        self._speech: _Utterance | None = None  # VAD utterance in progress
        self._manual: _Utterance | None = None  # manual-commit buffer utterance (no VAD)
        self._utterances: dict[int, _Utterance] = {}  # committed, awaiting transcript
        self._answered_upto = 0  # len(self.items) when the last response was planned
        self._input_format = "audio/pcm"
        self._output_format = "audio/pcm"
        self._reset_input_resampler()

    # ------------------------------------------------------------------ configuration views

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td: dict[str, Any] | None = self.session["audio"]["input"]["turn_detection"]
        return td

    @property
    def transcribing(self) -> bool:
        return self.session["audio"]["input"]["transcription"] is not None

    @property
    def tool_names(self) -> frozenset[str]:
        if self.session.get("tool_choice") == "none":
            return frozenset()
        return frozenset(t.get("name", "") for t in self.session.get("tools") or [] if isinstance(t, dict))

    def _ms_of_input(self, nbytes: int) -> int:
        return nbytes // 48 if self._input_format == "audio/pcm" else nbytes // 8

    def _ms_of_output(self, nbytes: int) -> int:
        return nbytes // 48 if self._output_format == "audio/pcm" else nbytes // 8

    def _reset_input_resampler(self) -> None:
        rate = _FORMATS[self._input_format]
        self._in_res = StreamResampler(rate, 16000)

    # ------------------------------------------------------------------ events

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": _id("event"), **fields}

    def _error(self, code: str, message: str, param: str | None = None, event_id: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
        return self._event("error", error={"type": kind, "code": code, "message": message, "param": param,
                                            "event_id": event_id})

    def start(self) -> list[Output]:
        """The first events of the session."""
        return [self._event("session.created", session=self._session_view())]

    def _session_view(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.session))  # a deep copy the caller may keep

    def handle_text(self, text: str | bytes) -> list[Output]:
        """One client frame (JSON text). Invalid JSON or a non-object gives an ``error`` event."""
        try:
            event = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return [self._error("invalid_json", "The message is not valid JSON.")]
        if not isinstance(event, dict):
            return [self._error("invalid_json", "The message must be a JSON object.")]
        return self.handle_event(event)

    def handle_event(self, event: dict[str, Any]) -> list[Output]:
        """One client event dict."""
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [self._error("invalid_value", f"Invalid value: {kind!r}. Unknown client event type.", "type",
                                client_id)]
        try:
            return handler(self, event)
        except ClientEventError as error:
            return [self._error(error.code, error.message, error.param, client_id, error.kind)]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return [self._error("invalid_value", f"Invalid {kind} event: {error}", None, client_id)]

    # ------------------------------------------------------------------ session.update

    def _on_session_update(self, event: dict[str, Any]) -> list[Output]:
        update = event.get("session")
        if not isinstance(update, dict):
            raise ClientEventError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        if update.get("type") != "realtime":
            raise ClientEventError("missing_required_parameter" if "type" not in update else "invalid_value",
                                   "session.type must be 'realtime'.", "session.type")
        unknown = sorted(set(update) - _SESSION_KEYS)
        if unknown:
            raise ClientEventError("unknown_parameter", f"Unknown parameter: 'session.{unknown[0]}'.",
                                   f"session.{unknown[0]}")
        new = self._session_view()
        for key in ("instructions", "tools", "tool_choice", "max_output_tokens", "truncation", "tracing",
                    "prompt", "include"):
            if key in update:
                new[key] = update[key]
        if "output_modalities" in update:
            mods = update["output_modalities"]
            if mods not in (["audio"], ["text"]):
                raise ClientEventError("invalid_value", "output_modalities must be ['audio'] or ['text'].",
                                       "session.output_modalities")
            new["output_modalities"] = mods
        if new.get("tools") is not None and not isinstance(new["tools"], list):
            raise ClientEventError("invalid_type", "session.tools must be an array.", "session.tools")
        audio = update.get("audio") or {}
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        if "format" in inp:
            new["audio"]["input"]["format"] = _check_format(inp["format"], "session.audio.input.format")
        for key in ("transcription", "noise_reduction"):
            if key in inp:
                new["audio"]["input"][key] = inp[key]
        if "turn_detection" in inp:
            td = inp["turn_detection"]
            if td is None:
                new["audio"]["input"]["turn_detection"] = None
            elif isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad"):
                base = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                        "create_response": True, "interrupt_response": True, "idle_timeout_ms": None}
                if td["type"] == "semantic_vad":
                    base = {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                            "interrupt_response": True}
                base.update({k: v for k, v in td.items() if k in base})
                threshold = base.get("threshold", 0.5)
                if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
                    raise ClientEventError("invalid_value", "threshold must be between 0 and 1.",
                                           "session.audio.input.turn_detection.threshold")
                for knob in ("prefix_padding_ms", "silence_duration_ms"):
                    value = base.get(knob, 0)
                    if not isinstance(value, int) or value < 0:
                        raise ClientEventError("invalid_value", f"{knob} must be a non-negative integer.",
                                               f"session.audio.input.turn_detection.{knob}")
                new["audio"]["input"]["turn_detection"] = base
            else:
                raise ClientEventError("invalid_value", "turn_detection.type must be 'server_vad' or 'semantic_vad'.",
                                       "session.audio.input.turn_detection.type")
        if "format" in out:
            new["audio"]["output"]["format"] = _check_format(out["format"], "session.audio.output.format")
        if "voice" in out:
            if self._produced_audio and out["voice"] != new["audio"]["output"]["voice"]:
                raise ClientEventError("cannot_update_voice", "Cannot update a conversation's voice if assistant "
                                       "audio is present.", "session.audio.output.voice")
            new["audio"]["output"]["voice"] = out["voice"]
        if "speed" in out:
            speed = out["speed"]
            if not isinstance(speed, int | float) or not 0.25 <= speed <= 1.5:
                raise ClientEventError("invalid_value", "speed must be between 0.25 and 1.5.", "session.audio.output.speed")
            new["audio"]["output"]["speed"] = speed
        # Everything validated: apply.
        self.session = new
        self.dialogue.set_instructions(str(new.get("instructions") or ""))
        fmt_in = new["audio"]["input"]["format"]["type"]
        if fmt_in != self._input_format:
            self._input_format = fmt_in
            self._reset_input_resampler()
        fmt_out = new["audio"]["output"]["format"]["type"]
        if fmt_out != self._output_format:
            self._output_format = fmt_out
        td = self.turn_detection
        if td is not None:
            self.vad.configure(VadConfig(threshold=float(td.get("threshold", 0.5)),
                                         prefix_padding_ms=int(td.get("prefix_padding_ms", 300)),
                                         silence_duration_ms=int(td.get("silence_duration_ms", 500))))
        return [self._event("session.updated", session=self._session_view())]

    # ------------------------------------------------------------------ input audio

    def _to_16k(self, raw: bytes) -> bytes:
        if self._input_format == "audio/pcm":
            x = pcm16_to_float(raw[: len(raw) - len(raw) % 2])
        elif self._input_format == "audio/pcmu":
            x = ulaw_decode(raw).astype(np.float32) / 32768.0
        else:
            x = alaw_decode(raw).astype(np.float32) / 32768.0
        assert self._in_res is not None
        return float_to_pcm16(self._in_res.process(x))

    def _on_append(self, event: dict[str, Any]) -> list[Output]:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientEventError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientEventError("invalid_value", "audio is not valid base64.", "audio") from None
        return self.append_audio(raw)

    def append_audio(self, raw: bytes) -> list[Output]:
        """Caller audio in the session's input format (the decoded ``input_audio_buffer.append``)."""
        out: list[Output] = []
        if not raw:
            return out
        self._input_bytes += len(raw)
        pcm = self._to_16k(raw)
        # Pre-roll for the recogniser (prefix padding + detection delay), bounded.
        self._preroll += pcm
        excess = len(self._preroll) - _PREROLL_MS * 32
        if excess > 0:
            excess -= excess % 2
            del self._preroll[:excess]
            self._preroll_start_ms += excess // 32
        if self.turn_detection is None:
            self.vad.skip(len(pcm))
            if self._manual is None:
                self._utt_counter += 1
                self._manual = _Utterance(self._utt_counter, _id("item"), self.vad.processed_ms)
            self._manual.fed_ms += len(pcm) // 32
            out.append(AsrFeed(self._manual.id, pcm))
            return out
        # With VAD: feed everything up to each event boundary in order.
        events = self.vad.process(pcm)
        speech_before = self._speech
        if speech_before is not None:
            out.append(AsrFeed(speech_before.id, pcm))
            speech_before.fed_ms += len(pcm) // 32
        for ev in events:
            if isinstance(ev, SpeechStart):
                out.extend(self._speech_started(ev))
            else:
                out.extend(self._speech_stopped(ev.audio_end_ms))
        if self._speech is not None and self._speech is not speech_before:
            pass  # the pre-roll fed at speech start already holds this chunk
        if self._speech is not None and self._speech.fed_ms >= MAX_UTTERANCE_MS:
            out.extend(self._speech_stopped(self.vad.processed_ms))
            self.vad.reset()
        return out

    def _speech_started(self, ev: SpeechStart) -> list[Output]:
        self._utt_counter += 1
        utt = _Utterance(self._utt_counter, _id("item"), ev.audio_start_ms)
        self._speech = utt
        out: list[Output] = [self._event("input_audio_buffer.speech_started", audio_start_ms=ev.audio_start_ms,
                                         item_id=utt.item_id)]
        # Everything buffered since audio_start_ms goes to the recogniser first.
        offset = max(0, (ev.audio_start_ms - self._preroll_start_ms) * 32)
        pre = bytes(self._preroll[offset:])
        if pre:
            out.append(AsrFeed(utt.id, pre))
            utt.fed_ms += len(pre) // 32
        td = self.turn_detection or {}
        if self.active is not None and td.get("interrupt_response", True):
            out.extend(self._cancel(self.active, "turn_detected"))
        return out

    def _speech_stopped(self, audio_end_ms: int) -> list[Output]:
        utt, self._speech = self._speech, None
        if utt is None:
            return []
        out: list[Output] = [self._event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms,
                                         item_id=utt.item_id)]
        out.extend(self._commit(utt, audio_ms=audio_end_ms - utt.start_ms))
        td = self.turn_detection or {}
        if td.get("create_response", True) and self.active is None:
            out.extend(self._create_response(None, event_id=None))
        return out

    def _commit(self, utt: _Utterance, audio_ms: int) -> list[Output]:
        previous = self.items[-1]["id"] if self.items else None
        item = {"id": utt.item_id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
        self.items.append(item)
        self._item_meta[utt.item_id] = {"audio_ms": max(0, audio_ms), "pending": True, "confidence": 0.0}
        self._utterances[utt.id] = utt
        return [self._event("input_audio_buffer.committed", item_id=utt.item_id, previous_item_id=previous),
                self._event("conversation.item.added", item=_copy(item), previous_item_id=previous),
                self._event("conversation.item.done", item=_copy(item), previous_item_id=previous),
                AsrFinish(utt.id)]

    def _on_commit(self, event: dict[str, Any]) -> list[Output]:
        utt = self._speech or self._manual
        if utt is None or utt.fed_ms < 100:
            raise ClientEventError("input_audio_buffer_commit_empty", "Error committing input audio buffer: "
                                   "buffer too small. Expected at least 100ms of audio.")
        self._speech = self._manual = None
        self.vad.reset()
        return self._commit(utt, audio_ms=utt.fed_ms)

    def _on_clear(self, event: dict[str, Any]) -> list[Output]:
        out: list[Output] = []
        for utt in (self._speech, self._manual):
            if utt is not None:
                out.append(AsrAbort(utt.id))
        self._speech = self._manual = None
        self.vad.reset()
        out.append(self._event("input_audio_buffer.cleared"))
        return out

    def on_transcript(self, utterance: int, result: AsrResult) -> list[Output]:
        """The recogniser finished ``utterance`` (an ``AsrFinish``)."""
        utt = self._utterances.pop(utterance, None)
        if utt is None:
            return []
        out: list[Output] = []
        meta = self._item_meta.get(utt.item_id)
        item = self._find(utt.item_id)
        if meta is not None:
            meta["pending"] = False
            meta["confidence"] = result.confidence
        if item is not None:
            item["content"][0]["transcript"] = result.text
        if self.transcribing:
            seconds = (meta or {}).get("audio_ms", 0) / 1000.0
            out.append(self._event("conversation.item.input_audio_transcription.completed", item_id=utt.item_id,
                                   content_index=0, transcript=result.text,
                                   usage={"type": "duration", "seconds": round(seconds, 3)}))
        if self.active is not None and self.active.waiting_for == utt.item_id:
            self.active.waiting_for = None
            out.extend(self._plan(self.active))
        return out

    # ------------------------------------------------------------------ conversation items

    def _find(self, item_id: str) -> dict[str, Any] | None:
        for item in self.items:
            if item["id"] == item_id:
                return item
        return None

    def _on_item_create(self, event: dict[str, Any]) -> list[Output]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise ClientEventError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        kind = item.get("type")
        new: dict[str, Any]
        if kind == "message":
            role = item.get("role")
            content = item.get("content")
            if role not in ("user", "system", "assistant") or not isinstance(content, list):
                raise ClientEventError("invalid_value", "message items need a role (user/system/assistant) and content.",
                                       "item.role")
            allowed = {"user": {"input_text", "input_audio"}, "system": {"input_text"}, "assistant": {"output_text"}}
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in allowed[role]:
                    raise ClientEventError("invalid_value", f"Invalid content part for a {role} message.",
                                           "item.content")
                parts.append({"type": part["type"], "text": str(part.get("text", ""))} if part["type"] != "input_audio"
                             else {"type": "input_audio", "transcript": part.get("transcript")})
            new = {"type": "message", "role": role, "content": parts}
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
                raise ClientEventError("missing_required_parameter", "function_call_output needs call_id and output.",
                                       "item.call_id")
            new = {"type": "function_call_output", "call_id": item["call_id"], "output": item["output"]}
        elif kind == "function_call":
            new = {"type": "function_call", "call_id": str(item.get("call_id", "")), "name": str(item.get("name", "")),
                   "arguments": str(item.get("arguments", ""))}
        else:
            raise ClientEventError("invalid_value", f"Unsupported item type {kind!r}.", "item.type")
        item_id: str = item["id"] if isinstance(item.get("id"), str) else _id("item")
        if self._find(item_id) is not None:
            raise ClientEventError("invalid_value", f"Item with id {item_id!r} already exists.", "item.id")
        new = {"id": item_id, "object": "realtime.item", **new, "status": "completed"}
        previous = event.get("previous_item_id")
        if previous is None:
            prev_id = self.items[-1]["id"] if self.items else None
            self.items.append(new)
        elif previous == "root":
            prev_id = None
            self.items.insert(0, new)
        else:
            index = next((i for i, it in enumerate(self.items) if it["id"] == previous), None)
            if index is None:
                raise ClientEventError("invalid_value", f"previous_item_id {previous!r} not found.", "previous_item_id")
            prev_id = previous
            self.items.insert(index + 1, new)
        self._item_meta[item_id] = {"audio_ms": 0, "pending": False, "confidence": 1.0}
        return [self._event("conversation.item.added", item=_copy(new), previous_item_id=prev_id),
                self._event("conversation.item.done", item=_copy(new), previous_item_id=prev_id)]

    def _on_item_delete(self, event: dict[str, Any]) -> list[Output]:
        item = self._find(str(event.get("item_id")))
        if item is None:
            raise ClientEventError("invalid_value", f"Item {event.get('item_id')!r} does not exist.", "item_id")
        self.items.remove(item)
        return [self._event("conversation.item.deleted", item_id=item["id"])]

    def _on_item_retrieve(self, event: dict[str, Any]) -> list[Output]:
        item = self._find(str(event.get("item_id")))
        if item is None:
            raise ClientEventError("invalid_value", f"Item {event.get('item_id')!r} does not exist.", "item_id")
        return [self._event("conversation.item.retrieved", item=_copy(item))]

    def _on_truncate(self, event: dict[str, Any]) -> list[Output]:
        item_id = event.get("item_id")
        item = self._find(str(item_id))
        if item is None or item.get("role") != "assistant":
            raise ClientEventError("invalid_value", f"Assistant item {item_id!r} does not exist.", "item_id")
        end_ms = event.get("audio_end_ms")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ClientEventError("invalid_value", "audio_end_ms must be a non-negative integer.", "audio_end_ms")
        if event.get("content_index", 0) != 0:
            raise ClientEventError("invalid_value", "content_index must be 0.", "content_index")
        meta = self._item_meta.get(item["id"], {})
        total = int(meta.get("audio_ms", 0))
        if end_ms > total:
            raise ClientEventError("invalid_value", f"Audio content of {total}ms is already shorter than {end_ms}ms",
                                   "audio_end_ms")
        full = str(meta.get("full_transcript", _transcript_of(item)))
        words = full.split()
        keep = round(len(words) * end_ms / total) if total else 0
        part = item["content"][0]
        part["transcript"] = " ".join(words[:keep])
        meta["audio_ms"] = end_ms
        meta["full_transcript"] = " ".join(words[:keep])
        return [self._event("conversation.item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end_ms)]

    # ------------------------------------------------------------------ responses

    def _on_response_create(self, event: dict[str, Any]) -> list[Output]:
        if self.active is not None:
            raise ClientEventError("conversation_already_has_active_response",
                                   f"Conversation already has an active response in progress: {self.active.id}. "
                                   "Wait until the response is finished before creating a new one.")
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise ClientEventError("invalid_type", "response must be an object.", "response")
        return self._create_response(params, event_id=event.get("event_id"))

    def _create_response(self, params: dict[str, Any] | None, event_id: Any) -> list[Output]:
        params = params or {}
        instructions = params.get("instructions") if isinstance(params.get("instructions"), str) else None
        mods = params.get("output_modalities") or self.session["output_modalities"]
        resp = _Response(id=_id("resp"), conversation=params.get("conversation", "auto") != "none",
                         instructions=instructions, text_only=mods == ["text"])
        resp.input_tokens = self._input_usage()
        self.active = resp
        out: list[Output] = [self._event("response.created", response=self._response_view(resp, "in_progress"))]
        # The reply needs the newest unanswered user turn's transcript: wait for it if still pending.
        pending = [it for it in self.items[self._answered_upto:]
                   if it.get("role") == "user" and self._item_meta.get(it["id"], {}).get("pending")]
        if pending:
            resp.waiting_for = pending[-1]["id"]
            return out
        out.extend(self._plan(resp))
        return out

    def _decide(self, resp: _Response) -> Reply:
        new_items = self.items[self._answered_upto:]
        self._answered_upto = len(self.items)
        outputs = [it for it in new_items if it.get("type") == "function_call_output"]
        if outputs:
            called = {it.get("call_id"): it.get("name") for it in self.items if it.get("type") == "function_call"}
            if called.get(outputs[-1].get("call_id")) not in (None, "escalate_to_human"):  # a business tool
                return self.dialogue.tool_result(str(outputs[-1].get("output", "")))
            line = line_from_instructions(resp.instructions or "") or self.dialogue.handoff_line()
            return Reply(line, intent="handoff")
        user_turns = [it for it in new_items if it.get("role") == "user"]
        if user_turns:
            last = user_turns[-1]
            meta = self._item_meta.get(last["id"], {})
            return self.dialogue.respond(_transcript_of(last), float(meta.get("confidence", 1.0)), self.tool_names)
        if not any(it.get("role") == "user" for it in self.items):
            return self.dialogue.greeting()
        instructed = line_from_instructions(resp.instructions or "")
        if instructed:
            return Reply(instructed, intent="instructed")
        return Reply(self.dialogue.fill(self.models.script.anything_else), intent="prompt")

    def _plan(self, resp: _Response) -> list[Output]:
        reply = self._decide(resp)
        out: list[Output] = []
        resp.pending_tool = reply.tool
        if reply.text:
            item: dict[str, Any] = {"id": _id("item"), "object": "realtime.item", "type": "message", "role": "assistant",
                    "status": "in_progress", "content": []}
            resp.message = item
            resp.output.append(item)
            index = len(resp.output) - 1
            out.append(self._event("response.output_item.added", response_id=resp.id, output_index=index,
                                   item=_copy(item)))
            if resp.conversation:
                previous = self.items[-1]["id"] if self.items else None
                self.items.append(item)
                self._answered_upto = len(self.items)
                self._item_meta[item["id"]] = {"audio_ms": 0, "pending": False}
                out.append(self._event("conversation.item.added", item=_copy(item), previous_item_id=previous))
            part_type = "text" if resp.text_only else "audio"
            out.append(self._event("response.content_part.added", response_id=resp.id, item_id=item["id"],
                                   output_index=index, content_index=0,
                                   part={"type": part_type, "transcript": "", **({"text": ""} if resp.text_only else {})}))
            if resp.text_only:
                resp.transcript = reply.text
                out.append(self._event("response.output_text.delta", response_id=resp.id, item_id=item["id"],
                                       output_index=index, content_index=0, delta=reply.text))
                out.extend(self._finish(resp, "completed", None))
                return out
            out.append(Synthesize(resp.id, tuple(split_sentences(reply.text)), self._voice()))
            return out
        out.extend(self._finish(resp, "completed", None))
        return out

    def _voice(self) -> VoiceSettings:
        output = self.session["audio"]["output"]
        return VoiceSettings.for_voice(str(output.get("voice", "alloy")), float(output.get("speed", 1.0) or 1.0))

    def _encode_out(self, pcm24: bytes) -> bytes:
        if self._output_format == "audio/pcm":
            return pcm24
        if self._out_res is None:
            self._out_res = StreamResampler(24000, 8000)
        samples = np.clip(np.round(self._out_res.process(pcm16_to_float(pcm24)) * 32768.0), -32768, 32767)
        return ulaw_encode(samples) if self._output_format == "audio/pcmu" else alaw_encode(samples)

    def on_audio(self, response_id: str, sentence: str, pcm24: bytes) -> list[Output]:
        """One synthesised sentence (PCM16 24 kHz) of ``response_id``; ignored once it is finished."""
        resp = self.active
        if resp is None or resp.id != response_id or resp.message is None:
            return []
        item = resp.message
        index = resp.output.index(item)
        out: list[Output] = []
        delta_text = (" " if resp.transcript else "") + sentence
        resp.transcript += delta_text
        out.append(self._event("response.output_audio_transcript.delta", response_id=resp.id, item_id=item["id"],
                               output_index=index, content_index=0, delta=delta_text))
        data = self._encode_out(pcm24)
        step = DELTA_MS * (48 if self._output_format == "audio/pcm" else 8)
        for start in range(0, len(data), step):
            chunk = data[start:start + step]
            resp.audio_bytes += len(chunk)
            out.append(self._event("response.output_audio.delta", response_id=resp.id, item_id=item["id"],
                                   output_index=index, content_index=0, delta=base64.b64encode(chunk).decode("ascii")))
        self._produced_audio = True
        meta = self._item_meta.setdefault(item["id"], {})
        meta["audio_ms"] = self._ms_of_output(resp.audio_bytes)
        meta["full_transcript"] = resp.transcript
        item["content"] = [{"type": "output_audio", "transcript": resp.transcript}]
        return out

    def on_audio_done(self, response_id: str) -> list[Output]:
        """All sentences of ``response_id`` were delivered with ``on_audio``."""
        resp = self.active
        if resp is None or resp.id != response_id:
            return []
        return self._finish(resp, "completed", None)

    def _close_message(self, resp: _Response, status: str) -> list[Output]:
        item = resp.message
        if item is None:
            return []
        resp.message = None
        index = resp.output.index(item)
        ids = {"response_id": resp.id, "item_id": item["id"], "output_index": index, "content_index": 0}
        out: list[Output] = []
        if resp.text_only:
            out.append(self._event("response.output_text.done", **ids, text=resp.transcript))
            part = {"type": "text", "text": resp.transcript}
            item["content"] = [{"type": "output_text", "text": resp.transcript}]
        else:
            out.append(self._event("response.output_audio.done", **ids))
            out.append(self._event("response.output_audio_transcript.done", **ids, transcript=resp.transcript))
            part = {"type": "audio", "transcript": resp.transcript}
            item["content"] = [{"type": "output_audio", "transcript": resp.transcript}]
        out.append(self._event("response.content_part.done", **ids, part=part))
        item["status"] = status
        out.append(self._event("response.output_item.done", response_id=resp.id, output_index=index, item=_copy(item)))
        if resp.conversation:
            out.append(self._event("conversation.item.done", item=_copy(item)))
        return out

    def _emit_tool(self, resp: _Response) -> list[Output]:
        if resp.pending_tool is None:
            return []
        name, args = resp.pending_tool
        resp.pending_tool = None
        arguments = json.dumps(args)
        call_id = _id("call")
        item: dict[str, Any] = {"id": _id("item"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "name": name, "call_id": call_id, "arguments": ""}
        resp.output.append(item)
        index = len(resp.output) - 1
        out: list[Output] = [self._event("response.output_item.added", response_id=resp.id, output_index=index,
                                         item=_copy(item))]
        if resp.conversation:
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            self._answered_upto = len(self.items)
            out.append(self._event("conversation.item.added", item=_copy(item), previous_item_id=previous))
        out.append(self._event("response.function_call_arguments.delta", response_id=resp.id, item_id=item["id"],
                               output_index=index, call_id=call_id, delta=arguments))
        out.append(self._event("response.function_call_arguments.done", response_id=resp.id, item_id=item["id"],
                               output_index=index, call_id=call_id, name=name, arguments=arguments))
        item["arguments"] = arguments
        item["status"] = "completed"
        out.append(self._event("response.output_item.done", response_id=resp.id, output_index=index, item=_copy(item)))
        if resp.conversation:
            out.append(self._event("conversation.item.done", item=_copy(item)))
        return out

    def _finish(self, resp: _Response, status: str, reason: str | None) -> list[Output]:
        out = self._close_message(resp, "completed" if status == "completed" else "incomplete")
        if status == "completed":
            out.extend(self._emit_tool(resp))
        self.active = None
        if resp.waiting_for is not None:
            self._answered_upto = len(self.items)  # a cancelled turn is not answered later
        out.append(self._event("response.done", response=self._response_view(resp, status, reason)))
        return out

    def _cancel(self, resp: _Response, reason: str) -> list[Output]:
        out: list[Output] = [StopSynthesis(resp.id)]
        out.extend(self._finish(resp, "cancelled", reason))
        return out

    def _on_response_cancel(self, event: dict[str, Any]) -> list[Output]:
        wanted = event.get("response_id")
        if self.active is None or (wanted and wanted != self.active.id):
            raise ClientEventError("response_cancel_not_active", "Cancellation failed: no active response found.")
        return self._cancel(self.active, "client_cancelled")

    def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> list[Output]:
        raise ClientEventError("invalid_value", "output_audio_buffer.clear is only supported for WebRTC/SIP sessions.",
                               "type")

    # ------------------------------------------------------------------ usage

    def _input_usage(self) -> dict[str, int]:
        """Tokens of the conversation as input to the next response: user audio 1 token/100 ms,
        assistant audio 1 token/50 ms (as kept after truncation), text ~ words x 1.3 or chars / 4."""
        audio = 0
        text = text_tokens(str(self.session.get("instructions") or ""))
        for item in self.items:
            meta = self._item_meta.get(item["id"], {})
            if item.get("role") == "user" and item["content"] and item["content"][0].get("type") == "input_audio":
                audio += int(meta.get("audio_ms", 0)) // 100
            elif item.get("role") == "assistant" and not item.get("content", [{}])[0:1] == []:
                if item["content"][0].get("type") == "output_audio":
                    audio += int(meta.get("audio_ms", 0)) // 50
                else:
                    text += text_tokens(_transcript_of(item))
            elif item.get("type") == "message":
                text += text_tokens(_transcript_of(item))
            else:
                text += text_tokens(str(item.get("output", "")) + str(item.get("arguments", "")))
        return {"audio": audio, "text": text}

    def _response_view(self, resp: _Response, status: str, reason: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": resp.id, "object": "realtime.response", "status": status,
            "status_details": None, "output": [_copy(it) for it in resp.output],
            "conversation_id": "conv_" + self.id[5:] if resp.conversation else None,
            "output_modalities": ["text"] if resp.text_only else ["audio"],
            "max_output_tokens": self.session.get("max_output_tokens", "inf"), "metadata": None,
            "audio": {"output": {"format": self.session["audio"]["output"]["format"],
                                 "voice": self.session["audio"]["output"]["voice"]}},
            "usage": None,
        }
        if status == "in_progress":
            return view
        if status == "cancelled":
            view["status_details"] = {"type": "cancelled", "reason": reason}
        else:
            view["status_details"] = {"type": status}
        out_audio = self._ms_of_output(resp.audio_bytes) // 50
        out_text = text_tokens(resp.transcript) + sum(text_tokens(str(it.get("arguments", "")))
                                                      for it in resp.output if it.get("type") == "function_call")
        in_audio, in_text = resp.input_tokens.get("audio", 0), resp.input_tokens.get("text", 0)
        view["usage"] = {
            "total_tokens": in_audio + in_text + out_audio + out_text,
            "input_tokens": in_audio + in_text, "output_tokens": out_audio + out_text,
            "input_token_details": {"text_tokens": in_text, "audio_tokens": in_audio, "image_tokens": 0,
                                    "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
        return view

    # ------------------------------------------------------------------ teardown

    def close(self) -> list[Output]:
        """Abort outstanding recogniser work and synthesis (the adapter runs the commands)."""
        out: list[Output] = []
        for utt in (self._speech, self._manual):
            if utt is not None:
                out.append(AsrAbort(utt.id))
        self._speech = self._manual = None
        if self.active is not None:
            out.append(StopSynthesis(self.active.id))
        return out

    _HANDLERS: ClassVar[dict[str, Any]] = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "conversation.item.create": _on_item_create,
        "conversation.item.delete": _on_item_delete,
        "conversation.item.retrieve": _on_item_retrieve,
        "conversation.item.truncate": _on_truncate,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "output_audio_buffer.clear": _on_output_audio_buffer_clear,
    }


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(item))


def _transcript_of(item: dict[str, Any]) -> str:
    texts: Iterable[Any] = (part.get("text") or part.get("transcript") or "" for part in item.get("content") or [])
    return " ".join(str(t) for t in texts if t)


__all__ = [
    "FRAME_BYTES",
    "AsrAbort",
    "AsrFeed",
    "AsrFinish",
    "Command",
    "LocalSession",
    "Output",
    "SpeechStop",
    "StopSynthesis",
    "Synthesize",
    "text_tokens",
    "tokenize",
]
