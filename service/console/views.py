"""What the console shows, shaped from stored call state. Pure: snapshots in, JSON-ready dicts out.

No I/O and no clock of its own (callers pass ``now``). Every list is capped here, so one response
is bounded whatever Redis holds (docs/console.md, "Views"). Caller numbers are shown as stored
(masked when written); transcript text is shown as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.escalation.policy import mood_for_score
from service.escalation.summary import summarize
from service.state.model import CallSnapshot, SentimentPoint

SPARK_POINTS = 20
"""Sentiment points in an active-call row's frustration sparkline (the latest ones)."""
CHART_POINTS = 200
"""Sentiment points in a call page's timeline chart."""
TRANSCRIPT_TURNS = 200
"""Latest transcript turns a call page or agent view carries."""
EVENTS_SHOWN = 100
"""Latest call events a call page or agent view carries."""
SPARK_SIZE = (120, 24)
CHART_SIZE = (600, 160)


def polyline(scores: Sequence[float], width: int, height: int) -> str:
    """SVG ``points`` for scores in [0, 1] across ``width`` x ``height`` (1 at the top); "" for none.

    One point is drawn as a flat line; values outside [0, 1] are clamped, so a bad stored value can
    never push the line out of its fixed-size box."""
    if not scores:
        return ""
    values = [min(1.0, max(0.0, float(s))) for s in scores]
    if len(values) == 1:
        values = values * 2
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{(1.0 - v) * height:.1f}" for i, v in enumerate(values))


def row_snapshot(call_id: str, raw_hash: dict[Any, Any], raw_points: list[Any]) -> CallSnapshot | None:
    """A partial snapshot (hash and sentiment tail) for an active-calls row, from raw Redis replies;
    None when the hash is gone. Points that do not parse are skipped (stored data is not trusted)."""
    if not raw_hash:
        return None
    fields = {_text(k): _text(v) for k, v in raw_hash.items()}
    points: list[SentimentPoint] = []
    for raw in dict.fromkeys(raw_points):  # drops a replayed batch's byte-identical repeats
        try:
            point = SentimentPoint.from_json(raw)
        except (ValueError, TypeError):
            continue
        if isinstance(point.score, int | float) and not isinstance(point.score, bool):
            points.append(point)
    return CallSnapshot(call_id=call_id, fields=fields, sentiment=points)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _float(fields: dict[str, str], key: str) -> float | None:
    try:
        return float(fields[key])
    except (KeyError, ValueError):
        return None


def _language(points: Sequence[SentimentPoint]) -> str:
    return next((p.language for p in reversed(points) if p.language), "") or ""


def call_row(snap: CallSnapshot, now: float) -> dict[str, Any]:
    """One active-calls row: id, provider, masked caller, state, duration, language, frustration
    (latest score and sparkline), cost so far, owning replica and escalation status."""
    fields = snap.fields
    started = _float(fields, "started_at") or now
    scores = [p.score for p in snap.sentiment[-SPARK_POINTS:]]
    cost = _float(fields, "cost_usd")
    return {
        "call_id": snap.call_id,
        "provider": fields.get("provider", ""),
        "caller": fields.get("from", ""),
        "state": fields.get("state", ""),
        "duration_s": round(max(0.0, now - started)),
        "language": _language(snap.sentiment),
        "frustration": round(scores[-1], 2) if scores else None,
        "spark": polyline(scores, *SPARK_SIZE),
        "cost_usd": round(cost, 4) if cost is not None else 0.0,
        "replica": fields.get("replica", ""),
        "escalation": fields.get("escalation_status", "none"),
    }


def _escalation(fields: dict[str, str]) -> dict[str, str]:
    return {
        "status": fields.get("escalation_status", "none"),
        "id": fields.get("escalation_id", ""),
        "trigger": fields.get("escalation_trigger", ""),
        "at": fields.get("escalated_at", ""),
        "delivered_at": fields.get("escalation_delivered_at", ""),
        "dead_letter_at": fields.get("escalation_dead_letter_at", ""),
    }


def call_detail(snap: CallSnapshot, now: float) -> dict[str, Any]:
    """A call page's data: the row, the transcript, the sentiment timeline (points and chart), the
    events (barge-ins with heard ms, tool calls, reconnects, escalation) and the escalation status."""
    points = snap.sentiment[-CHART_POINTS:]
    return {
        **call_row(snap, now),
        "ended": snap.fields.get("state") == "ended",
        "outcome": snap.fields.get("outcome", ""),
        "transcript": [{"role": t.role, "text": t.text, "ts": t.ts} for t in snap.transcript[-TRANSCRIPT_TURNS:]],
        "sentiment": [{"ts": p.ts, "turn": p.turn, "score": round(p.score, 3), "source": p.source} for p in points],
        "chart": polyline([p.score for p in points], *CHART_SIZE),
        "events": snap.events[-EVENTS_SHOWN:],
        "escalation_detail": _escalation(snap.fields),
    }


def agent_view(snap: CallSnapshot, escalation_id: str) -> dict[str, Any]:
    """What the receiving agent sees for one escalation: summary, reason, transcript, sentiment and
    tool results. The summary is extractive (the caller's own words, numbers masked)."""
    escalations = [e for e in snap.events if e.get("kind") == "escalation"]
    reason = str(escalations[-1].get("reason", "")) if escalations else ""
    trigger = snap.fields.get("escalation_trigger", "")
    score = snap.sentiment[-1].score if snap.sentiment else 0.0
    transcript = snap.transcript[-TRANSCRIPT_TURNS:]
    return {
        "escalation_id": escalation_id,
        "call_id": snap.call_id,
        "trigger": trigger,
        "reason": reason,
        "status": snap.fields.get("escalation_status", "none"),
        "summary": summarize(transcript, trigger=trigger, reason=reason, mood=mood_for_score(score), score=score),
        "transcript": [{"role": t.role, "text": t.text} for t in transcript],
        "chart": polyline([p.score for p in snap.sentiment[-CHART_POINTS:]], *CHART_SIZE),
        "frustration": round(score, 2),
        "tool_results": [{"name": str(e.get("name", "")), "result": str(e.get("result", ""))}
                         for e in snap.events if e.get("kind") == "tool_call"][-EVENTS_SHOWN:],
    }
