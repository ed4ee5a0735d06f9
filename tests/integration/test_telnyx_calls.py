"""Telnyx end to end through the gateway: the Ed25519-signed TeXML voice webhook answered with
``<Connect><Stream bidirectionalMode="rtp">``, the media stream admitted with its single-use token and
bridged to the model (PCMU, and L16 16 kHz), refusals without a valid signature or a token. Real
gateway (uvicorn), the Realtime stand-in, Telnyx's protocol-exact stream stand-in."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from nacl.signing import SigningKey

from service.audio.g711 import pcm16_to_ulaw
from service.providers.telnyx.dialect import STREAM_TOKEN_PARAMETER
from tests.integration.conftest import run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.standins.json_stream_caller import CarrierFrames, parse_stream_markup, run_stream
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import synthesize
from tests.standins.telnyx_caller import new_call_control_id, profile, voice_webhook

SIGNER = SigningKey.generate()
PUBLIC_KEY = base64.b64encode(bytes(SIGNER.verify_key)).decode()


def _local(ws_url: str, base: str) -> str:
    return "ws://" + urlsplit(base).netloc + urlsplit(ws_url).path


def _caller_audio(codec: str) -> bytes:
    speech = synthesize("Hello, I have a question about my bill.", rate=16000 if codec == "L16" else 8000)
    return speech.astype(">i2").tobytes() if codec == "L16" else pcm16_to_ulaw(speech)


@pytest.mark.parametrize("codec", ["PCMU", "L16"])
async def test_signed_call_streams_and_the_bot_answers(codec: str) -> None:
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=600, transcripts=["hello"])) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
        telnyx_public_key=PUBLIC_KEY, telnyx_codec=codec, vad_silence_duration_ms=300,
    ) as gw, httpx.AsyncClient() as http:
        call_id = new_call_control_id()
        body, headers = voice_webhook(SIGNER, call_id, time.time())
        answer = await http.post(gw.base_url + "/telnyx/voice", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        markup = parse_stream_markup(answer.text)
        assert markup.attributes["bidirectionalMode"] == "rtp" and markup.attributes["bidirectionalCodec"] == codec
        assert STREAM_TOKEN_PARAMETER in markup.parameters
        wire = profile(codec)  # type: ignore[arg-type]
        result = await run_stream(wire, _local(markup.url, gw.base_url), _caller_audio(codec),
                                  parameters=markup.parameters, duration_s=5.0,
                                  frames=CarrierFrames(wire, call_id=call_id))
        assert result.violations == []
        media = [m for m in result.received if m.get("event") == "media"]
        assert media, "the bot's reply reached the caller"
        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
        if codec == "L16":  # big-endian 16 kHz back: the reply tone is loud, not noise or byte-swapped junk
            samples = np.frombuffer(audio, dtype=">i2").astype(np.float64)
            assert 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768) > -30
        assert len(realtime.sessions) == 1


async def test_bad_signature_stale_timestamp_and_missing_token_are_refused() -> None:
    async with RealtimeStandIn(ScriptedBehaviour()) as realtime, run_gateway(
        realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url, telnyx_public_key=PUBLIC_KEY,
    ) as gw, httpx.AsyncClient() as http:
        call_id = new_call_control_id()
        body, headers = voice_webhook(SigningKey.generate(), call_id, time.time())  # someone else's key
        assert (await http.post(gw.base_url + "/telnyx/voice", content=body, headers=headers)).status_code == 403
        body, headers = voice_webhook(SIGNER, call_id, time.time() - 3600)  # replayed an hour later
        assert (await http.post(gw.base_url + "/telnyx/voice", content=body, headers=headers)).status_code == 403
        wire = profile("PCMU")
        result = await run_stream(wire, "ws://" + urlsplit(gw.base_url).netloc + "/telnyx/media", duration_s=1.0,
                                  frames=CarrierFrames(wire, call_id=call_id))
        assert result.close_code == 1008 and realtime.sessions == []
