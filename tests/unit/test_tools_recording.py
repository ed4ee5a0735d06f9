"""What a business tool call leaves behind (docs/tools.md, "What is recorded"), and the embedded
engine's side of a tool call: the redacted entry, the escalation record's ``tool_calls``, the
transcript role ``tool``, and the scripted agent calling ``lookup_order`` and reading its result."""

from __future__ import annotations

import json

from service.escalation.policy import Decision
from service.escalation.record import build_record
from service.realtime.local.dialogue import Dialogue, load_script
from service.state.model import TranscriptTurn
from service.tools.percall import tool_entry
from service.tools.runner import ToolResult


def test_the_entry_is_redacted_and_bounded() -> None:
    result = ToolResult("lookup_order", "ok", "{}", arguments={"order_number": "A-1", "email": "jo@example.com"},
                        result={"card": "4111 1111 1111 1111", "notes": ["call +1 415 555 0100"] * 500, "status": "shipped"},
                        latency_s=0.25, attempts=1)
    entry = tool_entry(result)
    text = json.dumps(entry)
    assert "jo@example.com" not in text and "4111 1111 1111 1111" not in text and "415 555 0100" not in text
    assert entry["result"]["status"] == "shipped" and len(entry["result"]["notes"]) == 100
    assert entry["latency_ms"] == 250.0 and entry["outcome"] == "ok" and "error" not in entry
    failed = tool_entry(ToolResult("lookup_order", "timeout", "{}", arguments={}, detail="no answer within 5 s"))
    assert failed["error"] == "no answer within 5 s" and "result" not in failed


class _Call:
    def __init__(self) -> None:
        self.call_id = "CA1"
        self.info = {"from": "+15551234567", "to": "+15557654321", "provider": "twilio"}

    def recent_transcript(self, n: int) -> list[TranscriptTurn]:
        return [TranscriptTurn("caller", "where is my order", 1.0, 1),
                TranscriptTurn("tool", '{"tool":"lookup_order","outcome":"ok"}', 2.0, 2),
                TranscriptTurn("bot", "It has shipped.", 3.0, 3)]

    def recent_sentiment(self) -> list[object]:
        return []


def test_the_escalation_record_carries_the_tool_calls_only_when_there_were_some() -> None:
    decision = Decision(trigger="explicit_request", reason="asked", score=0.5, inputs={}, caller_mood="calm",
                        decided_at=10.0)
    entry = {"tool": "lookup_order", "outcome": "ok", "latency_ms": 12.0, "arguments": {}, "result": {"s": "x"}}
    with_tools = json.loads(build_record(_Call(), decision, tool_calls=[entry]).body)  # type: ignore[arg-type]
    assert with_tools["tool_calls"] == [entry]
    assert "Turns seen: 1 caller, 1 bot." in with_tools["summary"]  # a tool turn is neither
    without = json.loads(build_record(_Call(), decision).body)  # type: ignore[arg-type]
    assert "tool_calls" not in without


def test_a_tool_turn_survives_the_redis_round_trip() -> None:
    turn = TranscriptTurn("tool", '{"tool":"lookup_order"}', 1.0, 3)
    assert TranscriptTurn.from_json(turn.to_json()) == turn
    assert TranscriptTurn.from_json('{"role": "other", "text": "x", "ts": 1}').role == "caller"


def test_the_scripted_agent_calls_the_declared_tool_and_reads_the_result() -> None:
    dialogue = Dialogue.create(load_script())
    tools = frozenset({"escalate_to_human", "lookup_order"})
    reply = dialogue.respond("where is my order four five six seven", tools=tools)
    assert reply.tool == ("lookup_order", {"order_number": "4567"})
    assert reply.text == "One moment, let me look up order four five six seven."
    answer = dialogue.tool_result(json.dumps({"ok": True, "result": {"status": "delayed", "delivery": "on Monday"}}))
    assert answer.text == "Order four five six seven is delayed. It should arrive on Monday."
    dialogue.respond("where is my order four five six seven", tools=tools)
    failed = dialogue.tool_result(json.dumps({"ok": False, "error": "the system did not answer in time"}))
    assert failed.intent == "tool_failed" and "couldn't check" in failed.text


def test_without_the_tool_declared_the_script_answers_itself() -> None:
    reply = Dialogue.create(load_script()).respond("where is my order four five six seven",
                                                    tools=frozenset({"escalate_to_human"}))
    assert reply.tool is None and "has shipped" in reply.text
