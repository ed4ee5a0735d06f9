"""The filler inside the bridge (docs/first-words.md, "No dead air"), with the real Twilio and GA
dialects and recorded sends: what goes to the provider, in which order, and that the playback ledger
(and so every truncate) never counts the clip."""

from __future__ import annotations

from service.audio.filler_clip import synthesize_hmm
from service.call.bridge import CallBridge
from service.call.filler import FillerClip, FillerSettings
from service.realtime.events import SessionConfig
from service.realtime.protocol import GaDialect
from tests.poll import wait_until
from tests.unit.test_bridge import CALL, Harness

CLIP = FillerClip(synthesize_hmm())


class FillerHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.bridge = CallBridge(
            call_id=CALL, provider=self.twilio, realtime=GaDialect(), session_config=SessionConfig(instructions="x"),
            to_provider=self._send_twilio, close_provider=self._close, greeting=False, observer=self.observer,
            clock=self.clock, filler=FillerSettings(CLIP, after_ms=10, repeat_ms=0),
        )

    async def turn_ends(self) -> None:
        await self.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500, "item_id": "item_u"})

    async def clip_sent(self) -> None:
        await wait_until(lambda: self.twilio_events() == ["media"], timeout=5, what="the filler clip")


async def test_the_clip_is_cleared_before_the_answer_and_carries_no_mark() -> None:
    h = FillerHarness()
    await h.start()
    await h.turn_ends()
    await h.clip_sent()
    assert h.bridge.bot.ledger.outstanding_marks == 0  # the clip never entered the ledger
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    await h.bot_delta("resp_1", "item_A", 100)
    assert h.twilio_events() == ["media", "clear", "media", "mark"]  # cut first, then the answer
    assert h.bridge.stats.fillers == 1


async def test_a_barge_in_after_the_filler_truncates_at_the_answer_heard_alone() -> None:
    h = FillerHarness()
    await h.start()
    await h.turn_ends()
    await h.clip_sent()
    h.clock.now += 0.2  # the caller heard 200 ms of the clip
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    for _ in range(5):
        await h.bot_delta("resp_1", "item_A", 100)
    h.clock.now += 0.25  # and 250 ms of the answer
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 2000, "item_id": "item_v"})
    truncate = next(e for e in h.to_model if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == "item_A" and truncate["audio_end_ms"] == 250


async def test_caller_speech_during_the_clip_clears_it_once() -> None:
    h = FillerHarness()
    await h.start()
    await h.turn_ends()
    await h.clip_sent()
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1600, "item_id": "item_v"})
    assert h.twilio_events() == ["media", "clear"]
    assert not h.bridge.parts.filler.active
    assert not any(e["type"] == "conversation.item.truncate" for e in h.to_model)


async def test_an_answer_before_the_deadline_means_no_clip_and_no_clear() -> None:
    h = FillerHarness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    await h.turn_ends()
    await h.bot_delta("resp_1", "item_A", 100)  # within the 10 ms: the wait ends unplayed
    assert h.twilio_events() == ["media", "mark"]
    assert not h.bridge.parts.filler.active and h.bridge.stats.fillers == 0


async def test_a_response_without_audio_or_tool_ends_the_wait_but_a_tool_call_keeps_it() -> None:
    h = FillerHarness()
    h.bridge.parts.filler.plan.after_s = 60.0  # the deadline stays ahead: only response.done decides
    await h.start()
    await h.turn_ends()
    await h.server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    tool_item = {"id": "item_f", "type": "function_call", "call_id": "call_1", "name": "lookup_order",
                 "arguments": "{}", "status": "completed"}
    await h.server({"type": "response.done", "response": {"id": "resp_1", "status": "completed",
                                                          "output": [tool_item]}})
    assert h.bridge.parts.filler.active  # the tool's run is still covered
    await h.server({"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}})
    await h.server({"type": "response.done", "response": {"id": "resp_2", "status": "completed", "output": []}})
    assert not h.bridge.parts.filler.active
    assert h.twilio_events() == []
