"""Vonage end to end through the gateway: the HS256-signed answer webhook answered with an NCCO ``connect``
to our websocket (token and call UUID in ``headers``), the binary L16 stream admitted and bridged to the
model, exactly-sized 20 ms frames back, notifies as playback markers, ``clear`` on barge-in with a
truncate at what was heard, DTMF, both ends of the stream, the event webhook's hand-off NCCO, and the
refusals (403 on a bad signature, 1008 on a missing, forged or replayed token, no model session).
Real gateway (uvicorn), the Realtime stand-in, Vonage's protocol-exact websocket stand-in."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import numpy as np
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.standins.carrier_rest import carrier_rest
from tests.standins.realtime_server import FunctionCallScript, RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.vonage_caller import VonageFrames, run_stream

SECRET = "vonage-signature-secret-" + secrets.token_hex(8)


def signed(body: Any, secret: str = SECRET, *, iat: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A webhook as Vonage signs it: JSON body, ``Authorization: Bearer`` HS256 JWT with ``payload_hash``."""
    raw = orjson.dumps(body)
    now = int(time.time()) if iat is None else iat
    claims = {"iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), "iss": "Vonage",
              "payload_hash": hashlib.sha256(raw).hexdigest()}
    token = jwt.encode(claims, secret, algorithm="HS256")
    return raw, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _local(uri: str, gw: RunningGateway) -> str:
    return "ws://" + urlsplit(gw.base_url).netloc + urlsplit(uri).path


async def answer(http: httpx.AsyncClient, gw: RunningGateway, call_id: str) -> dict[str, Any]:
    raw, headers = signed({"uuid": call_id, "conversation_uuid": "CON-" + call_id, "from": "447700900000",
                           "to": "447700900001"})
    response = await http.post(gw.base_url + "/vonage/answer", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    (action,) = response.json()
    assert action["action"] == "connect" and action["eventType"] == "synchronous"
    assert action["eventUrl"] == [gw.settings.public_url + "/vonage/event"]
    (endpoint,) = action["endpoint"]
    assert endpoint["type"] == "websocket" and endpoint["content-type"] == f"audio/l16;rate={gw.settings.vonage_rate}"
    assert endpoint["headers"]["call_uuid"] == call_id and endpoint["headers"]["stream_token"]
    result: dict[str, Any] = endpoint
    return result


async def leg_ended(http: httpx.AsyncClient, gw: RunningGateway, call_id: str, headers: dict[str, str]) -> httpx.Response:
    raw, auth = signed({"uuid": str(uuid.uuid4()), "conversation_uuid": "CON-" + call_id, "status": "disconnected",
                        "from": "447700900000", "to": "wss://gw.example.test/vonage/media", "headers": headers,
                        "timestamp": "2026-12-04T21:00:00.000Z"})
    return await http.post(gw.base_url + "/vonage/event", content=raw, headers=auth)


def pcm16(samples: Any) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


@pytest.mark.parametrize(("rate", "asgi"), [(16000, False), pytest.param(8000, False, marks=pytest.mark.slow),
                                            pytest.param(16000, True, marks=pytest.mark.slow)])
async def test_call_streams_binary_frames_the_bot_answers_dtmf_and_the_caller_hangs_up(rate: int, asgi: bool) -> None:
    """``asgi``: the same through the ASGI media route (binary frames in and out of ``AsgiMessageSocket``)."""
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=600, transcripts=["hello"])) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url, asgi_media=asgi,
        vonage_signature_secret=SECRET, vonage_rate=rate, vad_silence_duration_ms=300,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        endpoint = await answer(http, gw, call_id)
        frames = VonageFrames(rate, endpoint["headers"])
        speech = pcm16(synthesize("Hello, I have a question about my bill.", rate=rate))
        script = speech + pcm16(silence(2500, rate))
        result = await run_stream(_local(endpoint["uri"], gw), frames, script, dtmf=[(5, "7")], max_duration_s=15)
        # Every binary frame was exactly one 20 ms frame (the stand-in asserts it per frame).
        assert len(result.bot_audio) >= frames.frame_bytes * 10, "the bot's reply reached the caller"
        level = np.sqrt(np.mean(np.frombuffer(bytes(result.bot_audio), "<i2").astype(np.float64) ** 2))
        assert 20 * np.log10(level / 32768) > -30, "little-endian L16 back: the reply tone is loud, not noise"
        assert result.echoed, "notifies went out and came back as websocket:notify"
        assert result.close_code is None, "the caller hung up first"
        session = await realtime.wait_for_session()
        item = await session.wait_for_received("conversation.item.create", timeout_s=5)
        assert "7" in item.event["item"]["content"][0]["text"]
        await session.wait_until(lambda: session.closed, timeout_s=10)  # the caller's close ended the model session
        assert len(realtime.sessions) == 1 and realtime.violations == []
        after = await leg_ended(http, gw, call_id, endpoint["headers"])
        assert after.status_code == 204  # not escalated, nothing to resume: the call ends


@pytest.mark.slow  # the conformance suite's vonage rows check the same in the default run
async def test_barge_in_clears_vonage_and_truncates_to_what_was_heard() -> None:
    behaviour = ScriptedBehaviour(transcripts=["tell me everything", "stop"], reply_ms=4000, pacing=4.0)
    async with RealtimeStandIn(behaviour) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        vonage_signature_secret=SECRET, vad_silence_duration_ms=500,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        endpoint = await answer(http, gw, call_id)
        frames = VonageFrames(16000, endpoint["headers"])
        script = (pcm16(synthesize("Tell me about all your plans", rate=16000)) + pcm16(silence(2200, 16000))
                  + pcm16(synthesize("Wait a moment please", rate=16000)) + pcm16(silence(1500, 16000)))
        result = await run_stream(_local(endpoint["uri"], gw), frames, script, max_duration_s=20)
        session = await realtime.wait_for_session()
        playback = result.playback
        assert playback is not None and result.clears >= 1 and playback.clears
        clear = playback.clears[0]
        started = [s for s in session.sent if s.type == "input_audio_buffer.speech_started" and s.at <= clear.at][-1]
        clear_ms = (clear.at - started.at) * 1000
        assert session.truncates, "the interrupted item was truncated"
        truncate = session.truncates[0]
        heard_ms = clear.played_total / 32
        print(f"vonage barge-in: clear {clear_ms:.1f} ms after speech_started (socket to socket); "
              f"truncate {truncate.audio_end_ms} ms vs heard {heard_ms:.1f} ms")
        assert 0 <= clear_ms < 50, clear_ms
        assert truncate.accepted and abs(truncate.audio_end_ms - heard_ms) <= 40, (truncate.audio_end_ms, heard_ms)
        assert truncate.audio_end_ms < truncate.item_audio_ms
        assert realtime.violations == []


async def test_escalation_hands_off_and_the_event_webhook_answers_the_transfer_ncco() -> None:
    behaviour = ScriptedBehaviour(
        transcripts=["I want a manager now"], reply_ms=700,
        function_calls={1: FunctionCallScript(name="escalate_to_human",
                                              arguments={"reason": "asked for a manager", "caller_mood": "angry"})},
    )
    async with RealtimeStandIn(behaviour) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        vonage_signature_secret=SECRET, vonage_transfer_to="sip:agents@pbx.example.test", vad_silence_duration_ms=300,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        endpoint = await answer(http, gw, call_id)
        frames = VonageFrames(16000, endpoint["headers"])
        script = pcm16(synthesize("I want to talk to a manager now.", rate=16000)) + pcm16(silence(8000, 16000))
        result = await run_stream(_local(endpoint["uri"], gw), frames, script, max_duration_s=20)
        assert result.close_code == 1000, "the gateway ended the websocket leg after the hand-off line"
        assert result.bot_audio, "the hand-off line was played"
        after = await leg_ended(http, gw, call_id, endpoint["headers"])
        assert after.status_code == 200
        assert after.json() == [{"action": "connect", "timeout": 30,
                                 "endpoint": [{"type": "sip", "uri": "sip:agents@pbx.example.test"}]}]
        assert realtime.violations == []


async def test_bad_signatures_get_403_and_bad_tokens_1008_without_a_model_session() -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        vonage_signature_secret=SECRET,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        body = {"uuid": call_id, "from": "447700900000", "to": "447700900001"}
        raw, headers = signed(body, secret="someone-elses-secret-0123456789abcdef")
        assert (await http.post(gw.base_url + "/vonage/answer", content=raw, headers=headers)).status_code == 403
        raw, headers = signed(body, iat=int(time.time()) - 3600)  # expired
        assert (await http.post(gw.base_url + "/vonage/answer", content=raw, headers=headers)).status_code == 403
        raw, headers = signed(body)
        tampered = raw.replace(call_id.encode(), str(uuid.uuid4()).encode())  # payload_hash no longer matches
        assert (await http.post(gw.base_url + "/vonage/answer", content=tampered, headers=headers)).status_code == 403
        assert (await http.post(gw.base_url + "/vonage/event", content=raw,
                                headers={"Content-Type": "application/json"})).status_code == 403
        for unusable in ([1, 2], {"uuid": "not-a-uuid"}):  # signed, but nothing to act on
            raw_bad, headers_bad = signed(unusable)
            assert (await http.post(gw.base_url + "/vonage/answer", content=raw_bad,
                                    headers=headers_bad)).status_code == 400
        raw_form, headers_form = signed(body)
        headers_form["Content-Type"] = "application/x-www-form-urlencoded"
        assert (await http.post(gw.base_url + "/vonage/answer", content=raw_form,
                                headers=headers_form)).status_code == 415
        endpoint = await answer(http, gw, call_id)
        url = _local(endpoint["uri"], gw)
        forged = dict(endpoint["headers"], stream_token=endpoint["headers"]["stream_token"][:-4] + "AAAA")
        other_call = dict(endpoint["headers"], call_uuid=str(uuid.uuid4()))
        missing = {"call_uuid": call_id}
        for headers_sent in (missing, forged, other_call):
            result = await run_stream(url, VonageFrames(16000, headers_sent), b"\x00" * 6400, max_duration_s=5)
            assert result.close_code == 1008, headers_sent.keys()
        assert realtime.sessions == []
        first = await run_stream(url, VonageFrames(16000, endpoint["headers"]), b"\x00" * 6400, max_duration_s=5)
        assert first.close_code is None  # admitted; the caller closed
        replay = await run_stream(url, VonageFrames(16000, endpoint["headers"]), b"\x00" * 6400, max_duration_s=5)
        assert replay.close_code == 1008, "a single-use token does not open a second stream"
        assert len(realtime.sessions) <= 1


async def test_escalation_by_rest_moves_the_live_call_with_the_hand_off_ncco(tmp_path: Path) -> None:
    """CALLBRIDGE_TRANSFER_VIA_REST with the application's key: at the transfer the gateway PUTs the hand-off
    NCCO to the call (Vonage's REST stand-in), then ends the websocket leg."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    behaviour = ScriptedBehaviour(
        transcripts=["I want a manager now"], reply_ms=700,
        function_calls={1: FunctionCallScript(name="escalate_to_human", arguments={"reason": "asked for a manager"})},
    )
    async with RealtimeStandIn(behaviour) as realtime, carrier_rest() as api, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        vonage_signature_secret=SECRET, vonage_transfer_to="+4930901820", vad_silence_duration_ms=300,
        transfer_via_rest=True, vonage_application_id="aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        vonage_private_key_file=str(pem), vonage_api_base=api.url,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        endpoint = await answer(http, gw, call_id)
        script = pcm16(synthesize("I want to talk to a manager now.", rate=16000)) + pcm16(silence(8000, 16000))
        result = await run_stream(_local(endpoint["uri"], gw), VonageFrames(16000, endpoint["headers"]), script,
                                  max_duration_s=20)
        assert result.close_code == 1000
        (put,) = api.requests
        assert (put.method, put.path) == ("PUT", f"/v1/calls/{call_id}")
        assert orjson.loads(put.body) == {"action": "transfer", "destination": {"type": "ncco", "ncco": [
            {"action": "connect", "timeout": 30, "endpoint": [{"type": "phone", "number": "4930901820"}]}]}}
        claims = jwt.decode(put.headers["authorization"].removeprefix("Bearer "), key.public_key(), algorithms=["RS256"])
        assert claims["application_id"] == "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
        assert realtime.violations == []


async def test_malformed_frames_are_skipped_and_a_flood_closes_1008() -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        vonage_signature_secret=SECRET, max_malformed_frames=5,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        endpoint = await answer(http, gw, call_id)
        frames = VonageFrames(16000, endpoint["headers"])
        async with connect(_local(endpoint["uri"], gw), open_timeout=5) as ws:
            await ws.send(frames.connected())
            session = await realtime.wait_for_session()
            await ws.send(b"\x00" * 641)  # odd length
            await ws.send("not json")
            await ws.send(b"\x01\x00" * 320)  # a good frame: the stream goes on
            await ws.send(json.dumps({"event": "websocket:dtmf", "digit": "4111111111111111"}))
            for _ in range(3):
                await ws.send(b"\x00" * 48_002)  # oversized
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        await session.wait_until(lambda: session.closed, timeout_s=5)
