"""The call bridge in isolation: real Twilio and GA dialects, a fake clock, recorded sends.

Covers the state machine, the order of barge-in actions, the heard-ms computation, dropping late
deltas, greeting, DTMF, tool-call escalation with the hand-off line, and the malformed-frame flood.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from service.call.bridge import TRANSITIONS, CallBridge, CallState
from service.call.observer import EscalationRequest, NullObserver
from service.providers.twilio.dialect import TwilioDialect
from service.realtime.events import SessionConfig
from service.realtime.protocol import GaDialect

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []
        self.escalations: list[EscalationRequest] = []
        self.truncated: list[tuple[str, int, int]] = []
        self.tools: list[tuple[str, str]] = []

    def state_changed(self, state: str, previous: str) -> None:
        self.states.append((previous, state))

    def escalation_started(self, request: EscalationRequest) -> None:
        self.escalations.append(request)

    def bot_truncated(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        self.truncated.append((item_id, heard_ms, sent_ms))

    def tool_call(self, name: str, arguments: str) -> str:
        self.tools.append((name, arguments))
        return '{"status": "transferring"}'


def started_twilio_dialect() -> TwilioDialect:
    """A Twilio dialect that has seen the ``start`` of stream STREAM (call CALL)."""
    dialect = TwilioDialect()
    dialect.parse(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM,
        "start": {"streamSid": STREAM, "callSid": CALL, "accountSid": ACCOUNT, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {}},
    }))
    return dialect


class Harness:
    def __init__(self, greeting: bool = False) -> None:
        self.clock = Clock()
        self.to_twilio: list[dict[str, Any]] = []
        self.to_model: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.observer = RecordingObserver()
        self.twilio = started_twilio_dialect()
        self.seq = 1
        self.bridge = CallBridge(
            call_id=CALL, provider=self.twilio, realtime=GaDialect(),
            session_config=SessionConfig(instructions="be nice"),
            to_provider=self._send_twilio, close_provider=self._close, greeting=greeting,
            handoff_line="Connecting you now.", observer=self.observer, max_malformed_frames=3,
            clock=self.clock,
        )

    async def _send_twilio(self, text: str) -> None:
        self.to_twilio.append(json.loads(text))

    async def _send_model(self, text: str) -> None:
        self.to_model.append(json.loads(text))

    async def _close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    async def start(self) -> None:
        await self.bridge.model.attach(self._send_model)
        await self.server({"type": "session.created", "session": {}})
        await self.server({"type": "session.updated", "session": {}})

    async def server(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", "evt")
        await self.bridge.on_realtime_message(json.dumps(event))

    async def twilio_msg(self, event: str, **fields: Any) -> None:
        self.seq += 1
        await self.bridge.on_provider_message(
            json.dumps({"event": event, "sequenceNumber": str(self.seq), "streamSid": STREAM, **fields})
        )

    async def caller_frame(self) -> None:
        payload = base64.b64encode(b"\xff" * 160).decode()
        await self.twilio_msg("media", media={"track": "inbound", "chunk": str(self.seq), "timestamp": "0",
                                              "payload": payload})

    async def bot_delta(self, response_id: str, item_id: str, ms: int) -> None:
        pcm = (np.sin(np.arange(24 * ms) * 0.1) * 3000).astype("<i2").tobytes()
        await self.server({"type": "response.output_audio.delta", "response_id": response_id, "item_id": item_id,
                           "output_index": 0, "content_index": 0, "delta": base64.b64encode(pcm).decode()})

    def model_types(self) -> list[str]:
        return [event["type"] for event in self.to_model]

    def twilio_events(self) -> list[str]:
        return [event["event"] for event in self.to_twilio]


def test_transition_table_covers_every_live_state_and_ends_in_ended() -> None:
    for state in (CallState.CONNECTING, CallState.LISTENING, CallState.BOT_SPEAKING, CallState.INTERRUPTED,
                  CallState.ESCALATING):
        assert TRANSITIONS[(state, "hang_up")] is CallState.ENDING
    assert TRANSITIONS[(CallState.ENDING, "closed")] is CallState.ENDED
    assert (CallState.ENDED, "hang_up") not in TRANSITIONS


async def test_caller_audio_is_held_until_the_session_is_configured_then_flushed_in_order() -> None:
    h = Harness()
    await h.caller_frame()
    await h.caller_frame()
    assert h.to_model == []
    await h.bridge.model.attach(h._send_model)
    await h.server({"type": "session.created", "session": {}})
    types = h.model_types()
    assert types[0] == "session.update"
    assert types[1:] == ["input_audio_buffer.append", "input_audio_buffer.append"]
    pcm = base64.b64decode(h.to_model[1]["audio"])
    assert len(pcm) == 160 * 3 * 2  # 20 ms at 24 kHz PCM16
    await h.caller_frame()
    assert h.model_types()[-1] == "input_audio_buffer.append"
    assert h.bridge.stats.frames_in == 3


async def test_greeting_sends_response_create_after_session_updated() -> None:
    h = Harness(greeting=True)
    await h.start()
    assert h.model_types() == ["session.update", "response.create"]
    assert h.bridge.state is CallState.LISTENING


async def test_bot_audio_is_sent_with_a_mark_after_each_delta() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    await h.bot_delta("resp_1", "item_A", 100)
    assert h.twilio_events() == ["media", "mark"]
    assert len(base64.b64decode(h.to_twilio[0]["media"]["payload"])) == 800  # 100 ms of 8 kHz mu-law
    assert h.bridge.state is CallState.BOT_SPEAKING
    await h.twilio_msg("mark", mark={"name": h.to_twilio[1]["mark"]["name"]})
    h.clock.now += 0.2
    assert h.bridge.state is CallState.LISTENING  # playback drained


async def test_barge_in_clears_first_then_cancels_and_truncates_to_heard_ms() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    for _ in range(10):  # 1 s of audio queued at once (faster than real time)
        await h.bot_delta("resp_1", "item_A", 100)
    marks = [e["mark"]["name"] for e in h.to_twilio if e["event"] == "mark"]
    h.clock.now += 0.3
    await h.twilio_msg("mark", mark={"name": marks[2]})  # 300 ms played
    h.clock.now += 0.05  # 50 ms more played since that echo
    sent_before = len(h.to_twilio)
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5000, "item_id": "item_U"})
    assert h.to_twilio[sent_before]["event"] == "clear"
    tail = h.model_types()[-2:]
    assert tail == ["response.cancel", "conversation.item.truncate"]
    truncate = h.to_model[-1]
    assert truncate["item_id"] == "item_A"
    assert truncate["audio_end_ms"] == 350
    assert h.to_model[-2]["response_id"] == "resp_1"
    assert h.observer.truncated == [("item_A", 350, 1000)]
    assert h.bridge.state is CallState.INTERRUPTED
    # Twilio echoes every pending mark on clear: none of them may count as playback.
    for name in marks[3:]:
        await h.twilio_msg("mark", mark={"name": name})
    # Late deltas of the interrupted response are dropped.
    before = len(h.to_twilio)
    await h.bot_delta("resp_1", "item_A", 100)
    assert len(h.to_twilio) == before
    assert h.bridge.stats.dropped_deltas == 1
    # A new response plays normally.
    await h.server({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled",
                                                          "status_details": {"type": "cancelled", "reason": "turn_detected"}}})
    await h.server({"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}})
    await h.bot_delta("resp_2", "item_B", 100)
    assert h.to_twilio[-2]["event"] == "media"
    assert h.bridge.state is CallState.BOT_SPEAKING


async def test_heard_ms_never_exceeds_what_was_sent() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r", "status": "in_progress"}})
    await h.bot_delta("r", "item_A", 200)
    await h.server({"type": "response.done", "response": {"id": "r", "status": "completed"}})
    h.clock.now += 0.15  # no echo yet: estimated from the queue model
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "u"})
    truncate = [e for e in h.to_model if e["type"] == "conversation.item.truncate"]
    assert truncate and truncate[0]["audio_end_ms"] == 150
    assert "response.cancel" not in h.model_types()  # the response had already finished


async def test_no_clear_and_no_truncate_when_nothing_is_playing() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r", "status": "in_progress"}})
    await h.bot_delta("r", "item_A", 100)
    await h.twilio_msg("mark", mark={"name": h.to_twilio[1]["mark"]["name"]})
    h.clock.now += 0.5
    await h.server({"type": "response.done", "response": {"id": "r", "status": "completed"}})
    before_twilio, before_model = len(h.to_twilio), len(h.to_model)
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "u"})
    assert len(h.to_twilio) == before_twilio
    assert len(h.to_model) == before_model
    assert h.bridge.stats.barge_ins == 0


async def test_dtmf_becomes_a_conversation_item_and_is_kept() -> None:
    h = Harness()
    await h.start()
    await h.twilio_msg("dtmf", dtmf={"track": "inbound_track", "digit": "7"})
    item = h.to_model[-1]
    assert item["type"] == "conversation.item.create"
    assert "7" in item["item"]["content"][0]["text"]
    assert h.bridge.stats.dtmf == 1


async def test_escalation_tool_call_answers_then_speaks_handoff_then_transfers() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    await h.server({"type": "response.output_item.added", "response_id": "r1", "output_index": 0,
                    "item": {"id": "fc1", "type": "function_call", "call_id": "call_1", "name": "escalate_to_human",
                             "arguments": "", "status": "in_progress"}})
    await h.server({"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "fc1",
                    "output_index": 0, "call_id": "call_1", "name": "escalate_to_human",
                    "arguments": '{"reason": "wants a manager", "caller_mood": "angry"}'})
    await h.server({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    types = h.model_types()
    assert types[-2:] == ["conversation.item.create", "response.create"]
    assert h.to_model[-2]["item"]["type"] == "function_call_output"
    assert "Connecting you now." in h.to_model[-1]["response"]["instructions"]
    assert h.bridge.state is CallState.ESCALATING
    assert [e.trigger for e in h.observer.escalations] == ["model_tool"]
    # The hand-off line plays; once its last mark echoes, the stream is ended for the transfer.
    await h.server({"type": "response.created", "response": {"id": "r2", "status": "in_progress"}})
    await h.bot_delta("r2", "item_H", 100)
    await h.server({"type": "response.done", "response": {"id": "r2", "status": "completed"}})
    assert h.closed == []
    await h.twilio_msg("mark", mark={"name": h.to_twilio[-1]["mark"]["name"]})
    assert h.closed == [(1000, "transferred to a human")]
    assert h.bridge.outcome == "escalated"


async def test_policy_escalation_waits_for_the_active_response() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    await h.bridge.escalating.escalate(EscalationRequest(trigger="dtmf", reason="caller pressed 0"))
    assert "response.create" not in h.model_types()
    await h.server({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    assert h.model_types()[-1] == "response.create"
    await h.bridge.escalating.escalate(EscalationRequest(trigger="sentiment", reason="again"))
    assert len(h.observer.escalations) == 1  # one escalation per call


async def test_malformed_flood_closes_with_1008_and_good_frames_continue_before_it() -> None:
    h = Harness()
    await h.start()
    await h.bridge.on_provider_message("not json")
    await h.caller_frame()
    assert h.bridge.stats.frames_in == 1 and h.closed == []
    await h.bridge.on_provider_message('{"event": "media"}')
    await h.bridge.on_provider_message(b"\x00\x01")
    assert h.closed == [(1008, "too many malformed frames")]
    assert h.bridge.state is CallState.ENDING


async def test_stop_ends_the_call_and_summary_counts() -> None:
    h = Harness()
    await h.start()
    await h.caller_frame()
    await h.twilio_msg("stop", stop={"accountSid": ACCOUNT, "callSid": CALL})
    assert h.bridge.ended.is_set()
    summary = h.bridge.finish()
    assert summary["frames_in"] == 1 and summary["outcome"] == "completed"
    assert h.bridge.state is CallState.ENDED


async def test_realtime_error_while_connecting_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.call.bridge as bridge_module

    async def no_wait(_s: float) -> None:
        return None

    monkeypatch.setattr(bridge_module.asyncio, "sleep", no_wait)
    h = Harness()
    await h.bridge.model.attach(h._send_model)
    await h.server({"type": "session.created", "session": {}})
    await h.server({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value",
                                               "message": "bad format", "param": "session.audio"}})
    assert h.to_twilio[-1]["event"] == "media"  # the apology tone
    assert h.closed and h.closed[0][0] == 1011
    assert h.bridge.outcome == "error"


async def test_reattach_reseeds_the_new_session_and_keeps_the_call() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                    "content_index": 0, "transcript": "where is my order"})
    await h.server({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1",
                    "output_index": 0, "content_index": 0, "transcript": "It ships tomorrow."})
    await h.server({"type": "response.created", "response": {"id": "r2", "status": "in_progress"}})
    await h.server({"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired",
                                               "message": "Your session hit the maximum duration."}})
    assert h.closed == []  # session_expired alone does not end the call: a reconnect follows the close
    sent_before = len(h.to_model)
    await h.bridge.model.reattach(h._send_model)
    await h.caller_frame()
    assert len(h.to_model) == sent_before  # audio held until the new session is configured
    await h.server({"type": "session.created", "session": {}})
    update = h.to_model[sent_before]
    assert update["type"] == "session.update"
    instructions = update["session"]["instructions"]
    assert "caller: where is my order" in instructions and "assistant: It ships tomorrow." in instructions
    assert h.model_types()[-1] == "input_audio_buffer.append"  # the held frame, then live audio
    await h.server({"type": "session.updated", "session": {}})
    assert "response.create" not in h.model_types()[sent_before:]  # no second greeting
    await h.server({"type": "response.created", "response": {"id": "r9", "status": "in_progress"}})
    await h.bot_delta("r9", "item_Z", 100)
    assert h.to_twilio[-2]["event"] == "media" and h.closed == []


async def test_benign_error_does_not_end_the_call() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "error", "error": {"type": "invalid_request_error",
                                               "code": "response_cancel_not_active", "message": "x"}})
    assert h.closed == [] and h.bridge.state is CallState.LISTENING


async def test_barge_in_truncates_the_playing_item_and_zeroes_items_never_started() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    for _ in range(3):
        await h.bot_delta("r1", "item_A", 100)
    for _ in range(2):
        await h.bot_delta("r1", "item_B", 100)
    first_mark = next(e["mark"]["name"] for e in h.to_twilio if e["event"] == "mark")
    h.clock.now += 0.1
    await h.twilio_msg("mark", mark={"name": first_mark})
    h.clock.now += 0.05
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "u"})
    truncates = [(e["item_id"], e["audio_end_ms"]) for e in h.to_model if e["type"] == "conversation.item.truncate"]
    assert truncates == [("item_A", 150), ("item_B", 0)]
    assert h.observer.truncated == [("item_A", 150, 300), ("item_B", 0, 200)]


async def test_reconnect_seed_keeps_only_the_heard_part_of_an_interrupted_reply() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    for _ in range(4):
        await h.bot_delta("r1", "item_A", 100)
    await h.server({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "item_A",
                    "output_index": 0, "content_index": 0, "transcript": "one two three four five six seven eight"})
    first_mark = next(e["mark"]["name"] for e in h.to_twilio if e["event"] == "mark")
    h.clock.now += 0.1
    await h.twilio_msg("mark", mark={"name": first_mark})
    h.clock.now += 0.1  # 200 of 400 ms heard
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "u"})
    await h.bridge.model.reattach(h._send_model)
    before = len(h.to_model)
    await h.server({"type": "session.created", "session": {}})
    instructions = h.to_model[before]["session"]["instructions"]
    assert "assistant: one two three four... [interrupted by the caller]" in instructions
    assert "five" not in instructions.split("interrupted")[0].split("assistant:")[-1]


async def test_dtmf_digits_never_reach_logs_or_the_summary() -> None:
    """Regression (issue 12.7): every key was logged and the summary kept them (card + PIN rebuildable)."""
    from structlog.testing import capture_logs

    h = Harness()
    await h.start()
    with capture_logs() as logs:
        for digit in "4111111111111111" + "9876":
            await h.twilio_msg("dtmf", dtmf={"track": "inbound_track", "digit": digit})
    dtmf_lines = [line for line in logs if line["event"] == "call.dtmf"]
    assert len(dtmf_lines) == 20 and dtmf_lines[-1]["count"] == 20
    assert all("digit" not in line for line in dtmf_lines)
    summary = h.bridge.stats.summary()
    assert summary["dtmf_count"] == 20
    assert "9876" not in json.dumps(summary) and "4111" not in json.dumps(summary)


async def test_model_escalation_reason_is_capped() -> None:
    """Regression (issue 12.7): a long free-text reason from the model was logged (and recorded) whole."""
    from structlog.testing import capture_logs

    h = Harness()
    await h.start()
    reason = "my ssn is 078-05-1120 " + "x" * 60_000  # under the 64 KiB argument bound, far over the log cap
    with capture_logs() as logs:
        await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
        await h.server({"type": "response.output_item.added", "response_id": "r1", "output_index": 0,
                        "item": {"id": "fc1", "type": "function_call", "call_id": "call_1",
                                 "name": "escalate_to_human", "arguments": "", "status": "in_progress"}})
        await h.server({"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "fc1",
                        "output_index": 0, "call_id": "call_1", "name": "escalate_to_human",
                        "arguments": json.dumps({"reason": reason, "caller_mood": "angry"})})
        await h.server({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    [escalating] = [line for line in logs if line["event"] == "call.escalating"]
    assert len(escalating["reason"]) <= 500
    assert len(h.observer.escalations[0].reason) <= 500


async def test_a_carriers_flush_acknowledgement_is_expected_not_a_warning() -> None:
    """Plivo's ``clearedAudio`` and Vonage's ``websocket:cleared`` (``ClearAcknowledged``) answer our flush:
    nothing to do, and nothing to warn about."""
    from structlog.testing import capture_logs

    from service.providers.base import ClearAcknowledged

    h = Harness()
    await h.start()
    with capture_logs() as logs:
        await h.bridge.provider.on_event(ClearAcknowledged(), 0.0)
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == []
    assert not h.bridge.ended.is_set()


@pytest.mark.parametrize("code", ["insufficient_quota", "credit_balance_exhausted", "billing_hard_limit_reached"])
async def test_a_quota_error_before_the_session_is_ready_hands_the_caller_over_instead_of_failing(code: str) -> None:
    """No capacity is not a bug: the caller goes to a human (model_unavailable), never an apology tone."""
    h = Harness()
    await h.bridge.model.attach(h._send_model)
    await h.server({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": "no"}})
    assert [r.trigger for r in h.observer.escalations] == ["model_unavailable"]
    assert h.bridge.outcome == "escalated" and h.closed and h.closed[0][0] == 1000


async def test_any_other_error_before_the_session_is_ready_fails_the_call() -> None:
    h = Harness()
    await h.bridge.model.attach(h._send_model)
    h.bridge.bot.play_tone = _instant_tone  # type: ignore[method-assign]
    await h.server({"type": "error", "error": {"type": "invalid_request_error", "code": "model_not_found",
                                              "message": "no"}})
    assert h.observer.escalations == [] and h.bridge.outcome == "error" and h.closed[0][0] == 1011


async def _instant_tone(_pcm: bytes) -> float:
    return 0.0
