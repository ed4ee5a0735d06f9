"""Unit tests of service.realtime.protocol: every built client event is checked against the openai
package's own client event types (strictly: no unknown fields, nothing coerced), server events are
built from the openai package's server event models, and connection parameters follow
docs/models/realtime.md §2.1."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Literal

import openai.types.beta.realtime as B
import openai.types.realtime as G
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from service.config import Settings
from service.realtime.events import (
    AudioDelta,
    AudioDone,
    FunctionCallArgumentsDone,
    FunctionTool,
    InputCommitted,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    ItemAdded,
    ItemTruncated,
    OtherEvent,
    OutputItemAdded,
    RealtimeDialect,
    RealtimeError,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    SessionConfig,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
)
from service.realtime.protocol import BetaDialect, GaDialect, connection_params, dialect_for
from tests.standins.realtime_server import CLIENT_VALIDATORS, validate_client_event

Dialect = Literal["ga", "beta"]
DIALECTS: tuple[Dialect, ...] = ("ga", "beta")
CLIENT_UNIONS = {"ga": G.RealtimeClientEvent, "beta": B.RealtimeClientEvent}

ESCALATE = FunctionTool(
    name="escalate_to_human",
    description="Transfer the caller to a human agent.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
CONFIGS = {
    "defaults": SessionConfig(instructions="You are a concise phone agent."),
    "tools_lang_inf": SessionConfig(
        instructions="Sé breve.", voice="verse", vad_threshold=0.7, vad_prefix_padding_ms=200,
        vad_silence_duration_ms=650, temperature=0.6, max_output_tokens="inf",
        transcription_model="gpt-4o-transcribe", transcription_language="es", tools=(ESCALATE,),
    ),
    "no_transcription": SessionConfig(instructions="", transcription_model="", max_output_tokens=4096),
    "reasoning_whisper": SessionConfig(instructions="x", reasoning_effort="low", transcription_model="gpt-realtime-whisper"),
    "pause_then_decide": SessionConfig(instructions="x", interrupt_response=False, create_response=False,
                                       noise_reduction="far_field"),
    "semantic_low_near": SessionConfig(instructions="x", vad_type="semantic_vad", vad_eagerness="low",
                                       noise_reduction="near_field", interrupt_response=False, create_response=False),
}


def assert_valid(dialect: Dialect, text: str) -> dict[str, Any]:
    """The event parses with the SDK's own union, holds no unknown field and survives a round trip."""
    event = json.loads(text)
    model = TypeAdapter(CLIENT_UNIONS[dialect]).validate_python(event)
    assert model.model_dump(mode="json", exclude_unset=True) == event
    assert validate_client_event(dialect, text) == []
    return event


def all_builders(d: RealtimeDialect) -> dict[str, str]:
    return {
        **{f"session_update[{name}]": d.session_update(cfg) for name, cfg in CONFIGS.items()},
        "audio_append": d.audio_append(b"\x01\x02" * 480),
        "audio_append_empty": d.audio_append(b""),
        "response_create": d.response_create(),
        "response_create_instr": d.response_create("Say goodbye."),
        "response_cancel": d.response_cancel(),
        "response_cancel_id": d.response_cancel("resp_123"),
        "item_truncate": d.item_truncate("item_9", 1234),
        "user_text_item": d.user_text_item("I want a refund \"now\" ✓"),
        "system_text_item": d.system_text_item("Summary of the call so far: ..."),
        "function_call_output": d.function_call_output("call_1", json.dumps({"ok": True})),
        "input_audio_clear": d.input_audio_clear(),
        "item_delete": d.item_delete("item_3"),
    }


# ---------------------------------------------------------------------------------------------------
# Builders validate against the SDK's client event types


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_builder_validates_strictly_against_sdk_types(dialect: Dialect) -> None:
    built = all_builders(dialect_for(dialect))
    for name, text in built.items():
        event = assert_valid(dialect, text)
        assert isinstance(event["type"], str), name


@pytest.mark.parametrize("dialect", DIALECTS)
def test_event_ids_are_unique_and_only_the_append_has_none(dialect: Dialect) -> None:
    built = all_builders(dialect_for(dialect))
    ids = [json.loads(text).get("event_id") for name, text in built.items() if not name.startswith("audio_append")]
    assert all(isinstance(i, str) and i.startswith("cb_") for i in ids)
    assert len(set(ids)) == len(ids)
    assert "event_id" not in json.loads(built["audio_append"])


def test_last_event_id_matches_the_event_built_last() -> None:
    d = GaDialect()
    text = d.response_create()
    assert json.loads(text)["event_id"] == d.last_event_id
    d.audio_append(b"\x00\x00")  # appends do not consume ids
    assert json.loads(d.response_cancel())["event_id"] == "cb_2"


def test_ga_session_update_shape() -> None:
    cfg = CONFIGS["tools_lang_inf"]
    session = json.loads(GaDialect().session_update(cfg))["session"]
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert session == {
        "type": "realtime",
        "instructions": "Sé breve.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": pcm,
                "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
                                   "silence_duration_ms": 650, "create_response": True, "interrupt_response": True},
                "transcription": {"model": "gpt-4o-transcribe", "language": "es"},
            },
            "output": {"format": pcm, "voice": "verse"},
        },
        "tools": [{"type": "function", "name": "escalate_to_human", "description": ESCALATE.description,
                   "parameters": ESCALATE.parameters}],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }
    assert "temperature" not in json.dumps(session)  # GA removed temperature (spec §3.1)


def test_beta_session_update_shape() -> None:
    cfg = CONFIGS["tools_lang_inf"]
    session = json.loads(BetaDialect().session_update(cfg))["session"]
    assert session == {
        "instructions": "Sé breve.",
        "modalities": ["text", "audio"],
        "voice": "verse",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
                           "silence_duration_ms": 650, "create_response": True, "interrupt_response": True},
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "es"},
        "tools": [{"type": "function", "name": "escalate_to_human", "description": ESCALATE.description,
                   "parameters": ESCALATE.parameters}],
        "tool_choice": "auto",
        "temperature": 0.6,
        "max_response_output_tokens": "inf",
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_transcription_is_omitted_when_no_model(dialect: Dialect) -> None:
    text = dialect_for(dialect).session_update(CONFIGS["no_transcription"])
    assert "transcription" not in text
    assert json.loads(text)["session"].get("max_output_tokens", json.loads(text)["session"].get(
        "max_response_output_tokens")) == 4096


@pytest.mark.parametrize("dialect", DIALECTS)
def test_item_builders_shapes(dialect: Dialect) -> None:
    d = dialect_for(dialect)
    truncate = json.loads(d.item_truncate("item_7", 480))
    assert {k: v for k, v in truncate.items() if k != "event_id"} == {
        "type": "conversation.item.truncate", "item_id": "item_7", "content_index": 0, "audio_end_ms": 480}
    user = json.loads(d.user_text_item("hi"))["item"]
    assert user == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    system = json.loads(d.system_text_item("note"))["item"]
    assert system == {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "note"}]}
    output = json.loads(d.function_call_output("call_x", '{"a":1}'))["item"]
    assert output == {"type": "function_call_output", "call_id": "call_x", "output": '{"a":1}'}
    assert json.loads(d.response_create("Be brief."))["response"] == {"instructions": "Be brief."}
    assert "response" not in json.loads(d.response_create())
    assert json.loads(d.response_cancel("resp_1"))["response_id"] == "resp_1"
    assert "response_id" not in json.loads(d.response_cancel())
    with pytest.raises(ValueError):
        d.item_truncate("item_7", -1)


@pytest.mark.parametrize("size", [0, 1, 2, 160, 960, 4800])
def test_audio_append_is_exact_json_and_round_trips(size: int) -> None:
    pcm = bytes((i * 37) % 256 for i in range(size))
    text = GaDialect().audio_append(pcm)
    event = json.loads(text)
    assert event == {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    assert base64.b64decode(event["audio"]) == pcm
    assert BetaDialect().audio_append(pcm) == text
    # the bridge's path: base64 made by the compiled kernel, same text
    encoded = base64.b64encode(pcm).decode()
    assert GaDialect().audio_append_b64(encoded) == text == BetaDialect().audio_append_b64(encoded)


def test_audio_append_hot_path_cost() -> None:
    """20 ms of PCM16 24 kHz (960 bytes), the per-frame call: measured, loosely bounded."""
    d = GaDialect()
    frame = bytes(960)
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        d.audio_append(frame)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    print(f"audio_append: {per_call_us:.2f} us per 20 ms frame")
    assert per_call_us < 100  # typically ~1-2 us; generous for a shared, busy machine


# The strict validator itself must catch what the SDK types would silently accept.


def test_validator_catches_unknown_fields_and_coercions() -> None:
    ga_with_temperature = {"type": "session.update", "session": {"type": "realtime", "temperature": 0.8}}
    assert any("temperature" in p for p in validate_client_event("ga", ga_with_temperature))
    ga_shape_on_beta = {"type": "session.update", "session": {"type": "realtime"}}
    assert any("session.type" in p for p in validate_client_event("beta", ga_shape_on_beta))
    coerced = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": "12"}
    assert any("coerced" in p for p in validate_client_event("ga", coerced))
    assert validate_client_event("ga", {"type": "input_audio_buffer.append"})  # missing audio
    assert validate_client_event("ga", {"type": "no.such.event"}) == ["unknown event type 'no.such.event'"]
    assert validate_client_event("beta", "not json")
    beta_string_format_on_ga = {"type": "session.update",
                                "session": {"type": "realtime", "audio": {"input": {"format": "pcm16"}}}}
    assert validate_client_event("ga", beta_string_format_on_ga)
    assert set(CLIENT_VALIDATORS["ga"].by_type) >= {"session.update", "input_audio_buffer.append",
                                                    "conversation.item.truncate", "response.create"}


# ---------------------------------------------------------------------------------------------------
# Parsing: server events built from the SDK's own server event models


def dump(model: Any) -> str:
    return str(model.model_dump_json(exclude_unset=True))


PCM = bytes(range(256)) * 4
B64 = base64.b64encode(PCM).decode()
USAGE = {"total_tokens": 70, "input_tokens": 50, "output_tokens": 20,
         "input_token_details": {"text_tokens": 40, "audio_tokens": 10, "cached_tokens": 0},
         "output_token_details": {"text_tokens": 5, "audio_tokens": 15}}
IDS: dict[str, Any] = {"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0}


def ga_cases() -> list[tuple[str, Any]]:
    user_item = G.RealtimeConversationItemUserMessage(
        id="item_1", type="message", role="user", content=[G.realtime_conversation_item_user_message.Content(
            type="input_audio", transcript=None)])
    fc_item = G.RealtimeConversationItemFunctionCall(
        id="item_3", type="function_call", call_id="call_9", name="escalate_to_human", arguments="")
    return [
        (dump(G.SessionCreatedEvent(event_id="e1", type="session.created", session=G.RealtimeSessionCreateRequest(
            type="realtime", model="gpt-realtime", instructions="x"))),
         SessionCreated(session={"type": "realtime", "model": "gpt-realtime", "instructions": "x"})),
        (dump(G.SessionUpdatedEvent(event_id="e1", type="session.updated", session=G.RealtimeSessionCreateRequest(
            type="realtime"))), SessionUpdated(session={"type": "realtime"})),
        (dump(G.InputAudioBufferSpeechStartedEvent(event_id="e", type="input_audio_buffer.speech_started",
                                                   audio_start_ms=1200, item_id="item_1")),
         SpeechStarted(audio_start_ms=1200, item_id="item_1")),
        (dump(G.InputAudioBufferSpeechStoppedEvent(event_id="e", type="input_audio_buffer.speech_stopped",
                                                   audio_end_ms=3400, item_id="item_1")),
         SpeechStopped(audio_end_ms=3400, item_id="item_1")),
        (dump(G.InputAudioBufferCommittedEvent(event_id="e", type="input_audio_buffer.committed", item_id="item_1",
                                               previous_item_id=None)), InputCommitted(item_id="item_1")),
        (dump(G.ConversationItemAdded(event_id="e", type="conversation.item.added", item=user_item)),
         ItemAdded(item=user_item.model_dump(mode="json", exclude_unset=True))),
        (dump(G.ConversationItemDone(event_id="e", type="conversation.item.done", item=user_item)),
         ItemAdded(item=user_item.model_dump(mode="json", exclude_unset=True))),
        (dump(G.ConversationItemCreatedEvent(event_id="e", type="conversation.item.created", item=user_item)),
         ItemAdded(item=user_item.model_dump(mode="json", exclude_unset=True))),
        (dump(G.ConversationItemInputAudioTranscriptionCompletedEvent(
            event_id="e", type="conversation.item.input_audio_transcription.completed", item_id="item_1",
            content_index=0, transcript="I want a refund",
            usage={"type": "duration", "seconds": 1.5})),  # type: ignore[arg-type]
         InputTranscriptionCompleted(item_id="item_1", transcript="I want a refund")),
        (dump(G.ConversationItemInputAudioTranscriptionFailedEvent(
            event_id="e", type="conversation.item.input_audio_transcription.failed", item_id="item_1",
            content_index=0, error={"message": "asr down", "code": "x"})),  # type: ignore[arg-type]
         InputTranscriptionFailed(item_id="item_1", message="asr down")),
        (dump(G.ResponseCreatedEvent(event_id="e", type="response.created",
                                     response=G.RealtimeResponse(id="resp_1", status="in_progress"))),
         ResponseCreated(response_id="resp_1")),
        (dump(G.ResponseOutputItemAddedEvent(event_id="e", type="response.output_item.added", response_id="resp_1",
                                             output_index=1, item=fc_item)),
         OutputItemAdded(response_id="resp_1", item_id="item_3", item_type="function_call",
                         name="escalate_to_human", call_id="call_9")),
        (dump(G.ResponseAudioDeltaEvent(event_id="e", type="response.output_audio.delta", delta=B64, **IDS)),
         AudioDelta(response_id="resp_1", item_id="item_2", audio=PCM)),
        (dump(G.ResponseAudioDoneEvent(event_id="e", type="response.output_audio.done", **IDS)),
         AudioDone(response_id="resp_1", item_id="item_2")),
        (dump(G.ResponseAudioTranscriptDeltaEvent(event_id="e", type="response.output_audio_transcript.delta",
                                                  delta="Hel", **IDS)),
         TranscriptDelta(response_id="resp_1", item_id="item_2", delta="Hel")),
        (dump(G.ResponseAudioTranscriptDoneEvent(event_id="e", type="response.output_audio_transcript.done",
                                                 transcript="Hello.", **IDS)),
         TranscriptDone(response_id="resp_1", item_id="item_2", transcript="Hello.")),
        (dump(G.ResponseFunctionCallArgumentsDoneEvent(
            event_id="e", type="response.function_call_arguments.done", response_id="resp_1", item_id="item_3",
            output_index=1, call_id="call_9", name="escalate_to_human", arguments='{"reason":"angry"}')),
         FunctionCallArgumentsDone(response_id="resp_1", item_id="item_3", call_id="call_9",
                                   name="escalate_to_human", arguments='{"reason":"angry"}')),
        (dump(G.ResponseDoneEvent(event_id="e", type="response.done", response=G.RealtimeResponse(
            id="resp_1", status="completed", usage=USAGE, output=[fc_item]))),  # type: ignore[arg-type]
         ResponseDone(response_id="resp_1", status="completed", reason="", usage=USAGE,
                      output=(fc_item.model_dump(mode="json", exclude_unset=True),))),
        (dump(G.ResponseDoneEvent(event_id="e", type="response.done", response=G.RealtimeResponse(
            id="resp_2", status="cancelled", status_details={"type": "cancelled",  # type: ignore[arg-type]
                                                             "reason": "turn_detected"}))),
         ResponseDone(response_id="resp_2", status="cancelled", reason="turn_detected")),
        (dump(G.ResponseDoneEvent(event_id="e", type="response.done", response=G.RealtimeResponse(
            id="resp_3", status="failed", status_details={"type": "failed", "error": {  # type: ignore[arg-type]
                "type": "invalid_request_error", "code": "rate_limit_exceeded"}}))),
         ResponseDone(response_id="resp_3", status="failed", reason="rate_limit_exceeded")),
        (dump(G.ConversationItemTruncatedEvent(event_id="e", type="conversation.item.truncated", item_id="item_2",
                                               content_index=0, audio_end_ms=640)),
         ItemTruncated(item_id="item_2", audio_end_ms=640)),
        (dump(G.RealtimeErrorEvent(event_id="e", type="error", error=G.RealtimeError(
            type="invalid_request_error", code="response_cancel_not_active", message="no active response",
            event_id="cb_7", param=None))),
         RealtimeError(type="invalid_request_error", code="response_cancel_not_active",
                       message="no active response", event_id="cb_7")),
        (dump(G.RateLimitsUpdatedEvent(event_id="e", type="rate_limits.updated", rate_limits=[])),
         OtherEvent(type="rate_limits.updated")),
        (dump(G.ResponseContentPartAddedEvent(event_id="e", type="response.content_part.added",
                                              part={"type": "audio"}, **IDS)),  # type: ignore[arg-type]
         OtherEvent(type="response.content_part.added")),
        (dump(G.InputAudioBufferTimeoutTriggered(event_id="e", type="input_audio_buffer.timeout_triggered",
                                                 audio_start_ms=0, audio_end_ms=8000, item_id="item_5")),
         OtherEvent(type="input_audio_buffer.timeout_triggered")),
    ]


def beta_cases() -> list[tuple[str, Any]]:
    item = B.ConversationItem(id="item_1", type="message", role="user", content=[B.ConversationItemContent(
        type="input_audio", transcript=None)])
    fc_item = B.ConversationItem(id="item_3", type="function_call", call_id="call_9", name="escalate_to_human",
                                 arguments="")
    return [
        (dump(B.SessionCreatedEvent(event_id="e", type="session.created", session=B.Session(
            id="sess_1", input_audio_format="pcm16"))),
         SessionCreated(session={"id": "sess_1", "input_audio_format": "pcm16"})),
        (dump(B.SessionUpdatedEvent(event_id="e", type="session.updated", session=B.Session(temperature=0.8))),
         SessionUpdated(session={"temperature": 0.8})),
        (dump(B.InputAudioBufferSpeechStartedEvent(event_id="e", type="input_audio_buffer.speech_started",
                                                   audio_start_ms=20, item_id="item_1")),
         SpeechStarted(audio_start_ms=20, item_id="item_1")),
        (dump(B.InputAudioBufferSpeechStoppedEvent(event_id="e", type="input_audio_buffer.speech_stopped",
                                                   audio_end_ms=900, item_id="item_1")),
         SpeechStopped(audio_end_ms=900, item_id="item_1")),
        (dump(B.ConversationItemCreatedEvent(event_id="e", type="conversation.item.created", item=item,
                                             previous_item_id=None)),
         ItemAdded(item=item.model_dump(mode="json", exclude_unset=True))),
        (dump(B.ResponseOutputItemAddedEvent(event_id="e", type="response.output_item.added", response_id="resp_1",
                                             output_index=0, item=fc_item)),
         OutputItemAdded(response_id="resp_1", item_id="item_3", item_type="function_call",
                         name="escalate_to_human", call_id="call_9")),
        (dump(B.ResponseAudioDeltaEvent(event_id="e", type="response.audio.delta", delta=B64, **IDS)),
         AudioDelta(response_id="resp_1", item_id="item_2", audio=PCM)),
        (dump(B.ResponseAudioDoneEvent(event_id="e", type="response.audio.done", **IDS)),
         AudioDone(response_id="resp_1", item_id="item_2")),
        (dump(B.ResponseAudioTranscriptDeltaEvent(event_id="e", type="response.audio_transcript.delta",
                                                  delta="Hi", **IDS)),
         TranscriptDelta(response_id="resp_1", item_id="item_2", delta="Hi")),
        (dump(B.ResponseAudioTranscriptDoneEvent(event_id="e", type="response.audio_transcript.done",
                                                 transcript="Hi there.", **IDS)),
         TranscriptDone(response_id="resp_1", item_id="item_2", transcript="Hi there.")),
        (dump(B.ResponseFunctionCallArgumentsDoneEvent(
            event_id="e", type="response.function_call_arguments.done", response_id="resp_1", item_id="item_3",
            output_index=0, call_id="call_9", arguments="{}")),
         FunctionCallArgumentsDone(response_id="resp_1", item_id="item_3", call_id="call_9", name="",
                                   arguments="{}")),
        (dump(B.ResponseDoneEvent(event_id="e", type="response.done", response=B.RealtimeResponse(
            id="resp_1", status="cancelled", status_details={"type": "cancelled",  # type: ignore[arg-type]
                                                             "reason": "client_cancelled"},
            usage=USAGE, output=[]))),  # type: ignore[arg-type]
         ResponseDone(response_id="resp_1", status="cancelled", reason="client_cancelled", usage=USAGE)),
        (dump(B.ConversationItemTruncatedEvent(event_id="e", type="conversation.item.truncated", item_id="item_2",
                                               content_index=0, audio_end_ms=100)),
         ItemTruncated(item_id="item_2", audio_end_ms=100)),
        (dump(B.ErrorEvent(event_id="e", type="error", error={  # type: ignore[arg-type]
            "type": "invalid_request_error", "code": None, "message": "Audio content of 10 ms is already "
            "shorter than 20 ms", "param": None, "event_id": None})),
         RealtimeError(type="invalid_request_error", code="",
                       message="Audio content of 10 ms is already shorter than 20 ms")),
        (dump(B.ConversationItemInputAudioTranscriptionCompletedEvent(
            event_id="e", type="conversation.item.input_audio_transcription.completed", item_id="item_1",
            content_index=0, transcript="hello", usage={"type": "duration", "seconds": 1.0})),  # type: ignore[arg-type]
         InputTranscriptionCompleted(item_id="item_1", transcript="hello")),
        (dump(B.ResponseContentPartDoneEvent(event_id="e", type="response.content_part.done",
                                             part={"type": "audio"}, **IDS)),  # type: ignore[arg-type]
         OtherEvent(type="response.content_part.done")),
    ]


@pytest.mark.parametrize(("text", "expected"), ga_cases())
def test_ga_parse_of_sdk_built_events(text: str, expected: Any) -> None:
    assert GaDialect().parse(text) == expected
    assert GaDialect().parse(text.encode()) == expected


@pytest.mark.parametrize(("text", "expected"), beta_cases())
def test_beta_parse_of_sdk_built_events(text: str, expected: Any) -> None:
    assert BetaDialect().parse(text) == expected


def test_names_of_the_other_dialect_are_not_translated() -> None:
    beta_audio = dump(B.ResponseAudioDeltaEvent(event_id="e", type="response.audio.delta", delta=B64, **IDS))
    ga_audio = dump(G.ResponseAudioDeltaEvent(event_id="e", type="response.output_audio.delta", delta=B64, **IDS))
    assert GaDialect().parse(beta_audio) == OtherEvent(type="response.audio.delta")
    assert BetaDialect().parse(ga_audio) == OtherEvent(type="response.output_audio.delta")
    ga_added = '{"type":"conversation.item.added","event_id":"e","item":{"id":"i"}}'
    assert BetaDialect().parse(ga_added) == OtherEvent(type="conversation.item.added")


MALFORMED = [
    ("not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('"text"', "not a JSON object"),
    ("{}", "no string 'type'"),
    ('{"type": 5}', "no string 'type'"),
    ('{"type": ""}', "no string 'type'"),
    ('{"type":"input_audio_buffer.speech_started","item_id":"i"}', "'audio_start_ms' must be an integer"),
    ('{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":"5"}', "must be an integer"),
    ('{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":true}', "must be an integer"),
    ('{"type":"input_audio_buffer.speech_stopped","audio_end_ms":5}', "'item_id' must be a string"),
    ('{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"@@@"}', "not valid base64"),
    ('{"type":"response.output_audio.delta","response_id":"r","item_id":"i"}', "'delta' must be a string"),
    ('{"type":"response.done"}', "'response' must be an object"),
    ('{"type":"response.done","response":{"id":"r"}}', "'status' must be a string"),
    ('{"type":"response.done","response":{"id":"r","status":"completed","output":[1]}}', "list of objects"),
    ('{"type":"response.created","response":{}}', "'id' must be a string"),
    ('{"type":"error","error":"boom"}', "'error' must be an object"),
    ('{"type":"error","error":{"type":"x"}}', "'message' must be a string"),
    ('{"type":"session.created","session":null}', "'session' must be an object"),
    ('{"type":"response.output_item.added","response_id":"r","item":{"id":"i"}}', "'type' must be a string"),
    ('{"type":"conversation.item.truncated","item_id":"i","audio_end_ms":1.5}', "must be an integer"),
]


@pytest.mark.parametrize(("message", "fragment"), MALFORMED)
def test_malformed_messages_raise_protocol_error(message: str | bytes, fragment: str) -> None:
    with pytest.raises(RealtimeProtocolError, match=fragment.replace("(", r"\(")):
        GaDialect().parse(message)


def test_response_done_tolerates_nulls() -> None:
    text = json.dumps({"type": "response.done", "event_id": "e", "response": {
        "id": "r", "status": "completed", "status_details": None, "usage": None, "output": None}})
    assert GaDialect().parse(text) == ResponseDone(response_id="r", status="completed")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
KNOWN_TYPES = ["response.done", "response.output_audio.delta", "error", "response.output_item.added",
               "input_audio_buffer.speech_started", "session.created", "response.audio.delta", "x.y"]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KNOWN_TYPES), fields=st.dictionaries(
    st.sampled_from(["response", "delta", "item", "item_id", "response_id", "audio_start_ms", "error", "session"]),
    json_values, max_size=5))
def test_parse_never_raises_anything_but_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    text = json.dumps({"type": kind, **fields})
    for d in (GaDialect(), BetaDialect()):
        try:
            d.parse(text)
        except RealtimeProtocolError:
            pass


# ---------------------------------------------------------------------------------------------------
# Connection parameters (spec §2.1)


def make_settings(**overrides: Any) -> Settings:
    return Settings(**{"realtime_api_key": "sk-secret", **overrides})


def test_openai_ga_url_and_headers() -> None:
    url, headers = connection_params(make_settings(realtime_provider="openai", realtime_model="gpt-realtime"))
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert headers == {"Authorization": "Bearer sk-secret"}


def test_openai_beta_url_and_headers() -> None:
    url, headers = connection_params(make_settings(
        realtime_provider="openai", realtime_dialect="beta", realtime_model="gpt-4o-realtime-preview-2024-12-17"))
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-4o-realtime-preview-2024-12-17"
    assert headers == {"Authorization": "Bearer sk-secret", "OpenAI-Beta": "realtime=v1"}


def test_azure_preview_url_and_headers() -> None:
    url, headers = connection_params(make_settings(
        realtime_provider="azure", realtime_dialect="beta", realtime_model="my-rt-deploy",
        azure_endpoint="https://contoso.openai.azure.com/", azure_api_version="2025-04-01-preview"))
    assert url == ("wss://contoso.openai.azure.com/openai/realtime"
                   "?api-version=2025-04-01-preview&deployment=my-rt-deploy")
    assert headers == {"api-key": "sk-secret"}


def test_azure_ga_url_and_headers() -> None:
    url, headers = connection_params(make_settings(
        realtime_provider="azure", realtime_dialect="ga", realtime_model="my-rt-deploy",
        azure_endpoint="https://contoso.openai.azure.com/openai/v1/"))
    assert url == "wss://contoso.openai.azure.com/openai/v1/realtime?model=my-rt-deploy"
    assert "api-version" not in url
    assert headers == {"api-key": "sk-secret"}


@pytest.mark.parametrize(("provider", "dialect", "expected_headers"), [
    ("openai", "ga", {"Authorization": "Bearer sk-secret"}),
    ("openai", "beta", {"Authorization": "Bearer sk-secret", "OpenAI-Beta": "realtime=v1"}),
    ("azure", "ga", {"api-key": "sk-secret"}),
    ("azure", "beta", {"api-key": "sk-secret"}),
])
def test_url_override_keeps_provider_headers(provider: str, dialect: str, expected_headers: dict[str, str]) -> None:
    url, headers = connection_params(make_settings(
        realtime_provider=provider, realtime_dialect=dialect, realtime_url="ws://127.0.0.1:9/v1/realtime?model=m",
        azure_endpoint="https://contoso.openai.azure.com"))
    assert url == "ws://127.0.0.1:9/v1/realtime?model=m"
    assert headers == expected_headers


def test_model_names_are_query_encoded() -> None:
    url, _ = connection_params(make_settings(realtime_provider="openai", realtime_model="odd name&x=1"))
    assert url == "wss://api.openai.com/v1/realtime?model=odd+name%26x%3D1"


def test_local_provider_and_missing_key_are_refused() -> None:
    with pytest.raises(ValueError, match="local"):
        connection_params(Settings(realtime_provider="local"))
    with pytest.raises(ValueError, match="API key"):
        connection_params(Settings(realtime_provider="openai"))
    with pytest.raises(ValueError, match="azure endpoint"):
        connection_params(make_settings(realtime_provider="azure", azure_endpoint="contoso.openai.azure.com"))


def test_dialect_for() -> None:
    assert dialect_for("ga").name == "ga"
    assert dialect_for("beta").name == "beta"
    assert dialect_for("ga") is not dialect_for("ga")  # one counter per session
    with pytest.raises(ValueError):
        dialect_for("v2")  # type: ignore[arg-type]


def test_reasoning_effort_is_sent_in_ga_only() -> None:
    """GA carries ``session.reasoning.effort`` (validated above against the SDK types); beta has no such field."""
    config = CONFIGS["reasoning_whisper"]
    assert json.loads(GaDialect().session_update(config))["session"]["reasoning"] == {"effort": "low"}
    assert "reasoning" not in json.loads(BetaDialect().session_update(config))["session"]
    assert "reasoning" not in json.loads(GaDialect().session_update(CONFIGS["defaults"]))["session"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_interruption_and_noise_options_are_valid_in_both_dialects(dialect: Dialect) -> None:
    """Pause-then-decide turns both server flags off; semantic_vad carries only its eagerness; noise
    reduction sits where each dialect wants it (validated against the openai package's own types)."""
    d = dialect_for(dialect)
    paused = assert_valid(dialect, d.session_update(CONFIGS["pause_then_decide"]))["session"]
    semantic = assert_valid(dialect, d.session_update(CONFIGS["semantic_low_near"]))["session"]
    if dialect == "ga":
        td, nr = paused["audio"]["input"]["turn_detection"], paused["audio"]["input"]["noise_reduction"]
        sem, sem_nr = semantic["audio"]["input"]["turn_detection"], semantic["audio"]["input"]["noise_reduction"]
    else:
        td, nr = paused["turn_detection"], paused["input_audio_noise_reduction"]
        sem, sem_nr = semantic["turn_detection"], semantic["input_audio_noise_reduction"]
    assert (td["type"], td["create_response"], td["interrupt_response"]) == ("server_vad", False, False)
    assert nr == {"type": "far_field"} and sem_nr == {"type": "near_field"}
    assert sem == {"type": "semantic_vad", "eagerness": "low", "create_response": False, "interrupt_response": False}
    assert "noise_reduction" not in d.session_update(CONFIGS["defaults"])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_item_delete_is_valid(dialect: Dialect) -> None:
    event = assert_valid(dialect, dialect_for(dialect).item_delete("item_42"))
    assert (event["type"], event["item_id"]) == ("conversation.item.delete", "item_42")
