"""SignalWire end to end through the gateway: the signed voice webhook answered with cXML, the media
stream admitted with its single-use token and bridged to the model, refusals without a signature or
a token. Real gateway (uvicorn), the Realtime stand-in, and SignalWire's protocol-exact stream stand-in
(``tests/standins/signalwire_caller.py``)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx

from service.audio.g711 import pcm16_to_ulaw
from service.providers.signalwire.dialect import STREAM_TOKEN_PARAMETER
from tests.integration.conftest import run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.standins.json_stream_caller import CarrierFrames, parse_stream_markup, run_stream
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.signalwire_caller import PROFILE, voice_webhook
from tests.standins.speech import synthesize

KEY = "PSK_signalwire_test_key_0123456789"
PUBLIC = "https://callbridge.example.test"  # SignalWire only streams to wss://; the test dials the socket itself


def _local(ws_url: str, base: str) -> str:
    """The carrier would resolve the public host; here it is this test's gateway on 127.0.0.1."""
    return "ws://" + urlsplit(base).netloc + urlsplit(ws_url).path


async def test_signed_call_streams_and_the_bot_answers() -> None:
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=600, transcripts=["hello"])) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url, public_url=PUBLIC,
        signalwire_signing_key=KEY, vad_silence_duration_ms=300,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        form, headers = voice_webhook(KEY, PUBLIC, call_id)
        answer = await http.post(gw.base_url + "/signalwire/voice", data=form, headers=headers)
        assert answer.status_code == 200, answer.text
        markup = parse_stream_markup(answer.text)
        assert markup.url.startswith("wss://") and STREAM_TOKEN_PARAMETER in markup.parameters
        assert markup.after == PUBLIC + "/signalwire/after-stream"
        result = await run_stream(PROFILE, _local(markup.url, gw.base_url),
                                  pcm16_to_ulaw(synthesize("Hello, I have a question about my bill.")),
                                  parameters=markup.parameters, duration_s=5.0,
                                  frames=CarrierFrames(PROFILE, call_id=call_id))
        assert result.violations == []
        media = [m for m in result.received if m.get("event") == "media"]
        assert media, "the bot's reply reached the caller"
        assert all(m.get("streamSid") == result.frames.stream_id for m in media)
        assert result.echoed_marks, "playback markers went out and were acknowledged"
        assert len(realtime.sessions) == 1


async def test_unsigned_webhook_and_a_stream_without_token_are_refused() -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url, public_url=PUBLIC,
        signalwire_signing_key=KEY,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        form, headers = voice_webhook("wrong-key", PUBLIC, call_id)
        assert (await http.post(gw.base_url + "/signalwire/voice", data=form, headers=headers)).status_code == 403
        result = await run_stream(PROFILE, "ws://" + urlsplit(gw.base_url).netloc + "/signalwire/media",
                                  parameters={"from": "+15550001111"}, duration_s=1.0,
                                  frames=CarrierFrames(PROFILE, call_id=call_id))
        assert result.close_code == 1008
        assert realtime.sessions == []  # no model session was opened


async def test_without_a_signing_key_every_webhook_is_refused() -> None:
    async with run_gateway(public_url=PUBLIC) as gw, httpx.AsyncClient() as http:
        form, headers = voice_webhook("", PUBLIC, str(uuid.uuid4()))
        assert (await http.post(gw.base_url + "/signalwire/voice", data=form, headers=headers)).status_code == 403
