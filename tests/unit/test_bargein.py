"""Pause, then decide, through the real bridge (Twilio and GA dialects, a fake clock, recorded
sends): the pause flushes and holds, a false interruption resumes from the exact heard byte and its
caller item is deleted, a real one cancels, truncates at what was heard and is answered, and every
committed turn not judged false gets exactly one ``response.create``. The just-in-time lead is
honoured and playback drains only when nothing is held."""

from __future__ import annotations

import base64
import json

import pytest

from service.audio.codecs import make_outbound
from service.call.bridge import CallBridge, CallState
from service.call.interruption import InterruptPolicy
from service.realtime.events import SessionConfig
from service.realtime.protocol import GaDialect
from tests.unit.test_bridge import CALL, Harness

POLICY = InterruptPolicy(confirm_ms=800, sustained_ms=600, min_level_dbfs=-40.0)


class PauseHarness(Harness):
    def __init__(self, lead_ms: int = 0, policy: InterruptPolicy | None = POLICY) -> None:
        super().__init__()
        self.bridge = CallBridge(
            call_id=CALL, provider=self.twilio, realtime=GaDialect(), session_config=SessionConfig(instructions="x"),
            to_provider=self._send_twilio, close_provider=self._close, observer=self.observer,
            clock=self.clock, interruptions=policy, playback_lead_ms=lead_ms, greeting=False,
        )
        self.wire = b""

    async def reply(self, ms: int, item: str = "item_A", response: str = "resp_1") -> None:
        await self.server({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
        for _ in range(ms // 100):
            await self.bot_delta(response, item, 100)

    def media_bytes(self, since: int = 0) -> bytes:
        return b"".join(base64.b64decode(e["media"]["payload"]) for e in self.to_twilio[since:] if e["event"] == "media")

    def marks(self) -> list[str]:
        return [e["mark"]["name"] for e in self.to_twilio if e["event"] == "mark"]

    async def speech(self, item: str = "item_U") -> int:
        before = len(self.to_twilio)
        await self.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5000, "item_id": item})
        return before

    async def transcript(self, text: str, item: str = "item_U") -> None:
        await self.server({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                           "content_index": 0, "transcript": text})

    async def committed(self, item: str = "item_U") -> None:
        await self.server({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})


def expected_wire(ms: int) -> bytes:
    """The bytes the bridge sends for ``ms`` of the harness's bot deltas (the same converter)."""
    import numpy as np

    out = make_outbound("mulaw", 8000)
    pcm = (np.sin(np.arange(24 * 100) * 0.1) * 3000).astype("<i2").tobytes()
    return b"".join(out.process(pcm) for _ in range(ms // 100))


async def paused_at_350ms(h: PauseHarness) -> int:
    await h.start()
    await h.reply(1000)
    h.clock.now += 0.3
    await h.twilio_msg("mark", mark={"name": h.marks()[2]})  # 300 ms played
    h.clock.now += 0.05
    return await h.speech()


@pytest.mark.parametrize(("policy", "flags"), [(POLICY, False), (None, True)])
async def test_session_flags_follow_the_policy(policy: InterruptPolicy | None, flags: bool) -> None:
    h = PauseHarness(policy=policy)
    await h.start()
    td = h.to_model[0]["session"]["audio"]["input"]["turn_detection"]
    assert (td["interrupt_response"], td["create_response"]) == (flags, flags)


async def test_pause_flushes_at_once_and_neither_cancels_nor_truncates() -> None:
    h = PauseHarness()
    before = await paused_at_350ms(h)
    assert h.to_twilio[before]["event"] == "clear"
    assert "response.cancel" not in h.model_types() and "conversation.item.truncate" not in h.model_types()
    assert h.bridge.state is CallState.INTERRUPTED and h.bridge.barge_in.deciding
    held = len(h.to_twilio)
    await h.bot_delta("resp_1", "item_A", 100)  # the model goes on: held, not sent
    assert len(h.to_twilio) == held and h.bridge.state is CallState.INTERRUPTED


@pytest.mark.parametrize("text", ["uh-huh", "はい", ""])
async def test_false_resumes_from_the_heard_byte_and_deletes_the_caller_item(text: str) -> None:
    h = PauseHarness()
    before = await paused_at_350ms(h)
    await h.bot_delta("resp_1", "item_A", 100)  # arrives during the pause
    await h.transcript(text)
    resumed = h.media_bytes(before)
    assert resumed == expected_wire(1100)[350 * 8:]  # from the exact byte the caller stopped hearing
    assert h.bridge.state is CallState.BOT_SPEAKING
    await h.committed()
    assert h.model_types()[-1] == "conversation.item.delete" and h.to_model[-1]["item_id"] == "item_U"
    assert "response.create" not in h.model_types() and "response.cancel" not in h.model_types()
    assert "conversation.item.truncate" not in h.model_types()
    decision, positions = h.bridge.barge_in.decisions[-1]
    assert not decision.real and positions[0].heard_ms == 350


async def test_false_decided_after_the_commit_deletes_at_once() -> None:
    h = PauseHarness()
    await paused_at_350ms(h)
    await h.committed()
    assert "conversation.item.delete" not in h.model_types()  # undecided: wait
    await h.transcript("okay")
    assert h.model_types()[-1] == "conversation.item.delete"


async def test_real_cancels_truncates_at_what_was_heard_and_answers_the_turn() -> None:
    h = PauseHarness()
    await paused_at_350ms(h)
    h.clock.now += 0.3  # deciding takes time: the truncate is still at the pause's heard position
    await h.transcript("wait, stop, that's wrong")
    assert h.model_types()[-2:] == ["response.cancel", "conversation.item.truncate"]
    assert h.to_model[-1]["audio_end_ms"] == 350 and h.to_model[-1]["item_id"] == "item_A"
    assert h.observer.truncated == [("item_A", 350, 1000)]
    sent = len(h.to_twilio)
    await h.bot_delta("resp_1", "item_A", 100)  # late delta of the cancelled reply: dropped
    assert len(h.to_twilio) == sent
    await h.committed()
    assert h.model_types()[-1] == "conversation.item.truncate"  # the cancelled reply is not done yet
    await h.server({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    assert h.model_types()[-1] == "response.create"


async def test_real_after_the_commit_answers_at_once() -> None:
    h = PauseHarness()
    await paused_at_350ms(h)
    await h.committed()
    await h.transcript("I need a person")
    assert h.model_types()[-2:] == ["response.cancel", "conversation.item.truncate"]
    await h.server({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    assert h.model_types()[-1] == "response.create"


async def test_deadline_without_words_is_false_and_resumes() -> None:
    h = PauseHarness()
    before = await paused_at_350ms(h)
    for _ in range(10):
        await h.caller_frame()  # silence: never reaches the level
    await h.bridge.barge_in._act(at_deadline=True)  # what the loop timer does at the deadline
    decision, _ = h.bridge.barge_in.decisions[-1]
    assert (decision.real, decision.reason) == (False, "below_level")
    assert h.media_bytes(before) == expected_wire(1000)[350 * 8:]


async def test_a_committed_turn_without_a_pause_is_answered_once() -> None:
    h = PauseHarness()
    await h.start()
    await h.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_U"})
    await h.committed()
    assert h.model_types().count("response.create") == 1
    assert "input_audio_buffer.clear" not in h.model_types()


async def test_immediate_policy_leaves_turns_to_the_server() -> None:
    h = PauseHarness(policy=None)
    await h.start()
    await h.reply(500)
    await h.speech()
    assert h.model_types()[-2:] == ["response.cancel", "conversation.item.truncate"]
    await h.committed()
    assert "response.create" not in h.model_types()


async def test_lead_caps_what_the_provider_holds_and_drain_waits_for_held_audio() -> None:
    h = PauseHarness(lead_ms=200)
    await h.start()
    await h.reply(1000)
    assert len(h.media_bytes()) == 200 * 8  # only the lead went out; 800 ms held
    assert h.bridge.bot.playing
    for name in h.marks():
        await h.twilio_msg("mark", mark={"name": name})  # everything sent has played...
    assert h.bridge.state is CallState.BOT_SPEAKING  # ...but audio is held: not drained
    h.bridge.bot.close()


async def test_session_flags_are_valid_json() -> None:
    h = PauseHarness()
    await h.start()
    assert json.loads(json.dumps(h.to_model[0]))["type"] == "session.update"


async def test_a_false_interruption_starts_no_filler_wait() -> None:
    """The cough's own end of speech must not let the filler play into the resumed reply (or after
    it): no answer is coming for it."""
    from service.audio.filler_clip import synthesize_hmm
    from service.call.filler import FillerClip, FillerSettings

    h = PauseHarness()
    h.bridge = CallBridge(
        call_id=CALL, provider=h.twilio, realtime=GaDialect(), session_config=SessionConfig(instructions="x"),
        to_provider=h._send_twilio, close_provider=h._close, greeting=False, observer=h.observer, clock=h.clock,
        filler=FillerSettings(FillerClip(synthesize_hmm()), after_ms=10, repeat_ms=0), interruptions=POLICY,
    )
    await paused_at_350ms(h)
    await h.transcript("")  # judged false: resumed
    await h.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 6000, "item_id": "item_U"})
    assert not h.bridge.parts.filler.active  # the wait its speech_stopped began is over at once
    await h.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 9000, "item_id": "item_V"})
    assert h.bridge.parts.filler.active  # a real turn's end still starts it
    h.bridge.barge_in.close()
    h.bridge.parts.filler.cancel()
