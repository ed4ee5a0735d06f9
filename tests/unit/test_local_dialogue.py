"""The scripted agent: script validation, intent matching, slot filling, fallback and hand-off."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.realtime.local.dialogue import (
    Dialogue,
    ScriptError,
    extract_digits,
    line_from_instructions,
    load_script,
    persona_from_instructions,
)

TOOLS = frozenset({"escalate_to_human"})


@pytest.fixture
def d() -> Dialogue:
    return Dialogue.create(load_script())


def test_bundled_script_loads_and_yaml_booleans_become_words() -> None:
    script = load_script()
    names = [i.name for i in script.intents]
    assert "yes" in names and "no" in names  # bare yes/no in YAML are booleans; the loader fixes that
    assert len(script.caller_phrases()) > 60


@pytest.mark.parametrize(("body", "fragment"), [
    ("greeting: [unclosed", "not valid YAML"),
    ("- a list", "top level must be a mapping"),
    ("greeting: hi\nfallback: [x]\nhandoff: h\ngoodbye: g\nintents: []", "intents"),
    ("greeting: hi\nfallback: [x]\nhandoff: h\ngoodbye: g\nintents:\n  - name: a\n    examples: [x]\n    reply: r\n"
     "    needs: pin", "unknown slot 'pin'"),
    ("greeting: hi\nfallback: [x]\nhandoff: h\ngoodbye: g\nintents:\n  - name: a\n    examples: [x]", "needs `reply`"),
    ("greeting: hi\nfallback: [x]\nhandoff: h\ngoodbye: g\ncolour: red\nintents:\n  - name: a\n    examples: [x]\n"
     "    reply: r", "colour"),
])
def test_invalid_scripts_fail_with_a_clear_message(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    with pytest.raises(ScriptError, match="cannot read"):
        load_script(tmp_path / "missing.yaml")


def test_order_status_asks_for_the_number_then_reads_it_back(d: Dialogue) -> None:
    assert d.respond("where is my order", 0.9).text == d.fill(d.script.slots["order_number"].ask)
    assert d.respond("uh the weather", 0.9).text == d.script.slots["order_number"].retry
    reply = d.respond("it's four five six seven", 0.9)
    assert reply.intent == "order_status" and "four five six seven" in reply.text


def test_number_given_up_front_and_paraphrases_match(d: Dialogue) -> None:
    assert "one two three four" in d.respond("my order number is one two three four", 0.9).text
    assert d.respond("when do you open on saturday", 0.9).intent == "hours"
    assert d.respond("i need to talk to somebody", 0.9, TOOLS).intent == "human"


def test_low_confidence_or_off_script_takes_fallbacks_then_offers_handoff(d: Dialogue) -> None:
    lines = d.script.fallback
    assert d.respond("where is my order", 0.1).text == lines[0]  # confidence below min_confidence
    assert d.respond("the weather is nice today", 0.9).text == lines[1]
    assert d.respond("purple monkey dishwasher", 0.9).text == lines[2]
    reply = d.respond("yes", 0.9, TOOLS)
    assert reply.tool == ("escalate_to_human", {"reason": "caller could not be understood", "caller_mood": "neutral"})


def test_escalation_with_and_without_the_tool(d: Dialogue) -> None:
    reply = d.respond("I want to speak to a human", 0.9, TOOLS)
    assert reply.text == "" and reply.tool == ("escalate_to_human",
                                               {"reason": "caller asked for a human agent", "caller_mood": "neutral"})
    angry = d.respond("this is the third time I'm calling", 0.9, TOOLS)
    assert angry.tool is not None and angry.tool[1]["caller_mood"] == "angry"
    spoken = d.respond("let me speak to an agent", 0.9, frozenset())
    assert spoken.tool is None and spoken.text == d.handoff_line()
    assert d.respond("goodbye", 0.9).end_call


def test_persona_and_instruction_lines() -> None:
    script = load_script()
    p = persona_from_instructions('You are Maya, an agent for Contoso Telecom. Greet the caller with "Hi, Maya here."',
                                  script)
    assert (p.agent, p.company, p.greeting) == ("Maya", "Contoso Telecom", "Hi, Maya here.")
    assert persona_from_instructions("You are a helpful assistant.", script).agent == script.agent
    assert line_from_instructions('Tell the caller: "Please hold."') == "Please hold."
    assert line_from_instructions("Say exactly: One moment please.") == "One moment please."
    assert line_from_instructions("") is None
    assert extract_digits("four oh two nine".split()) == "4029"
    assert extract_digits("oh no".split()) == ""
