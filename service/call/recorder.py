"""Side work hung off each call: transcripts and state to Redis, sentiment and the escalation
policy, the escalation outbox, and cost metrics. Implements ``CallObserver``.

Every observer method returns at once. Redis writes go through the store's bounded per-call
write-behind queue (``CallStateWriter``); voice features (numpy over the caller's turn) run in a
worker thread; escalation records go to the outbox, which writes them in the background. The only
per-frame method, ``caller_audio``, appends the frame to a bounded ring (30 s of 8 kHz mu-law =
240 KB per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
import structlog

from service import metrics
from service.audio.codecs import codec_spec
from service.audio.features import VoiceBaseline, analyze_turn
from service.audio.g711 import alaw_to_pcm16, ulaw_to_pcm16
from service.call.observer import EscalationRequest
from service.call.toolargs import ESCALATION_TOOL_NAME, parse_tool_arguments
from service.escalation.policy import Decision, EscalationPolicy, PolicyConfig, mood_for_score
from service.escalation.record import build_record
from service.escalation.sentiment import VoiceTurnFeatures
from service.providers.base import StreamStarted
from service.redaction import bounded_free_text

if TYPE_CHECKING:
    from service.call.bridge import CallBridge
    from service.gateway import Gateway

log = structlog.get_logger(__name__)

_CALLER_RING_MS = 30_000  # caller audio kept for voice features: 240 KB of mu-law, 960 KB of L16 16 kHz per call
_MIN_TURN_BYTES = 1600  # 200 ms: shorter turns carry no usable voice features
# Voice features use at most the last 1.5 s of speech of a turn: level and median pitch are stable
# by then, and the cost (~2-3 ms CPU per analysed second) stays bounded per turn.
_MAX_ANALYSED_BYTES = 12_000
_VOICE_WAIT_S = 1.0  # how long a transcript waits for its turn's voice features
_MAX_TOOL_ENTRIES = 20  # business tool calls kept per call for the escalation record and summary (~2 KB each)


def _decode_wire(wire: bytes, codec: str) -> npt.NDArray[np.int16]:
    """The caller's wire audio (canonical ``codec_spec`` names) as 16-bit PCM at its own rate."""
    if codec == "mulaw":
        return ulaw_to_pcm16(wire)
    if codec == "alaw":
        return alaw_to_pcm16(wire)
    return np.frombuffer(wire[: len(wire) // 2 * 2], dtype="<i2" if codec == "l16" else ">i2")


def _voice_features(wire: bytes, baseline: VoiceBaseline, codec: str = "mulaw", rate: int = 8000) -> VoiceTurnFeatures:
    """Loudness and pitch of one caller turn relative to the caller's own baseline (runs in a thread).
    ``wire`` is the stream's own audio (mu-law 8 kHz, or L16 at 8/16/24 kHz for Telnyx, Plivo, Vonage, Exotel)."""
    pcm = _decode_wire(wire, codec).astype(np.float64)
    step = rate // 4000
    pcm = pcm[: pcm.size // step * step]
    # 4 kHz (averaging each group of samples as the low-pass) and adjacent (not overlapping) pitch frames
    # bound the cost; pitch (<= 400 Hz), its median over the turn and the level are unaffected.
    turn = analyze_turn(pcm.reshape(-1, step).mean(axis=1), 4000, pitch_hop_s=0.04)
    delta = baseline.update(turn)
    return VoiceTurnFeatures(loudness_delta_db=delta.loudness_delta_db, pitch_ratio=delta.pitch_ratio)


class CallRecorder:
    """The per-call ``CallObserver``."""

    def __init__(self, gateway: Gateway, started: StreamStarted, provider: str, started_at: str = "") -> None:
        self._gateway = gateway
        self._settings = gateway.settings
        self.call_id = started.call_id
        self._bridge: CallBridge | None = None
        self._ring: deque[bytes] = deque()
        spec = codec_spec(started.encoding, started.sample_rate)
        self._codec, self._rate = spec.codec, spec.rate
        self._wire_bytes_per_ms = spec.rate * spec.bytes_per_sample // 1000  # the ring holds wire audio
        self._ring_bytes, self._ring_limit = 0, _CALLER_RING_MS * self._wire_bytes_per_ms
        self._turn_start_ms: int | None = None
        self._baseline = VoiceBaseline()
        self._voice: asyncio.Future[VoiceTurnFeatures] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tool_calls: deque[dict[str, Any]] = deque(maxlen=_MAX_TOOL_ENTRIES)
        self.cost_usd = 0.0
        store = gateway.state_store
        self._state = store.call(self.call_id) if store is not None else None
        self._policy = EscalationPolicy(
            PolicyConfig.from_settings(self._settings),
            call_id=self.call_id,
            on_point=self._state.sentiment if self._state is not None else None,
        )
        self._model = self._settings.realtime_model if self._settings.provider != "local" else "local"
        if self._state is not None:
            self._state.started({
                "stream_id": started.stream_id,
                "account_id": started.account_id,
                "provider": provider,
                "provider_call_id": started.call_id,
                # A stream that does not know the numbers (a conference transfer back to the bot)
                # leaves the ones the call hash already has.
                **{key: value for key in ("from", "to") if (value := started.custom_parameters.get(key, ""))},
                "realtime_provider": self._settings.provider,
                **({"started_at": started_at} if started_at else {}),  # a resumed call keeps its start
            })

    def attach(self, bridge: CallBridge) -> None:
        self._bridge = bridge

    # --- plumbing ----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply(self, decision: Decision | None) -> None:
        if decision is None or self._bridge is None:
            return
        request = EscalationRequest(trigger=decision.trigger, reason=decision.reason, score=decision.score,
                                    inputs={**decision.inputs, "caller_mood": decision.caller_mood})
        self._spawn(self._bridge.escalating.escalate(request))

    # --- CallObserver --------------------------------------------------------------------------------
    def state_changed(self, state: str, previous: str) -> None:
        if self._state is not None and state != "escalating":  # the outbox writes that state atomically
            self._state.set_state(state)

    def caller_audio(self, mulaw: bytes) -> None:
        """Per frame: O(1) amortised, no copy (the frame bytes object is kept; the oldest frames are dropped
        past ``_CALLER_RING_MS`` of audio, whatever the carrier's frame size)."""
        self._ring.append(mulaw)
        self._ring_bytes += len(mulaw)
        while self._ring_bytes > self._ring_limit:
            self._ring_bytes -= len(self._ring.popleft())

    def caller_speech_started(self, audio_start_ms: int) -> None:
        self._turn_start_ms = audio_start_ms

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        if self._turn_start_ms is None:
            return
        # speech_stopped.audio_end_ms includes the VAD's trailing silence (docs/models/realtime.md, "Voice activity detection").
        per_ms = self._wire_bytes_per_ms  # the limits below are in mu-law bytes (8 per ms): scaled to the wire
        trailing = self._settings.vad_silence_duration_ms * per_ms
        ring = b"".join(self._ring)  # once per turn, off the frame path
        nbytes = min(len(ring), max(0, audio_end_ms - self._turn_start_ms) * per_ms)
        self._turn_start_ms = None
        speech_bytes = min(nbytes - trailing, _MAX_ANALYSED_BYTES * per_ms // 8)
        if speech_bytes < _MIN_TURN_BYTES * per_ms // 8:
            return
        end = len(ring) - min(trailing, len(ring))
        turn = ring[end - speech_bytes:end]
        self._voice = asyncio.ensure_future(
            asyncio.to_thread(_voice_features, turn, self._baseline, self._codec, self._rate))

    def caller_transcript(self, item_id: str, text: str) -> None:
        self._remember("caller", text)
        voice, self._voice = self._voice, None
        self._spawn(self._score_turn(text, voice))

    async def _score_turn(self, text: str, voice: asyncio.Future[VoiceTurnFeatures] | None) -> None:
        features: VoiceTurnFeatures | None = None
        if voice is not None:
            with contextlib.suppress(Exception):
                features = await asyncio.wait_for(voice, timeout=_VOICE_WAIT_S)
        decision = self._policy.on_caller_turn(text, features)
        self._apply(decision)

    def bot_transcript(self, item_id: str, text: str) -> None:
        self._remember("bot", text)

    def bot_truncated(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        log.info("call.bot_truncated", item_id=item_id, heard_ms=heard_ms, sent_ms=sent_ms)
        self._gateway.emit("barge_in", call_id=self.call_id, heard_ms=heard_ms, sent_ms=sent_ms)
        if self._state is not None:
            self._state.event("barge_in", {"heard_ms": heard_ms, "sent_ms": sent_ms})

    def model_reconnected(self, attempt: int) -> None:
        if self._state is not None:
            self._state.event("reconnect", {"attempt": attempt})

    def _remember(self, role: str, text: str) -> None:
        log.debug("call.transcript", role=role, chars=len(text))
        self._gateway.emit("transcript", call_id=self.call_id, role=role, text=text)
        if self._state is not None:
            self._state.transcript("caller" if role == "caller" else "bot", text, time.time())

    def dtmf(self, digit: str) -> None:
        self._apply(self._policy.on_dtmf(digit))

    def tool_call(self, name: str, arguments: str) -> str:
        result = self._run_tool(name, arguments)
        if self._state is not None:  # the console's event feed and agent view show tool results
            self._state.event("tool_call", {"name": bounded_free_text(name, 64), "result": result})
        return result

    def _run_tool(self, name: str, arguments: str) -> str:
        if name != ESCALATION_TOOL_NAME:
            log.warning("realtime.unknown_tool", name=name)
            return '{"error": "unknown tool"}'
        args = parse_tool_arguments(arguments)
        self._policy.on_model_tool_call(bounded_free_text(args.get("reason")), bounded_free_text(args.get("caller_mood"), 40) or None)
        return '{"status": "transferring", "message": "A human colleague will take over after the hand-off line."}'

    def tool_result(self, entry: dict[str, Any]) -> None:
        """A business tool call finished: into the transcript (role ``tool``), the escalation record
        and the summary. ``entry`` is already redacted (docs/tools.md, "What is recorded")."""
        self.tool_calls.append(entry)
        self._gateway.emit("tool_call", call_id=self.call_id, **entry)
        if self._state is not None:
            self._state.transcript("tool", orjson.dumps(entry).decode(), time.time())

    def escalation_started(self, request: EscalationRequest) -> None:
        """Record the escalation: the outbox writes state ``escalated`` + the stream entry atomically."""
        self._gateway.mark_escalated(self.call_id)
        self._gateway.emit("escalation", call_id=self.call_id, trigger=request.trigger, reason=request.reason)
        if self._state is not None:
            self._state.event("escalation", {"trigger": request.trigger, "reason": bounded_free_text(request.reason)})
        if self._state is None or self._gateway.outbox is None:
            log.error("escalation.not_recorded", reason="no Redis state store configured", trigger=request.trigger)
            return
        decision = self._policy.decisions[-1] if self._policy.decisions and \
            self._policy.decisions[-1].trigger == request.trigger else Decision(
                trigger=request.trigger,  # type: ignore[arg-type]
                reason=request.reason,
                score=round(self._policy.score, 4),
                inputs=dict(request.inputs or {}),
                caller_mood=str((request.inputs or {}).get("caller_mood") or mood_for_score(self._policy.score)),
                decided_at=time.time(),
            )
        record = build_record(
            self._state, decision,
            transcript_turns=self._settings.escalation_transcript_turns,
            trajectory=self._policy.trajectory,
            replica=self._settings.replica_id,
            redact=self._settings.pii_redaction == "all",
            agent_link=self._gateway.agent_link(),
            tool_calls=list(self.tool_calls),
        )
        self._gateway.remember_record(self.call_id, record.body)  # the warm transfer's briefing reads it
        self._gateway.outbox.enqueue(record)

    def usage(self, usage: dict[str, Any]) -> None:
        cost = self._gateway.cost_usd(self._model, usage)
        self.cost_usd += cost
        if self._state is not None and cost:  # the console's "cost so far"
            self._state.set_fields({"cost_usd": f"{self.cost_usd:.6f}"})
        metrics.RESPONSE_COST_USD.labels(self._model).inc(cost)
        for direction, key in (("input", "input_token_details"), ("output", "output_token_details")):
            details = usage.get(key) or {}
            for modality in ("text", "audio"):
                metrics.REALTIME_TOKENS.labels(direction, modality).inc(int(details.get(f"{modality}_tokens") or 0))

    def ended(self, summary: dict[str, Any]) -> None:
        summary["cost_usd"] = round(self.cost_usd, 6)
        summary["frustration_score"] = round(self._policy.score, 3)
        summary["tool_calls"] = [{"tool": e["tool"], "outcome": e["outcome"], "latency_ms": e["latency_ms"]}
                                 for e in self.tool_calls]
        self._gateway.emit("call_ended", call_id=self.call_id, summary=summary)
        for task in list(self._tasks):
            task.cancel()
        if self._voice is not None:
            self._voice.cancel()
        if summary.get("outcome") == "overflow":  # the provider's after-stream plays the overflow message
            self._gateway.mark_overflowed(self.call_id)
        if self._state is not None:  # leaves the active index; escalation_status is kept
            self._state.set_fields({"end_reason": str(summary.get("end_reason", ""))[:120]})
            self._state.ended(str(summary.get("outcome", "completed")))


def build_observer(gateway: Gateway, started: StreamStarted, provider: str, started_at: str = "") -> CallRecorder:
    return CallRecorder(gateway, started, provider, started_at)
