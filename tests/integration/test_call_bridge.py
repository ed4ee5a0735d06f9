"""The call bridge end to end over real sockets: the gateway under uvicorn, the protocol-exact Twilio
caller stand-in streaming real synthesized speech at real-time pace, and the protocol-exact Realtime
stand-in validating every client event against the ``openai`` package's own types."""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.standins.realtime_server import FunctionCallScript, RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn

API_KEY = "sk-test-0123456789abcdef"


@contextlib.asynccontextmanager
async def bridged(
    behaviour: ScriptedBehaviour | None = None,
    *,
    dialect: str = "ga",
    provider: str = "openai",
    reject_status: int | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[RunningGateway, RealtimeStandIn, TwilioCallerStandIn]]:
    require = ("api-key", API_KEY) if provider == "azure" else ("Authorization", f"Bearer {API_KEY}")
    async with RealtimeStandIn(behaviour, require_auth=require, reject_status=reject_status) as realtime:
        settings: dict[str, Any] = {
            "realtime_provider": provider,
            "realtime_api_key": API_KEY,
            "realtime_dialect": dialect,
            "vad_silence_duration_ms": 300,
            "input_transcription_model": "whisper-1",
            **overrides,
        }
        if provider == "azure":
            settings["azure_endpoint"] = realtime.azure_endpoint
        else:
            settings["realtime_url"] = realtime.url
        async with run_gateway(**settings) as gw, TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
            yield gw, realtime, caller


def speech(text: str) -> Any:
    return synthesize(text)


async def wait_call_count(gw: RunningGateway, count: int, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while len(gw.gateway.calls) != count:
            gw.gateway.calls_changed.clear()
            await gw.gateway.calls_changed.wait()


def assert_clean(realtime: RealtimeStandIn, call: CallHandle) -> None:
    assert realtime.violations == []
    assert call.violations == []


@pytest.mark.parametrize(("provider", "dialect"), [("openai", "ga"), ("openai", "beta"), ("azure", "ga"),
                                                   ("azure", "beta")])
async def test_full_turn_both_dialects_and_auth_forms(provider: str, dialect: str) -> None:
    behaviour = ScriptedBehaviour(transcripts=["where is my order"], reply_ms=800)
    async with bridged(behaviour, provider=provider, dialect=dialect) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        assert session.dialect == dialect
        handshake = realtime.handshakes[0]
        if provider == "azure":
            assert handshake.headers["api-key"] == API_KEY
            assert "authorization" not in handshake.headers
        else:
            assert handshake.headers["authorization"] == f"Bearer {API_KEY}"
            assert ("openai-beta" in handshake.headers) == (dialect == "beta")
        await call.send_audio(speech("Hello, where is my order?"), silence(600))
        await session.wait_until(lambda: session.responses_done >= 1, timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= 800 * 8 - 160, timeout_s=10)
        types = session.received_types()
        assert types[0] == "session.update"
        assert types.count("input_audio_buffer.append") >= 50
        assert call.events("clear") == []
        played = call.played_audio()
        assert (abs(played.astype(float)) > 1000).sum() > 2000  # the 440 Hz reply was audible
        await call.hang_up()
        await wait_call_count(gw, 0)
        assert_clean(realtime, call)


async def test_barge_in_mid_reply_clears_fast_and_truncates_to_what_was_played() -> None:
    behaviour = ScriptedBehaviour(transcripts=["tell me everything", "stop"], reply_ms=4000, pacing=4.0)
    async with bridged(behaviour, vad_silence_duration_ms=500) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("Tell me about all your plans"), silence(700))
        await session.wait_for_sent("response.output_audio.delta", timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= 8000, timeout_s=10)  # ~1 s heard
        await call.send_audio(speech("Wait a moment please"), silence(700))
        await session.wait_until(lambda: len(session.truncates) >= 1, timeout_s=10)
        clears = call.playback.clears
        assert len(clears) >= 1
        started = [s for s in session.sent if s.type == "input_audio_buffer.speech_started" and s.at <= clears[0].at][-1]
        clear_latency_ms = (clears[0].at - started.at) * 1000
        assert 0 <= clear_latency_ms < 50, clear_latency_ms  # socket to socket, incl. two loopback hops
        session_bridge = next(iter(gw.gateway.calls.values())).bridge
        assert session_bridge.stats.barge_in_reactions_ms[0] <= 5.0
        truncate = session.truncates[0]
        assert truncate.accepted
        heard_ms = clears[0].played_total / 8
        print(f"barge-in: clear {clear_latency_ms:.1f} ms after speech_started (socket to socket); "
              f"truncate {truncate.audio_end_ms} ms vs played {heard_ms:.1f} ms")
        assert abs(truncate.audio_end_ms - heard_ms) <= 40, (truncate.audio_end_ms, heard_ms)
        assert truncate.audio_end_ms < truncate.item_audio_ms
        received = session.received_types()
        if "response.cancel" in received:  # only while the reply was still being generated
            assert received.index("response.cancel") < received.index("conversation.item.truncate")
        # Nothing of the interrupted reply is sent after the clear.
        media_after = [m for m in call.playback.media if m.at > clears[0].at and m.position < clears[0].played_total]
        assert media_after == []
        await call.hang_up()
        await wait_call_count(gw, 0)
        assert_clean(realtime, call)


async def test_speech_when_nothing_plays_sends_no_clear_and_no_truncate() -> None:
    behaviour = ScriptedBehaviour(transcripts=["hi", "again"], reply_ms=300)
    async with bridged(behaviour) as (_gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("Hi there."), silence(300))
        await session.wait_until(lambda: session.responses_done >= 1, timeout_s=10)
        await call.wait_for(lambda: call.playback.buffered_bytes == 0 and call.playback.played_total > 0, 10)
        await call.wait_mark_echoes(len(call.events("mark")), timeout_s=5)
        await call.send_audio(speech("One more question."), silence(300))
        await session.wait_until(lambda: session.responses_done >= 2, timeout_s=10)
        assert call.events("clear") == []
        assert session.truncates == []
        assert "conversation.item.truncate" not in session.received_types()
        await call.hang_up()
        assert_clean(realtime, call)


async def test_greeting_bot_speaks_first() -> None:
    behaviour = ScriptedBehaviour(reply_ms=600)
    async with bridged(behaviour, greeting=True) as (_gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("response.create", timeout_s=5)
        types = session.received_types()
        assert types.index("session.update") < types.index("response.create")
        await call.wait_for(lambda: call.playback.played_total >= 4000, timeout_s=10)
        await call.hang_up()
        assert_clean(realtime, call)


async def test_dtmf_reaches_the_model_as_a_conversation_item() -> None:
    async with bridged(ScriptedBehaviour()) as (_gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await call.send_dtmf("5")
        event = await session.wait_for_received("conversation.item.create", timeout_s=5)
        assert "5" in event.event["item"]["content"][0]["text"]
        await call.hang_up()
        assert_clean(realtime, call)


async def test_caller_stop_ends_the_realtime_session() -> None:
    async with bridged(ScriptedBehaviour()) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await call.hang_up()
        await wait_call_count(gw, 0)
        await session.wait_until(lambda: session.closed, timeout_s=5)
        assert_clean(realtime, call)


async def test_realtime_close_ends_the_stream_and_twilio_hangs_up() -> None:
    async with bridged(ScriptedBehaviour()) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await session.close(1000, "done")
        assert await call.wait_closed(timeout_s=10) == 1000
        await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
        assert ET.fromstring(call.after_stream_twiml or "").find("./Hangup") is not None
        await wait_call_count(gw, 0)


async def test_realtime_connect_failure_hands_the_caller_to_a_human() -> None:
    """A model session that cannot be opened (here: 401) never drops the caller (issue 12.12): the call
    is escalated with trigger model_unavailable and transferred (stream closed 1000, then <Enqueue>)."""
    async with bridged(ScriptedBehaviour(), reject_status=401) as (gw, _realtime, caller):
        call = await caller.place_call()
        code = await call.wait_closed(timeout_s=15)
        assert code == 1000
        assert "<Enqueue" in (call.after_stream_twiml or "")
        await wait_call_count(gw, 0)
        assert call.violations == []


async def test_an_internal_failure_plays_the_apology_tone_and_ends_1011() -> None:
    """A failure of the call itself (not of the model's availability) ends cleanly with the apology tone."""
    async with bridged(ScriptedBehaviour()) as (gw, realtime, caller):
        call = await caller.place_call()
        await realtime.wait_for_session()
        session = gw.gateway.calls[call.call_sid]
        await session.bridge.fail("test: internal failure")  # type: ignore[attr-defined]
        assert await call.wait_closed(timeout_s=15) == 1011
        assert call.events("media"), "the caller heard the apology tone"
        await wait_call_count(gw, 0)


async def test_malformed_frames_are_skipped_then_a_flood_closes_1008() -> None:
    async with bridged(ScriptedBehaviour(), max_malformed_frames=5) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        for frame in ["garbage", '{"event": "media"}', '{"event": "nope", "streamSid": "x"}']:
            await call.send_raw(frame)
        appended = session.received_types().count("input_audio_buffer.append")
        await session.wait_until(
            lambda: session.received_types().count("input_audio_buffer.append") > appended + 5, timeout_s=5
        )
        assert not call.closed
        for _ in range(2):
            await call.send_raw("{not json")
        assert await call.wait_closed(timeout_s=5) == 1008
        await wait_call_count(gw, 0)


async def test_model_tool_call_escalates_with_handoff_and_transfer_twiml() -> None:
    behaviour = ScriptedBehaviour(
        transcripts=["I want a manager now"], reply_ms=700,
        function_calls={1: FunctionCallScript(name="escalate_to_human",
                                              arguments={"reason": "asked for a manager", "caller_mood": "angry"})},
    )
    async with bridged(behaviour, transfer_queue="tier2") as (_gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("I want to talk to a manager now."), silence(400))
        code = await call.wait_closed(timeout_s=20)
        assert code == 1000
        outputs = [e.event for e in session.received if e.type == "conversation.item.create"
                   and e.event["item"]["type"] == "function_call_output"]
        assert len(outputs) == 1
        assert session.responses_done >= 2  # the tool response, then the hand-off line
        assert call.playback.played_total > 0  # the hand-off line was played before the transfer
        await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
        enqueue = ET.fromstring(call.after_stream_twiml or "").find("./Enqueue")
        assert enqueue is not None and enqueue.text == "tier2"
        assert_clean(realtime, call)


@pytest.mark.parametrize("code", [1011, 1001])
async def test_realtime_drop_mid_call_reconnects_and_the_call_goes_on(code: int) -> None:
    """A session lost with a retryable close is replaced: same config plus the conversation so far,
    caller audio flows to the new session, and the caller's stream never notices."""
    behaviour = ScriptedBehaviour(transcripts=["where is my order"], reply_ms=300)
    async with bridged(behaviour) as (_gw, realtime, caller):
        call = await caller.place_call()
        first = await realtime.wait_for_session()
        await call.send_audio(speech("Where is my order?"), silence(500))
        await first.wait_until(lambda: first.responses_done >= 1, timeout_s=10)
        await first.close(code, "going away" if code == 1001 else "server error")
        second = await realtime.wait_for_session(1, timeout_s=10)
        update = await second.wait_for_received("session.update", timeout_s=5)
        instructions = update.event["session"]["instructions"]
        assert "caller: where is my order" in instructions
        appended = second.received_types().count("input_audio_buffer.append")
        await second.wait_until(
            lambda: second.received_types().count("input_audio_buffer.append") > appended + 10, timeout_s=5
        )
        assert not call.closed
        assert "response.create" not in second.received_types()  # no second greeting
        await call.hang_up()
        assert_clean(realtime, call)


async def test_callbridge_call_tool_against_a_running_gateway(tmp_path: Any) -> None:
    """`callbridge call URL --say ... --audio ... --record` places a signed call and records it."""
    import sys
    import wave
    from pathlib import Path

    import numpy as np

    clip = tmp_path / "question.wav"
    with wave.open(str(clip), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(synthesize("Do you ship abroad?", rate=16000).astype("<i2").tobytes())
    behaviour = ScriptedBehaviour(transcripts=["hello", "question"], reply_ms=600)
    async with bridged(behaviour) as (gw, realtime, _caller):
        record = tmp_path / "call.wav"
        executable = Path(sys.executable).parent / "callbridge"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
        process = await asyncio.create_subprocess_exec(
            *command, "call", gw.base_url, "--auth-token", AUTH_TOKEN, "--say", "Hello there",
            "--audio", str(clip), "--listen-s", "2.5", "--record", str(record),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode == 0, err.decode()[-2000:]
        session = realtime.sessions[0]
        assert session.responses_done >= 1
        assert "bot audio heard" in out.decode()
        with wave.open(str(record)) as wav:
            assert wav.getnchannels() == 2
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        assert np.abs(frames[:, 0]).max() > 1000 and np.abs(frames[:, 1]).max() > 1000  # caller and bot
        assert realtime.violations == []
