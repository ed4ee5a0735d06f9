"""Plivo end to end through the gateway: the V3-signed answer webhook answered with a bidirectional
``<Stream>`` whose ``extraHeaders`` carry the single-use token (hex), the media stream admitted and
bridged to the model, the after-stream hand-off XML, and refusals without a valid signature or token.
Real gateway (uvicorn), the Realtime stand-in, Plivo's protocol-exact stream stand-in."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError

from service.audio.g711 import pcm16_to_ulaw
from tests.integration.conftest import run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.standins.plivo_caller import PlivoFrames, run_stream
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import synthesize
from tests.unit.test_provider_plivo import _v3

TOKEN = "MzRiNTQxMjQyYzAxOTdkNjhkMDk3Yz"
NONCE = "12345678901234567890"


def _signed(base_public: str, path: str, form: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Plivo-Signature-V3": _v3(token, "POST", base_public + path, form, NONCE),
            "X-Plivo-Signature-V3-Nonce": NONCE}


async def test_signed_call_streams_the_bot_answers_and_after_stream_hangs_up() -> None:
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=600, transcripts=["hello"])) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        plivo_auth_token=TOKEN, vad_silence_duration_ms=300,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        form = {"CallUUID": call_id, "From": "4915112345678", "To": "4930901820", "CallStatus": "ringing"}
        answer = await http.post(gw.base_url + "/plivo/voice", data=form,
                                 headers=_signed(gw.settings.public_url, "/plivo/voice", form))
        assert answer.status_code == 200, answer.text
        stream = ET.fromstring(answer.text).find("Stream")
        assert stream is not None and stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
        frames = PlivoFrames(extra_headers=stream.get("extraHeaders", ""), call_id=call_id)
        ws_url = "ws://" + urlsplit(gw.base_url).netloc + urlsplit((stream.text or "").strip()).path
        speech = pcm16_to_ulaw(synthesize("Hello, I have a question about my bill."))
        result = await run_stream(ws_url, frames, speech + b"\xff" * 8000 * 3, max_duration_s=15)  # stay to hear it
        assert result.bot_audio, "the bot's reply reached the caller"
        assert result.echoed, "checkpoints went out and came back as playedStream"
        assert len(realtime.sessions) == 1
        after = await http.post(gw.base_url + "/plivo/after-stream", data=form,
                                headers=_signed(gw.settings.public_url, "/plivo/after-stream", form))
        assert after.status_code == 200 and [e.tag for e in ET.fromstring(after.text)] == ["Hangup"]


async def test_bad_signature_and_missing_token_are_refused() -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url, plivo_auth_token=TOKEN,
    ) as gw, httpx.AsyncClient() as http:
        call_id = str(uuid.uuid4())
        form = {"CallUUID": call_id, "From": "4915112345678", "To": "4930901820"}
        bad = _signed(gw.settings.public_url, "/plivo/voice", form, token="not-the-token")
        assert (await http.post(gw.base_url + "/plivo/voice", data=form, headers=bad)).status_code == 403
        with pytest.raises(ConnectionClosedError) as closed:
            await run_stream("ws://" + urlsplit(gw.base_url).netloc + "/plivo/media",
                             PlivoFrames(call_id=call_id), b"\xff" * 1600, max_duration_s=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert realtime.sessions == []
