"""The agent briefing: what a human agent hears (warm transfer) or reads (TaskRouter, demo) before
taking an escalated call, built from the escalation record (docs/transfer.md, "The briefing").

Pure (no I/O), provider-neutral: carriers turn ``AgentBriefing.text`` into their own speech verb
(Twilio ``<Say>``). Guarantees:

- Deterministic and bounded: every quoted part is capped, the whole text is at most ``max_chars``
  (default 1000 characters, about a minute of speech).
- Only facts from the record: the reason, the caller's mood, the caller's issue (quoted from the
  summary's choice of turn), tool results when the record carries them (``tools``/``tool_calls``,
  written by the business-tools feature), and what the assistant last told the caller.
- Nothing sensitive is spoken: every quoted text goes through ``redact_pii`` (card numbers, ids,
  e-mails, phone numbers), whatever ``CALLBRIDGE_PII_REDACTION`` says, since the agent does not need
  them read aloud and the text may end up in provider logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.escalation.summary import TRIGGER_TEXT, main_issue
from service.redaction import redact_pii
from service.state.model import TranscriptTurn

BRIEFING_MAX_CHARS = 1000
TOOL_RESULTS_SPOKEN = 3
"""At most this many tool results are read out (the most recent ones)."""

_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "intro": "Transfer from the voice assistant.",
        "reason": "Reason: {reason}.",
        "mood": "The caller sounds {mood}.",
        "issue": 'The caller said: "{issue}".',
        "no_issue": "The caller did not state the issue yet.",
        "tool": "{tool}: {result}.",
        "tool_failed": "{tool} failed.",
        "told": 'The assistant last told the caller: "{told}".',
        "outro": "Connecting you now.",
    },
    "ja": {
        "intro": "音声アシスタントからの転送です。",
        "reason": "理由: {reason}。",
        "mood": "お客様の様子: {mood}。",
        "issue": "お客様の発言: 「{issue}」。",
        "no_issue": "ご用件はまだ伺っていません。",
        "tool": "{tool}: {result}。",
        "tool_failed": "{tool} は失敗しました。",
        "told": "アシスタントの最後の案内: 「{told}」。",
        "outro": "おつなぎします。",
    },
}


@dataclass(frozen=True)
class AgentBriefing:
    """The briefing text (bounded), its language tag (BCP-47, e.g. ``en-US``) and the escalation id."""

    text: str
    language: str
    escalation_id: str = ""


_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def say_language(configured: str, transcription_language: str, payload: Mapping[str, Any] | None = None) -> str:
    """The speech language for the briefing: the configured tag, else the call's language (``ja`` ->
    ``ja-JP``, ``en`` -> ``en-US``), else what the caller spoke in the record (Japanese script ->
    ``ja-JP``), else ``en-US``."""
    if configured.strip():
        return configured.strip()
    base = transcription_language.strip().lower()[:2]
    if not base and payload is not None:
        spoken = " ".join(turn.text for turn in _turns(payload) if turn.role == "caller")
        base = "ja" if _JAPANESE.search(spoken) else ""
    return {"ja": "ja-JP", "en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT",
            "pt": "pt-BR", "nl": "nl-NL"}.get(base, "en-US")


def _clip(text: str, limit: int) -> str:
    """Redacted, whitespace-collapsed, at most ``limit`` characters, without a final full stop (the
    template adds its own)."""
    text = " ".join(redact_pii(text).split()).rstrip(".。")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def tool_results(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The record's tool calls as ``{"tool", "ok", "result"}`` dicts (oldest first), whichever of the
    shapes ``tools`` / ``tool_calls`` (items with ``name``/``tool`` and ``result``/``output``/``error``)
    the record carries; empty when it carries none. Never raises on odd shapes."""
    raw = payload.get("tools")
    if raw is None:
        raw = payload.get("tool_calls")
    if not isinstance(raw, list):
        return []
    results: list[dict[str, Any]] = []
    for item in raw[-20:]:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name") or item.get("tool")
        if not isinstance(name, str) or not name:
            continue
        result = item.get("result", item.get("output"))
        ok = bool(item.get("ok", item.get("error") is None))
        results.append({"tool": name[:64], "ok": ok, "result": result if ok else item.get("error")})
    return results


def _compact(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return _clip(text.replace("{", "").replace("}", "").replace('"', ""), limit)


def _turns(payload: Mapping[str, Any]) -> list[TranscriptTurn]:
    turns = payload.get("transcript")
    out: list[TranscriptTurn] = []
    for turn in turns if isinstance(turns, list) else []:
        if isinstance(turn, Mapping) and isinstance(turn.get("text"), str) and turn.get("role") in ("caller", "bot"):
            out.append(TranscriptTurn(role=turn["role"], text=turn["text"], ts=0.0))
    return out


def build_briefing(payload: Mapping[str, Any], *, language: str = "en-US",
                   max_chars: int = BRIEFING_MAX_CHARS) -> AgentBriefing:
    """The briefing for one escalation record's payload (``EscalationRecord.payload``)."""
    words = _TEMPLATES.get(language.lower()[:2], _TEMPLATES["en"])
    trigger = str(payload.get("trigger") or "")
    reason_text = TRIGGER_TEXT.get(trigger, trigger.replace("_", " ") or "not given")
    detail = str(payload.get("reason") or "")
    if detail and detail.lower() not in reason_text.lower():
        reason_text = f"{reason_text} ({_clip(detail, 100)})"
    parts = [words["intro"], words["reason"].format(reason=reason_text)]
    mood = str(payload.get("caller_mood") or "")
    if mood:
        parts.append(words["mood"].format(mood=_clip(mood, 40)))
    turns = _turns(payload)
    issue = main_issue(turns)
    parts.append(words["issue"].format(issue=_clip(issue, 180)) if issue else words["no_issue"])
    for tool in tool_results(payload)[-TOOL_RESULTS_SPOKEN:]:
        if tool["ok"]:
            parts.append(words["tool"].format(tool=tool["tool"].replace("_", " "),
                                              result=_compact(tool["result"], 100)))
        else:
            parts.append(words["tool_failed"].format(tool=tool["tool"].replace("_", " ")))
    told = next((turn.text for turn in reversed(turns) if turn.role == "bot"), None)
    if told:
        parts.append(words["told"].format(told=_clip(told, 160)))
    parts.append(words["outro"])
    text = _fit(parts, max_chars)
    return AgentBriefing(text=text, language=language, escalation_id=str(payload.get("escalation_id") or ""))


def _fit(parts: Sequence[str], max_chars: int) -> str:
    """Join ``parts``; if too long, drop middle parts (keeping intro, reason and outro) until it fits."""
    kept = list(parts)
    joiner = " "
    while len(joiner.join(kept)) > max_chars and len(kept) > 3:
        del kept[-2]  # the latest optional part before the outro goes first
    text = joiner.join(kept)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
