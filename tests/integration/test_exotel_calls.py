"""Exotel end to end through the gateway: the Voicebot applet's socket authenticated by HTTP Basic on the
upgrade, the rate taken from ``?sample-rate=``, the stream bridged to the model, our audio cut into the
chunks Exotel plays cleanly (multiples of 320 B, at least 3.2 KB but a reply's last), marks as playback
acknowledgements, ``clear`` on barge-in with a truncate at what was heard, DTMF, ``stop``, the Passthru
branch after the applet (agents for an escalated call, end otherwise), and the refusals (1008 without
valid credentials or with a bad rate, no model session; 403 on Passthru without credentials).
Real gateway (uvicorn), the Realtime stand-in, Exotel's protocol-exact stream stand-in."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.integration.conftest import RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.standins.exotel_caller import CarrierFrames, basic_auth_header, profile, run_stream
from tests.standins.realtime_server import FunctionCallScript, RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize

USER, PASSWORD = "exotel-bot", "s3cret-pass:with-colon"


def _url(gw: RunningGateway, rate: int | None) -> str:
    query = f"?sample-rate={rate}" if rate else ""
    return "ws://" + urlsplit(gw.base_url).netloc + "/exotel/media" + query


def pcm16(samples: object) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def _gateway(realtime: RealtimeStandIn, **overrides: object) -> object:
    return run_gateway(realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
                       exotel_stream_user=USER, exotel_stream_password=PASSWORD, **overrides)


@pytest.mark.parametrize(("rate", "asgi"), [(8000, False), pytest.param(16000, False, marks=pytest.mark.slow),
                                            pytest.param(16000, True, marks=pytest.mark.slow)])
async def test_authenticated_stream_the_bot_answers_in_exotel_chunks_with_dtmf_and_stop(rate: int, asgi: bool) -> None:
    """``asgi``: the same through the ASGI media route (headers and query from the ASGI scope)."""
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=900, transcripts=["hello"])) as realtime, _gateway(
        realtime, vad_silence_duration_ms=300, asgi_media=asgi,
    ) as gw:
        wire = profile(rate)
        speech = pcm16(synthesize("Hello, I have a question about my bill.", rate=rate))
        result = await run_stream(wire, _url(gw, rate if rate != 8000 else None), speech, duration_s=5.5,
                                  headers=basic_auth_header(USER, PASSWORD), dtmf=[(0.5, "4")],
                                  frames=CarrierFrames(wire))
        assert result.violations == [], result.violations[:3]  # multiples of 320 B, at most 100 KB, stream_sid set
        media = [m for m in result.received if m.get("event") == "media"]
        assert media, "the bot's reply reached the caller"
        replies = 1
        assert result.short_chunks <= replies, "only a reply's last chunk may be under 3.2 KB"
        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
        level = np.sqrt(np.mean(np.frombuffer(audio, "<i2").astype(np.float64) ** 2))
        assert 20 * np.log10(level / 32768) > -30, "little-endian PCM at the stream's rate: the tone is loud"
        assert result.echoed_marks, "marks went out and came back once played"
        session = await realtime.wait_for_session()
        item = await session.wait_for_received("conversation.item.create", timeout_s=5)
        assert "4" in item.event["item"]["content"][0]["text"]
        await session.wait_until(lambda: session.closed, timeout_s=10)  # stop ended the model session
        assert len(realtime.sessions) == 1 and realtime.violations == []


@pytest.mark.slow  # the conformance suite's exotel row checks the same in the default run
async def test_barge_in_clears_exotel_and_truncates_to_what_was_heard() -> None:
    behaviour = ScriptedBehaviour(transcripts=["tell me everything", "stop"], reply_ms=4000, pacing=4.0)
    async with RealtimeStandIn(behaviour) as realtime, _gateway(realtime, vad_silence_duration_ms=500) as gw:
        wire = profile(8000)
        script = (pcm16(synthesize("Tell me about all your plans")) + pcm16(silence(2200))
                  + pcm16(synthesize("Wait a moment please")) + pcm16(silence(1500)))
        result = await run_stream(wire, _url(gw, 8000), script, duration_s=len(script) / 16000 + 0.5,
                                  headers=basic_auth_header(USER, PASSWORD), frames=CarrierFrames(wire))
        session = await realtime.wait_for_session()
        playback = result.playback
        assert playback is not None and result.clears >= 1 and playback.clears
        clear = playback.clears[0]
        started = [s for s in session.sent if s.type == "input_audio_buffer.speech_started" and s.at <= clear.at][-1]
        clear_ms = (clear.at - started.at) * 1000
        assert session.truncates, "the interrupted item was truncated"
        truncate = session.truncates[0]
        heard_ms = clear.played_total / 16
        print(f"exotel barge-in: clear {clear_ms:.1f} ms after speech_started (socket to socket); "
              f"truncate {truncate.audio_end_ms} ms vs heard {heard_ms:.1f} ms")
        assert 0 <= clear_ms < 50, clear_ms
        assert truncate.accepted and abs(truncate.audio_end_ms - heard_ms) <= 40, (truncate.audio_end_ms, heard_ms)
        assert result.violations == [] and realtime.violations == []


async def test_escalation_then_passthru_sends_the_call_to_the_agents() -> None:
    behaviour = ScriptedBehaviour(
        transcripts=["I want a manager now"], reply_ms=700,
        function_calls={1: FunctionCallScript(name="escalate_to_human",
                                              arguments={"reason": "asked for a manager", "caller_mood": "angry"})},
    )
    async with RealtimeStandIn(behaviour) as realtime, _gateway(realtime, vad_silence_duration_ms=300) as gw, \
            httpx.AsyncClient(follow_redirects=False) as http:
        wire = profile(8000)
        frames = CarrierFrames(wire)
        script = pcm16(synthesize("I want to talk to a manager now.")) + pcm16(silence(6000))
        result = await run_stream(wire, _url(gw, None), script, duration_s=8.0, send_stop=False,
                                  headers=basic_auth_header(USER, PASSWORD), frames=frames)
        assert result.close_code == 1000, "the gateway closed the socket after the hand-off line"
        assert [m for m in result.received if m.get("event") == "media"], "the hand-off line was played"
        auth = basic_auth_header(USER, PASSWORD)
        agents = await http.get(gw.base_url + "/exotel/passthru", params={"CallSid": frames.call_id}, headers=auth)
        assert agents.status_code == 200
        other = await http.get(gw.base_url + "/exotel/passthru", params={"CallSid": "not-this-call"}, headers=auth)
        assert other.status_code == 302
        refused = await http.get(gw.base_url + "/exotel/passthru", params={"CallSid": frames.call_id})
        assert refused.status_code == 403
        assert realtime.violations == []


@pytest.mark.parametrize(
    ("headers", "rate"),
    [
        ({}, None),
        (basic_auth_header(USER, "wrong"), None),
        (basic_auth_header("someone", PASSWORD), None),
        ({"Authorization": "Bearer " + PASSWORD}, None),
        (basic_auth_header(USER, PASSWORD), 11025),
    ],
)
async def test_bad_credentials_or_rate_close_1008_without_a_model_session(headers: dict[str, str],
                                                                          rate: int | None) -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, _gateway(realtime) as gw:
        wire = profile(8000)
        result = await run_stream(wire, _url(gw, rate), duration_s=1.0, headers=headers, frames=CarrierFrames(wire))
        assert result.close_code == 1008
        assert realtime.sessions == []
