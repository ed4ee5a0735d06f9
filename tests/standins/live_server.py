"""A protocol-exact stand-in for the GPT-Live WebSocket service (docs/models/live.md).

A real ``websockets`` server on 127.0.0.1 (port 0)::

    async with LiveStandIn(LiveBehaviour(caller_transcripts=["I want a human"])) as live:
        settings: realtime_dialect="live", realtime_url=live.url (or azure_endpoint=live.azure_endpoint)
        session = await live.wait_for_session()
        await session.wait_until(lambda: session.yields >= 1)
        assert live.violations == []

Handshake: ``/v1/live/sessions`` (OpenAI: ``Authorization: Bearer <key>``) and
``/openai/v1/live/sessions`` (Azure: ``api-key: <key>``, or ``Authorization: Bearer <token>``); any
query string or other path is a 404, missing or wrong credentials a 401.

Session, as the service behaves (docs/models/live.md):
- the client speaks first: the first frame must be ``session.start`` (else ``error`` and close 1008);
  answered by ``session.started`` with the resolved session. Any other event before it is an error;
- every client event is validated strictly (``tests/standins/live_types.py``: the SDK's own types,
  unknown fields rejected, ``delegation_id`` key required on appends); a failure is recorded in
  ``violations`` and answered with ``error`` (``client_event_id`` echoed), the session goes on;
- the timeline runs on input audio: every 100 ms of appended caller audio, one 100 ms output delta
  goes out, digital silence (PCM zeros / mu-law 0xFF) unless an utterance is playing, so output is
  paced by the caller's real-time stream and freezes when input stops;
- full duplex: caller energy (RMS per 20 ms frame) is tracked while the bot speaks; after
  ``yield_after_ms`` of loud caller audio the utterance is dropped and output turns silent (a yield,
  recorded with its wall-clock time);
- a caller utterance (loud, then ``caller_end_ms`` quiet) gets ``session.input_transcript.delta``s
  (the next scripted transcript, one word per 200 ms bucket of its timeline span) and, after
  ``reply_delay_ms``, a spoken reply; bot speech comes with ``session.output_transcript.delta``s;
- a speakable ``session.commentary.append`` (``delegation_id`` null) is placed and spoken: the
  quoted text if it holds one, else the greeting;
- delegation: with Responses delegation configured, a transcript holding an escalation word gives
  ``session.delegation.created`` + ``response.event``s carrying an ``escalate_to_human`` function
  call; with a Decisions trigger configured, a ``decision.event`` with the predicate's probability;
- ``session.usage.updated`` every ``usage_every_ms`` of timeline (cumulative seconds);
  ``session.close`` -> ``session.closed`` (``close_requested``) and a clean close; ``expire()`` ends the
  session with ``expired``; ``drop()`` aborts the TCP connection.

Outgoing events are validated against the SDK's server types too (a failure is a stand-in bug, kept
in ``violations``). Memory per session: the records (one small tuple per event) and nothing else.
CPU: one JSON parse + SDK validation per append (~50-80 us), one per output delta.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from service.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from tests.standins.live_types import client_event_problem, server_event_problem

OPENAI_PATH = "/v1/live/sessions"
AZURE_PATH = "/openai/v1/live/sessions"
TICK_MS = 100
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass
class LiveBehaviour:
    greeting: str = "Hello, thank you for calling. How can I help?"
    replies: list[str] = field(default_factory=lambda: ["Sure, I can help you with that right away."])
    caller_transcripts: list[str] = field(default_factory=list)
    ms_per_word: int = 250  # spoken length of bot utterances
    yield_after_ms: int = 200
    caller_end_ms: int = 500
    reply_delay_ms: int = 300
    caller_rms: float = 500.0
    escalation_words: tuple[str, ...] = ("human", "person", "agent")
    trigger_probability: float = 0.93
    usage_every_ms: int = 2000
    expires_in_s: int = 3600
    validate_outgoing: bool = True
    validate_appends: bool = True  # off for load runs (the append builder is validated by unit tests)
    record_events: bool = True


@dataclass
class HandshakeRecord:
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class Utterance:
    text: str
    samples: np.ndarray  # int16 at 24 kHz
    started_ms: float  # timeline
    position: int = 0
    words_sent: int = 0
    started_at: float = 0.0  # wall clock (time.monotonic) of its first delta


@dataclass
class YieldRecord:
    timeline_ms: float
    at: float  # wall clock of the first silent delta
    caller_onset_at: float  # wall clock when the caller's loud run began (its frame arrived)
    emitted_ms: float  # utterance audio emitted before the yield


def _tone(ms: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(24 * ms)) / 24000
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t + 1 / 24000) / 0.01) if t.size else t
    return (np.sin(2 * np.pi * freq * t) * envelope * 8000).astype(np.int16)


class LiveSession:
    def __init__(self, server: LiveStandIn, ws: ServerConnection, index: int, headers: dict[str, str]) -> None:
        self.server, self.ws, self.index, self.headers = server, ws, index, headers
        self.behaviour = server.behaviour
        self.config: dict[str, Any] = {}
        self.started = False
        self.format = "pcm16"
        self.received: list[tuple[str, float]] = []
        self.sent: list[tuple[str, float]] = []
        self.violations: list[str] = []
        self.appends: list[tuple[str, str | None, str]] = []  # (type, delegation_id, content)
        self.function_outputs: list[dict[str, Any]] = []
        self.spoken: list[str] = []
        self.yield_records: list[YieldRecord] = []
        self.deltas: list[tuple[float, bool]] = []  # (wall clock, silent) per output delta
        self.input_ms = 0.0
        self._next_tick = TICK_MS
        self._utterance: Utterance | None = None
        self._queued: list[tuple[float, str]] = []  # (timeline ms to start, text)
        self._caller_onset: float | None = None  # timeline ms of the current caller utterance
        self._caller_onset_at = 0.0
        self._caller_last_loud = -1e9
        self._loud_run_ms = 0.0
        self._loud_run_at = 0.0
        self._transcripts = list(self.behaviour.caller_transcripts)
        self._replies = list(self.behaviour.replies)
        self._usage_next = self.behaviour.usage_every_ms
        self._pending_yield: YieldRecord | None = None
        self._ids = 0
        self._changed = asyncio.Condition()

    # --- records ------------------------------------------------------------------------------------
    @property
    def yields(self) -> int:
        return len(self.yield_records)

    def received_types(self) -> list[str]:
        return [kind for kind, _ in self.received]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- sending ------------------------------------------------------------------------------------
    async def _send(self, event: dict[str, Any]) -> None:
        if event["type"] != "session.output_audio.delta":
            self._ids += 1
            event.setdefault("event_id", f"event_{self.index}_{self._ids}")
        if self.behaviour.validate_outgoing:
            problem = server_event_problem(event)
            if problem:
                self.violations.append(f"stand-in bug: {problem}")
        if self.behaviour.record_events or event["type"] != "session.output_audio.delta":
            self.sent.append((event["type"], time.monotonic()))
        await self.ws.send(json.dumps(event))

    async def _error(self, code: str, message: str, client_event_id: Any = None, param: str | None = None) -> None:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if isinstance(client_event_id, str):
            error["client_event_id"] = client_event_id
        if param:
            error["param"] = param
        await self._send({"type": "error", "error": error})

    # --- receiving ----------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async for message in self.ws:
                await self._on_message(message)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            await self._notify()

    async def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            self.violations.append("non-JSON frame")
            await self._error("invalid_json", "frame is not JSON")
            return
        kind = event.get("type") if isinstance(event, dict) else None
        append = kind == "session.input_audio.append"
        if self.behaviour.record_events or not append:
            self.received.append((str(kind), time.monotonic()))
        if append and self.started and not self.behaviour.validate_appends:
            await self._on_session_input_audio_append(event)
            return
        problem = client_event_problem(event) if isinstance(event, dict) else "not an object"
        if problem:
            self.violations.append(problem)
            await self._error("unknown_parameter" if "unknown field" in problem else "invalid_value", problem,
                              event.get("event_id") if isinstance(event, dict) else None)
            return
        if not self.started and kind != "session.start":
            self.violations.append(f"{kind} before session.start/started")
            await self._error("session_not_started", "the first message must be session.start", event.get("event_id"))
            if not self.config:
                await self.ws.close(1008, "session.start must come first")
            return
        handler = getattr(self, "_on_" + str(kind).replace(".", "_"), None)
        if handler is not None:
            await handler(event)

    async def _on_session_start(self, event: dict[str, Any]) -> None:
        if self.started:
            await self._error("session_already_started", "session.start twice", event.get("event_id"))
            return
        session = event["session"]
        self.config = session
        fmt = (session.get("audio") or {}).get("format") or {"type": "audio/pcm", "rate": 24000}
        self.format = "pcmu" if fmt["type"] == "audio/pcmu" else "pcm16"
        self.started = True
        resolved = {
            "id": f"live_standin_{self.index}", "expires_at": int(time.time()) + self.behaviour.expires_in_s,
            "model": session["model"], "instructions": session.get("instructions", ""), "status": "active",
            "audio": {"format": fmt, "output": {"voice": (session.get("audio") or {}).get("output", {}).get("voice",
                                                                                                          "marin")}},
            "delegation": session.get("delegation") or {"type": "client"}, "input": session.get("input") or [],
        }
        await self._send({"type": "session.started", "client_event_id": event.get("event_id"), "session": resolved})

    async def _on_session_input_audio_append(self, event: dict[str, Any]) -> None:
        raw = base64.b64decode(event["audio"])
        pcm = (ulaw_to_pcm16(raw) if self.format == "pcmu"
               else np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")).astype(np.float32)
        rate_per_ms = 8 if self.format == "pcmu" else 24
        for start in range(0, len(pcm), 20 * rate_per_ms):
            frame = pcm[start:start + 20 * rate_per_ms]
            await self._on_frame(frame, len(frame) / rate_per_ms)

    async def _on_frame(self, frame: np.ndarray, ms: float) -> None:
        loud = frame.size > 0 and float(np.sqrt(np.mean(frame * frame))) >= self.behaviour.caller_rms
        now = time.monotonic()
        if loud:
            if self._caller_onset is None:
                self._caller_onset, self._caller_onset_at = self.input_ms, now
            if self._loud_run_ms == 0.0:
                self._loud_run_at = now
            self._caller_last_loud = self.input_ms + ms
            self._loud_run_ms += ms
        else:
            self._loud_run_ms = 0.0
        self.input_ms += ms
        if self._utterance is not None and self._loud_run_ms >= self.behaviour.yield_after_ms:
            utterance, self._utterance = self._utterance, None
            self._pending_yield = YieldRecord(self.input_ms, 0.0, self._loud_run_at, utterance.position / 24)
        if self._caller_onset is not None and self.input_ms - self._caller_last_loud >= self.behaviour.caller_end_ms:
            await self._caller_utterance_ended(self._caller_onset, self._caller_last_loud)
            self._caller_onset = None
        while self.input_ms >= self._next_tick:
            await self._tick()
            self._next_tick += TICK_MS

    async def _caller_utterance_ended(self, onset: float, end: float) -> None:
        text = self._transcripts.pop(0) if self._transcripts else "mm"
        words = text.split()
        span = max(end - onset, 200.0)
        for i, word in enumerate(words):
            start = int(onset + span * i / len(words)) // 200 * 200
            await self._send({"type": "session.input_transcript.delta", "delta": (" " if i else "") + word,
                              "start_ms": start, "end_ms": start + 200})
        lowered = text.lower()
        wants_human = any(word in lowered for word in self.behaviour.escalation_words)
        delegation = (self.config.get("delegation") or {}).get("type", "client")
        if self.config.get("triggers"):
            probability = self.behaviour.trigger_probability if wants_human else 0.05
            await self._send({"type": "decision.event", "trigger_id": "trg_1",
                              "source_event_type": "session.input_transcript.delta", "delegation_id": None,
                              "event": {"type": "decision.completed", "decision": {
                                  "model": "decisions-standin", "answers": [
                                      {"type": "predicate", "name": "wants_human", "probability": probability}],
                                  "usage": {"input_tokens": 40, "input_tokens_details": {"cache_write_tokens": 0,
                                                                                         "cached_tokens": 0},
                                            "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0},
                                            "total_tokens": 41}}}})
        if wants_human and delegation == "responses":
            await self._delegate_escalation(text)
            self._queued.append((self.input_ms + self.behaviour.reply_delay_ms, "Okay, one moment."))
            return
        if not wants_human or delegation != "responses":
            reply = self._replies.pop(0) if len(self._replies) > 1 else (self._replies[0] if self._replies else "Okay.")
            self._queued.append((self.input_ms + self.behaviour.reply_delay_ms, reply))

    async def _delegate_escalation(self, text: str) -> None:
        delegation_id = f"item_D{self.index}"
        self.server.delegations += 1
        await self._send({"type": "session.delegation.created", "offset_ms": int(self.input_ms),
                          "delegation": {"id": delegation_id, "type": "delegation", "target": "responses",
                                         "response_id": "resp_1"}})
        call = {"type": "function_call", "id": "fc_1", "call_id": f"call_{self.index}", "name": "escalate_to_human",
                "arguments": json.dumps({"reason": "the caller asked for a person", "caller_mood": "frustrated"}),
                "status": "completed"}
        for inner in ({"type": "response.output_item.done", "output_index": 0, "sequence_number": 2, "item": call},):
            await self._send({"type": "response.event", "delegation_id": delegation_id, "event": inner})
        # sent unvalidated: the SDK's ``response.completed`` needs a full Response snapshot; this is the
        # reduced snapshot the service sends inside a delegation (docs/models/live.md, delegation)
        await self.ws.send(json.dumps({"type": "response.event", "event_id": "event_rc", "delegation_id": delegation_id,
                                       "event": {"type": "response.completed", "response": {"usage": {}}}}))

    async def _tick(self) -> None:
        """One 100 ms output delta on the input-driven timeline."""
        pending = self._pending_yield
        if self._utterance is None and self._queued and self._queued[0][0] <= self.input_ms:
            _, text = self._queued.pop(0)
            self._speak(text)
        samples = np.zeros(2400, dtype=np.int16)
        silent = True
        utterance = self._utterance
        if utterance is not None:
            chunk = utterance.samples[utterance.position:utterance.position + 2400]
            samples[: len(chunk)] = chunk
            if utterance.position == 0:
                utterance.started_at = time.monotonic()
            utterance.position += 2400
            silent = False
            words = utterance.text.split()
            due = min(len(words), int(utterance.position / 24 / self.behaviour.ms_per_word) + 1)
            while utterance.words_sent < due:
                i = utterance.words_sent
                utterance.words_sent += 1
                start = int(utterance.started_ms + i * self.behaviour.ms_per_word)
                await self._send({"type": "session.output_transcript.delta", "delta": (" " if i else "") + words[i],
                                  "start_ms": start, "end_ms": start + self.behaviour.ms_per_word})
            if utterance.position >= len(utterance.samples):
                self._utterance = None
        payload = pcm16_to_ulaw(samples[::3]) if self.format == "pcmu" else samples.astype("<i2").tobytes()
        now = time.monotonic()
        self.deltas.append((now, silent))
        await self._send({"type": "session.output_audio.delta", "delta": base64.b64encode(payload).decode()})
        if pending is not None and silent:
            pending.at = now
            self.yield_records.append(pending)
            self._pending_yield = None
        if self.input_ms >= self._usage_next:
            self._usage_next += self.behaviour.usage_every_ms
            await self._send({"type": "session.usage.updated", "usage": {"seconds": int(self.input_ms // 1000)},
                              "context_window": {"usage_ratio": 0.01}})

    def _speak(self, text: str) -> None:
        ms = max(300, len(text.split()) * self.behaviour.ms_per_word)
        self._utterance = Utterance(text, _tone(ms), self.input_ms)
        self.spoken.append(text)

    async def _append(self, event: dict[str, Any]) -> None:
        self.appends.append((event["type"], event["delegation_id"], event["content"]))
        acked = event["type"].removesuffix("append") + "appended"
        await self._send({"type": acked, "client_event_id": event.get("event_id"),
                          "start_ms": int(self.input_ms), "end_ms": int(self.input_ms) + 200})
        if event["type"] == "session.commentary.append" and event["delegation_id"] is None:
            quoted = _QUOTED.search(event["content"])
            self._queued.insert(0, (self.input_ms, quoted.group(1) if quoted else self.behaviour.greeting))

    _on_session_commentary_append = _append
    _on_session_thinking_append = _append
    _on_session_instructions_append = _append

    async def _on_response_item_create(self, event: dict[str, Any]) -> None:
        if (self.config.get("delegation") or {}).get("type") != "responses":
            await self._error("invalid_request_error", "response.item.create requires Responses delegation.",
                              event.get("event_id"))
            return
        self.function_outputs.append(event["item"])

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        self._queued.append((self.input_ms, "I'm connecting you to a colleague now."))

    async def _on_session_close(self, event: dict[str, Any]) -> None:
        await self._closed("close_requested")

    async def _closed(self, reason: str) -> None:
        await self._send({"type": "session.closed", "reason": reason, "session": {
            "id": f"live_standin_{self.index}", "expires_at": 0, "model": self.config.get("model", ""),
            "status": "active"}, "usage": {"seconds": int(self.input_ms // 1000)}})
        await self.ws.close(1000)

    async def expire(self) -> None:
        await self._closed("expired")

    def drop(self) -> None:
        self.ws.transport.abort()


class LiveStandIn:
    def __init__(self, behaviour: LiveBehaviour | None = None, *, api_key: str = "sk-test",
                 azure_token: str | None = None) -> None:
        self.behaviour = behaviour or LiveBehaviour()
        self.api_key = api_key
        self.azure_token = azure_token
        self.sessions: list[LiveSession] = []
        self.handshakes: list[HandshakeRecord] = []
        self.delegations = 0
        self._server: Server | None = None
        self._port = 0
        self._changed = asyncio.Condition()
        self._pending: dict[int, dict[str, str]] = {}

    @property
    def violations(self) -> list[str]:
        return [v for s in self.sessions for v in s.violations]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{OPENAI_PATH}"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> LiveStandIn:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request,
                                   max_size=None, compression=None)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for_session(self, index: int = 0, timeout_s: float = 10.0) -> LiveSession:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sessions) > index), timeout_s)
        return self.sessions[index]

    def _authorised(self, path: str, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        if path == OPENAI_PATH:
            return bearer == f"Bearer {self.api_key}"
        if self.azure_token is not None:
            return bearer == f"Bearer {self.azure_token}"
        return headers.get("api-key") == self.api_key and not bearer

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        status = 101
        if parts.path not in (OPENAI_PATH, AZURE_PATH) or parts.query:
            status = 404
        elif not self._authorised(parts.path, headers):
            status = 401
        self.handshakes.append(HandshakeRecord(request.path, headers, status))
        if status != 101:
            return connection.respond(HTTPStatus(status), f"stand-in rejected the handshake ({status})\n")
        self._pending[id(connection)] = headers
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = LiveSession(self, ws, len(self.sessions), self._pending.pop(id(ws)))
        async with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()
        await session.run()
