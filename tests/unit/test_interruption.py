"""The pause-then-decide interruption decider: every rule, its order, the lexicon, the deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.call.interruption import (
    BACKCHANNELS_JA,
    InterruptionDecider,
    InterruptPolicy,
    InterruptState,
    is_backchannel,
)
from service.call.machine import InvalidTransition

POLICY = InterruptPolicy(confirm_ms=600, sustained_ms=400, min_level_dbfs=-40.0)


def paused(at: float = 10.0) -> InterruptionDecider:
    decider = InterruptionDecider(POLICY)
    decider.pause(at)
    return decider


@pytest.mark.parametrize("text", ["uh-huh", "Uh huh.", "Mm-hm", "yeah", "Yeah, yeah.", "okay", "OK!", "right",
                                  "Right, right", "I see", "got it", "はい", "はい、はい", "うん", "ええ", "なるほど",
                                  "そうですね", "そうですね。", "ＯＫ", "うん うん"])
def test_backchannels_are_recognised(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["wait, stop, that's wrong", "no", "stop", "yeah but that's not my order",
                                  "ちょっと待ってください", "いいえ、違います", "", "   ", "...",
                                  "okay okay okay okay", "uh-huh " * 40])
def test_other_speech_is_not_a_backchannel(text: str) -> None:
    assert not is_backchannel(text)


def test_every_japanese_entry_matches_itself_with_punctuation() -> None:
    assert all(is_backchannel(word + "。") for word in BACKCHANNELS_JA)


def test_backchannel_transcript_is_false_at_once() -> None:
    decider = paused()
    decider.caller_frame(-20.0, 20)
    assert decider.poll(10.1) is None
    decider.transcript("Uh-huh.")
    decision = decider.poll(10.2)
    assert decision is not None and not decision.real
    assert (decision.reason, decision.kind, decision.after_ms) == ("backchannel", "backchannel", pytest.approx(200.0))
    assert decider.state is InterruptState.FALSE
    assert decider.poll(10.3) is None  # decided once


def test_words_are_real_before_the_deadline() -> None:
    decider = paused()
    decider.transcript("wait, stop")
    decision = decider.poll(10.05)
    assert decision is not None and decision.real and decision.reason == "words" and decision.kind == "real"


def test_empty_transcript_is_noise() -> None:
    decider = paused()
    decider.transcript(" ... ")
    decision = decider.poll(10.1)
    assert decision is not None and (decision.real, decision.reason, decision.kind) == (False, "no_words", "noise")


def test_sustained_loud_speech_is_real_when_it_reaches_sustained_ms() -> None:
    decider = paused()
    for i in range(19):
        decider.caller_frame(-25.0, 20)
        assert decider.poll(10.0 + 0.02 * (i + 1)) is None
    decider.caller_frame(-25.0, 20)  # 400 ms voiced
    decision = decider.poll(10.4)
    assert decision is not None and decision.real and decision.reason == "sustained_speech"
    assert decision.voiced_ms == 400 and decision.peak_dbfs == -25.0


def test_quiet_frames_do_not_count_as_speech_and_end_the_pause_early() -> None:
    decider = paused()
    for _ in range(11):
        decider.caller_frame(-45.0, 20)  # echo under the raised threshold
    assert decider.poll(10.22) is None
    decider.caller_frame(-45.0, 20)  # 240 ms of caller audio, none of it voiced
    decision = decider.poll(10.24)
    assert decision is not None and not decision.real and decision.reason == "below_level"
    assert decision.voiced_ms == 0 and decision.peak_dbfs == -45.0 and decision.after_ms == pytest.approx(240.0)


def test_a_voiced_frame_early_keeps_the_pause_open() -> None:
    decider = paused()
    decider.caller_frame(-30.0, 20)
    for _ in range(20):
        decider.caller_frame(-70.0, 20)
    assert decider.poll(10.5) is None


def test_short_loud_burst_without_words_is_noise_at_the_deadline() -> None:
    decider = paused()
    for _ in range(10):
        decider.caller_frame(-10.0, 20)  # a 200 ms cough
    for _ in range(20):
        decider.caller_frame(-70.0, 20)
    assert decider.poll(10.599) is None
    decision = decider.poll(10.6)
    assert decision is not None and (decision.real, decision.reason, decision.kind) == (False, "short_no_words", "noise")
    assert decision.after_ms == pytest.approx(600.0)


def test_transcript_wins_over_energy() -> None:
    decider = paused()
    for _ in range(25):
        decider.caller_frame(-20.0, 20)  # 500 ms, long enough to be "sustained"
    decider.transcript("そうですね")
    decision = decider.poll(10.5)
    assert decision is not None and not decision.real and decision.reason == "backchannel"


def test_inputs_outside_paused_are_ignored_and_reset_returns_to_idle() -> None:
    decider = InterruptionDecider(POLICY)
    decider.caller_frame(-10.0, 20)
    decider.transcript("stop")
    assert decider.poll(99.0) is None and decider.state is InterruptState.IDLE
    decider.pause(1.0)
    with pytest.raises(InvalidTransition):
        decider.pause(1.1)  # one pause at a time
    decider.reset()
    decider.pause(2.0)  # a fresh pause forgets the last one's inputs
    assert decider.poll(2.5) is None
    assert decider.poll(2.6) is not None


def test_transcript_is_capped() -> None:
    decider = paused()
    decider.transcript("x" * 10_000)
    decision = decider.poll(10.1)
    assert decision is not None and len(decision.transcript) == 200


@pytest.mark.parametrize(("confirm", "sustained"), [(0, 0), (600, 0), (300, 400)])
def test_policy_is_validated(confirm: int, sustained: int) -> None:
    with pytest.raises(ValueError, match="must"):
        InterruptPolicy(confirm_ms=confirm, sustained_ms=sustained)


@given(st.lists(st.tuples(st.floats(-120.0, 0.0), st.sampled_from([10, 20, 40])), max_size=80),
       st.one_of(st.none(), st.text(max_size=30)))
def test_a_decision_is_always_made_by_the_deadline(frames: list[tuple[float, int]], transcript: str | None) -> None:
    decider = paused(0.0)
    for level, ms in frames:
        decider.caller_frame(level, ms)
    if transcript is not None:
        decider.transcript(transcript)
    early = decider.poll(0.1)
    decision = early or decider.poll(decider.deadline)
    assert decision is not None
    assert decider.state is (InterruptState.CONFIRMED_REAL if decision.real else InterruptState.FALSE)
    assert decision.after_ms <= POLICY.confirm_ms
    if decision.reason == "sustained_speech":
        assert decision.voiced_ms >= POLICY.sustained_ms


def test_policy_from_the_setting() -> None:
    assert InterruptPolicy.confirming_within(0, -40.0) is None
    assert InterruptPolicy.confirming_within(800, -35.0) == InterruptPolicy(800, 600, -35.0)
    assert InterruptPolicy.confirming_within(1, -40.0) == InterruptPolicy(1, 1, -40.0)


def test_still_speaking_at_the_deadline_is_real() -> None:
    """'wait, stop, ...': words with pauses, not yet 'sustained', but still going at the deadline."""
    decider = paused()
    pattern = [-20.0] * 6 + [-70.0] * 8  # 120 ms voiced, 160 ms pause, repeated
    for level in (pattern * 3)[:30]:  # 600 ms of caller audio
        decider.caller_frame(level, 20)
    assert decider.poll(10.5) is None
    decision = decider.poll(10.6)
    assert decision is not None and decision.real and decision.reason == "continuing_speech"
    assert decision.voiced_ms == 280 >= POLICY.sustained_ms / 2


def test_finished_short_speech_at_the_deadline_is_not_real() -> None:
    decider = paused()
    for level in [-20.0] * 15 + [-70.0] * 15:  # 300 ms voiced, then 300 ms quiet: over
        decider.caller_frame(level, 20)
    decision = decider.poll(10.6)
    assert decision is not None and not decision.real and decision.reason == "short_no_words"


def test_still_speaking_but_barely_voiced_is_not_real() -> None:
    decider = paused()
    for level in [-70.0] * 25 + [-20.0] * 5:  # only the last 100 ms voiced
        decider.caller_frame(level, 20)
    decision = decider.poll(10.6)
    assert decision is not None and not decision.real
