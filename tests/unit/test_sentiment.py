"""Lexicon scorers (EN + JA), voice arousal, person-request detection and the model tool schema."""

from __future__ import annotations

import json
import time

import pytest

from service.escalation.sentiment import (
    DEFAULT_SCORER,
    ESCALATE_TOOL,
    VoiceTurnFeatures,
    detect_language,
    detect_person_request,
    voice_arousal,
)

ANGRY_EN = [
    "This is the third time I'm calling about this.",  # VADER alone: 0.0
    "This is ridiculous, what a waste of time.",
    "I've been waiting for forty minutes and nobody has fixed anything!",  # VADER alone: 0.0
    "Are you kidding me? This is absolutely unacceptable!",
    "I'm sick and tired of this useless service.",
    "I am so angry right now.",
    "No, that's not what I asked. Listen to me.",
    "I'm done with you people.",
]
CALM_EN = [
    "Hi, I'd like to check the balance on my account.",
    "I have a problem with my bill, it looks wrong.",
    "Thanks, that's helpful.",
    "My internet is not working since yesterday.",
    "Could you tell me when the technician will come?",
    "I was charged twice, please fix it.",
    "It's not terrible, just slow.",
    "Yes, my account number ends in four five six.",
]
ANGRY_JA = [
    "ふざけるな！いい加減にして！",
    "もう何度も電話しているんですよ！",
    "本当に最悪です",
    "対応が遅すぎる、返金しろ",
    "話にならない、上の人を出して",
    "こんなの、ありえないでしょう",
]
CALM_JA = [
    "請求書について確認したいのですが。",
    "ありがとうございます、助かりました。",
    "住所を変更したいです",
    "最悪じゃないですけど、少し気になります",
]


def test_language_by_script() -> None:
    assert detect_language("hello there") == "en"
    assert detect_language("ありがとう") == "ja"  # hiragana
    assert detect_language("オペレーター") == "ja"  # katakana
    assert detect_language("最悪") == "ja"  # kanji only
    assert detect_language("My order 注文 is late") == "ja"


@pytest.mark.parametrize("text", ANGRY_EN)
def test_english_angry_sentences_score_high(text: str) -> None:
    assert DEFAULT_SCORER.score(text, "en").frustration >= 0.55


@pytest.mark.parametrize("text", CALM_EN)
def test_english_calm_sentences_score_low(text: str) -> None:
    assert DEFAULT_SCORER.score(text, "en").frustration <= 0.35


def test_phrases_catch_what_vader_misses_and_respect_negation() -> None:
    score = DEFAULT_SCORER.score("This is the third time I'm calling about this.", "en")
    assert score.vader_compound == 0.0 and score.matched == ("nth time calling",) and score.frustration >= 0.7
    assert DEFAULT_SCORER.score("That is not unacceptable, just odd.", "en").matched == ()
    assert DEFAULT_SCORER.score("It's not ridiculous at all.", "en").frustration == 0.0


@pytest.mark.parametrize("text", ANGRY_JA)
def test_japanese_angry_sentences_score_high(text: str) -> None:
    score = DEFAULT_SCORER.score(text, "ja")
    assert score.frustration >= 0.55, score


@pytest.mark.parametrize("text", CALM_JA)
def test_japanese_calm_sentences_score_low(text: str) -> None:
    assert DEFAULT_SCORER.score(text, "ja").frustration <= 0.2


def test_japanese_negation_intensifier_and_overlap() -> None:
    plain = DEFAULT_SCORER.score("最悪です", "ja").frustration
    boosted = DEFAULT_SCORER.score("本当に最悪です", "ja").frustration
    assert boosted > plain > 0.5
    assert DEFAULT_SCORER.score("最悪じゃない", "ja").frustration == 0.0
    # "何度も電話" is one hit, not "何度も電話" + "何度も" counted twice
    assert DEFAULT_SCORER.score("何度も電話した", "ja").matched == ("何度も電話",)
    assert DEFAULT_SCORER.score("困っています。ありがとう", "ja").frustration < DEFAULT_SCORER.score("困っています", "ja").frustration


def test_scoring_is_fast() -> None:
    texts = ANGRY_EN + CALM_EN + ANGRY_JA + CALM_JA
    DEFAULT_SCORER.score("warm up", "en")
    started = time.perf_counter()
    for _ in range(50):
        for text in texts:
            DEFAULT_SCORER.score(text, detect_language(text))
    per_turn_ms = (time.perf_counter() - started) * 1000 / (50 * len(texts))
    # A sanity bound that cannot flake on a loaded machine (typically well under 1 ms per turn); it only
    # catches an accidental pathological slowdown (e.g. a regex that backtracks).
    assert per_turn_ms < 50.0, f"{per_turn_ms:.3f} ms per turn"


def test_voice_arousal_relative_to_baseline() -> None:
    assert voice_arousal(None) is None
    assert voice_arousal(VoiceTurnFeatures(None, None)) is None
    assert voice_arousal(VoiceTurnFeatures(0.0, 1.0)) == 0.0
    assert voice_arousal(VoiceTurnFeatures(12.0, None)) == 1.0
    assert voice_arousal(VoiceTurnFeatures(None, 1.5)) == 1.0
    assert voice_arousal(VoiceTurnFeatures(-6.0, 0.8)) == 0.0  # quieter/lower than usual is not arousal
    levels = [voice_arousal(VoiceTurnFeatures(db, None)) for db in (3, 5, 7, 9, 11)]
    assert levels == sorted(levels) and levels[0] == 0.0
    both = voice_arousal(VoiceTurnFeatures(7.5, 1.3))
    assert both is not None and both > max(voice_arousal(VoiceTurnFeatures(7.5, None)) or 0, 0.5)


@pytest.mark.parametrize(
    "text",
    ["I want to speak to a manager", "Can I talk to a real person?", "Agent.", "Representative, please.",
     "get me a human", "no I want to speak to a human", "transfer me to customer service",
     "I need to talk to someone about this", "let me speak with your supervisor", "operator"],
)
def test_english_person_requests(text: str) -> None:
    assert detect_person_request(text) is not None


@pytest.mark.parametrize(
    "text",
    ["I'm not a human resources person", "I don't need to talk to a manager", "the agent told me last week it was fixed",
     "I want to know why the agent charged me", "human error I guess", "I'd like a refund", "my manager asked me to call",
     "I agentically reprocessed it", "personally I think it's fine"],
)
def test_english_non_requests(text: str) -> None:
    assert detect_person_request(text) is None


@pytest.mark.parametrize("text", ["オペレーターと話したい", "担当者に代わってください", "人と話したい", "人間につないで",
                                  "責任者を出してください", "人間の方をお願いします", "上の人を出して"])
def test_japanese_person_requests(text: str) -> None:
    assert detect_person_request(text) is not None


@pytest.mark.parametrize("text", ["オペレーターは不要です", "担当者から連絡がありました", "人間関係が大変で", "請求について"])
def test_japanese_non_requests(text: str) -> None:
    assert detect_person_request(text) is None


def test_escalate_tool_schema() -> None:
    assert ESCALATE_TOOL["type"] == "function" and ESCALATE_TOOL["name"] == "escalate_to_human"
    params = ESCALATE_TOOL["parameters"]
    assert params["required"] == ["reason", "caller_mood"]
    assert params["properties"]["reason"]["type"] == "string"
    assert params["properties"]["caller_mood"]["enum"] == ["calm", "confused", "frustrated", "angry"]
    assert json.loads(json.dumps(ESCALATE_TOOL)) == ESCALATE_TOOL
