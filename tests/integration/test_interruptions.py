"""Pause, then decide, over real sockets (issue 15 item 6): the gateway under uvicorn with its real
settings, the Twilio caller stand-in streaming real-time audio and playing the bot back with mark
echoes, and the Realtime stand-in honouring ``interrupt_response``/``create_response`` as the
service does (every client event validated against the ``openai`` types). The bot's reply is a
chirp, so the caller's playback shows exactly which samples were heard and where playback resumed
(``load_tests/interruption_calls.py``)."""

from __future__ import annotations

import pytest

from load_tests.interruption_calls import Interjection, Outcome, cough, run_scenario, speech

pytestmark = pytest.mark.slow

REPLY_MS = 4000


def assert_resumed_whole(out: Outcome) -> None:
    """A false interruption: the caller hears the whole reply, after a short pause, and the model
    neither stops (no cancel, no truncate) nor answers the noise (no new response; item deleted)."""
    print(f"{out.interjection}: {out.reason} after {out.decided_after_ms} ms; heard {out.heard_share:.3f} of the "
          f"reply; gap {out.gap_ms} ms; seam {out.seam_ms} ms; flush reaction {out.reaction_ms} ms")
    assert out.decided_real is False, out
    assert out.heard_share >= 0.95, out
    assert out.gap_ms is not None and out.gap_ms < 1000, out
    assert out.seam_ms is not None and abs(out.seam_ms) <= 40, out  # resumed where the caller stopped hearing
    assert out.reaction_ms is not None and out.reaction_ms <= 5.0, out
    assert (out.cancels, out.truncates, out.creates_after) == (0, [], 0), out
    assert out.deleted_items == 1, out
    assert out.violations == []


async def test_a_cough_during_a_reply_pauses_then_resumes_the_whole_reply() -> None:
    assert_resumed_whole(await run_scenario(Interjection("cough", cough(), "", real=False), reply_ms=REPLY_MS))


@pytest.mark.parametrize(("text", "language"), [("uh-huh", "en"), ("はい", "ja")])
async def test_a_backchannel_is_not_an_interruption(text: str, language: str) -> None:
    out = await run_scenario(Interjection(text, speech(text, language), text, real=False, language=language),
                             reply_ms=REPLY_MS)
    assert_resumed_whole(out)


async def test_a_real_interruption_cancels_truncates_at_what_was_heard_and_is_answered() -> None:
    text = "wait, stop, that's wrong"
    out = await run_scenario(Interjection("stop", speech(text), text, real=True), reply_ms=6000)
    print(f"stop: {out.reason} after {out.decided_after_ms} ms; flush reaction {out.reaction_ms} ms; "
          f"truncates {out.truncates}")
    assert out.decided_real is True, out
    assert out.reaction_ms is not None and out.reaction_ms <= 5.0, out
    assert out.cancels == 1, out  # the reply was still being generated (real-time pacing)
    assert len(out.truncates) == 1, out
    audio_end_ms, played_ms = out.truncates[0]
    assert abs(audio_end_ms - played_ms) <= 40, out
    assert out.creates_after == 1 and out.answered, out  # the model answers the caller's turn
    assert out.deleted_items == 0
    assert out.violations == []
