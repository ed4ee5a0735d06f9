"""Plain data types shared by the state store, the escalation policy and the delivery worker (no I/O)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["caller", "bot", "tool"]  # tool: a business tool call and its result (docs/tools.md)


@dataclass(frozen=True)
class TranscriptTurn:
    """One finished turn: caller turns come from input transcription, bot turns from output transcripts.

    ``ts`` is unix seconds (wall clock) when the turn finished; ``seq`` is the writer's per-call
    sequence number, used to drop duplicates a retried Redis transaction may have appended.
    """

    role: Role
    text: str
    ts: float
    seq: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> TranscriptTurn:
        data = json.loads(raw)
        raw_role = data.get("role")
        role: Role = raw_role if raw_role in ("bot", "tool") else "caller"
        return cls(role=role, text=str(data.get("text", "")), ts=float(data.get("ts", 0.0)), seq=int(data.get("seq", 0)))


@dataclass(frozen=True)
class SentimentPoint:
    """The fused frustration score after one caller turn (or model judgement), in [0, 1]."""

    ts: float
    turn: int
    score: float
    text_score: float | None = None
    voice_score: float | None = None
    language: str | None = None
    source: str = "turn"  # turn | model_tool | dtmf
    seq: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    def public(self) -> dict[str, Any]:
        """The fields that go into an escalation record (no internal sequence number)."""
        data = asdict(self)
        data.pop("seq")
        return data

    @classmethod
    def from_json(cls, raw: str | bytes) -> SentimentPoint:
        data = json.loads(raw)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class CallSnapshot:
    """Everything Redis holds about one call: enough for another replica to pick it up.

    ``fields`` is the call hash as strings (docs/redis-schema.md); ``transcript``, ``sentiment`` and
    ``events`` (plain dicts with ``kind``, ``ts``, ``seq``) are oldest-first, de-duplicated by ``seq``
    and capped at the store's list bounds.
    """

    call_id: str
    fields: dict[str, str]
    transcript: list[TranscriptTurn] = field(default_factory=list)
    sentiment: list[SentimentPoint] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str | None:
        return self.fields.get("state")

    @property
    def replica(self) -> str | None:
        return self.fields.get("replica")

    @property
    def escalation_status(self) -> str:
        return self.fields.get("escalation_status", "none")
