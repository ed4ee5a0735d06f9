"""Side work hung off each call: transcripts and state to Redis, sentiment and the escalation
policy, the escalation outbox, and cost metrics. Implements ``CallObserver``.

Every observer method returns at once. Redis writes go through the store's bounded per-call
write-behind queue; policy work that needs numpy (voice features) runs in a background task. The
only per-frame method, ``caller_audio``, appends the frame to a bounded byte ring (30 s of 8 kHz
mu-law = 240 KB per call).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from service import metrics
from service.call.observer import EscalationRequest
from service.telephony.base import StreamStarted
from service.telephony.tokens import mask_number

if TYPE_CHECKING:
    from service.app import Gateway
    from service.call.bridge import CallBridge

log = structlog.get_logger(__name__)

_CALLER_RING_BYTES = 30 * 8000  # 30 s of 8 kHz mu-law


def usage_cost_usd(usage: dict[str, Any], prices: dict[str, float]) -> float:
    """Cost of one response.done usage (realtime-api.md 8.2); prices are USD per 1M tokens."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    cached = int(inp.get("cached_tokens") or 0)
    cached_details = inp.get("cached_tokens_details") or {}
    text_in = int(inp.get("text_tokens") or 0)
    audio_in = int(inp.get("audio_tokens") or 0)
    if cached_details:
        text_in -= int(cached_details.get("text_tokens") or 0)
        audio_in -= int(cached_details.get("audio_tokens") or 0)
    else:  # beta: no split; subtract from text first (the cached prefix is mostly instructions)
        from_text = min(cached, text_in)
        text_in -= from_text
        audio_in -= cached - from_text
    total = (
        max(text_in, 0) * prices["text_in"]
        + max(audio_in, 0) * prices["audio_in"]
        + cached * prices["cached_in"]
        + int(out.get("text_tokens") or 0) * prices["text_out"]
        + int(out.get("audio_tokens") or 0) * prices["audio_out"]
    )
    return total / 1_000_000


class CallSideWork:
    """The per-call ``CallObserver``."""

    def __init__(self, gateway: Gateway, started: StreamStarted, provider: str) -> None:
        self._gateway = gateway
        self._settings = gateway.settings
        self.call_id = started.call_id
        self._started = started
        self._provider = provider
        self._bridge: CallBridge | None = None
        self._ring = bytearray()
        self._turn_start_ms: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cost_usd = 0.0
        self.transcript: list[dict[str, Any]] = []  # bounded: last 200 turns
        self._state = gateway.state_store.call(self.call_id) if gateway.state_store is not None else None
        self._policy = self._make_policy()
        if self._state is not None:
            self._state.started(
                {
                    "call_id": started.call_id,
                    "stream_id": started.stream_id,
                    "account_id": started.account_id,
                    "provider": provider,
                    "caller": mask_number(started.custom_parameters.get("from")),
                    "callee": mask_number(started.custom_parameters.get("to")),
                    "realtime_provider": self._settings.provider,
                }
            )

    def attach(self, bridge: CallBridge) -> None:
        self._bridge = bridge

    def _make_policy(self) -> Any:
        try:
            from service.escalation.policy import EscalationPolicy, PolicyConfig
        except ImportError:
            return None
        return EscalationPolicy(PolicyConfig.from_settings(self._settings))

    # --- escalation plumbing ----------------------------------------------------------------------
    def _escalate(self, request: EscalationRequest) -> None:
        if self._bridge is None:
            return
        task = asyncio.get_running_loop().create_task(self._bridge.escalate(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply_decision(self, decision: Any) -> None:
        if decision is None or decision.trigger == "model_tool":
            return  # the bridge escalates tool calls itself
        self._escalate(
            EscalationRequest(trigger=decision.trigger, reason=decision.reason, score=decision.score,
                              inputs=dict(decision.inputs or {}))
        )

    # --- CallObserver --------------------------------------------------------------------------------
    def state_changed(self, state: str, previous: str) -> None:
        if self._state is not None:
            self._state.set_state(state)

    def caller_audio(self, mulaw: bytes) -> None:
        ring = self._ring
        ring += mulaw
        if len(ring) > _CALLER_RING_BYTES:
            del ring[: len(ring) - _CALLER_RING_BYTES]

    def caller_speech_started(self, audio_start_ms: int) -> None:
        self._turn_start_ms = audio_start_ms

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        self._pending_voice = self._voice_features(audio_end_ms)

    _pending_voice: Any = None

    def _voice_features(self, audio_end_ms: int) -> Any:
        """Voice features of the turn that just ended, from the caller ring (off the frame path)."""
        if self._turn_start_ms is None:
            return None
        duration_ms = max(0, audio_end_ms - self._turn_start_ms)
        nbytes = min(len(self._ring), duration_ms * 8)
        if nbytes < 1600:  # < 200 ms
            return None
        turn = bytes(self._ring[-nbytes:])
        try:
            from service.escalation.voice import voice_turn_features
        except ImportError:
            return None
        return voice_turn_features(self, turn)

    def caller_transcript(self, item_id: str, text: str) -> None:
        self._remember("caller", text)
        voice, self._pending_voice = self._pending_voice, None
        if self._policy is not None:
            self._apply_decision(self._policy.on_caller_turn(text, voice))
            if self._state is not None:
                self._state.sentiment(self._policy.last_point())

    def bot_transcript(self, item_id: str, text: str) -> None:
        self._remember("bot", text, item_id=item_id)

    def bot_truncated(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        for turn in reversed(self.transcript):
            if turn.get("item_id") == item_id and sent_ms > 0:
                words = turn["text"].split()
                keep = max(0, round(len(words) * heard_ms / sent_ms))
                turn["text"] = " ".join(words[:keep]) + " [interrupted]"
                break

    def _remember(self, role: str, text: str, item_id: str = "") -> None:
        turn = {"role": role, "text": text, "ts": time.time(), "item_id": item_id}
        self.transcript.append(turn)
        del self.transcript[:-200]
        log.info("call.transcript", role=role, text=text)
        if self._state is not None:
            self._state.transcript(role, text, turn["ts"])

    def dtmf(self, digit: str) -> None:
        if self._policy is not None:
            self._apply_decision(self._policy.on_dtmf(digit))
        elif digit == "0":
            self._escalate(EscalationRequest(trigger="dtmf", reason="caller pressed 0"))

    def tool_call(self, name: str, arguments: str) -> str:
        if name != "escalate_to_human":
            log.warning("realtime.unknown_tool", name=name)
            return '{"error": "unknown tool"}'
        if self._policy is not None:
            from service.call.bridge import parse_tool_arguments

            args = parse_tool_arguments(arguments)
            self._policy.on_model_tool_call(str(args.get("reason", "")), str(args.get("caller_mood", "")))
        return '{"status": "transferring", "message": "A human agent will take over; say the hand-off line."}'

    def escalation_started(self, request: EscalationRequest) -> None:
        self._gateway.mark_escalated(self.call_id)
        outbox = self._gateway.outbox
        if outbox is None:
            log.warning("escalation.not_recorded", reason="no outbox (Redis not configured)")
            return
        from service.escalation.records import build_record

        record = build_record(self, request)
        outbox.enqueue(record)

    def usage(self, usage: dict[str, Any]) -> None:
        model = self._settings.realtime_model if self._settings.provider != "local" else "local"
        cost = usage_cost_usd(usage, self._gateway.prices_for(model))
        self.cost_usd += cost
        metrics.RESPONSE_COST_USD.labels(model).inc(cost)
        inp = usage.get("input_token_details") or {}
        out = usage.get("output_token_details") or {}
        for direction, details in (("input", inp), ("output", out)):
            for modality in ("text", "audio"):
                metrics.REALTIME_TOKENS.labels(direction, modality).inc(int(details.get(f"{modality}_tokens") or 0))

    def ended(self, summary: dict[str, Any]) -> None:
        summary["cost_usd"] = round(self.cost_usd, 6)
        if self._state is not None:
            self._state.ended(summary.get("outcome", "completed"))


def build_observer(gateway: Gateway, started: StreamStarted, provider: str) -> CallSideWork:
    return CallSideWork(gateway, started, provider)
