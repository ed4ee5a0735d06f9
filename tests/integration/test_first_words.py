"""First words and no dead air (docs/first-words.md) end to end over real sockets: the gateway under
uvicorn, the Twilio caller stand-in (its playback buffer is the caller's ear), the Realtime stand-in
with simulated latencies. Measured on the caller's received audio: the filler starts within
``filler_after_ms`` + 100 ms of the end of the caller's turn, stops before the first sample of the
real answer and never overlaps it, and a barge-in afterwards still truncates at exactly what was
heard of the answer; a fast model gets no filler; a pre-warmed session greets sooner, and a stream
that lands on another replica leaves that replica's pre-warmed session to its TTL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from service.providers.twilio.dialect import VOICE_PATH
from tests.conftest import RedisServer
from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY, bridged, speech
from tests.poll import wait_until
from tests.standins.balancer import Balancer
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn

REPLY_HZ = 2000.0  # the model's answer: a tone far above the filler's low murmur, told apart by spectrum
FILLER_AFTER_MS = 300
FRAME = 80  # 10 ms at 8 kHz


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def classify(audio: npt.NDArray[np.int16]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per 10 ms frame of the caller's received audio: (answer present, filler present)."""
    n = len(audio) // FRAME
    frames = audio[: n * FRAME].astype(np.float64).reshape(n, FRAME) * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1 / 8000)
    total = power.sum(axis=1) + 1e-9
    loud = np.sqrt(np.mean(frames**2, axis=1)) > 150  # about -47 dBFS: well above mu-law idle noise
    answer = loud & (power[:, (freqs >= 1700) & (freqs <= 2300)].sum(axis=1) / total > 0.5)
    filler = loud & (power[:, freqs <= 1200].sum(axis=1) / total > 0.6)
    return answer, filler


def sent_at(session: Any, event_type: str, index: int = 0) -> float:
    return [s.at for s in session.sent if s.type == event_type][index]


async def test_slow_model_filler_starts_in_time_stops_before_the_answer_and_the_ledger_stays_exact() -> None:
    # Appends are not validated strictly here (other tests do): the three peers share this loop, and
    # 50 validations a second would only add scheduling jitter to the timing measured.
    behaviour = ScriptedBehaviour(transcripts=["where is my order", "wait"], reply_ms=3000, reply_tone_hz=REPLY_HZ,
                                  first_delta_delay_ms=550, pacing=4.0, validate_appends=False)
    async with bridged(behaviour, filler_after_ms=FILLER_AFTER_MS, filler_repeat_ms=0,
                       vad_silence_duration_ms=300) as (_gw, realtime, caller):
        fillers_before = metric("callbridge_fillers_total", reason="turn")
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("Could you check where my order is?"), silence(300))
        await session.wait_for_sent("response.output_audio.delta", timeout_s=10)
        await call.wait_for(lambda: len(call.playback.clears) >= 1, timeout_s=10)
        turn_ended = sent_at(session, "input_audio_buffer.speech_stopped")
        first_delta = sent_at(session, "response.output_audio.delta")
        media = [m for m in call.playback.media if m.at >= turn_ended]
        clip, clear = media[0], call.playback.clears[0]
        answer = [m for m in media if m.at >= clear.at]
        assert answer and answer[0].at >= first_delta
        # heard: the clip started playing when it arrived (the buffer was idle), in time
        filler_delay_ms = (clip.at - turn_ended) * 1000
        print(f"filler: started {filler_delay_ms:.0f} ms after the turn ended; answer's first delta "
              f"{(first_delta - turn_ended) * 1000:.0f} ms after it")
        assert filler_delay_ms <= FILLER_AFTER_MS + 100, filler_delay_ms
        # cut the instant real audio arrived: the clip's last heard sample precedes the answer's first
        heard = call.playback.played_of_range(clip.position, clip.position + clip.length)
        assert 0 < heard < clip.length  # it was sounding, and it was cut
        clip_end, answer_start = clip.at + heard / 8000, answer[0].at
        assert clip_end <= answer_start + 1e-3
        assert answer_start - clip_end < 0.05, answer_start - clip_end
        assert clear.at <= answer_start and clear.discarded_bytes == clip.length - heard
        # on the received signal: the filler is heard, then the answer, never both at once
        await call.wait_for(lambda: call.playback.played_total >= clip.length // 2 + 8000, timeout_s=10)
        is_answer, is_filler = classify(call.played_audio())
        start = int((clip.at - call.origin) * 100)
        assert is_filler[start: start + 15].sum() >= 10  # the murmur, not the answer tone
        assert not (is_answer & is_filler).any()
        first_answer = int(np.argmax(is_answer[start:])) + start
        assert not is_filler[first_answer:].any()
        assert (first_answer - (np.flatnonzero(is_filler[:first_answer])[-1])) <= 5  # no gap over 50 ms
        assert metric("callbridge_fillers_total", reason="turn") == fillers_before + 1
        # the ledger never saw the clip: a barge-in truncates at what was heard of the answer alone
        await call.wait_for(lambda: call.playback.played_total >= heard + 8 * 800, timeout_s=10)
        await call.send_audio(speech("Wait, stop please"), silence(400))
        await session.wait_until(lambda: len(session.truncates) >= 1, timeout_s=10)
        truncate = session.truncates[0]
        barge_clear = call.playback.clears[1]
        answer = [m for m in call.playback.media if clear.at <= m.at < barge_clear.at]
        answer_heard_ms = sum(call.playback.played_of_range(m.position, m.position + m.length)
                              for m in answer) / 8
        print(f"truncate at {truncate.audio_end_ms} ms; the caller heard {answer_heard_ms:.0f} ms of the answer")
        assert truncate.accepted
        assert abs(truncate.audio_end_ms - answer_heard_ms) <= 40, (truncate.audio_end_ms, answer_heard_ms)
        await call.hang_up()
        assert realtime.violations == [] and call.violations == []


async def test_fast_model_gets_no_filler() -> None:
    behaviour = ScriptedBehaviour(transcripts=["hello"], reply_ms=800, reply_tone_hz=REPLY_HZ, first_delta_delay_ms=0)
    async with bridged(behaviour, filler_after_ms=FILLER_AFTER_MS, vad_silence_duration_ms=300) as (_gw, realtime, caller):
        fillers_before = metric("callbridge_fillers_total", reason="turn")
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("Hello there"), silence(300))
        await session.wait_until(lambda: session.responses_done >= 1, timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= 800 * 8 - 160, timeout_s=10)
        turn_ended = sent_at(session, "input_audio_buffer.speech_stopped")
        first = next(m for m in call.playback.media if m.at >= turn_ended)
        print(f"fast model: first answer audio {(first.at - turn_ended) * 1000:.0f} ms after the turn ended")
        assert call.playback.clears == []
        is_answer, is_filler = classify(call.played_audio())
        assert is_answer.sum() >= 60 and not is_filler.any()
        # the whole answer has played, far past the filler's deadline: no filler was ever due
        assert metric("callbridge_fillers_total", reason="turn") == fillers_before
        await call.hang_up()


async def first_greeting_s(caller: TwilioCallerStandIn, stream_delay_s: float) -> tuple[float, CallHandle]:
    """Seconds from the stream's ``start`` to the first greeting audio the caller received."""
    call = await caller.place_call(stream_delay_s=stream_delay_s)
    await call.wait_for(lambda: bool(call.playback.media), timeout_s=10)
    return call.playback.media[0].at - call.origin, call


@contextlib.asynccontextmanager
async def greeting_gateway(realtime: RealtimeStandIn, **overrides: Any) -> AsyncIterator[
        tuple[RunningGateway, TwilioCallerStandIn]]:
    settings = {"realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                "greeting": True, "input_transcription_model": "whisper-1", **overrides}
    async with run_gateway(**settings) as gw, TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
        yield gw, caller


async def test_a_prewarmed_session_greets_sooner() -> None:
    behaviour = ScriptedBehaviour(reply_ms=600, handshake_delay_ms=150, session_delay_ms=100)
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        async with greeting_gateway(realtime) as (_, cold_caller):
            cold, cold_call = await first_greeting_s(cold_caller, stream_delay_s=0.5)
            await cold_call.hang_up()
        claimed_before = metric("callbridge_prewarm_total", outcome="claimed")
        async with greeting_gateway(realtime, prewarm=2, prewarm_ttl_s=5.0) as (gw, warm_caller):
            warm, warm_call = await first_greeting_s(warm_caller, stream_delay_s=0.5)
            session = realtime.sessions[-1]
            assert session.received_types().count("session.update") == 1  # configured once, before the stream
            assert metric("callbridge_prewarm_total", outcome="claimed") == claimed_before + 1
            assert len(gw.gateway.prewarm_pool) == 0
            await warm_call.hang_up()
        print(f"first greeting audio after start: {cold * 1000:.0f} ms cold, {warm * 1000:.0f} ms pre-warmed")
        assert warm < cold - 0.2, (warm, cold)  # the set-up (>= 350 ms here) happened before the stream
        assert realtime.violations == []


async def test_a_stream_on_another_replica_does_not_claim_and_the_first_replica_closes_its_session(
        redis_server: RedisServer) -> None:
    behaviour = ScriptedBehaviour(reply_ms=400)
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime, \
            Balancer([], rotate=True) as balancer:
        common = {"realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                  "greeting": True, "input_transcription_model": "whisper-1", "public_url": balancer.url,
                  "redis_url": redis_server.url, "max_model_sessions": 4, "prewarm": 2, "prewarm_ttl_s": 1.0}
        async with run_gateway(start_services=True, replica_id="replica-a", **common) as gw_a, \
                run_gateway(start_services=True, replica_id="replica-b", **common) as gw_b:
            balancer.backends = [int(gw_a.base_url.rsplit(":", 1)[1]), int(gw_b.base_url.rsplit(":", 1)[1])]
            async with TwilioCallerStandIn(balancer.url, AUTH_TOKEN) as caller:
                call = await caller.place_call()  # webhook -> replica A, media stream -> replica B
                await call.wait_for(lambda: bool(call.playback.media), timeout_s=10)  # B greets
                assert call.call_sid in gw_b.gateway.calls and call.call_sid not in gw_a.gateway.calls
                warmed = realtime.sessions[0]  # A's pre-warmed session, never claimed
                await warmed.wait_until(lambda: warmed.closed, timeout_s=5.0)
                assert len(realtime.sessions) == 2 and not realtime.sessions[1].closed
                client = aioredis.from_url(redis_server.url)

                async def only_b_holds_a_lease() -> bool:
                    members = {m.decode() for m in await client.zrange("cb:model_sessions", 0, -1)}
                    return members == {f"replica-b|{call.call_sid}"}

                await wait_until(only_b_holds_a_lease, timeout=5, what="A's pre-warm lease to be released")
                await call.hang_up()
                await client.aclose()


async def test_a_webhook_without_a_stream_leaves_no_session_when_the_gateway_stops() -> None:
    async with RealtimeStandIn(ScriptedBehaviour(), require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        async with greeting_gateway(realtime, prewarm=2, prewarm_ttl_s=30.0) as (gw, caller):
            form = caller.call_form("CA" + "4" * 32, "+15551230000", "+15559870000")
            answer = await caller.post_signed(caller.public_url + VOICE_PATH, form)
            assert answer.status_code == 200 and "<Stream" in answer.text
            warmed = await realtime.wait_for_session()
            await warmed.wait_for_sent("session.updated")  # configured while no stream ever comes
            assert len(gw.gateway.prewarm_pool) == 1
        await warmed.wait_until(lambda: warmed.closed, timeout_s=5.0)  # shutdown closed it
