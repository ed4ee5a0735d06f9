"""The escalation record: built once at decision time, stored in the outbox, POSTed byte-for-byte.

Pure (no I/O). The JSON body is frozen at build time, so every delivery attempt sends the very same
bytes under the same ``Idempotency-Key`` (docs/escalation-webhook.md, "Payload").
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from service.escalation.policy import Decision
from service.escalation.summary import summarize
from service.redaction import mask_phone_number, redact_pii
from service.state.model import SentimentPoint, TranscriptTurn

PAYLOAD_TYPE = "callbridge.escalation"
PAYLOAD_VERSION = 1
TRAJECTORY_IN_RECORD = 50
"""Most recent sentiment points included in a record (bounds the body to a few KB)."""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_escalation_id(now: float | None = None) -> str:
    """A ULID: 48-bit millisecond timestamp + 80 random bits, Crockford base32 (26 chars, time-sortable)."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def iso(ts: float | None) -> str | None:
    """Unix seconds -> ISO-8601 UTC with milliseconds (``2026-01-31T12:00:00.123Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CallView(Protocol):
    """What a record needs from a call (``CallStateWriter`` provides it)."""

    @property
    def call_id(self) -> str: ...

    @property
    def info(self) -> dict[str, str]: ...

    def recent_transcript(self, n: int | None = None) -> list[TranscriptTurn]: ...

    def recent_sentiment(self) -> list[SentimentPoint]: ...


@dataclass(frozen=True)
class EscalationRecord:
    """One escalation: its id, the call it belongs to, and the exact webhook body."""

    escalation_id: str
    call_id: str
    trigger: str
    decided_at: float
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _redacted(value: Any) -> Any:
    """``value`` with every string inside redacted (tool inputs are small JSON: dicts, lists, scalars)."""
    if isinstance(value, str):
        return redact_pii(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def build_record(
    call: CallView,
    decision: Decision,
    *,
    transcript_turns: int = 10,
    trajectory: Sequence[SentimentPoint] | None = None,
    replica: str | None = None,
    escalation_id: str | None = None,
    redact: bool = False,
    agent_link: Callable[[str], str] | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
) -> EscalationRecord:
    """Assemble the record from the call's in-memory state and the policy's decision.

    ``redact`` (``CALLBRIDGE_PII_REDACTION=all``) also redacts the reason and the tool inputs.

    ``trajectory`` defaults to the points written through the call's writer; pass
    ``policy.trajectory`` when the writer was not wired as the policy's ``on_point``.

    ``agent_link`` (escalation id -> URL, e.g. ``service.console.auth.agent_link`` bound to its key)
    adds ``agent_url``: a signed, expiring link to the console's agent view (docs/console.md).
    Without it the body has no ``agent_url`` key, exactly as before.

    ``tool_calls``: the call's business tool calls (``service.tools.percall.tool_entry``: already
    redacted, bounded); the body has a ``tool_calls`` key only when there were some.
    """
    info = call.info
    turns = call.recent_transcript(transcript_turns)  # already redacted at write time under `all`
    if redact:
        decision = replace(decision, reason=redact_pii(decision.reason), inputs=_redacted(decision.inputs))
    points = list(trajectory if trajectory is not None else call.recent_sentiment())[-TRAJECTORY_IN_RECORD:]
    esc_id = escalation_id or new_escalation_id(decision.decided_at)
    payload: dict[str, Any] = {
        "type": PAYLOAD_TYPE,
        "version": PAYLOAD_VERSION,
        "escalation_id": esc_id,
        "call_id": call.call_id,
        "stream_id": info.get("stream_id"),
        "provider": info.get("provider"),
        "provider_call_id": info.get("provider_call_id"),
        "caller": mask_phone_number(info["from"]) if info.get("from") else None,
        "called": mask_phone_number(info["to"]) if info.get("to") else None,
        "trigger": decision.trigger,
        "reason": decision.reason,
        "score": decision.score,
        "caller_mood": decision.caller_mood,
        "inputs": decision.inputs,
        "summary": summarize(turns, trigger=decision.trigger, reason=decision.reason,
                             mood=decision.caller_mood, score=decision.score),
        "sentiment": [{**p.public(), "ts": iso(p.ts)} for p in points],
        "transcript": [{"role": t.role, "text": t.text, "ts": iso(t.ts)} for t in turns],
        "call_started_at": iso(_float(info.get("started_at"))),
        "decided_at": iso(decision.decided_at),
        "replica": replica or info.get("replica"),
    }
    if agent_link is not None:
        payload["agent_url"] = agent_link(esc_id)
    if tool_calls:
        payload["tool_calls"] = list(tool_calls)
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    return EscalationRecord(esc_id, call.call_id, decision.trigger, decision.decided_at, body)
