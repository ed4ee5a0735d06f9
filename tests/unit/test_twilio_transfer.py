"""Twilio markup for the transfer plan (pure): parsed back and checked element by element."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from service.escalation.briefing import AgentBriefing
from service.escalation.transfer_plan import build_plan
from service.providers.twilio.transfer import (
    DIAL_DONE_PATH,
    HOLD_PATH,
    TASK_ATTRIBUTES_MAX_BYTES,
    WHISPER_PATH,
    step_twiml,
    task_attributes,
    whisper_twiml,
)

PUBLIC = "https://gw.example.com"
CALL = "CA" + "a" * 32


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_warm_first_step_plays_hold_then_dials_with_whisper_and_machine_detection() -> None:
    plan = build_plan(mode="warm", number="+15550100", queue="support", fallbacks="queue")
    root = ET.fromstring(step_twiml(plan, 0, public_url=PUBLIC, call_sid=CALL, timeout_s=25))
    assert [child.tag for child in root] == ["Play", "Dial"]
    assert root[0].text == PUBLIC + HOLD_PATH
    dial = root[1]
    assert dial.get("timeout") == "25" and dial.get("method") == "POST"
    assert urlsplit(dial.get("action", "")).path == DIAL_DONE_PATH
    assert _query(dial.get("action", "")) == {"call": [CALL], "step": ["0"]}
    number = dial.find("Number")
    assert number is not None and number.text == "+15550100"
    assert number.get("machineDetection") == "Enable"
    assert urlsplit(number.get("url", "")).path == WHISPER_PATH and _query(number.get("url", ""))["step"] == ["0"]


def test_cold_dial_has_no_whisper_and_sip_targets_use_sip() -> None:
    plan = build_plan(mode="cold", number="sip:agent@pbx.example.com", queue="q", fallbacks="")
    root = ET.fromstring(step_twiml(plan, 0, public_url=PUBLIC, call_sid=CALL, hold_url="https://x/h.mp3"))
    assert [child.tag for child in root] == ["Dial"]
    sip = root[0].find("Sip")
    assert sip is not None and sip.text == "sip:agent@pbx.example.com" and sip.get("url") is None
    assert step_twiml(plan, 1, public_url=PUBLIC, call_sid=CALL).count("<Hangup") == 1  # the give-up step


def test_fallback_dial_does_not_replay_hold_and_uses_its_own_step() -> None:
    plan = build_plan(mode="warm", number="+15550100", queue="q", fallbacks="number", fallback_number="+15550200")
    root = ET.fromstring(step_twiml(plan, 1, public_url=PUBLIC, call_sid=CALL, machine_detection=False))
    assert [child.tag for child in root] == ["Dial"]
    number = root[0].find("Number")
    assert number is not None and number.text == "+15550200" and number.get("machineDetection") is None
    assert _query(root[0].get("action", ""))["step"] == ["1"]


def test_queue_step_with_taskrouter_carries_task_attributes() -> None:
    plan = build_plan(mode="cold", number="", queue="support")
    attrs = task_attributes({"escalation_id": "E1", "call_id": CALL, "trigger": "sentiment", "reason": "angry",
                             "summary": "Issue: late order.", "caller_mood": "angry", "score": 0.9,
                             "tools": [{"name": "lookup_order", "result": {"status": "late"}}]}, language="en-US")
    workflow = "WW" + "b" * 32
    root = ET.fromstring(step_twiml(plan, 0, public_url=PUBLIC, call_sid=CALL, workflow_sid=workflow,
                                    task_attributes=attrs))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.get("workflowSid") == workflow
    task = enqueue.find("Task")
    assert task is not None
    decoded = json.loads(task.text or "")
    assert decoded["escalation_id"] == "E1" and decoded["summary"] == "Issue: late order."
    assert decoded["sentiment"]["mood"] == "angry" and decoded["language"] == "en-US"
    assert decoded["tool_results"] == [{"tool": "lookup_order", "ok": True, "result": {"status": "late"}}]
    plain = ET.fromstring(step_twiml(plan, 0, public_url=PUBLIC, call_sid=CALL)).find("Enqueue")
    assert plain is not None and plain.text == "support" and plain.get("workflowSid") is None


def test_task_attributes_are_bounded() -> None:
    payload = {"escalation_id": "E1", "call_id": CALL, "summary": "s" * 10_000, "reason": "r" * 5000,
               "tools": [{"name": f"tool{i}", "result": "x" * 500} for i in range(40)]}
    text = task_attributes(payload, language="en-US")
    assert len(text.encode()) <= TASK_ATTRIBUTES_MAX_BYTES
    decoded = json.loads(text)
    assert decoded["escalation_id"] == "E1" and decoded["tool_results_dropped"] is True


def test_whisper_says_the_briefing_in_the_calls_language_or_hangs_up_on_a_machine() -> None:
    briefing = AgentBriefing("Transfer from the voice assistant. Reason: x.", "ja-JP", "E1")
    say = ET.fromstring(whisper_twiml(briefing, voice="Polly.Mizuki")).find("Say")
    assert say is not None and say.text == briefing.text
    assert say.get("language") == "ja-JP" and say.get("voice") == "Polly.Mizuki"
    assert [c.tag for c in ET.fromstring(whisper_twiml(briefing, machine=True))] == ["Hangup"]
    assert list(ET.fromstring(whisper_twiml(None))) == []  # no record: connected without a briefing


def test_bot_step_is_left_to_the_route() -> None:
    plan = build_plan(mode="warm", number="+15550100", queue="q", fallbacks="bot")
    with pytest.raises(ValueError, match="route"):
        step_twiml(plan, 1, public_url=PUBLIC, call_sid=CALL)


def test_conference_variant_markup() -> None:
    from service.providers.twilio.transfer import (
        AGENT_PATH,
        AGENT_STATUS_PATH,
        HOLD_TWIML_PATH,
        agent_call_form,
        agent_join_twiml,
        caller_conference_twiml,
        hold_twiml,
    )

    room = ET.fromstring(caller_conference_twiml(PUBLIC, CALL)).find("Dial/Conference")
    assert room is not None and room.text == f"callbridge-{CALL}"
    assert room.get("startConferenceOnEnter") == "false" and room.get("endConferenceOnExit") == "true"
    assert room.get("waitUrl") == PUBLIC + HOLD_TWIML_PATH and room.get("beep") == "false"
    play = ET.fromstring(hold_twiml("https://cdn.example.com/hold.mp3")).find("Play")
    assert play is not None and play.get("loop") == "0" and play.text == "https://cdn.example.com/hold.mp3"
    form = agent_call_form(to="+15550100", from_="+15557654321", public_url=PUBLIC, call_sid=CALL, step=1,
                           timeout_s=15, machine_detection=True)
    assert urlsplit(form["Url"]).path == AGENT_PATH and _query(form["Url"]) == {"call": [CALL], "step": ["1"]}
    assert urlsplit(form["StatusCallback"]).path == AGENT_STATUS_PATH and form["Timeout"] == "15"
    assert form["MachineDetection"] == "Enable" and form["From"] == "+15557654321"
    assert "MachineDetection" not in agent_call_form(to="+1", from_="+2", public_url=PUBLIC, call_sid=CALL, step=0,
                                                     timeout_s=15, machine_detection=False)
    joined = ET.fromstring(agent_join_twiml(AgentBriefing("Brief.", "en-US"), call_sid=CALL))
    assert [c.tag for c in joined] == ["Say", "Dial"]
    agent_room = joined.find("Dial/Conference")
    assert agent_room is not None and agent_room.text == f"callbridge-{CALL}"
    assert agent_room.get("startConferenceOnEnter") == "true"
    assert [c.tag for c in ET.fromstring(agent_join_twiml(None, call_sid=CALL, machine=True))] == ["Hangup"]
