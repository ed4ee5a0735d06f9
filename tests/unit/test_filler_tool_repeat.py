"""A business tool's wait shortens the filler's repeat (``FillerPlan.start(..., repeat_s)``), so a
long tool never leaves the caller ~1.5 s in silence between clips (docs/tools.md)."""

from __future__ import annotations

import pytest

from service.call.filler import FillerPlan, FillerState

CLIP_S = 0.5


def test_a_tool_shortens_the_repeat_of_a_fresh_wait() -> None:
    p = FillerPlan(after_s=0.8, repeat_s=2.0, clip_s=CLIP_S)
    assert p.start("tool", now=0.0, repeat_s=1.0) == pytest.approx(0.8)
    assert p.due(0.8, audible=False)
    p.played(0.8)
    assert p.deadline == pytest.approx(0.8 + CLIP_S + 1.0)


def test_a_tool_started_during_a_turn_wait_keeps_the_deadline_but_brings_the_repeat_forward() -> None:
    p = FillerPlan(after_s=0.8, repeat_s=2.0, clip_s=CLIP_S)
    p.start("turn", now=0.0)
    assert p.due(0.8, audible=False)
    p.played(0.8)
    assert p.deadline == pytest.approx(3.3)  # the turn's own 2 s repeat
    assert p.start("tool", now=1.0, repeat_s=1.0) is None  # the running wait goes on...
    assert p.reason == "turn" and p.state is FillerState.PLAYING
    assert p.deadline == pytest.approx(0.8 + CLIP_S + 1.0)  # ...with the next clip 1 s after this one


def test_a_longer_repeat_never_lengthens_and_the_next_wait_starts_clean() -> None:
    p = FillerPlan(after_s=0.8, repeat_s=1.0, clip_s=CLIP_S)
    p.start("tool", now=0.0, repeat_s=3.0)
    assert p.wait_repeat_s is None
    p.start("x", now=0.1, repeat_s=0.5)
    assert p.wait_repeat_s == 0.5
    p.stop(0.2)
    assert p.wait_repeat_s is None
    p.start("turn", now=1.0)
    assert p.due(1.8, audible=False)
    p.played(1.8)
    assert p.deadline == pytest.approx(1.8 + CLIP_S + 1.0)
