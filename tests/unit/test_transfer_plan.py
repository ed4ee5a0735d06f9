"""The neutral transfer plan and the agent briefing (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.escalation.briefing import BRIEFING_MAX_CHARS, build_briefing, say_language, tool_results
from service.escalation.transfer_plan import TransferPlanError, TransferStep, build_plan, dial_outcome


def test_cold_queue_only_plan_has_one_step() -> None:
    plan = build_plan(mode="cold", number="", queue="support", fallbacks="number,bot", fallback_number="+15550001")
    assert plan.steps == (TransferStep("queue", "support"),)
    with pytest.raises(TransferPlanError):
        plan.after(0, "busy")  # a queue has no dial outcome


def test_warm_plan_tries_the_fallbacks_in_order_and_stops_at_the_queue() -> None:
    plan = build_plan(mode="warm", number="+15550100", queue="support", fallbacks="number,queue,bot",
                      fallback_number="sip:desk@pbx.example.com")
    assert [s.kind for s in plan.steps] == ["dial", "dial", "queue"]
    assert plan.steps[0].warm and plan.steps[1].target == "sip:desk@pbx.example.com"
    assert plan.after(0, "no_answer") == 1
    assert plan.after(1, "machine") == 2
    assert plan.after(0, "connected") is None


def test_bot_fallback_needs_redis_and_a_dial_without_fallback_ends_with_hangup() -> None:
    with_bot = build_plan(mode="warm", number="+15550100", queue="q", fallbacks="bot")
    assert [s.kind for s in with_bot.steps] == ["dial", "bot"]
    without = build_plan(mode="warm", number="+15550100", queue="q", fallbacks="bot", bot_available=False)
    assert [s.kind for s in without.steps] == ["dial", "hangup"]
    assert without.after(0, "busy") == 1


@pytest.mark.parametrize("bad", [(5, "busy"), (0, "exploded"), (-1, "busy")])
def test_unknown_steps_and_outcomes_raise(bad: tuple[int, str]) -> None:
    plan = build_plan(mode="warm", number="+15550100", queue="q", fallbacks="queue")
    with pytest.raises(TransferPlanError):
        plan.after(*bad)


@pytest.mark.parametrize(("status", "machine", "outcome"), [
    ("completed", False, "connected"), ("answered", False, "connected"), ("busy", False, "busy"),
    ("no-answer", False, "no_answer"), ("failed", False, "failed"), ("canceled", False, "canceled"),
    ("completed", True, "machine"), ("", False, "failed"), ("weird", False, "failed"),
])
def test_dial_outcomes(status: str, machine: bool, outcome: str) -> None:
    assert dial_outcome(status, machine=machine) == outcome


RECORD: dict[str, Any] = {
    "escalation_id": "01JTESTESCALATION000000000",
    "call_id": "CA" + "1" * 32,
    "trigger": "explicit_request",
    "reason": "asked for a human",
    "caller_mood": "frustrated",
    "score": 0.71,
    "summary": 'Issue: "my order 4567 never arrived".',
    "transcript": [
        {"role": "bot", "text": "Thank you for calling, how can I help?"},
        {"role": "caller", "text": "My order never arrived and my card 4111 1111 1111 1111 was charged"},
        {"role": "bot", "text": "I see order 4567 shipped on Monday; let me get a colleague for you."},
        {"role": "caller", "text": "Yes please, a human"},
    ],
    "tools": [{"name": "lookup_order", "ok": True, "result": {"status": "shipped", "eta": "Friday"}},
              {"name": "refund_status", "ok": False, "error": "timeout"}],
}


def test_briefing_carries_reason_mood_issue_tools_and_what_the_bot_said() -> None:
    briefing = build_briefing(RECORD, language="en-US")
    text = briefing.text
    assert "caller asked for a person" in text and "asked for a human" in text
    assert "frustrated" in text
    assert "order never arrived" in text
    assert "lookup order: status: shipped, eta: Friday" in text and "refund status failed" in text
    assert "shipped on Monday" in text  # what the assistant already told the caller
    assert "4111" not in text  # the card number is never spoken
    assert briefing.escalation_id == RECORD["escalation_id"] and briefing.language == "en-US"


def test_briefing_is_bounded_and_survives_odd_records() -> None:
    huge = {**RECORD, "transcript": [{"role": "caller", "text": "order problem " * 500},
                                     {"role": "bot", "text": "answer " * 500}],
            "tools": [{"name": f"t{i}", "result": "x" * 1000} for i in range(50)]}
    assert len(build_briefing(huge).text) <= BRIEFING_MAX_CHARS
    odd = {"transcript": "nope", "tools": [None, 3, {"name": 5}], "trigger": None}
    text = build_briefing(odd).text
    assert text.startswith("Transfer from the voice assistant. Reason: not given.")
    assert tool_results(odd) == []


def test_japanese_briefing_and_language_choice() -> None:
    assert say_language("", "ja") == "ja-JP" and say_language("", "") == "en-US"
    assert say_language("de-DE", "ja") == "de-DE"
    spoken_ja = {"transcript": [{"role": "caller", "text": "オペレーターと話したいです"}]}
    assert say_language("", "", spoken_ja) == "ja-JP" and say_language("", "en", spoken_ja) == "en-US"
    assert say_language("", "", RECORD) == "en-US"
    text = build_briefing({**RECORD, "transcript": [{"role": "caller", "text": "注文が届かない"}]}, language="ja-JP").text
    assert text.startswith("音声アシスタントからの転送です。") and "注文が届かない" in text


def test_tool_results_read_either_shape() -> None:
    shaped = {"tool_calls": [{"tool": "lookup_order", "output": json.dumps({"status": "late"})}]}
    assert tool_results(shaped) == [{"tool": "lookup_order", "ok": True, "result": '{"status": "late"}'}]


def test_tool_results_read_the_business_tools_record_shape() -> None:
    """The business-tools feature writes ``tool_calls`` entries with ``tool``, ``outcome``, ``result`` or ``error``."""
    payload = {**RECORD, "tools": None, "tool_calls": [
        {"tool": "lookup_order", "outcome": "ok", "latency_ms": 120.0, "arguments": {"order_number": "4567"},
         "result": {"status": "shipped"}},
        {"tool": "refund_status", "outcome": "timeout", "latency_ms": 5000.0, "arguments": {}, "error": "timed out"}]}
    assert tool_results(payload) == [{"tool": "lookup_order", "ok": True, "result": {"status": "shipped"}},
                                     {"tool": "refund_status", "ok": False, "result": "timed out"}]
    text = build_briefing(payload).text
    assert "lookup order: status: shipped" in text and "refund status failed" in text


def test_briefing_and_task_attributes_stay_bounded_for_any_record() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from service.providers.twilio.transfer import TASK_ATTRIBUTES_MAX_BYTES, task_attributes

    turn = st.fixed_dictionaries({"role": st.sampled_from(["caller", "bot", "system"]), "text": st.text(max_size=3000)})
    tool = st.fixed_dictionaries({"tool": st.text(max_size=80), "result": st.text(max_size=2000)})
    record = st.fixed_dictionaries({
        "trigger": st.text(max_size=50), "reason": st.text(max_size=3000), "caller_mood": st.text(max_size=200),
        "summary": st.text(max_size=5000), "transcript": st.lists(turn, max_size=12),
        "tool_calls": st.lists(tool, max_size=30), "escalation_id": st.text(max_size=40)})

    @settings(max_examples=60, deadline=None)
    @given(record, st.sampled_from(["en-US", "ja-JP", "xx"]))
    def check(payload: dict[str, Any], language: str) -> None:
        assert len(build_briefing(payload, language=language).text) <= BRIEFING_MAX_CHARS
        assert len(task_attributes(payload, language=language).encode()) <= TASK_ATTRIBUTES_MAX_BYTES

    check()
