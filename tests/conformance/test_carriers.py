"""One conformance suite for every routed carrier, over real sockets: the gateway under uvicorn on
127.0.0.1, the protocol-exact Realtime stand-in (every client event validated against the ``openai``
package's types), and each carrier's protocol-exact simulated caller (``service/simcaller/``: signed
voice webhook, the carrier's own stream messages, real-time paced synthesized speech, playback with
marker acknowledgements). Every test runs once per row of ``tests/conformance/rows.py``.

Covered per carrier: a full turn with a greeting; barge-in (flush within 5 ms of ``speech_started``,
truncation within 40 ms of what the carrier acknowledged as played); DTMF; stop from each side; a bad
signature refused with 403; a missing, forged, expired or replayed stream token closed with 1008 and no
model session; malformed frames skipped then a flood closed 1008, an oversized frame closed 1009;
escalation reaching the webhook receiver and the carrier's transfer markup after the stream; a model
session pre-warmed at the voice webhook and claimed by the stream.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from nacl.signing import SigningKey
from prometheus_client import REGISTRY
from websockets.exceptions import ConnectionClosed

from service.providers.tokens import mint_stream_token
from service.simcaller.carrier_call import CallRejected, CarrierCall, CarrierCaller
from tests.conformance.rows import CODEC_ROWS, PUBLIC_URL, ROWS, TRANSFER_QUEUE, Row
from tests.conftest import RedisServer
from tests.integration.conftest import RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY, wait_call_count
from tests.standins.realtime_server import FunctionCallScript, RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.webhook_receiver import WebhookReceiver

WEBHOOK_SECRET = "whsec-conformance-0123456789"
rows = pytest.mark.parametrize("row", ROWS, ids=str)


@contextlib.asynccontextmanager
async def carrier_gateway(
    row: Row, behaviour: ScriptedBehaviour | None = None, **overrides: Any
) -> AsyncIterator[tuple[RunningGateway, RealtimeStandIn, CarrierCaller]]:
    """The gateway routing ``row``'s carrier, the Realtime stand-in behind it, and the carrier's caller."""
    async with RealtimeStandIn(behaviour or ScriptedBehaviour(),
                               require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        settings: dict[str, Any] = {
            "realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
            "public_url": PUBLIC_URL, "vad_silence_duration_ms": 300, "transfer_queue": TRANSFER_QUEUE,
            **row.settings, **overrides,
        }
        async with run_gateway(**settings) as gw, \
                CarrierCaller(row.profile, gw.base_url, row.key, public_url=PUBLIC_URL) as caller:
            yield gw, realtime, caller


def speech(call: CarrierCall, text: str) -> Any:
    return synthesize(text, rate=call.wire.audio.rate)


def pause(call: CarrierCall, ms: int) -> Any:
    return silence(ms, rate=call.wire.audio.rate)


def assert_clean(realtime: RealtimeStandIn, call: CarrierCall) -> None:
    assert realtime.violations == []
    assert call.violations == []


def needs_setup(row: Row) -> None:
    """Skip set-up tests for carriers whose stream is configured rather than answered per call (Exotel:
    no voice webhook, no stream token; HTTP Basic on the upgrade instead, tested in its own row)."""
    if row.profile.fixed_plan is not None:
        pytest.skip(f"{row}: no per-call set-up webhook")


def level_dbfs(pcm: np.ndarray[Any, Any]) -> float:
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
    return 20 * np.log10(max(rms, 1e-9) / 32768)


# --- a call ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS + CODEC_ROWS, ids=str)
async def test_full_turn_with_greeting(row: Row) -> None:
    """The bot greets, the caller asks, the bot answers: audio both ways in the carrier's codec, every
    marker acknowledged, nothing flushed, one model session."""
    behaviour = ScriptedBehaviour(transcripts=["where is my order"], reply_ms=800)
    async with carrier_gateway(row, behaviour, greeting=True) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_until(lambda: session.responses_done >= 1, timeout_s=10)  # the greeting
        await call.wait_for(lambda: call.playback.buffered_bytes == 0
                            and call.playback.played_total >= 0.7 * call.wire.audio.bytes_per_second, 10)
        greeting_played = call.playback.played_total
        await call.send_audio(speech(call, "Hello, where is my order?"), pause(call, 600))
        await session.wait_until(lambda: session.responses_done >= 2, timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= greeting_played
                            + 0.7 * call.wire.audio.bytes_per_second, timeout_s=10)
        await call.wait_for(lambda: all(m.echoed_at is not None for m in call.playback.marks), timeout_s=5)
        types = session.received_types()
        assert types.index("session.update") < types.index("response.create")
        assert types.count("input_audio_buffer.append") >= 1000 // call.wire.frame_ms  # a second of frames at least
        assert call.events("clear") == [] and session.truncates == []
        assert call.playback.marks, "playback markers went out"
        assert level_dbfs(call.bot_audio()) > -30  # the -12 dBFS reply tone, not noise or byte-swapped junk
        assert len(realtime.sessions) == 1
        await call.hang_up()
        await wait_call_count(gw, 0)
        assert_clean(realtime, call)


@rows
async def test_the_voice_webhook_prewarms_the_session_the_stream_claims(row: Row) -> None:
    """With ``CALLBRIDGE_PREWARM``, the carrier's voice webhook opens and configures the model session
    (docs/first-words.md) and the call's stream takes it: one session, configured once, greeting heard."""
    needs_setup(row)
    claimed = REGISTRY.get_sample_value("callbridge_prewarm_total", {"outcome": "claimed"}) or 0.0
    async with carrier_gateway(row, ScriptedBehaviour(reply_ms=600), greeting=True, prewarm=2) as (gw, realtime, caller):
        call = await caller.place_call()
        await call.wait_for(lambda: call.playback.played_total >= 0.5 * call.wire.audio.bytes_per_second, 10)
        session = realtime.sessions[0]
        assert len(realtime.sessions) == 1 and session.received_types().count("session.update") == 1
        assert REGISTRY.get_sample_value("callbridge_prewarm_total", {"outcome": "claimed"}) == claimed + 1
        assert len(gw.gateway.prewarm_pool) == 0
        await call.hang_up()
        assert_clean(realtime, call)


@rows
async def test_barge_in_flushes_at_once_and_truncates_to_what_was_heard(row: Row) -> None:
    behaviour = ScriptedBehaviour(transcripts=["tell me everything", "stop"], reply_ms=4000, pacing=4.0)
    async with carrier_gateway(row, behaviour, vad_silence_duration_ms=500) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech(call, "Tell me about all your plans"), pause(call, 700))
        await session.wait_for_sent("response.output_audio.delta", timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= call.wire.audio.bytes_per_second, 10)  # ~1 s
        await call.send_audio(speech(call, "Wait a moment please"), pause(call, 700))
        await session.wait_until(lambda: len(session.truncates) >= 1, timeout_s=10)
        clears = call.playback.clears
        assert len(clears) >= 1
        started = [s for s in session.sent if s.type == "input_audio_buffer.speech_started"
                   and s.at <= clears[0].at][-1]
        socket_ms = (clears[0].at - started.at) * 1000
        reaction_ms = next(iter(gw.gateway.calls.values())).bridge.stats.barge_in_reactions_ms[0]
        truncate = session.truncates[0]
        heard_ms = clears[0].played_total / call.bytes_per_ms
        print(f"{row}: flush {reaction_ms:.2f} ms after speech_started in the gateway, {socket_ms:.1f} ms "
              f"socket to socket; truncate {truncate.audio_end_ms} ms vs heard {heard_ms:.1f} ms")
        assert reaction_ms <= 5.0
        assert 0 <= socket_ms < 50  # includes two loopback hops and the stand-ins' loops
        assert truncate.accepted and truncate.audio_end_ms < truncate.item_audio_ms
        if row.acks_playback:
            assert abs(truncate.audio_end_ms - heard_ms) <= 40, (truncate.audio_end_ms, heard_ms)
        # Nothing of the interrupted reply is sent after the flush.
        assert [m for m in call.playback.media if m.at > clears[0].at and m.position < clears[0].played_total] == []
        await call.hang_up()
        await wait_call_count(gw, 0)
        assert_clean(realtime, call)


@rows
async def test_dtmf_reaches_the_model(row: Row) -> None:
    async with carrier_gateway(row) as (_gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await call.send_dtmf("5")
        event = await session.wait_for_received("conversation.item.create", timeout_s=5)
        assert "5" in event.event["item"]["content"][0]["text"]
        await call.hang_up()
        assert_clean(realtime, call)


@rows
async def test_caller_hang_up_ends_the_model_session(row: Row) -> None:
    async with carrier_gateway(row) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await call.hang_up()
        await wait_call_count(gw, 0)
        await session.wait_until(lambda: session.closed, timeout_s=5)
        assert call.after_stream_text is None  # a hung-up call runs no more markup
        assert_clean(realtime, call)


@rows
async def test_gateway_side_end_closes_the_stream_and_the_markup_hangs_up(row: Row) -> None:
    async with carrier_gateway(row) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await session.close(1000, "done")
        assert await call.wait_closed(timeout_s=10) == 1000
        if call.plan.after is not None:  # carriers without after-stream markup (Exotel) decide elsewhere
            assert call.after_stream_status == row.hangup_status
            assert row.after_stream(call.after_stream_text) == row.hangup
        elif row.flow_check:
            assert await _flow_check(caller, row, call) == 302  # the flow takes its hang-up branch
        await wait_call_count(gw, 0)
        assert_clean(realtime, call)


@pytest.mark.parametrize("row", ROWS + CODEC_ROWS, ids=str)
async def test_the_answer_opens_a_two_way_stream_with_a_token_and_a_way_back(row: Row) -> None:
    """The signed voice webhook's answer: a wss:// stream on the carrier's media path (SignalWire refuses
    ws://), bidirectional in the configured codec, carrying the token where the carrier echoes it, and a
    ``<Redirect>`` to the carrier's after-stream webhook."""
    needs_setup(row)
    async with carrier_gateway(row) as (_gw, _realtime, caller):
        answer = await caller.answer(row.profile.new_call_id())
        assert answer.status_code == 200, answer.text
        plan = row.profile.parse_answer(answer.text)
        carrier = row.profile.name
        assert plan.url == PUBLIC_URL.replace("https://", "wss://") + f"/{carrier}/media"
        assert plan.parameters.get(row.profile.token_parameter)
        assert plan.after == f"{PUBLIC_URL}/{carrier}/{row.after_path}"
        assert row.stream_attributes.items() <= plan.attributes.items(), plan.attributes


# --- refusals -------------------------------------------------------------------------------------


@rows
async def test_bad_or_missing_signature_is_403_and_nothing_happens(row: Row) -> None:
    needs_setup(row)
    async with carrier_gateway(row) as (gw, realtime, caller):
        call_id = row.profile.new_call_id()
        wrong = await caller.answer(call_id, key=_wrong_key(row))
        unsigned = await caller.answer(call_id, key="")
        assert (wrong.status_code, unsigned.status_code) == (403, 403)
        assert "stream" not in wrong.text.lower()
        if row.profile.name == "telnyx":  # a genuine signature, replayed an hour later
            import httpx

            from tests.standins.telnyx_caller import voice_webhook

            body, headers = voice_webhook(SigningKey(base64.b64decode(row.key)), call_id, time.time() - 3600)
            async with httpx.AsyncClient() as http:
                assert (await http.post(gw.base_url + "/telnyx/voice", content=body, headers=headers)).status_code == 403
        assert realtime.sessions == [] and gw.gateway.calls == {}


@rows
async def test_without_its_key_the_carrier_is_refused(row: Row) -> None:
    """A gateway without the carrier's verification key never runs open: every webhook is 403."""
    needs_setup(row)
    unset = {name: "" for name in row.settings if name.endswith(("_key", "_token", "_secret"))}
    async with carrier_gateway(row, **unset) as (gw, _realtime, caller):
        assert (await caller.answer(row.profile.new_call_id())).status_code == 403
        assert gw.gateway.calls == {}


async def _flow_check(caller: CarrierCaller, row: Row, call: CarrierCall) -> int:
    """What the carrier's flow asks after the stream (Exotel's Passthru, with the socket's credentials)."""
    response = await caller.http.get(caller.base_url + row.flow_check, params={"CallSid": call.call_id},
                                     headers=call.plan.headers, follow_redirects=False)
    return response.status_code


@rows
async def test_wrong_socket_credentials_close_1008_without_a_model_session(row: Row) -> None:
    """Carriers that authenticate the socket itself (Exotel's HTTP Basic) instead of a stream token."""
    if row.profile.fixed_plan is None:
        pytest.skip(f"{row}: authenticated by the stream token (see the token tests)")
    async with carrier_gateway(row) as (gw, realtime, caller):
        for key in ("", "exotel-conformance:wrong", "someone:" + row.key.partition(":")[2]):
            caller.key = key
            try:
                call = await caller.place_call()
            except ConnectionClosed as closed:  # refused before the opening frames went out
                assert closed.rcvd is not None and closed.rcvd.code == 1008
            else:
                async with call:
                    assert await call.wait_closed(timeout_s=10) == 1008
        assert realtime.sessions == [] and gw.gateway.calls == {}


def _wrong_key(row: Row) -> str:
    if row.profile.name == "telnyx":  # someone else's Ed25519 key
        return base64.b64encode(bytes(range(100, 132))).decode()
    return "not-the-key-" + row.key[::-1]


@rows
@pytest.mark.parametrize("token", ["missing", "forged", "expired", "replayed"])
async def test_stream_without_a_valid_token_is_closed_1008_without_a_model_session(row: Row, token: str) -> None:
    needs_setup(row)
    async with carrier_gateway(row) as (gw, realtime, caller):
        call_id = row.profile.new_call_id()
        answer = await caller.answer(call_id)
        assert answer.status_code == 200, answer.text
        plan = row.profile.parse_answer(answer.text)
        parameters = dict(plan.parameters)
        name = row.profile.token_parameter
        assert name in parameters, f"the answer carries the stream token as {name!r}"
        secret = gw.settings.effective_stream_token_secret()
        if token == "missing":
            del parameters[name]
        elif token == "forged":
            parameters[name] = row.profile.encode_token(mint_stream_token(b"someone-elses-secret-0123456789", call_id, 60))
        elif token == "expired":
            parameters[name] = row.profile.encode_token(mint_stream_token(secret, call_id, 60, now=time.time() - 3600))
        else:  # replayed: the genuine token, once used by a stream that has ended
            first = await caller.open_stream(call_id, plan, parameters)
            await realtime.wait_for_session()
            await first.hang_up()
            await wait_call_count(gw, 0)
        sessions_before = len(realtime.sessions)
        async with await caller.open_stream(call_id, plan, parameters) as call:
            assert await call.wait_closed(timeout_s=10) == 1008
        assert len(realtime.sessions) == sessions_before  # no model session was opened
        assert gw.gateway.calls == {}


@rows
async def test_malformed_frames_are_skipped_then_a_flood_closes_1008(row: Row) -> None:
    async with carrier_gateway(row, max_malformed_frames=5) as (gw, realtime, caller):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        for frame in ["garbage", '{"event": "media"}', '{"event": 7}']:
            await call.send_raw(frame)
        appended = session.received_types().count("input_audio_buffer.append")
        await session.wait_until(
            lambda: session.received_types().count("input_audio_buffer.append") > appended + 5, timeout_s=5)
        assert not call.closed, "a few bad frames are logged and skipped"
        for _ in range(3):
            await call.send_raw("{not json")
        assert await call.wait_closed(timeout_s=5) == 1008
        await wait_call_count(gw, 0)


@rows
async def test_an_oversized_frame_closes_1009_and_the_gateway_serves_on(row: Row) -> None:
    async with carrier_gateway(row) as (gw, realtime, caller):
        call = await caller.place_call()
        await realtime.wait_for_session()
        await call.send_raw('{"event":"media","x":"' + "A" * (1 << 20) + '"}')
        assert await call.wait_closed(timeout_s=10) == 1009
        await wait_call_count(gw, 0)
        again = await caller.place_call()  # the process is up and takes the next call
        await realtime.wait_for_session(1)
        await again.hang_up()
        await wait_call_count(gw, 0)


# --- escalation -----------------------------------------------------------------------------------


@rows
async def test_escalation_reaches_the_webhook_and_the_transfer_markup(row: Row, redis_server: RedisServer) -> None:
    behaviour = ScriptedBehaviour(
        transcripts=["I want a manager now"], reply_ms=700,
        function_calls={1: FunctionCallScript(name="escalate_to_human",
                                              arguments={"reason": "asked for a manager", "caller_mood": "angry"})},
    )
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    await receiver.up()
    try:
        async with carrier_gateway(row, behaviour, start_services=True, redis_url=redis_server.url,
                                   escalation_webhook_url=receiver.url,
                                   escalation_webhook_secret=WEBHOOK_SECRET) as (gw, realtime, caller):
            call = await caller.place_call()
            await realtime.wait_for_session()
            await call.send_audio(speech(call, "I want to talk to a manager now."), pause(call, 400))
            assert await call.wait_closed(timeout_s=20) == 1000
            assert call.playback.played_total > 0  # the hand-off line was played before the transfer
            if call.plan.after is not None:
                assert call.after_stream_status == 200
                assert row.after_stream(call.after_stream_text) == row.transfer
            elif row.flow_check:
                assert await _flow_check(caller, row, call) == 200  # the flow takes its agents branch
            assert await receiver.wait_for(lambda r: len(r.accepted) >= 1, 20), "escalation not delivered"
            record = next(iter(receiver.accepted.values())).payload
            assert call.call_id in str(record)
            await wait_call_count(gw, 0)
            assert_clean(realtime, call)
    finally:
        await receiver.down()


async def test_rejected_answer_is_reported_not_streamed() -> None:
    """The caller itself: a webhook answer without a stream is a ``CallRejected``, not a hang."""
    row = ROWS[0]
    async with carrier_gateway(row) as (_gw, _realtime, caller):
        caller.key = ""
        with pytest.raises(CallRejected) as rejected:
            await caller.place_call()
        assert rejected.value.status == 403



# --- the simulated caller as a command --------------------------------------------------------------


@pytest.mark.parametrize("row", [pytest.param(r, marks=[] if r.id == "telnyx-l16" else pytest.mark.slow)
                                 for r in ROWS[1:] + CODEC_ROWS], ids=str)
async def test_callbridge_call_speaks_the_carrier(row: Row, tmp_path: Any) -> None:
    """``callbridge call --provider P`` places a signed call as that carrier, speaks, hears the bot and
    records both sides at the stream's rate."""
    import asyncio
    import sys
    import wave
    from pathlib import Path

    behaviour = ScriptedBehaviour(transcripts=["hello"], reply_ms=600)
    async with carrier_gateway(row, behaviour) as (gw, realtime, _caller):
        record = tmp_path / "call.wav"
        executable = Path(sys.executable).parent / "callbridge"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
        process = await asyncio.create_subprocess_exec(
            *command, "call", gw.base_url, "--provider", row.profile.name, "--key", row.key,
            "--public-url", PUBLIC_URL, "--say", "Hello there, I have a question", "--listen-s", "2.5",
            "--record", str(record), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode == 0, err.decode()[-2000:]
        assert f"{row.profile.name} call" in out.decode() and "bot audio heard" in out.decode()
        assert realtime.sessions[0].responses_done >= 1
        with wave.open(str(record)) as wav:
            rate = wav.getframerate()
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        assert rate == (16000 if row.id.endswith(("l16", "16k")) or row.id == "vonage" else 8000)  # Vonage: 16 kHz default
        assert level_dbfs(frames[:, 0]) > -40 and level_dbfs(frames[:, 1]) > -40  # caller and bot both there
        assert realtime.violations == []
        await wait_call_count(gw, 0)
