"""The embedded engine behind a GPT-Live front (docs/models/local.md#gpt-live, docs/models/live.md).

``LiveFront`` is pure: GPT-Live client events in, the engine's Realtime GA events out, and the
engine's GA server events back into GPT-Live server events, with the Live timeline emulated:

- the client speaks first (``session.start``, answered by ``session.started`` once the engine
  confirmed its ``session.update``);
- output is a continuous stream driven by input audio: every 100 ms of appended caller audio, one
  100 ms ``session.output_audio.delta`` goes out, taken from the engine's reply audio (which it
  produces faster than real time) or digital silence when there is none;
- full duplex: when the engine's VAD hears the caller start (``speech_started``) the reply audio
  not yet streamed is dropped, so the output turns silent, like a Live model yielding;
- transcripts carry timeline milliseconds; the bot's text goes out when its audio is streamed
  (at most ``MAX_PENDING_TEXTS`` deltas wait); the engine's ``escalate_to_human`` call comes out as a
  Responses delegation (``session.delegation.created`` + ``response.event``);
- ``session.usage.updated`` every 15 s of timeline.

Only PCM16 24 kHz is offered (a ``pcmu`` start is refused with an ``error``). Memory: the reply
audio waiting to stream is capped at ``MAX_PENDING_AUDIO`` (30 s, 1.44 MB; older audio dropped).
``LiveLocalTransport`` wraps an engine transport with it, in-process (``callbridge demo``), and
``service.realtime.local.server`` serves it at ``/v1/live/sessions``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from typing import Any

from service.realtime.events import FunctionTool, RealtimeClosed, RealtimeTransport, SessionConfig
from service.realtime.protocol import GaDialect

TICK_BYTES = 4800  # 100 ms of PCM16 24 kHz
MAX_PENDING_AUDIO = 30 * 48000
USAGE_EVERY_MS = 15000
MAX_PENDING_TEXTS = 256
_SILENCE_B64 = base64.b64encode(bytes(TICK_BYTES)).decode("ascii")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class LiveFront:
    """See the module docstring. One instance per session; not thread-safe."""

    def __init__(self) -> None:
        self._ga = GaDialect()
        self._ids = itertools.count(1)
        self.session: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self._input_bytes = 0
        self._ticks = 0
        self._pending = bytearray()
        self._queued_total = 0  # reply audio bytes ever queued
        self._streamed = 0  # reply audio bytes ever streamed (or dropped on a yield)
        self._texts: list[tuple[int, str]] = []  # (audio offset it belongs to, transcript delta), bounded
        self._usage_next = USAGE_EVERY_MS
        self._speech_start_ms = 0

    @property
    def timeline_ms(self) -> int:
        return self._input_bytes // 48

    def _event(self, kind: str, **fields: Any) -> str:
        return _dumps({"type": kind, "event_id": f"event_local_{next(self._ids)}", **fields})

    def _error(self, code: str, message: str, client_event_id: Any = None) -> str:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if isinstance(client_event_id, str):
            error["client_event_id"] = client_event_id
        return self._event("error", error=error)

    # --- client -> engine ---------------------------------------------------------------------------
    def from_client(self, text: str) -> tuple[list[str], list[str]]:
        """One client frame -> (GA events for the engine, Live events for the client)."""
        try:
            parsed = json.loads(text)
        except ValueError:
            return [], [self._error("invalid_json", "frame is not JSON")]
        if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
            return [], [self._error("invalid_event", "an event is a JSON object with a string type")]
        event: dict[str, Any] = parsed
        kind, event_id = event["type"], event.get("event_id")
        if not self.session and kind != "session.start":
            return [], [self._error("session_not_started", "the first message must be session.start", event_id)]
        if kind == "session.start":
            return self._start(event)
        if kind == "session.input_audio.append":
            return self._append(event)
        if kind in ("session.commentary.append", "session.thinking.append", "session.instructions.append"):
            return self._context(event)
        if kind == "response.item.create":
            item = _obj(event.get("item"))
            return [self._ga.function_call_output(str(item.get("call_id", "")), str(item.get("output", "")))], []
        if kind == "response.create":
            return [self._ga.response_create()], []
        if kind == "session.close":
            self.closed = True
            return [], [self._event("session.closed", reason="close_requested", session=self._resource(),
                                    usage={"seconds": self.timeline_ms // 1000})]
        return [], [self._error("unsupported_event", f"{kind} is not supported by the local engine", event_id)]

    def _start(self, event: dict[str, Any]) -> tuple[list[str], list[str]]:
        if self.session:
            return [], [self._error("session_already_started", "session.start twice", event.get("event_id"))]
        session = event.get("session")
        if not isinstance(session, dict):
            return [], [self._error("invalid_value", "session.start needs a session object", event.get("event_id"))]
        audio = _obj(session.get("audio"))
        fmt = audio.get("format") or {"type": "audio/pcm", "rate": 24000}
        if fmt != {"type": "audio/pcm", "rate": 24000}:
            return [], [self._error("unsupported_format", "the local engine speaks audio/pcm at 24000 only",
                                    event.get("event_id"))]
        self.session = session
        delegation = _obj(session.get("delegation"))
        tools: tuple[FunctionTool, ...] = ()
        for tool in (delegation.get("responses") or {}).get("tools") or []:
            if isinstance(tool, dict) and tool.get("type") == "function":
                tools += (FunctionTool(str(tool.get("name")), str(tool.get("description", "")),
                                       tool.get("parameters") or {"type": "object", "properties": {}}),)
        voice = (audio.get("output") or {}).get("voice", "marin")
        config = SessionConfig(instructions=str(session.get("instructions") or ""),
                               voice=voice if isinstance(voice, str) else "marin", tools=tools)
        return [self._ga.session_update(config)], []

    def _append(self, event: dict[str, Any]) -> tuple[list[str], list[str]]:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return [], [self._error("invalid_value", "audio must be base64", event.get("event_id"))]
        self._input_bytes += len(audio) * 3 // 4 - audio.count("=", -2)
        out: list[str] = []
        while self.started and self._input_bytes >= (self._ticks + 1) * TICK_BYTES:
            self._ticks += 1
            out.append(self._tick())
            while self._texts and self._texts[0][0] <= self._streamed:
                out.append(self._event("session.output_transcript.delta", delta=self._texts.pop(0)[1],
                                       start_ms=self.timeline_ms, end_ms=self.timeline_ms + 100))
            if self.timeline_ms >= self._usage_next:
                self._usage_next += USAGE_EVERY_MS
                out.append(self._event("session.usage.updated", usage={"seconds": self.timeline_ms // 1000}))
        return [self._ga.audio_append_b64(audio)], out

    def _tick(self) -> str:
        if not self._pending:
            return '{"type":"session.output_audio.delta","delta":"' + _SILENCE_B64 + '"}'
        chunk = bytes(self._pending[:TICK_BYTES]).ljust(TICK_BYTES, b"\0")
        self._streamed += min(TICK_BYTES, len(self._pending))
        del self._pending[:TICK_BYTES]
        return _dumps({"type": "session.output_audio.delta", "delta": base64.b64encode(chunk).decode("ascii")})

    def _context(self, event: dict[str, Any]) -> tuple[list[str], list[str]]:
        content = event.get("content")
        if not isinstance(content, str) or "delegation_id" not in event:
            return [], [self._error("invalid_value", "content and delegation_id are required", event.get("event_id"))]
        ack = self._event(event["type"].removesuffix("append") + "appended", client_event_id=event.get("event_id"),
                          start_ms=self.timeline_ms, end_ms=self.timeline_ms)
        if event["type"] == "session.commentary.append":
            # speakable: a quoted line is said as given; anything else lets the engine say its next line
            return [self._ga.response_create(content if '"' in content else None)], [ack]
        return [self._ga.system_text_item(content)], [ack]

    # --- engine -> client ---------------------------------------------------------------------------
    def from_engine(self, text: str) -> list[str]:
        """One engine (GA) event -> the Live events it means (often none: audio is paced by input)."""
        try:
            event = json.loads(text)
        except ValueError:
            return []
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "session.updated" and not self.started:
            self.started = True
            return [self._event("session.started", session=self._resource())]
        if kind == "response.output_audio.delta":
            audio = base64.b64decode(event.get("delta") or "")
            self._pending += audio
            self._queued_total += len(audio)
            if len(self._pending) > MAX_PENDING_AUDIO:
                self._streamed += len(self._pending) - MAX_PENDING_AUDIO
                del self._pending[: len(self._pending) - MAX_PENDING_AUDIO]
            return []
        if kind == "input_audio_buffer.speech_started":
            self._speech_start_ms = self.timeline_ms
            self._streamed += len(self._pending)
            self._pending.clear()  # the caller talks over the reply: the rest is never streamed (nor its text)
            self._texts.clear()
            return []
        if kind == "response.output_audio_transcript.delta":
            # said when its audio streams: the text of the audio queued from here on
            if len(self._texts) < MAX_PENDING_TEXTS:
                self._texts.append((self._queued_total + 1, str(event.get("delta") or "")))
            return []
        if kind == "conversation.item.input_audio_transcription.completed":
            return [self._event("session.input_transcript.delta", delta=str(event.get("transcript") or ""),
                                start_ms=self._speech_start_ms, end_ms=max(self._speech_start_ms, self.timeline_ms))]
        if kind == "response.done":  # text with no audio after it goes out with the end of the reply
            self._texts = [(min(offset, self._queued_total), text) for offset, text in self._texts]
            return []
        if kind == "response.function_call_arguments.done":
            return self._delegation(event)
        if kind == "error":
            error = _obj(event.get("error"))
            return [self._error(str(error.get("code") or "engine_error"), str(error.get("message") or ""),
                                error.get("event_id"))]
        return []

    def _delegation(self, event: dict[str, Any]) -> list[str]:
        delegation_id = f"item_local_{next(self._ids)}"
        call = {"type": "function_call", "id": str(event.get("item_id", "")), "call_id": str(event.get("call_id", "")),
                "name": str(event.get("name", "")), "arguments": str(event.get("arguments", "")),
                "status": "completed"}
        return [
            self._event("session.delegation.created", offset_ms=self.timeline_ms,
                        delegation={"id": delegation_id, "type": "delegation", "target": "responses"}),
            self._event("response.event", delegation_id=delegation_id,
                        event={"type": "response.output_item.done", "output_index": 0, "sequence_number": 1,
                               "item": call}),
            self._event("response.event", delegation_id=delegation_id,
                        event={"type": "response.completed", "response": {"usage": {}}}),
        ]

    def _resource(self) -> dict[str, Any]:
        return {"id": "live_local", "expires_at": int(time.time()) + 3600, "status": "active",
                "model": str(self.session.get("model", "")), "instructions": str(self.session.get("instructions", "")),
                "audio": {"format": {"type": "audio/pcm", "rate": 24000}, "output": {"voice": "marin"}},
                "delegation": self.session.get("delegation") or {"type": "client"}, "input": []}


class LiveLocalTransport(RealtimeTransport):
    """A GPT-Live session on the embedded engine, in-process: ``send`` takes Live client events,
    ``recv`` returns Live server events, in order. Events for the client (output deltas made by
    ``send``, translations of engine events) wait in ``_ready``; it holds what one client frame or
    one engine event produced until ``recv`` takes it (a few events; the reader never stops while
    the call runs). Cancel-safe: a cancelled ``recv`` leaves the engine read pending for the next."""

    def __init__(self, engine: RealtimeTransport) -> None:
        self._engine = engine
        self._front = LiveFront()
        self._ready: list[str] = []
        self._wake = asyncio.Event()
        self._engine_read: asyncio.Task[str] | None = None

    async def send(self, text: str) -> None:
        to_engine, to_client = self._front.from_client(text)
        if to_client:
            self._ready.extend(to_client)
            self._wake.set()
        for each in to_engine:
            await self._engine.send(each)

    async def recv(self) -> str:
        while not self._ready:
            if self._front.closed:
                raise RealtimeClosed(1000, "session closed")
            if self._engine_read is None:
                self._engine_read = asyncio.ensure_future(self._engine.recv())
            self._wake.clear()
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({self._engine_read, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            if self._engine_read.done():
                read, self._engine_read = self._engine_read, None
                self._ready.extend(self._front.from_engine(read.result()))  # re-raises RealtimeClosed
        return self._ready.pop(0)

    async def close(self) -> None:
        if self._engine_read is not None:
            self._engine_read.cancel()
        await self._engine.close()
