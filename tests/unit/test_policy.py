"""EscalationPolicy: calm never escalates, angry escalates once, instant triggers, hysteresis; summary/record."""

from __future__ import annotations

import json
from itertools import count
from typing import ClassVar

import pytest

from service.config import load_settings
from service.escalation.policy import EscalationPolicy, PolicyConfig
from service.escalation.record import build_record, new_escalation_id
from service.escalation.sentiment import MOOD_SCORE, VoiceTurnFeatures
from service.escalation.summary import main_issue, summarize
from service.state.model import SentimentPoint, TranscriptTurn

CALM_CALL = [
    "Hi, I'd like to check the balance on my account.",
    "I have a problem with my bill, it looks wrong.",
    "It says I was charged twice for March.",
    "Okay, my account number ends in four five six.",
    "I see. Could you fix it please?",
    "No, that was the only issue.",
    "Great, thanks, that's helpful.",
    "Have a nice day.",
]
ANGRY_CALL = [
    "My internet has been down since Monday.",
    "This is the third time I'm calling about this!",
    "This is ridiculous, what a waste of time.",
    "Are you kidding me? This is absolutely unacceptable!",
    "I'm sick and tired of this useless service.",
]


def ticking_clock() -> object:
    ticks = count(1_700_000_000)
    return lambda: float(next(ticks))


def test_calm_call_never_escalates() -> None:
    policy = EscalationPolicy()
    decisions = [policy.on_caller_turn(text) for text in CALM_CALL * 3]
    assert decisions == [None] * len(CALM_CALL) * 3
    assert max(p.score for p in policy.trajectory) < policy.config.reset_threshold
    assert len(policy.trajectory) == len(CALM_CALL) * 3 and not policy.fired


def test_angry_call_escalates_exactly_once() -> None:
    policy = EscalationPolicy(clock=ticking_clock())  # type: ignore[arg-type]
    decisions = [policy.on_caller_turn(text) for text in ANGRY_CALL * 2]
    fired = [(i, d) for i, d in enumerate(decisions) if d is not None]
    assert len(fired) == 1
    turn, decision = fired[0]
    assert turn + 1 >= policy.config.min_turns and turn <= 2  # by the second or third turn
    assert decision.trigger == "sentiment" and decision.score >= policy.config.threshold
    assert decision.caller_mood == "angry" and decision.inputs["matched"]
    assert policy.trajectory[turn].score == decision.score


def test_min_turns_gates_sentiment_only_escalation() -> None:
    policy = EscalationPolicy(PolicyConfig(min_turns=2))
    assert policy.on_caller_turn("This is ridiculous, what a waste of time, I'm fed up!") is None
    assert policy.score >= policy.config.threshold  # would have fired without the gate
    decision = policy.on_caller_turn("Unacceptable.")
    assert decision is not None and decision.trigger == "sentiment" and decision.inputs["turn"] == 2


@pytest.mark.parametrize("text", ["Can I speak to a manager please?", "オペレーターと話したいです", "Agent!"])
def test_explicit_request_escalates_at_once(text: str) -> None:
    policy = EscalationPolicy()
    decision = policy.on_caller_turn(text)
    assert decision is not None and decision.trigger == "explicit_request"
    assert decision.inputs["turn"] == 1 and decision.inputs["person_request"]


def test_dtmf_zero_escalates_other_digits_do_not() -> None:
    policy = EscalationPolicy()
    assert policy.on_dtmf("5") is None and policy.on_dtmf("#") is None
    decision = policy.on_dtmf("0")
    assert decision is not None and decision.trigger == "dtmf" and decision.inputs == {"digit": "0", "score": 0.0}
    assert policy.on_dtmf("0") is None  # once per call


def test_model_tool_escalates_and_folds_mood_into_score() -> None:
    points: list[SentimentPoint] = []
    policy = EscalationPolicy(on_point=points.append)
    policy.on_caller_turn("I'd like to change my address.")
    decision = policy.on_model_tool_call("Caller needs a legal address change I cannot do.", "confused")
    assert decision is not None and decision.trigger == "model_tool" and decision.caller_mood == "confused"
    assert decision.reason.startswith("Caller needs") and policy.score == MOOD_SCORE["confused"]
    assert [p.source for p in points] == ["turn", "model_tool"] and points == policy.trajectory


def test_hysteresis_rise_fast_decay_slow_rearm_below_reset() -> None:
    cfg = PolicyConfig(max_escalations=2, min_turns=1)
    policy = EscalationPolicy(cfg)
    first = policy.on_caller_turn("This is ridiculous, what a waste of time.")
    assert first is not None  # one strong turn moves the score most of the way (rise_rate 0.85)
    peak = policy.score
    assert peak >= 0.8
    assert policy.on_caller_turn("Okay.") is None
    assert policy.score == pytest.approx(peak * (1 - cfg.decay_per_turn))  # slow decay: 15% per calm turn
    assert policy.on_caller_turn("Unacceptable!") is None  # still disarmed: score never fell below reset
    calm_turns = 0
    while policy.score >= cfg.reset_threshold:
        assert policy.on_caller_turn("Alright, go on.") is None
        calm_turns += 1
    assert calm_turns >= 3 and policy.armed  # re-armed only below the reset threshold
    assert policy.on_caller_turn("This is ridiculous, what a waste of time.") is not None
    for _ in range(10):
        policy.on_caller_turn("Okay.")
    assert policy.on_caller_turn("I'm fed up, this is unacceptable!") is None  # max_escalations reached
    assert policy.escalations == 2


def test_voice_raises_the_score_but_never_escalates_alone() -> None:
    loud = VoiceTurnFeatures(loudness_delta_db=14.0, pitch_ratio=1.6)
    quiet = EscalationPolicy()
    shouting = EscalationPolicy()
    texts = ["My internet is not working again.", "Still not working, for weeks now.", "Nobody is helping me.",
             "Why does this keep happening?"]
    quiet_decisions = [quiet.on_caller_turn(t) for t in texts]
    loud_decisions = [shouting.on_caller_turn(t, loud) for t in texts]
    assert quiet_decisions == [None] * 4 and any(d is not None for d in loud_decisions)
    neutral_loud = EscalationPolicy()
    for _ in range(6):
        assert neutral_loud.on_caller_turn("Can you check my order status?", loud) is None
    assert neutral_loud.score <= 0.5 + 1e-9  # voice_weight 0.5 caps voice-only signal


def test_config_from_settings_and_validation() -> None:
    settings = load_settings(escalation_threshold=0.8, escalation_reset_threshold=0.3, escalation_min_turns=3,
                             sentiment_decay_per_turn=0.2)
    cfg = PolicyConfig.from_settings(settings)
    assert (cfg.threshold, cfg.reset_threshold, cfg.min_turns, cfg.decay_per_turn) == (0.8, 0.3, 3, 0.2)
    with pytest.raises(ValueError):
        PolicyConfig(threshold=0.5, reset_threshold=0.6)


def test_summary_is_extractive_and_bounded() -> None:
    turns = [
        TranscriptTurn("caller", "Hello.", 1.0),
        TranscriptTurn("bot", "Hi, how can I help?", 2.0),
        TranscriptTurn("caller", "I was charged twice on my bill, call me on +1 415 555 0123.", 3.0),
        TranscriptTurn("caller", "This is ridiculous.", 4.0),
    ]
    assert main_issue(turns) == turns[2].text
    text = summarize(turns, trigger="sentiment", reason="score 0.8", mood="angry", score=0.81)
    assert "charged twice" in text and "Mood: angry (0.81)" in text and "This is ridiculous." in text
    assert "555 0123" not in text and "0123" in text  # numbers masked
    assert len(summarize(turns * 50, trigger="dtmf", reason="x" * 1000, mood="calm", score=0.0, max_chars=200)) <= 200
    assert summarize([], trigger="dtmf", reason="caller pressed 0", mood="calm", score=0.0).startswith("Issue: not stated")


class _View:
    call_id = "CA9"
    info: ClassVar[dict[str, str]] = {"provider": "twilio", "stream_id": "MZ9", "from": "+14155550123", "started_at": "1700000000.000"}

    def recent_transcript(self, n: int | None = None) -> list[TranscriptTurn]:
        turns = [TranscriptTurn("caller" if i % 2 else "bot", f"turn {i}", 1_700_000_000.0 + i) for i in range(30)]
        return turns[-n:] if n else turns

    def recent_sentiment(self) -> list[SentimentPoint]:
        return [SentimentPoint(1_700_000_000.0 + i, i, i / 100) for i in range(80)]


def test_record_body_is_frozen_json_with_last_turns() -> None:
    policy = EscalationPolicy(clock=lambda: 1_700_000_100.0)
    decision = policy.on_dtmf("0")
    assert decision is not None
    record = build_record(_View(), decision, transcript_turns=10, replica="r1")
    body = record.payload
    assert body["escalation_id"] == record.escalation_id and len(record.escalation_id) == 26
    assert body["caller"] == "+*******0123" and body["trigger"] == "dtmf" and body["replica"] == "r1"
    assert [t["text"] for t in body["transcript"]] == [f"turn {i}" for i in range(20, 30)]
    assert len(body["sentiment"]) == 50 and body["sentiment"][-1]["turn"] == 79
    assert body["decided_at"] == "2023-11-14T22:15:00.000Z" and body["call_started_at"] == "2023-11-14T22:13:20.000Z"
    assert json.loads(record.body) == body and b"+14155550123" not in record.body
    assert "agent_url" not in body


def test_record_carries_a_signed_agent_link_when_asked() -> None:
    from service.console import auth

    key = auth.agent_link_key("console-token", "")
    decision = EscalationPolicy(clock=lambda: 1_700_000_100.0).on_dtmf("0")
    assert decision is not None
    record = build_record(_View(), decision, agent_link=lambda esc: auth.agent_link(
        "https://gw.example", key, esc, now=1_700_000_100.0, ttl_s=600))
    url = record.payload["agent_url"]
    assert url.startswith(f"https://gw.example/console/agent/{record.escalation_id}?exp=1700000700&sig=")
    sig = url.rsplit("sig=", 1)[1]
    assert auth.agent_link_valid(key, record.escalation_id, "1700000700", sig, now=1_700_000_100.0)


def test_escalation_ids_are_unique_and_time_sortable() -> None:
    ids = [new_escalation_id(1_700_000_000.0 + i) for i in range(200)]
    assert ids == sorted(ids) and len(set(ids)) == 200
    assert len({new_escalation_id(1_700_000_000.0) for _ in range(200)}) == 200
