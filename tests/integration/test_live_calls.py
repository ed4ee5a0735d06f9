"""GPT-Live calls end to end over real sockets: the gateway under uvicorn with
``CALLBRIDGE_REALTIME_DIALECT=live``, the Twilio caller stand-in streaming speech at real-time pace,
and the protocol-exact GPT-Live stand-in (tests/standins/live_server.py) validating every client
event strictly. Measures the barge-in (caller onset -> last bot sample heard) and the stale bot
audio heard after the model yields."""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from tests.conftest import RedisServer
from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.standins.live_server import LiveBehaviour, LiveSession, LiveStandIn
from tests.standins.speech import silence, synthesize
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn
from tests.standins.webhook_receiver import WebhookReceiver

API_KEY = "sk-live-test-0123456789"
SECRET = "whsec-live-0123456789"
AD_TOKEN = "entra-token-abcdef"


@contextlib.asynccontextmanager
async def live_call(
    behaviour: LiveBehaviour | None = None, *, provider: str = "openai", azure_token: str | None = None,
    redis_server: RedisServer | None = None, **overrides: Any,
) -> AsyncIterator[tuple[RunningGateway, LiveStandIn, CallHandle, WebhookReceiver | None]]:
    receiver: WebhookReceiver | None = None
    settings: dict[str, Any] = {"realtime_provider": provider, "realtime_api_key": API_KEY,
                                "realtime_dialect": "live", "greeting": True, **overrides}
    if redis_server is not None:
        receiver = WebhookReceiver(SECRET)
        await receiver.up()
        settings.update(redis_url=redis_server.url, escalation_webhook_url=receiver.url,
                        escalation_webhook_secret=SECRET, transfer_queue="humans")
    try:
        async with LiveStandIn(behaviour, api_key=API_KEY, azure_token=azure_token) as live:
            if provider == "azure":
                settings["azure_endpoint"] = live.azure_endpoint
                if azure_token:
                    settings["azure_ad_token"] = azure_token
            else:
                settings["realtime_url"] = live.url
            async with run_gateway(start_services=redis_server is not None, **settings) as gw, \
                    TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
                call = await caller.place_call()
                yield gw, live, call, receiver
    finally:
        if receiver is not None:
            await receiver.down()


def heard(call: CallHandle) -> np.ndarray:
    return call.played_audio().astype(np.float64)


async def greeted(call: CallHandle, session: LiveSession) -> None:
    """Until the caller has heard the whole greeting (so the next caller audio is not a talk-over)."""
    await session.wait_until(lambda: len(session.spoken) >= 1, timeout_s=10)
    greeting_ms = len(session.spoken[0].split()) * session.behaviour.ms_per_word
    await call.wait_for(lambda: call.playback.played_total >= 8 * (greeting_ms - 100), timeout_s=15)


async def assert_transferred(call: CallHandle) -> None:
    assert await call.wait_closed(timeout_s=25) == 1000
    await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
    enqueue = ET.fromstring(call.after_stream_twiml or "").find("./Enqueue")
    assert enqueue is not None and enqueue.text == "humans"


@pytest.mark.parametrize("audio_format", ["pcm16", "pcmu"])
async def test_greeting_and_a_turn(audio_format: str) -> None:
    behaviour = LiveBehaviour(caller_transcripts=["Where is my order"])
    cost_before = REGISTRY.get_sample_value("callbridge_realtime_cost_usd_total", {"model": "gpt-live-1"}) or 0.0
    async with live_call(behaviour, live_audio_format=audio_format) as (_gw, live, call, _):
        session = await live.wait_for_session()
        await session.wait_until(lambda: session.started, timeout_s=10)
        assert session.received_types()[0] == "session.start"
        assert session.config["audio"]["format"]["type"] == ("audio/pcmu" if audio_format == "pcmu" else "audio/pcm")
        assert live.handshakes[0].headers["authorization"] == f"Bearer {API_KEY}"
        await greeted(call, session)
        assert session.appends[0][0] == "session.commentary.append"  # the greeting is asked for, once audio flows
        await call.send_audio(synthesize("Where is my order?"), silence(1200))
        await session.wait_until(lambda: len(session.spoken) >= 2, timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= 8 * 3500, timeout_s=15)
        played = heard(call)
        assert (np.abs(played) > 1000).sum() > 8 * 2000  # both utterances audible
        assert call.events("clear") == []  # no talk-over, no flush
        silent_deltas = sum(1 for _, silent in session.deltas if silent)
        media = len(call.events("media"))
        assert media < len(session.deltas) - silent_deltas + 5  # silent output is never forwarded as audio
        assert session.received_types().count("session.input_audio.append") >= 100  # input flows all the time
        await call.hang_up()
        assert live.violations == [] and call.violations == []
    # session.usage.updated (cumulative seconds, every 2 s here) priced at $0.05/min, counted once
    cost = (REGISTRY.get_sample_value("callbridge_realtime_cost_usd_total", {"model": "gpt-live-1"}) or 0.0) - cost_before
    seconds = session.received_types().count("session.input_audio.append") * 0.02
    assert 0 < cost <= seconds * 0.05 / 60 + 1e-9


async def test_talk_over_yields_and_flushes_what_is_queued() -> None:
    behaviour = LiveBehaviour(greeting=" ".join(["word"] * 30), yield_after_ms=200)  # a 7.5 s greeting
    async with live_call(behaviour) as (gw, live, call, _):
        session = await live.wait_for_session()
        await session.wait_until(lambda: len(session.spoken) >= 1, timeout_s=10)
        await call.wait_for(lambda: call.playback.played_total >= 8 * 1500, timeout_s=15)
        await call.send_audio(synthesize("Wait, wait, I have a question"), silence(800))
        await session.wait_until(lambda: session.yields >= 1, timeout_s=10)
        record = session.yield_records[0]
        await call.wait_for(lambda: len(call.playback.clears) >= 1, timeout_s=5)
        clear = call.playback.clears[0]
        assert next(iter(gw.gateway.calls.values())).bridge.stats.barge_ins == 1  # counted, no truncate
        onset = record.caller_onset_at
        # upper bounds: the last bot sample heard is at the clear at the latest (playback stops there)
        barge_in_ms = (clear.at - onset) * 1000
        stale_ms = max(0.0, (clear.at - record.at) * 1000)
        print(f"live barge-in: caller onset -> last bot sample heard {barge_in_ms:.0f} ms "
              f"(model yielded after {(record.at - onset) * 1000:.0f} ms); stale audio after yield {stale_ms:.0f} ms")
        assert stale_ms <= 60, stale_ms
        assert 0 < barge_in_ms < 1000
        assert live.violations == [] and call.violations == []


@pytest.mark.parametrize(("escalation", "utterance", "trigger"), [
    ("off", "Can I speak to a human agent please", "explicit_request"),
    ("responses", "Just give me a real person", "model_tool"),
    pytest.param("trigger", "Just give me a real person", "model_tool", marks=pytest.mark.slow),
])
async def test_escalation_by_request_and_by_the_model(redis_server: RedisServer, escalation: str, utterance: str,
                                                      trigger: str) -> None:
    behaviour = LiveBehaviour(caller_transcripts=[utterance])
    async with live_call(behaviour, redis_server=redis_server, live_escalation=escalation,
                         escalation_explicit_requests=escalation == "off") as (_gw, live, call, receiver):
        session = await live.wait_for_session()
        await greeted(call, session)
        await call.send_audio(synthesize(utterance), silence(1500))
        await assert_transferred(call)
        assert receiver is not None
        assert await receiver.wait_for(lambda r: len(r.accepted) >= 1, 20)
        record = next(iter(receiver.accepted.values())).payload
        assert record["trigger"] == trigger
        # the hand-off line was asked for, spoken by the model and heard before the transfer
        assert any('"' in content for kind, _, content in session.appends if kind == "session.commentary.append")
        line = next(text for text in session.spoken if "connect you" in text)
        assert call.playback.played_total >= 8 * len(line.split()) * session.behaviour.ms_per_word
        # the caller's turn, segmented from transcript deltas, reached the escalation record
        assert utterance.lower() in json.dumps(record).lower(), json.dumps(record)[-1500:]
        if escalation == "responses":
            assert session.function_outputs and session.function_outputs[0]["type"] == "function_call_output"
        assert live.violations == [] and call.violations == []


async def test_dtmf_zero_escalates(redis_server: RedisServer) -> None:
    async with live_call(redis_server=redis_server) as (_gw, live, call, receiver):
        session = await live.wait_for_session()
        await greeted(call, session)
        await call.send_dtmf("0")
        await assert_transferred(call)
        assert receiver is not None and await receiver.wait_for(lambda r: len(r.accepted) >= 1, 20)
        assert next(iter(receiver.accepted.values())).payload["trigger"] == "dtmf"
        assert any("keypad" in content for kind, _, content in session.appends if kind == "session.thinking.append")
        assert live.violations == []


async def test_dropped_session_is_replaced_and_reseeded() -> None:
    behaviour = LiveBehaviour(caller_transcripts=["My order number is one two three"])
    async with live_call(behaviour) as (gw, live, call, _):
        session = await live.wait_for_session()
        await greeted(call, session)
        await call.send_audio(synthesize("My order number is one two three"), silence(1200))
        await session.wait_until(lambda: len(session.spoken) >= 2, timeout_s=10)
        # 2 s more of the call: the caller's turn closes (1.5 s of audio after its last fragment)
        appended = session.received_types().count("session.input_audio.append")
        await session.wait_until(
            lambda: session.received_types().count("session.input_audio.append") >= appended + 100, timeout_s=10)
        session.drop()
        replacement = await live.wait_for_session(1, timeout_s=10)
        await replacement.wait_until(lambda: replacement.started, timeout_s=10)
        assert "one two three" in replacement.config["instructions"]  # re-seeded with the conversation
        await replacement.wait_until(lambda: replacement.received_types().count("session.input_audio.append") > 20,
                                     timeout_s=10)
        assert not call.closed and len(gw.gateway.calls) == 1  # the caller stayed on the line
        assert live.violations == []


@pytest.mark.parametrize("token", [None, AD_TOKEN])
async def test_azure_auth_forms(token: str | None) -> None:
    async with live_call(provider="azure", azure_token=token) as (_gw, live, call, _):
        session = await live.wait_for_session()
        handshake = live.handshakes[0]
        assert handshake.path == "/openai/v1/live/sessions"
        if token:
            assert handshake.headers["authorization"] == f"Bearer {token}" and "api-key" not in handshake.headers
        else:
            assert handshake.headers["api-key"] == API_KEY and "authorization" not in handshake.headers
        await greeted(call, session)
        assert json.dumps(session.config)  # a started session
        assert live.violations == []


async def test_the_standin_is_strict_like_the_service() -> None:
    """The stand-in itself: wrong path 404, missing key 401, the first frame must be session.start,
    unknown fields are refused with ``unknown_parameter`` (the SDK types alone would accept them)."""
    import websockets
    from websockets.exceptions import InvalidStatus

    async with LiveStandIn(api_key=API_KEY) as live:
        base = live.url.removesuffix("/v1/live/sessions")
        for url, headers, status in ((base + "/v1/realtime", {"Authorization": f"Bearer {API_KEY}"}, 404),
                                     (live.url, {}, 401), (live.url + "?model=gpt-live-1", {}, 404)):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(url, additional_headers=headers)
            assert refused.value.response.status_code == status
        async with websockets.connect(live.url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
            await ws.send(json.dumps({"type": "session.input_audio.append", "audio": ""}))
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["error"]["code"] == "session_not_started"
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1008
        async with websockets.connect(live.url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
            await ws.send(json.dumps({"type": "session.start", "event_id": "cb_1", "session": {
                "model": "gpt-live-1", "turn_detection": {"type": "server_vad"}}}))
            error = json.loads(await ws.recv())
            assert error["error"]["code"] == "unknown_parameter" and error["error"]["client_event_id"] == "cb_1"
            assert "session.turn_detection" in error["error"]["message"]
        assert len(live.violations) == 2  # both recorded
