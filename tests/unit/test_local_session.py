"""``LocalSession`` as a pure state machine: a whole scripted conversation, every emitted event
validated against the openai package's GA server event union (docs/models/realtime.md#client-events to #function-calling).

The recogniser and the voice are replaced by a small runner that executes the session's commands
synchronously: the recogniser returns the words the test says the caller spoke, the voice returns a
tone whose length follows the text. The real parts are covered in tests/integration.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from service.realtime.local.asr import AsrResult
from service.realtime.local.dialogue import IntentMatcher, load_script
from service.realtime.local.dsp import float_to_pcm16
from service.realtime.local.models import LocalModels
from service.realtime.local.session import (
    AsrAbort,
    AsrFeed,
    AsrFinish,
    LocalSession,
    StopSynthesis,
    Synthesize,
)

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
TOOL = {"type": "function", "name": "escalate_to_human", "description": "hand off",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}


def buzz(ms: int, amp: float = 0.3) -> bytes:
    """Voiced-sounding 24 kHz PCM16 (a harmonic buzz, amplitude-modulated like syllables)."""
    t = np.arange(24 * ms) / 24000
    x = sum(amp / k * np.sin(2 * np.pi * 130 * k * t) for k in range(1, 25)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return float_to_pcm16(np.asarray(x, dtype=np.float32))


class Runner:
    """Drives a LocalSession: validates events, executes commands synchronously."""

    def __init__(self, session: LocalSession) -> None:
        self.s = session
        self.events: list[dict[str, Any]] = []
        self.spoken: list[str] = []  # what the fake recogniser returns, in utterance order
        self.fed: dict[int, int] = {}
        self.defer_audio = False
        self.pending_speech: list[Synthesize] = []
        self.run(session.start())

    def run(self, outputs: list[Any]) -> None:
        finishes: list[AsrFinish] = []  # like the adapter: results arrive after the current batch
        for out in outputs:
            if isinstance(out, dict):
                SERVER_EVENT.validate_python(out)
                json.dumps(out)
                self.events.append(out)
            elif isinstance(out, AsrFeed):
                self.fed[out.utterance] = self.fed.get(out.utterance, 0) + len(out.pcm16k)
            elif isinstance(out, AsrFinish):
                finishes.append(out)
            elif isinstance(out, Synthesize):
                if self.defer_audio:
                    self.pending_speech.append(out)
                else:
                    self.speak(out)
            elif isinstance(out, AsrAbort | StopSynthesis):
                pass
        for finish in finishes:
            text = self.spoken.pop(0) if self.spoken else ""
            self.run(self.s.on_transcript(finish.utterance, AsrResult(text, 0.9 if text else 0.0, 100)))

    def speak(self, job: Synthesize, sentences: int | None = None) -> None:
        for sentence in job.sentences[:sentences]:
            ms = 60 * len(sentence.split())
            self.run(self.s.on_audio(job.response_id, sentence, buzz(ms, 0.1)))
        if sentences is None:
            self.run(self.s.on_audio_done(job.response_id))

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        before = len(self.events)
        self.run(self.s.handle_text(json.dumps(event)))
        return self.events[before:]

    def caller(self, text: str, speech_ms: int = 900, silence_ms: int = 700) -> list[dict[str, Any]]:
        self.spoken.append(text)
        before = len(self.events)
        audio = b"\0" * 48 * 600 + buzz(speech_ms) + b"\0" * 48 * silence_ms
        for i in range(0, len(audio), 960):
            self.run(self.s.append_audio(audio[i:i + 960]))
        return self.events[before:]

    def types(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.events if events is None else events)]


@pytest.fixture(scope="module")
def models() -> LocalModels:
    script = load_script()
    return LocalModels(script=script, matcher=IntentMatcher(script.intents), asr=None, recogniser=None,  # type: ignore[arg-type]
                       tts=None)  # type: ignore[arg-type]


@pytest.fixture
def r(models: LocalModels) -> Runner:
    runner = Runner(LocalSession(models))
    update = runner.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Your name is Robin. You work for Northwind.",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}}, "tools": [TOOL]}})
    assert runner.types(update) == ["session.updated"]
    return runner


def test_greeting_uses_persona_and_follows_the_ga_event_order(r: Runner) -> None:
    events = r.send({"type": "response.create"})
    assert r.types(events)[:4] == ["response.created", "response.output_item.added", "conversation.item.added",
                                   "response.content_part.added"]
    assert r.types(events)[-6:] == ["response.output_audio.done", "response.output_audio_transcript.done",
                                    "response.content_part.done", "response.output_item.done",
                                    "conversation.item.done", "response.done"]
    done = events[-1]["response"]
    text = done["output"][0]["content"][0]["transcript"]
    assert "Robin" in text and "Northwind" in text
    # Transcript deltas concatenate to the final transcript; audio tokens follow the audio length.
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert deltas == text
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert done["usage"]["output_token_details"]["audio_tokens"] == len(audio) // 48 // 50
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]


def test_spoken_turn_events_times_and_reply(r: Runner) -> None:
    events = r.caller("where is my order")
    types = r.types(events)
    expected = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
                "response.created", "conversation.item.input_audio_transcription.completed",
                "response.output_item.added"]
    assert types[:len(expected)] == expected
    started, stopped = events[0], events[1]
    assert 280 <= started["audio_start_ms"] <= 360  # speech from 600 ms, minus 300 ms prefix padding
    assert started["item_id"] == stopped["item_id"] == events[2]["item_id"]
    assert 1500 + 480 <= stopped["audio_end_ms"] <= 1500 + 560  # speech end + 500 ms silence (20 ms frames)
    done = events[-1]["response"]
    assert "order number" in done["output"][0]["content"][0]["transcript"]
    assert done["usage"]["input_token_details"]["audio_tokens"] == (stopped["audio_end_ms"] - started["audio_start_ms"]) // 100
    # Slot filling by text, then the answer reads the number back.
    r.send({"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "4 5 6 7"}]}})
    events = r.send({"type": "response.create"})
    assert "four five six seven" in events[-1]["response"]["output"][0]["content"][0]["transcript"]


def test_speech_during_a_reply_cancels_it_and_truncate_keeps_what_was_heard(r: Runner) -> None:
    r.defer_audio = True
    r.send({"type": "response.create"})
    job = r.pending_speech.pop()
    r.speak(job, sentences=2)  # two sentences generated, the third not yet
    item_id = r.events[-1]["item_id"]
    events = r.caller("what are your opening hours")
    types = r.types(events)
    assert types[0] == "input_audio_buffer.speech_started"
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["id"] == job.response_id
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert done["response"]["output"][0]["status"] == "incomplete"
    assert types.index("response.done") < types.index("input_audio_buffer.speech_stopped")
    # Late audio for the cancelled response is ignored.
    assert r.s.on_audio(job.response_id, "late", buzz(100)) == []
    generated = done["response"]["output"][0]["content"][0]["transcript"]
    total_ms = 60 * len(generated.split())
    t = r.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                "audio_end_ms": total_ms // 2})
    assert r.types(t) == ["conversation.item.truncated"]
    kept = r.send({"type": "conversation.item.retrieve", "item_id": item_id})[0]["item"]["content"][0]["transcript"]
    assert kept.split() == generated.split()[:round(len(generated.split()) / 2)]
    err = r.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                  "audio_end_ms": total_ms, "event_id": "x1"})
    assert err[0]["type"] == "error" and err[0]["error"]["event_id"] == "x1"
    assert "already shorter" in err[0]["error"]["message"]


def test_escalation_tool_call_then_function_output_then_handoff_line(r: Runner) -> None:
    events = r.caller("i want to speak to a human")
    call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "escalate_to_human"
    assert json.loads(call["arguments"]) == {"reason": "caller asked for a human agent", "caller_mood": "neutral"}
    assert r.types(events)[-1] == "response.done"
    r.send({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "queued"}})
    events = r.send({"type": "response.create"})
    said = events[-1]["response"]["output"][0]["content"][0]["transcript"]
    assert said == r.s.models.script.handoff


def test_angry_caller_escalates_with_mood_and_no_tool_means_spoken_handoff(models: LocalModels) -> None:
    with_tool = Runner(LocalSession(models))
    with_tool.send({"type": "session.update", "session": {"type": "realtime", "tools": [TOOL]}})
    events = with_tool.caller("this is ridiculous")
    call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(call["arguments"])["caller_mood"] == "angry"
    without = Runner(LocalSession(models))
    events = without.caller("this is ridiculous")
    assert "response.function_call_arguments.done" not in without.types(events)
    assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == models.script.handoff


def test_client_errors_are_error_events_and_leave_the_session_working(r: Runner) -> None:
    bad = r.s.handle_text("{nope")
    assert bad[0]["type"] == "error" and bad[0]["error"]["code"] == "invalid_json"  # type: ignore[index]
    assert r.send({"type": "bogus", "event_id": "a"})[0]["error"]["code"] == "invalid_value"
    assert r.send({"type": "response.cancel"})[0]["error"]["code"] == "response_cancel_not_active"
    assert r.send({"type": "input_audio_buffer.commit"})[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    assert r.send({"type": "conversation.item.truncate", "item_id": "nope", "audio_end_ms": 1})[0]["type"] == "error"
    r.defer_audio = True
    r.send({"type": "response.create"})
    busy = r.send({"type": "response.create", "event_id": "b"})
    assert busy[0]["error"]["code"] == "conversation_already_has_active_response"
    cancel = r.send({"type": "response.cancel"})
    assert cancel[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    before = json.dumps(r.s.session)
    for session in ({"instructions": "x"}, {"type": "realtime", "bogus": 1},
                    {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
                    {"type": "realtime", "audio": {"output": {"speed": 9}}}):
        assert r.send({"type": "session.update", "session": session})[0]["type"] == "error"
    assert json.dumps(r.s.session) == before  # rejected updates change nothing


def test_manual_commit_without_vad_and_g711_formats(models: LocalModels) -> None:
    r = Runner(LocalSession(models))
    r.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}}}}})
    r.spoken.append("what are your hours")
    from service.audio import pcm16_bytes_to_ulaw
    mulaw = pcm16_bytes_to_ulaw(buzz(600)[::3])  # crude 8 kHz; the format path is what is tested
    r.run(r.s.append_audio(mulaw))
    assert "input_audio_buffer.speech_started" not in r.types()
    events = r.send({"type": "input_audio_buffer.commit"})
    assert r.types(events)[:3] == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert sum(r.fed.values()) == pytest.approx(600 * 32, abs=64)  # 8 kHz input reached the recogniser at 16 kHz
    events = r.send({"type": "response.create"})
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    transcript = events[-1]["response"]["output"][0]["content"][0]["transcript"]
    assert "open" in transcript.lower()
    assert len(audio) == pytest.approx(8 * 60 * sum(len(s.split()) for s in transcript.split(". ")), rel=0.05)
