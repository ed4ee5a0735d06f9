"""Unit tests of the GPT-Live dialect (service.realtime.live): every client event it builds is
validated against ``openai.types.live.ClientEvent`` and checked for unknown fields; every server
event type of ``openai.types.live.ServerEvent`` parses (built as SDK-valid dicts first); the turn
translation (bot turns from non-silent output, yield, caller turns from transcript timing,
escalation by backend call or trigger, usage) and the session state machine; random input only
ever raises the dialect's error."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.live import ServerEvent as SdkServerEvent

from service.call.machine import InvalidTransition
from service.realtime.events import (
    AudioDelta,
    EventGroup,
    FunctionCallArgumentsDone,
    FunctionTool,
    InputTranscriptionCompleted,
    OtherEvent,
    OutputYielded,
    RealtimeError,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    SessionUpdated,
    TranscriptDone,
)
from service.realtime.live import (
    LIVE_EVENTS,
    LIVE_TRANSITIONS,
    LiveDialect,
    LiveOptions,
    LiveProtocolError,
    LiveState,
)
from tests.standins.live_types import client_event_problem, server_event_problem

TOOL = FunctionTool("escalate_to_human", "Transfer the caller to a human.",
                    {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]})
CONFIG = SessionConfig(instructions="You are a support agent.", voice="marin", tools=(TOOL,))
SPEECH = (np.sin(np.arange(2400) * 2 * np.pi * 440 / 24000) * 8000).astype("<i2").tobytes()  # 100 ms
SILENCE = bytes(4800)


def events(result: ServerEvent) -> list[ServerEvent]:
    return list(result.events) if isinstance(result, EventGroup) else [result]


def checked(text: str) -> dict[str, Any]:
    event = json.loads(text)
    assert client_event_problem(event) is None, client_event_problem(event)
    return event


def started(dialect: LiveDialect, **session: Any) -> None:
    checked(dialect.session_update(CONFIG))
    dialect.parse(server({"type": "session.started", "event_id": "e1", "session": {
        "id": "live_1", "expires_at": 1_900_000_000, "model": "gpt-live-1", "status": "active", **session}}))


def server(event: dict[str, Any]) -> str:
    assert server_event_problem(event) is None, server_event_problem(event)
    return json.dumps(event)


def audio(pcm: bytes) -> str:
    return server({"type": "session.output_audio.delta", "delta": base64.b64encode(pcm).decode()})


# --- client events --------------------------------------------------------------------------------

@pytest.mark.parametrize("escalation", ["responses", "trigger", "off"])
@pytest.mark.parametrize("fmt", ["pcm16", "pcmu"])
def test_session_start_is_valid_and_strict(escalation: Any, fmt: Any) -> None:
    dialect = LiveDialect(LiveOptions(escalation=escalation, audio_format=fmt))
    dialect.history = [("caller", "Where is my order?"), ("assistant", "Let me check.")]
    event = checked(dialect.session_update(CONFIG))
    session = event["session"]
    assert event["type"] == "session.start" and session["model"] == "gpt-live-1"
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["format"] == ({"type": "audio/pcmu", "rate": 8000} if fmt == "pcmu"
                                          else {"type": "audio/pcm", "rate": 24000})
    assert [m["role"] for m in session["input"]] == ["user", "assistant"]
    assert session["delegation"]["type"] == ("responses" if escalation == "responses" else "client")
    if escalation == "responses":
        assert session["delegation"]["responses"]["tools"][0]["name"] == "escalate_to_human"
    assert ("triggers" in session) == (escalation == "trigger")
    assert dialect.state is LiveState.STARTING


def test_every_client_event_is_valid() -> None:
    dialect = LiveDialect()
    started(dialect)
    built = [
        dialect.audio_append(SPEECH), dialect.audio_append_b64(base64.b64encode(SILENCE).decode()),
        dialect.response_create(None), dialect.response_create("Say goodbye."), dialect.user_text_item("pressed 1"),
        dialect.system_text_item("Be brief."), dialect.function_call_output("call_1", '{"ok":true}'),
        dialect.backend_continue(), dialect.session_close(),
    ]
    kinds = [checked(text)["type"] for text in built]
    assert kinds == ["session.input_audio.append", "session.input_audio.append", "session.commentary.append",
                     "session.commentary.append", "session.thinking.append", "session.instructions.append",
                     "response.item.create", "response.create", "session.close"]
    ids = [json.loads(text).get("event_id") for text in built[2:]]
    assert len(set(ids)) == len(ids) and all(ids)  # acks and errors can be matched to their cause


def test_appends_are_capped_and_unsupported_turn_events_raise() -> None:
    dialect = LiveDialect()
    started(dialect)
    assert len(json.loads(dialect.response_create("x" * 10_000))["content"]) <= 1500
    for build in (lambda: dialect.response_cancel("r"), lambda: dialect.item_truncate("i", 10),
                  dialect.input_audio_clear):
        with pytest.raises(NotImplementedError):
            build()


def test_client_events_before_start_raise() -> None:
    dialect = LiveDialect()
    with pytest.raises(InvalidTransition):
        dialect.response_create(None)
    with pytest.raises(InvalidTransition):
        dialect.session_close()


# --- the session state machine --------------------------------------------------------------------

def test_state_table_is_total_and_raises() -> None:
    for state in LiveState:
        for event in LIVE_EVENTS:
            machine = LiveDialect().machine
            machine.state = state
            if (state, event) in LIVE_TRANSITIONS:
                assert machine.fire(event) is LIVE_TRANSITIONS[(state, event)]
            else:
                with pytest.raises(InvalidTransition):
                    machine.fire(event)


def test_stream_events_before_started_are_protocol_errors() -> None:
    dialect = LiveDialect()
    with pytest.raises(LiveProtocolError, match="not valid in session state"):
        dialect.parse(audio(SPEECH))
    checked(dialect.session_update(CONFIG))
    with pytest.raises(LiveProtocolError, match="not valid in session state"):
        dialect.parse(audio(SPEECH))
    assert isinstance(dialect.parse(server({"type": "error", "event_id": "e", "error": {
        "type": "invalid_request_error", "code": "model_not_found", "message": "no", "client_event_id": "cb_1"}})),
        RealtimeError)


def test_started_twice_is_an_error_and_a_new_start_resets() -> None:
    dialect = LiveDialect()
    started(dialect)
    assert dialect.session_id == "live_1" and dialect.expires_at == 1_900_000_000
    with pytest.raises(LiveProtocolError):
        dialect.parse(server({"type": "session.started", "event_id": "e2", "session": {
            "id": "live_2", "expires_at": 1, "model": "gpt-live-1", "status": "active"}}))
    dialect.parse(audio(SPEECH))
    assert dialect.bot_speaking
    started(dialect)  # replacement session on the same instance
    assert not dialect.bot_speaking and dialect.session_id == "live_1"


# --- server events --------------------------------------------------------------------------------

DECISION_USAGE = {"input_tokens": 50, "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
                  "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 51}
SESSION = {"id": "live_1", "expires_at": 1, "model": "gpt-live-1", "status": "active"}
EVERY_SERVER_EVENT: list[dict[str, Any]] = [
    {"type": "session.updated", "event_id": "e", "session": SESSION},
    {"type": "session.input_audio.muted", "event_id": "e"},
    {"type": "session.input_audio.unmuted", "event_id": "e"},
    {"type": "session.output_audio.fixture.playing", "event_id": "e"},
    {"type": "session.output_audio.fixture.played", "event_id": "e"},
    {"type": "session.instructions.appended", "event_id": "e", "start_ms": 1, "end_ms": 2},
    {"type": "session.thinking.appended", "event_id": "e", "start_ms": 1, "end_ms": 2},
    {"type": "session.commentary.appended", "event_id": "e", "start_ms": 1, "end_ms": 2, "client_event_id": "cb_3"},
    {"type": "session.input_audio.append", "audio": "AAAA"},
    {"type": "session.output_audio.delta", "delta": base64.b64encode(SILENCE).decode()},
    {"type": "session.input_transcript.delta", "event_id": "e", "delta": "hi", "start_ms": 0, "end_ms": 200},
    {"type": "session.output_transcript.delta", "event_id": "e", "delta": "hello", "start_ms": 0, "end_ms": 200},
    {"type": "session.delegation.created", "event_id": "e", "offset_ms": 5,
     "delegation": {"id": "item_1", "type": "delegation", "target": "client"}},
    {"type": "decision.event", "event_id": "e", "event": {"type": "decision.completed", "decision": {
        "model": "m", "usage": DECISION_USAGE, "answers": [{"type": "predicate", "name": "other", "probability": 0.2}]}}},
    {"type": "decision.item.created", "event_id": "e", "item": {"type": "message", "role": "user", "id": "di_1",
                                                               "content": [{"type": "input_text", "text": "x"}]}},
    {"type": "decision.item.deleted", "event_id": "e", "item_id": "i"},
    {"type": "response.event", "event_id": "e", "delegation_id": "item_1",
     "event": {"type": "response.output_text.delta", "delta": "x", "item_id": "i", "output_index": 0,
               "content_index": 0, "sequence_number": 1, "logprobs": []}},
    {"type": "session.usage.updated", "event_id": "e", "usage": {"seconds": 15}},
    {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error", "code": "c", "message": "m"}},
    {"type": "info", "event_id": "e", "code": "c", "message": "m"},
    {"type": "transport.dtmf.received", "event_id": "e", "event": "1"},
    {"type": "transport.dtmf.sent", "event_id": "e", "event": "1"},
    {"type": "transport.dtmf.send", "event_id": "e", "event": "1"},
    {"type": "transport.ringing", "event_id": "e", "session_id": "s"},
    {"type": "transport.answered", "event_id": "e", "session_id": "s"},
    {"type": "transport.failed", "event_id": "e", "session_id": "s", "error": {"type": "call_error", "code": "c", "message": "m"}},
    {"type": "session.closed", "event_id": "e", "reason": "expired", "session": SESSION, "usage": {"seconds": 20}},
]


def test_every_sdk_server_event_type_is_covered_and_parses() -> None:
    members = typing.get_args(typing.get_args(SdkServerEvent)[0])
    sdk_types = {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}
    covered = {e["type"] for e in EVERY_SERVER_EVENT} | {"session.started"}
    assert sdk_types == covered
    dialect = LiveDialect()
    started(dialect)
    for event in EVERY_SERVER_EVENT:
        result = dialect.parse(server(event))
        assert all(not isinstance(e, AudioDelta) for e in events(result))
    assert dialect.state is LiveState.CLOSED


@pytest.mark.parametrize(("event", "match"), [
    ({"type": "session.output_audio.delta", "delta": "not base64!"}, "base64"),
    ({"type": "session.output_audio.delta"}, "'delta' must be a string"),
    ({"type": "session.input_transcript.delta", "delta": "x", "start_ms": "0", "end_ms": 1}, "'start_ms'"),
    ({"type": "session.usage.updated", "usage": {"seconds": True}}, "'seconds'"),
    ({"type": "error", "error": {"code": "x"}}, "'type'"),
    ({"type": "response.event", "event": []}, "'event' must be an object"),
])
def test_malformed_events_raise_clear_errors(event: dict[str, Any], match: str) -> None:
    dialect = LiveDialect()
    started(dialect)
    with pytest.raises(LiveProtocolError, match=match):
        dialect.parse(json.dumps(event))


# --- translation into the neutral turn events -----------------------------------------------------

def test_bot_turn_from_non_silent_output_with_transcript() -> None:
    dialect = LiveDialect()
    started(dialect)
    assert isinstance(dialect.parse(audio(SILENCE)), OtherEvent)  # silence is never audio
    first = events(dialect.parse(audio(SPEECH)))
    assert isinstance(first[0], ResponseCreated) and isinstance(first[1], AudioDelta)
    assert first[1].audio == SPEECH and first[1].response_id == first[0].response_id
    dialect.parse(server({"type": "session.output_transcript.delta", "event_id": "e", "delta": "Hello there.",
                          "start_ms": 0, "end_ms": 200}))
    assert isinstance(dialect.parse(audio(SPEECH)), AudioDelta)
    assert isinstance(dialect.parse(audio(SILENCE)), OtherEvent)  # 100 ms: still the same turn
    dialect.parse(audio(SILENCE))
    end = events(dialect.parse(audio(SILENCE)))  # 300 ms of silence ends it
    assert isinstance(end[0], TranscriptDone) and end[0].transcript == "Hello there."
    assert isinstance(end[1], ResponseDone) and end[1].status == "completed"
    assert end[1].response_id == first[0].response_id and not dialect.bot_speaking


def test_output_turning_silent_while_the_caller_is_loud_is_a_yield() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(audio(SPEECH))
    dialect.audio_append(SPEECH[:960])  # 20 ms of loud caller audio while the bot speaks
    dialect.parse(audio(SPEECH))  # ... and the bot still spoke after that
    out = events(dialect.parse(audio(SILENCE)))
    assert isinstance(out[0], OutputYielded)
    assert isinstance(out[-1], ResponseDone) and out[-1].status == "cancelled"


def test_caller_starting_as_the_bot_ends_is_not_a_yield() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(audio(SPEECH))
    dialect.audio_append(SPEECH[:960])  # loud only after the last non-silent delta
    assert isinstance(dialect.parse(audio(SILENCE)), OtherEvent)


def test_quiet_caller_does_not_make_a_yield() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(audio(SPEECH))
    dialect.audio_append((np.frombuffer(SPEECH[:960], "<i2") // 40).astype("<i2").tobytes())  # -40 dB
    assert isinstance(dialect.parse(audio(SILENCE)), OtherEvent)


def test_pcmu_silence_and_level() -> None:
    dialect = LiveDialect(LiveOptions(audio_format="pcmu"))
    started(dialect)
    assert isinstance(dialect.parse(audio(b"\xff" * 800)), OtherEvent)
    assert isinstance(events(dialect.parse(audio(b"\x20" * 800)))[0], ResponseCreated)
    dialect.audio_append(b"\x10" * 160)  # a loud mu-law frame
    assert dialect.input_ms == 20
    dialect.parse(audio(b"\x20" * 800))
    assert isinstance(events(dialect.parse(audio(b"\xff" * 800)))[0], OutputYielded)


def test_caller_turns_from_transcript_timing() -> None:
    dialect = LiveDialect()
    started(dialect)

    def said(text: str, start: int) -> list[ServerEvent]:
        return events(dialect.parse(server({"type": "session.input_transcript.delta", "event_id": "e",
                                            "delta": text, "start_ms": start, "end_ms": start + 200})))

    assert isinstance(said("Where is", 0)[0], OtherEvent)
    said(" my order?", 200)
    closed = said("Hello?", 2000)  # gap > 800 ms: the first turn is complete
    assert isinstance(closed[0], InputTranscriptionCompleted) and closed[0].transcript == "Where is my order?"
    for _ in range(200):  # 4 s of caller audio with no fragment closes the second turn
        dialect.audio_append(SILENCE[:960])
    out = events(dialect.parse(audio(SILENCE)))
    assert isinstance(out[0], InputTranscriptionCompleted) and out[0].transcript == "Hello?"


def test_escalation_by_backend_function_call() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(server({"type": "session.input_transcript.delta", "event_id": "e", "delta": "A person please",
                          "start_ms": 0, "end_ms": 200}))
    args = json.dumps({"reason": "asked for a person"})
    turn, *call = events(dialect.parse(server({"type": "response.event", "event_id": "e", "delegation_id": "item_D1",
        "event": {"type": "response.output_item.done", "output_index": 0, "sequence_number": 3, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "escalate_to_human",
            "arguments": args, "status": "completed"}}})))
    assert isinstance(turn, InputTranscriptionCompleted) and turn.transcript == "A person please"  # closed first
    assert call == [FunctionCallArgumentsDone("live_backend_item_D1", "call_1", "call_1", "escalate_to_human", args)]
    done = events(dialect.parse(json.dumps({"type": "response.event", "delegation_id": "item_D1",
                                            "event": {"type": "response.completed", "response": {"usage": {}}}})))
    assert isinstance(done[0], ResponseDone) and done[0].response_id == "live_backend_item_D1"
    assert checked(dialect.function_call_output("call_1", '{"status":"transferring"}'))["type"] == "response.item.create"


def test_escalation_by_trigger_above_threshold_only() -> None:
    dialect = LiveDialect(LiveOptions(escalation="trigger", trigger_threshold=0.8))

    def decision(p: float) -> list[ServerEvent]:
        return events(dialect.parse(server({"type": "decision.event", "event_id": "e", "trigger_id": "t1",
            "source_event_type": "session.input_transcript.delta", "event": {"type": "decision.completed",
            "decision": {"model": "m", "usage": DECISION_USAGE,
                         "answers": [{"type": "predicate", "name": "wants_human", "probability": p}]}}})))

    started(dialect)
    assert isinstance(decision(0.5)[0], OtherEvent)
    call, done = decision(0.93)
    assert isinstance(call, FunctionCallArgumentsDone) and call.name == "escalate_to_human"
    assert isinstance(done, ResponseDone) and done.response_id == call.response_id
    assert checked(dialect.function_call_output(call.call_id, "{}"))["type"] == "session.thinking.append"


def test_usage_is_cumulative_seconds_turned_into_increments() -> None:
    dialect = LiveDialect()
    started(dialect)
    seen = []
    for seconds in (15, 15, 30, 42):
        for e in events(dialect.parse(server({"type": "session.usage.updated", "event_id": "e",
                                              "usage": {"seconds": seconds}}))):
            if isinstance(e, ResponseDone):
                seen.append(e.usage["session_seconds"])
    assert seen == [15, 15, 12] and sum(seen) == 42


def test_session_started_yields_session_updated() -> None:
    dialect = LiveDialect()
    checked(dialect.session_update(CONFIG))
    result = dialect.parse(server({"type": "session.started", "event_id": "e", "session": SESSION}))
    assert isinstance(result, SessionUpdated) and dialect.state is LiveState.ACTIVE


# --- fuzz -----------------------------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)
_types = st.sampled_from([e["type"] for e in EVERY_SERVER_EVENT] + ["session.started", "x"])


@settings(max_examples=300, deadline=None)
@given(kind=_types, body=st.dictionaries(st.sampled_from(
    ["delta", "start_ms", "end_ms", "session", "usage", "event", "error", "reason", "delegation", "delegation_id"]),
    _json, max_size=5), raw=st.binary(max_size=40))
def test_random_input_only_raises_the_dialect_error(kind: str, body: dict[str, Any], raw: bytes) -> None:
    dialect = LiveDialect()
    started(dialect)
    for message in (json.dumps({"type": kind, **body}), raw):
        try:
            dialect.parse(message)
        except LiveProtocolError:
            pass


def test_synthetic_dones_wait_for_the_bot_turn_to_end() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(audio(SPEECH))
    for seconds in (2, 4):
        assert isinstance(dialect.parse(server({"type": "session.usage.updated", "event_id": "e",
                                                "usage": {"seconds": seconds}})), OtherEvent)
    for _ in range(2):
        dialect.parse(audio(SILENCE))
    end = events(dialect.parse(audio(SILENCE)))
    assert [type(e) for e in end] == [TranscriptDone, ResponseDone, ResponseDone]
    assert end[1].response_id.startswith("live_turn_") and end[2].usage == {"session_seconds": 4}


def test_bot_text_arriving_before_its_audio_belongs_to_the_next_turn() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(server({"type": "session.output_transcript.delta", "event_id": "e", "delta": "Thank you.",
                          "start_ms": 0, "end_ms": 200}))
    dialect.parse(audio(SPEECH))
    for _ in range(2):
        dialect.parse(audio(SILENCE))
    end = events(dialect.parse(audio(SILENCE)))
    assert isinstance(end[0], TranscriptDone) and end[0].transcript == "Thank you."


def test_an_unfinished_caller_turn_survives_a_replacement_session() -> None:
    dialect = LiveDialect()
    started(dialect)
    dialect.parse(server({"type": "session.input_transcript.delta", "event_id": "e", "delta": "My order",
                          "start_ms": 0, "end_ms": 200}))
    started(dialect)  # the session was lost and replaced
    for _ in range(80):  # 1.6 s of caller audio on the new session
        dialect.audio_append(SILENCE[:960])
    out = events(dialect.parse(audio(SILENCE)))
    assert isinstance(out[0], InputTranscriptionCompleted) and out[0].transcript == "My order"


def test_business_tools_go_to_the_backend_and_their_output_continues_it() -> None:
    lookup = FunctionTool("lookup_order", "Look up an order.", {"type": "object", "properties": {}})
    for escalation, names in (("responses", ["escalate_to_human", "lookup_order"]), ("trigger", ["lookup_order"])):
        dialect = LiveDialect(LiveOptions(escalation=escalation))  # type: ignore[arg-type]
        start = checked(dialect.session_update(SessionConfig(instructions="x", tools=(TOOL, lookup))))
        assert [t["name"] for t in start["session"]["delegation"]["responses"]["tools"]] == names
        assert "lookup_order" in start["session"]["instructions"]
    started(dialect)
    checked(dialect.function_call_output("call_9", '{"status":"shipped"}'))
    assert checked(dialect.response_create(None))["type"] == "response.create"  # the backend answers
    assert checked(dialect.response_create(None))["type"] == "session.commentary.append"  # once only
    only_escalation = LiveDialect(LiveOptions(escalation="off"))
    assert checked(only_escalation.session_update(CONFIG))["session"]["delegation"] == {"type": "client"}
