"""Caller-frustration signals, pure and fast (no I/O, no asyncio): words, voice, model tool, requests.

- ``LexiconSentimentScorer``: English via VADER (its lexicon re-weighted for contact-centre talk, where
  "problem" or "wrong" describe the reason for calling rather than the caller's mood) plus curated
  frustration phrases VADER misses ("third time I'm calling"); Japanese via a small curated list with
  simple negation (…じゃない) and intensifier (本当に…) handling. ~0.05-0.3 ms per turn.
- ``VoiceTurnFeatures`` / ``voice_arousal``: loudness and pitch of a caller turn relative to that
  caller's own running baseline (computed by ``service/audio/features.py``), mapped to [0, 1].
- ``ESCALATE_TOOL``: the function tool declared in the Realtime session (the model's own judgement).
- ``detect_person_request``: explicit requests for a person, English (whole words) and Japanese.

Every score is in [0, 1]; 0 = calm. Language is chosen by script: any kana or CJK ideograph -> "ja".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

Language = Literal["en", "ja"]
CallerMood = Literal["calm", "confused", "frustrated", "angry"]
CALLER_MOODS: tuple[CallerMood, ...] = ("calm", "confused", "frustrated", "angry")

MOOD_SCORE: dict[str, float] = {"calm": 0.0, "confused": 0.3, "frustrated": 0.7, "angry": 0.9}
"""Frustration implied by the model's ``caller_mood`` argument (folded into the score trajectory)."""

ESCALATE_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "escalate_to_human",
    "description": (
        "Hand this call over to a human agent. Call it when the caller asks for a person, when the "
        "caller is frustrated or angry and you cannot resolve the problem, or when the request is "
        "outside what you are allowed to do. Say nothing after calling it; the system plays the hand-off line."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "One short sentence: why a human should take over."},
            "caller_mood": {
                "type": "string",
                "enum": list(CALLER_MOODS),
                "description": "Your reading of the caller's mood right now.",
            },
        },
        "required": ["reason", "caller_mood"],
        "additionalProperties": False,
    },
}
"""Realtime ``session.tools`` entry (same shape in the GA and beta dialects)."""

_JA_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")


def detect_language(text: str) -> Language:
    """``ja`` if the text contains any hiragana, katakana or CJK ideograph, else ``en``."""
    return "ja" if _JA_SCRIPT.search(text) else "en"


def _clip(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def _noisy_or(values: list[float]) -> float:
    remaining = 1.0
    for value in values:
        remaining *= 1.0 - _clip(value)
    return 1.0 - remaining


# --------------------------------------------------------------------------------------------------
# Voice
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceTurnFeatures:
    """Prosody of one caller turn relative to the caller's own baseline (``None`` = not measured).

    ``loudness_delta_db``: turn RMS level minus the caller's running baseline, in dB.
    ``pitch_ratio``: turn median F0 divided by the caller's baseline F0 (1.0 = usual pitch).
    """

    loudness_delta_db: float | None = None
    pitch_ratio: float | None = None


@dataclass(frozen=True)
class VoiceConfig:
    """Where vocal arousal starts and saturates (defaults: +3 dB -> 0, +12 dB -> 1; x1.10 -> 0, x1.50 -> 1)."""

    loudness_start_db: float = 3.0
    loudness_full_db: float = 12.0
    pitch_start_ratio: float = 1.10
    pitch_full_ratio: float = 1.50


def voice_arousal(features: VoiceTurnFeatures | None, config: VoiceConfig = VoiceConfig()) -> float | None:
    """Vocal arousal in [0, 1] from loudness and pitch above baseline (noisy-OR); None if unmeasured."""
    if features is None:
        return None
    parts: list[float] = []
    if features.loudness_delta_db is not None:
        span = config.loudness_full_db - config.loudness_start_db
        parts.append(_clip((features.loudness_delta_db - config.loudness_start_db) / span))
    if features.pitch_ratio is not None and features.pitch_ratio > 0:
        span = config.pitch_full_ratio - config.pitch_start_ratio
        parts.append(_clip((features.pitch_ratio - config.pitch_start_ratio) / span))
    return _noisy_or(parts) if parts else None


# --------------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextScore:
    """Frustration carried by the words of one turn. ``matched`` names the lexicon hits (for logs)."""

    frustration: float
    language: Language
    matched: tuple[str, ...] = ()
    vader_compound: float | None = None


class TextSentimentScorer(Protocol):
    """Pluggable text scorer (a model later). Must be pure, fast (< 5 ms) and thread-safe."""

    def score(self, text: str, language: Language) -> TextScore: ...


# Contact-centre re-weighting of VADER valences: words that name the reason for the call.
_VADER_DOMAIN = {
    "problem": -0.5, "problems": -0.5, "wrong": -0.7, "error": -0.5, "errors": -0.5, "broken": -0.6,
    "trouble": -0.5, "lost": -0.4, "stuck": -0.3, "cancel": -0.3, "charged": 0.0, "no": -0.3,
    "fail": -0.8, "failed": -0.8, "sorry": 0.0, "worried": -0.6, "confused": -0.6,
}

# English frustration phrases VADER scores as neutral or too mildly. (pattern, weight, label)
_EN_PHRASES: list[tuple[re.Pattern[str], float, str]] = [
    (re.compile(p, re.IGNORECASE), w, label)
    for p, w, label in [
        (r"\b(second|third|fourth|fifth|\d+(st|nd|rd|th)|umpteenth|hundredth) time (i'?m |i am |i'?ve |i have )?(been )?(call(ing|ed)?|ask(ing|ed)?|explain(ing|ed)?|tr(y|ied|ying))\b", 0.75, "nth time calling"),
        (r"\bhow many (more )?times (do|must|will|have|should) (i|we)\b", 0.7, "how many times"),
        (r"\b(i'?ve|i have) (already )?(called|explained|told you) (this |that )?(so many|several|three|four|many|multiple) times\b", 0.7, "called many times"),
        (r"\b(this|that|it|you) (is|are|'s|'re) (absolutely |completely |just |so )?(ridiculous|absurd|a joke|insane|unbelievable|pathetic)\b", 0.7, "this is ridiculous"),
        (r"\bwaste of (my )?(time|money)\b", 0.7, "waste of time"),
        (r"\bwasting my time\b", 0.7, "wasting my time"),
        (r"\b(i'?m|i am) (so |really |absolutely )?(fed up|sick of|sick and tired|tired of|done with|furious|livid|fuming)\b", 0.75, "fed up"),
        (r"\bunacceptable\b", 0.65, "unacceptable"),
        (r"\bare you (kidding|joking|serious)\b", 0.55, "are you kidding"),
        (r"\b(still|again) (not|isn'?t|doesn'?t|hasn'?t|won'?t|can'?t) (work|working|fixed|resolved|done)\b", 0.5, "still not working"),
        (r"\b(nobody|no one|no-one) (is |has |ever |here )?(help(s|ed|ing)?|listen(s|ed|ing)?|care(s|d)?|fixed|answered|called (me )?back)\b", 0.6, "nobody helps"),
        (r"\b(been )?on hold for\b", 0.45, "on hold"),
        (r"\b(worst|terrible|horrible|awful|lousy) (service|company|support|experience|customer service)\b", 0.75, "worst service"),
        (r"\b(listen to me|let me finish|you'?re not listening|you are not listening|stop interrupting)\b", 0.55, "not listening"),
        (r"\bwhat'?s wrong with you\b|\bwhat is wrong with you\b", 0.75, "what's wrong with you"),
        (r"\b(i want|give me) my money back\b", 0.55, "money back"),
        (r"\b(you people|you guys)\b", 0.35, "you people"),
        (r"\b(lawyer|sue you|small claims|report you|better business bureau|file a complaint)\b", 0.65, "legal threat"),
        (r"\b(that'?s|this is) not what i (asked|said|want(ed)?)\b", 0.4, "not what I asked"),
        (r"\b(useless|incompetent|hopeless|clueless)\b", 0.6, "useless"),
        (r"\b(for|in) (weeks|months|ages|days)\b", 0.3, "for weeks"),
    ]
]
_EN_NEGATION = re.compile(r"\b(not|never|no|isn'?t|wasn'?t|aren'?t|don'?t|doesn'?t)\s+(\w+\s+)?$", re.IGNORECASE)

# Japanese frustration expressions (surface, weight). Kept short and deliberate.
_JA_LEXICON: list[tuple[str, float]] = [
    ("ふざけるな", 0.9), ("ふざけんな", 0.9), ("ふざけないで", 0.85), ("いい加減にして", 0.85), ("いい加減にしろ", 0.9),
    ("話にならない", 0.8), ("返金しろ", 0.8), ("時間の無駄", 0.75), ("最悪", 0.7), ("ありえない", 0.7),
    ("あり得ない", 0.7), ("役に立たない", 0.7), ("信じられない", 0.6), ("納得できない", 0.65), ("ひどい", 0.6),
    ("酷い", 0.6), ("使えない", 0.6), ("怒っ", 0.6), ("怒り", 0.6), ("腹が立", 0.7), ("頭にくる", 0.7),
    ("むかつく", 0.75), ("ムカつく", 0.75), ("うんざり", 0.7), ("何度も電話", 0.7), ("何回も電話", 0.7),
    ("何度も", 0.5), ("何回も", 0.5), ("もういい", 0.5),
    ("遅すぎ", 0.6), ("遅い", 0.4), ("早くして", 0.5), ("困っています", 0.35), ("困ってる", 0.35),
    ("困ります", 0.4), ("不満", 0.5), ("解約する", 0.45), ("どうなってる", 0.5), ("どうなっている", 0.5),
    ("ちゃんとして", 0.5), ("意味がわからない", 0.5), ("意味わからない", 0.5), ("返金して", 0.35),
]
_JA_CALM: list[tuple[str, float]] = [("ありがとう", 0.5), ("助かりました", 0.5), ("助かります", 0.4), ("了解", 0.2)]
_JA_NEGATION_AFTER = ("じゃない", "ではない", "じゃありません", "ではありません", "とは思わない", "わけではない")
_JA_INTENSIFIERS = ("本当に", "ほんとに", "ホントに", "全然", "すごく", "めちゃくちゃ", "マジで", "非常に", "とても", "超")


@lru_cache(maxsize=1)
def _vader() -> Any:
    """The VADER analyzer, built once per process (~25 ms) with the contact-centre re-weighting."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(_VADER_DOMAIN)
    return analyzer


class LexiconSentimentScorer:
    """The default ``TextSentimentScorer``: VADER + phrases (en), curated lexicon (ja). Stateless."""

    def score(self, text: str, language: Language) -> TextScore:
        return self._score_ja(text) if language == "ja" else self._score_en(text)

    def _score_en(self, text: str) -> TextScore:
        compound = float(_vader().polarity_scores(text)["compound"])
        hits: list[float] = [max(0.0, -compound)]
        matched: list[str] = []
        for pattern, weight, label in _EN_PHRASES:
            for match in pattern.finditer(text):
                if _EN_NEGATION.search(text[: match.start()][-24:]):
                    continue
                hits.append(weight)
                matched.append(label)
                break
        frustration = _noisy_or(hits)
        if compound > 0.3 and not matched:
            frustration *= 0.5  # clearly positive wording: thanks, great, helpful
        return TextScore(round(frustration, 4), "en", tuple(matched), round(compound, 4))

    def _score_ja(self, text: str) -> TextScore:
        hits: list[float] = []
        matched: list[str] = []
        spans: list[tuple[int, int]] = []  # longer entries come first; overlapping shorter ones are skipped
        for surface, weight in _JA_LEXICON:
            start = text.find(surface)
            while start != -1:
                end = start + len(surface)
                overlaps = any(s < end and start < e for s, e in spans)
                if not overlaps and not any(text.startswith(neg, end) for neg in _JA_NEGATION_AFTER):
                    spans.append((start, end))
                    before = text[max(0, start - 6) : start]
                    boost = 1.25 if any(word in before for word in _JA_INTENSIFIERS) else 1.0
                    hits.append(min(1.0, weight * boost))
                    matched.append(surface)
                    break
                start = text.find(surface, end)
        exclamations = text.count("！") + text.count("!")
        if hits and exclamations:
            hits.append(min(0.3, 0.1 * exclamations))
        frustration = _noisy_or(hits)
        if not matched:
            frustration = 0.0
        for surface, weight in _JA_CALM:
            if surface in text:
                frustration *= 1.0 - weight
        return TextScore(round(frustration, 4), "ja", tuple(matched))


DEFAULT_SCORER = LexiconSentimentScorer()


# --------------------------------------------------------------------------------------------------
# Explicit requests for a person
# --------------------------------------------------------------------------------------------------

_NOUN = (
    r"(?:(?:real|live|actual|human)\s+)?"
    r"(?:person|human(?:\s+being)?(?!\s+(?:resources|error|nature|rights))|agent|representative|rep"
    r"|manager|supervisor|operator|someone|somebody|staff\s+member|customer\s+service)\b"
)
_DET = r"(?:(?:a|an|the|your|some|one\s+of\s+your)\s+)?"
_EN_REQUEST = [
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"\b(?:speak|talk|chat)\s+(?:to|with)\s+{_DET}{_NOUN}",
        rf"\b(?:connect|transfer|put)\s+me\s+(?:through\s+)?(?:to|with)\s+{_DET}{_NOUN}",
        rf"\b(?:get|give|find)\s+me\s+{_DET}{_NOUN}",
        rf"\b(?:want|need|like|request|ask\s+for|get)\s+(?:a|an|the|your)\s+{_NOUN}",
        r"\b(?:real|live|actual)\s+(?:person|human)\b",
    )
]
_EN_REQUEST_NEGATION = re.compile(r"\b(?:don'?t|do\s+not|no\s+need|not|never|without)\b", re.IGNORECASE)
_EN_SOLO_NOUNS = frozenset(
    {"agent", "human", "person", "representative", "rep", "operator", "manager", "supervisor", "real person",
     "live person", "live agent", "human agent", "customer service", "someone"}
)
_EN_FILLERS = frozenset({"please", "a", "an", "the", "uh", "um", "er", "now", "just", "yes", "ok", "okay", "hey", "hi"})

_JA_REQUEST = [
    re.compile(p)
    for p in (
        r"オペレーター?",
        r"担当者(?!から)",
        r"責任者",
        r"上の(?:人|者|方)(?:を|に|と|出)",
        r"上司",
        r"有人",
        r"係の(?:人|方)",
        r"(?:人|人間|スタッフ)(?:と|に)(?:話|はな|代わ|かわ|替わ|つな|繋)",
        r"人間(?:と|に|を|の方|がいい|でお願い|$)",
    )
]
_JA_REQUEST_NEGATION = ("いらない", "要らない", "不要", "結構", "大丈夫", "じゃなくて", "ではなく")


def detect_person_request(text: str, language: Language | None = None) -> str | None:
    """The phrase if ``text`` explicitly asks for a person (agent, manager, オペレーター...), else None.

    English uses whole-word patterns that need a request shape ("speak to a manager", "get me a human",
    "representative, please") and skip negated clauses ("I don't need an agent"); "human resources"
    and the like never match. Japanese matches a short list and skips "…は不要/結構です".
    """
    language = language or detect_language(text)
    if language == "ja":
        for pattern in _JA_REQUEST:
            for match in pattern.finditer(text):
                tail = text[match.end() : match.end() + 10]
                if not any(neg in tail for neg in _JA_REQUEST_NEGATION):
                    return match.group(0)
        return None
    for clause in re.split(r"[.,;!?]+", text):
        for pattern in _EN_REQUEST:
            found = pattern.search(clause)
            if found and not _EN_REQUEST_NEGATION.search(clause[: found.start()]):
                return found.group(0).strip()
    words = [w for w in re.findall(r"[a-z']+", text.lower()) if w not in _EN_FILLERS]
    if 1 <= len(words) <= 2 and " ".join(words) in _EN_SOLO_NOUNS:
        return " ".join(words)
    return None
