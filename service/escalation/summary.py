"""Extractive hand-off summary for a human agent: the caller's main issue, mood and why it escalated.

Pure (no I/O), deterministic, bounded output (``max_chars``). It quotes the caller's own words rather
than paraphrasing, so it can never invent facts; numbers are masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from service.redaction import mask_phone_number
from service.state.model import TranscriptTurn

_ISSUE_WORDS = re.compile(
    r"\b(bill|billing|charge[ds]?|refund|payment|invoice|account|order|delivery|deliver(ed)?|package|"
    r"internet|wifi|connection|outage|service|phone|card|password|login|cancel|subscription|contract|"
    r"appointment|technician|broken|not working|doesn'?t work|error|problem|issue|late|missing|wrong)\b",
    re.IGNORECASE,
)
_JA_ISSUE = ("請求", "料金", "返金", "支払", "注文", "配達", "届", "荷物", "ネット", "回線", "故障", "解約",
             "契約", "パスワード", "ログイン", "予約", "エラー", "問題", "繋がらない", "つながらない", "壊れ")
_GREETING = re.compile(r"^\s*(hi|hello|hey|yes|no|ok(ay)?|thanks?|thank you|good (morning|afternoon|evening))\b[\s,.!]*$",
                       re.IGNORECASE)

TRIGGER_TEXT = {
    "explicit_request": "caller asked for a person",
    "dtmf": "caller pressed 0",
    "model_tool": "the assistant requested a hand-off",
    "model_unavailable": "no assistant was available for the call",
    "sentiment": "caller frustration crossed the threshold",
}


def _issue_weight(text: str) -> float:
    if _GREETING.match(text):
        return 0.0
    hits = len(_ISSUE_WORDS.findall(text)) + sum(1 for word in _JA_ISSUE if word in text)
    length = len(text.split()) if " " in text.strip() else len(text) / 3  # ja has no spaces
    return hits * 2.0 + min(length, 25) / 25


def main_issue(transcript: Sequence[TranscriptTurn]) -> str | None:
    """The caller turn that best states the problem (issue words, then length; earliest wins ties)."""
    best: tuple[float, int] | None = None
    for index, turn in enumerate(transcript):
        if turn.role != "caller":
            continue
        weight = _issue_weight(turn.text)
        if weight > 0 and (best is None or weight > best[0]):
            best = (weight, index)
    return None if best is None else transcript[best[1]].text


def _quote(text: str, limit: int) -> str:
    text = " ".join(mask_phone_number(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def summarize(
    transcript: Sequence[TranscriptTurn],
    *,
    trigger: str,
    reason: str,
    mood: str,
    score: float,
    max_chars: int = 400,
) -> str:
    """One short paragraph, e.g. ``Issue: "I was charged twice…". Mood: angry (0.86). Escalated: …``."""
    issue = main_issue(transcript)
    callers = sum(1 for t in transcript if t.role == "caller")
    parts = [
        f'Issue: "{_quote(issue, 160)}".' if issue else "Issue: not stated.",
        f"Mood: {mood} ({score:.2f}).",
        f"Escalated: {TRIGGER_TEXT.get(trigger, trigger)} ({_quote(reason, 100)}).",
        f"Turns seen: {callers} caller, {sum(1 for t in transcript if t.role == 'bot')} bot.",
    ]
    last = next((t.text for t in reversed(transcript) if t.role == "caller"), None)
    if last and last != issue:
        parts.insert(2, f'Last words: "{_quote(last, 100)}".')
    return _quote(" ".join(parts), max_chars)
