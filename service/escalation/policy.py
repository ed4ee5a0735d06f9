"""Per-call escalation policy: fuses the signals of ``sentiment.py`` into one frustration score with
hysteresis and decides, at most once per call by default, to hand the caller to a person.

Pure and synchronous (no I/O besides structlog lines): call it from the bridge's transcript / DTMF /
tool-call handlers, never per audio frame. Cost per caller turn: one lexicon pass (~0.05-0.3 ms).

Score dynamics (docs/escalation-webhook.md, "Tuning"):
- turn signal ``s = 1 - (1 - text) * (1 - voice_weight * voice)`` plus a small bonus for consecutive
  turns whose words are frustrated (persistent frustration escalates even when no single turn is
  extreme); voice alone is capped at ``voice_weight`` (0.5), below any sane threshold;
- rising: ``score += rise_rate * (s - score)`` (fast: one strong turn moves most of the way);
- falling: ``score = max(s, score * (1 - decay_per_turn))`` (slow: calm turns shave a fraction off);
- a sentiment escalation needs ``score >= threshold`` and at least ``min_turns`` caller turns;
  explicit requests, DTMF ``0`` and the model's tool call escalate at once, whatever the score;
- after a decision the policy is disarmed; it re-arms only once the score falls below
  ``reset_threshold``, and never fires more than ``max_escalations`` times (default 1).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from service.escalation import defaults
from service.escalation.sentiment import (
    CALLER_MOODS,
    DEFAULT_SCORER,
    MOOD_SCORE,
    TextSentimentScorer,
    VoiceConfig,
    VoiceTurnFeatures,
    detect_language,
    detect_person_request,
    voice_arousal,
)
from service.metrics import SENTIMENT_SCORE
from service.state.model import SentimentPoint

if TYPE_CHECKING:
    from service.config import Settings

log = structlog.get_logger(__name__)

Trigger = Literal["explicit_request", "dtmf", "model_tool", "sentiment"]
TRAJECTORY_MAX = 500
"""Points kept in memory per call (~100 B each): bounded like the Redis list."""


@dataclass(frozen=True)
class PolicyConfig:
    """Every tunable of the policy. ``from_settings`` maps the CALLBRIDGE_ESCALATION_* settings."""

    threshold: float = defaults.THRESHOLD
    reset_threshold: float = defaults.RESET_THRESHOLD
    min_turns: int = defaults.MIN_TURNS
    decay_per_turn: float = defaults.DECAY_PER_TURN
    rise_rate: float = 0.85
    voice_weight: float = 0.5
    streak_signal: float = 0.35
    streak_bonus: float = 0.08
    streak_bonus_max: float = 0.24
    max_escalations: int = 1
    dtmf_digits: frozenset[str] = frozenset({"0"})
    explicit_requests: bool = True
    voice: VoiceConfig = field(default_factory=VoiceConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.reset_threshold < self.threshold <= 1:
            raise ValueError("need 0 <= reset_threshold < threshold <= 1")
        if not 0 < self.rise_rate <= 1 or not 0 <= self.decay_per_turn <= 1:
            raise ValueError("rise_rate must be in (0, 1] and decay_per_turn in [0, 1]")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PolicyConfig:
        """escalation_threshold, escalation_reset_threshold, escalation_min_turns, sentiment_decay_per_turn."""
        values: dict[str, Any] = {
            "threshold": settings.escalation_threshold,
            "reset_threshold": settings.escalation_reset_threshold,
            "min_turns": settings.escalation_min_turns,
            "decay_per_turn": settings.sentiment_decay_per_turn,
            **overrides,
        }
        return cls(**values)


@dataclass(frozen=True)
class Decision:
    """A decision to escalate. ``inputs`` holds the signals that led to it (logged and delivered)."""

    trigger: Trigger
    reason: str
    score: float
    inputs: dict[str, Any]
    caller_mood: str
    decided_at: float


def mood_for_score(score: float) -> str:
    """A caller-mood word for a frustration score (the model's word wins when it gave one)."""
    return "calm" if score < 0.35 else "frustrated" if score < 0.7 else "angry"


class EscalationPolicy:
    """One call's frustration tracker and escalation decider. Not thread-safe; one per call.

    ``on_point`` (e.g. ``CallStateWriter.sentiment``) receives every new trajectory point.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        scorer: TextSentimentScorer | None = None,
        *,
        call_id: str | None = None,
        on_point: Callable[[SentimentPoint], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or PolicyConfig()
        self._scorer = scorer or DEFAULT_SCORER
        self._call_id = call_id
        self._on_point = on_point
        self._clock = clock
        self.score = 0.0
        self.caller_turns = 0
        self.escalations = 0
        self.armed = True
        self._streak = 0
        self._mood: str | None = None
        self._trajectory: deque[SentimentPoint] = deque(maxlen=TRAJECTORY_MAX)
        self.decisions: list[Decision] = []

    @property
    def trajectory(self) -> list[SentimentPoint]:
        """The score after each caller turn / model judgement, oldest first (last 500)."""
        return list(self._trajectory)

    @property
    def fired(self) -> bool:
        return self.escalations > 0

    # ------------------------------------------------------------------------------------ signals

    def on_caller_turn(self, text: str, voice: VoiceTurnFeatures | None = None) -> Decision | None:
        """Score one finished caller turn (input transcription) and maybe decide to escalate."""
        cfg = self.config
        self.caller_turns += 1
        language = detect_language(text)
        text_score = self._scorer.score(text, language)
        arousal = voice_arousal(voice, cfg.voice)
        signal = 1.0 - (1.0 - text_score.frustration) * (1.0 - cfg.voice_weight * (arousal or 0.0))
        # Persistence counts the words only: a loud voice alone must never escalate.
        self._streak = self._streak + 1 if text_score.frustration >= cfg.streak_signal else 0
        if self._streak > 1:
            signal = min(1.0, signal + min(cfg.streak_bonus_max, cfg.streak_bonus * (self._streak - 1)))
        self._update(signal)
        request = detect_person_request(text, language) if cfg.explicit_requests else None
        inputs: dict[str, Any] = {
            "turn": self.caller_turns,
            "language": language,
            "text_score": text_score.frustration,
            "matched": list(text_score.matched),
            "vader_compound": text_score.vader_compound,
            "voice_score": None if arousal is None else round(arousal, 4),
            "loudness_delta_db": None if voice is None else voice.loudness_delta_db,
            "pitch_ratio": None if voice is None else voice.pitch_ratio,
            "signal": round(signal, 4),
            "score": round(self.score, 4),
            "chars": len(text),
            "person_request": request,
        }
        self._append(SentimentPoint(
            ts=self._clock(), turn=self.caller_turns, score=round(self.score, 4),
            text_score=text_score.frustration, voice_score=inputs["voice_score"], language=language,
        ))
        SENTIMENT_SCORE.observe(self.score)
        log.info("sentiment.update", call_id=self._call_id, **inputs)
        if request is not None:
            return self._decide("explicit_request", f"caller asked for a person: {request!r}", inputs)
        if self.score >= cfg.threshold and self.caller_turns >= cfg.min_turns:
            return self._decide("sentiment", f"frustration score {self.score:.2f} >= {cfg.threshold:.2f}", inputs)
        return None

    def on_dtmf(self, digit: str) -> Decision | None:
        """A keypad digit from the caller; ``0`` (``dtmf_digits``) escalates at once."""
        if digit not in self.config.dtmf_digits:
            return None
        return self._decide("dtmf", f"caller pressed {digit}", {"digit": digit, "score": round(self.score, 4)})

    def on_model_tool_call(self, reason: str, mood: str | None) -> Decision | None:
        """The model called ``escalate_to_human``: a strong signal, escalates at once.

        The model's ``caller_mood`` is folded into the score (never lowering it) and into the record.
        """
        mood_word = mood if mood in CALLER_MOODS else None
        if mood_word is not None:
            self._mood = mood_word
            self.score = max(self.score, MOOD_SCORE[mood_word])
            self._append(SentimentPoint(ts=self._clock(), turn=self.caller_turns, score=round(self.score, 4),
                                        source="model_tool"))
        inputs = {"model_reason": reason[:500], "caller_mood": mood, "score": round(self.score, 4),
                  "turn": self.caller_turns}
        return self._decide("model_tool", reason.strip()[:500] or "model requested a hand-off", inputs)

    # ------------------------------------------------------------------------------------ internals

    def _update(self, signal: float) -> None:
        cfg = self.config
        if signal > self.score:
            self.score += cfg.rise_rate * (signal - self.score)
        else:
            self.score = max(signal, self.score * (1.0 - cfg.decay_per_turn))
        self.score = min(1.0, max(0.0, self.score))
        if not self.armed and self.score < cfg.reset_threshold and self.escalations < cfg.max_escalations:
            self.armed = True
            log.info("escalation.rearmed", call_id=self._call_id, score=round(self.score, 4))

    def _append(self, point: SentimentPoint) -> None:
        self._trajectory.append(point)
        if self._on_point is not None:
            self._on_point(point)

    def _decide(self, trigger: Trigger, reason: str, inputs: dict[str, Any]) -> Decision | None:
        if not self.armed or self.escalations >= self.config.max_escalations:
            log.debug("escalation.suppressed", call_id=self._call_id, trigger=trigger,
                      escalations=self.escalations, armed=self.armed)
            return None
        self.armed = False
        self.escalations += 1
        decision = Decision(
            trigger=trigger, reason=reason, score=round(self.score, 4), inputs=inputs,
            caller_mood=self._mood or mood_for_score(self.score), decided_at=self._clock(),
        )
        self.decisions.append(decision)
        log.info("escalation.decided", call_id=self._call_id, trigger=trigger, reason=reason,
                 score=decision.score, caller_mood=decision.caller_mood, inputs=inputs)
        return decision
