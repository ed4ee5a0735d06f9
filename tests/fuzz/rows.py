"""The rows: every parser of untrusted input in ``service/``. A new carrier dialect or model dialect
adds one row here (factory, allowed exception types, valid samples), and both fuzz runs cover it."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

from starlette.requests import Request

from service.escalation.webhook import sign, verify_signature
from service.providers.base import ProtocolError
from service.providers.browser.dialect import AUDIO_TAG, BrowserDialect
from service.providers.exotel.dialect import ExotelDialect
from service.providers.plivo.dialect import PlivoDialect
from service.providers.signalwire.dialect import SignalWireDialect
from service.providers.telnyx.dialect import TelnyxDialect
from service.providers.tokens import StreamTokenError, mint_stream_token, verify_stream_token
from service.providers.twilio.dialect import TwilioDialect
from service.providers.vonage.dialect import VonageDialect
from service.providers.webform import FormRefused, read_webhook_form
from service.realtime.events import RealtimeProtocolError
from service.realtime.protocol import dialect_for
from tests.fuzz.registry import Parse, Row
from tests.standins import exotel_caller, signalwire_caller, telnyx_caller
from tests.standins.json_stream_caller import CarrierFrames, WireProfile
from tests.standins.plivo_caller import PlivoFrames
from tests.standins.vonage_caller import VonageFrames
from tests.unit.test_realtime_protocol import beta_cases, ga_cases
from tests.unit.test_twilio_dialect import media_msg, start_msg


def _json_carrier_samples(profile: WireProfile) -> tuple[str, ...]:
    frames = CarrierFrames(profile)
    audio = bytes(random.Random(1).randrange(256) for _ in range(profile.frame_bytes))
    return (frames.connected(), frames.start({"stream_token": "t"}), frames.media(audio), frames.media(audio),
            frames.mark("cb1"), frames.dtmf("5"), frames.stop())


def _plivo_samples() -> tuple[str, ...]:
    frames = PlivoFrames(extra_headers="callbridgeToken=abc123")
    audio = bytes(frames.frame_bytes)
    return (frames.start(), frames.media(audio), frames.dtmf("1"), frames.played_stream("cb1"),
            frames.cleared_audio(), frames.stop())


def _vonage_samples() -> tuple[str | bytes, ...]:
    frames = VonageFrames(headers={"call_uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356"})
    return (frames.connected(), *frames.audio_frames(bytes(frames.frame_bytes * 2)), frames.dtmf("3"),
            frames.notify({"mark": "cb1"}), frames.cleared())


def _vonage_parse(dialect: VonageDialect) -> Parse:
    """Binary samples as the binary frames ``service.wsio`` delivers (``memoryview``), text as text."""
    return lambda message: dialect.parse(memoryview(message) if isinstance(message, bytes) else message)


def _exotel_query(message: str | bytes) -> int:
    """The Exotel socket's ``?sample-rate=`` parser: ``ValueError`` for anything unusable, never another error."""
    from service.providers.exotel.routes import sample_rate_of

    return sample_rate_of(message if isinstance(message, str) else message.decode("latin-1"))


def _browser_samples() -> tuple[str | bytes, ...]:
    start = json.dumps({"event": "start", "call_id": "WEB-0123456789abcdef", "token": "v1.t", "sample_rate": 16000})
    audio = AUDIO_TAG + bytes(random.Random(2).randrange(256) for _ in range(640))
    return (start, audio, audio, '{"event":"mark","name":"cb1"}', b'{"event":"dtmf","digit":"5"}',
            '{"event":"cleared"}', '{"event":"stop"}')


def _twilio_samples() -> tuple[str, ...]:
    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    sid = start_msg()["streamSid"]
    return (connected, json.dumps(start_msg()), json.dumps(media_msg(2)), json.dumps(media_msg(3)),
            json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": sid, "mark": {"name": "cb1"}}),
            json.dumps({"event": "dtmf", "sequenceNumber": "5", "streamSid": sid,
                        "dtmf": {"track": "inbound_track", "digit": "7"}}),
            json.dumps({"event": "stop", "sequenceNumber": "6", "streamSid": sid,
                        "stop": {"accountSid": start_msg()["start"]["accountSid"],
                                 "callSid": start_msg()["start"]["callSid"]}}))


_SECRET = "fuzz-webhook-secret"
_BODY = b'{"escalation_id":"e1"}'


def _signature_parse() -> Parse:
    def parse(message: str | bytes) -> Any:
        header = message if isinstance(message, str) else message.decode("latin-1")
        return verify_signature(_SECRET, header, _BODY, now=1_800_000_000)
    return parse


def _signature_samples() -> tuple[str, ...]:
    return (sign(_SECRET, _BODY, timestamp=1_800_000_000),
            "t=1800000000,v1=" + "0" * 64, "t=1,v1=ab,v1=cd")


_TOKEN_KEY = b"fuzz-token-key"
_CALL = "CA" + "fedcba9876543210" * 2


def _token_parse() -> Parse:
    def parse(message: str | bytes) -> Any:
        token = message if isinstance(message, str) else message.decode("latin-1")
        return verify_stream_token(_TOKEN_KEY, token, _CALL, now=1_800_000_000)
    return parse


_LOOP = asyncio.new_event_loop()


def _webform_parse() -> Parse:
    """The webhook form reader over a real starlette ``Request`` (headers valid, body generated)."""

    def parse(message: str | bytes) -> Any:
        body = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
        chunks = [body[i:i + 4096] for i in range(0, len(body), 4096)] or [b""]

        async def receive() -> dict[str, Any]:
            chunk = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        scope = {"type": "http", "method": "POST", "path": "/twilio/voice", "headers": [
            (b"content-type", b"application/x-www-form-urlencoded"), (b"x-twilio-signature", b"sig"),
            (b"content-length", str(len(body)).encode())]}
        return _LOOP.run_until_complete(read_webhook_form(Request(scope, receive), "x-twilio-signature"))
    return parse


def _webform_samples() -> tuple[str, ...]:
    return ("CallSid=CA" + "a" * 32 + "&From=%2B15551234567&To=%2B15557654321&CallStatus=ringing",
            "a=1&b=2&c=%E6%97%A5%E6%9C%AC", "x=" + "y" * 1000, "a=1&" * 250, "x=" + "y" * 70_000)


def _realtime_samples(cases: list[tuple[str, Any]]) -> tuple[str, ...]:
    audio = base64.b64encode(bytes(480)).decode()
    extra = json.dumps({"type": "response.output_audio.delta", "event_id": "e", "response_id": "r", "item_id": "i",
                        "output_index": 0, "content_index": 0, "delta": audio})
    return (*(text for text, _expected in cases), extra)


def _live_parse() -> Parse:
    """A GPT-Live dialect whose ``session.start`` went out (the first sample starts it)."""
    from service.realtime.events import SessionConfig
    from service.realtime.live import LiveDialect, LiveOptions

    dialect = LiveDialect(LiveOptions(escalation="trigger"))
    dialect.session_update(SessionConfig(instructions="fuzz"))
    return dialect.parse


def _live_samples() -> tuple[str, ...]:
    speech = base64.b64encode(b"\x10\x20" * 2400).decode()
    silence = base64.b64encode(bytes(4800)).decode()
    session = {"id": "live_1", "expires_at": 1, "model": "gpt-live-1", "status": "active"}
    return tuple(json.dumps(event) for event in (
        {"type": "session.started", "event_id": "e", "session": session},
        {"type": "session.output_audio.delta", "delta": speech},
        {"type": "session.output_transcript.delta", "event_id": "e", "delta": "Hi", "start_ms": 0, "end_ms": 200},
        {"type": "session.input_transcript.delta", "event_id": "e", "delta": "a person", "start_ms": 0, "end_ms": 200},
        {"type": "session.output_audio.delta", "delta": silence},
        {"type": "response.event", "event_id": "e", "delegation_id": "d", "event": {
            "type": "response.output_item.done", "output_index": 0, "item": {
                "type": "function_call", "call_id": "c", "name": "escalate_to_human", "arguments": "{}",
                "status": "completed"}}},
        {"type": "response.event", "event_id": "e", "delegation_id": "d", "event": {"type": "response.completed"}},
        {"type": "decision.event", "event_id": "e", "trigger_id": "t", "event": {"type": "decision.completed",
            "decision": {"model": "m", "answers": [{"type": "predicate", "name": "wants_human", "probability": 0.9}]}}},
        {"type": "session.usage.updated", "event_id": "e", "usage": {"seconds": 15}},
        {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error", "code": "c", "message": "m"}},
        {"type": "session.closed", "event_id": "e", "reason": "expired", "session": session, "usage": {"seconds": 20}},
    ))


ROWS: tuple[Row, ...] = (
    Row("twilio", lambda: TwilioDialect().parse, (ProtocolError,), _twilio_samples()),
    Row("signalwire", lambda: SignalWireDialect().parse, (ProtocolError,), _json_carrier_samples(signalwire_caller.PROFILE)),
    Row("telnyx-pcmu", lambda: TelnyxDialect("PCMU").parse, (ProtocolError,), _json_carrier_samples(telnyx_caller.profile("PCMU"))),
    Row("telnyx-l16", lambda: TelnyxDialect("L16").parse, (ProtocolError,), _json_carrier_samples(telnyx_caller.profile("L16"))),
    Row("exotel", lambda: ExotelDialect(8000).parse, (ProtocolError,), _json_carrier_samples(exotel_caller.profile(8000))),
    Row("plivo", lambda: PlivoDialect().parse, (ProtocolError,), _plivo_samples()),
    Row("vonage", lambda: _vonage_parse(VonageDialect(16000)), (ProtocolError,), _vonage_samples(), binary=True),
    Row("browser", lambda: BrowserDialect().parse, (ProtocolError,), _browser_samples(), binary=True),
    Row("realtime-ga", lambda: dialect_for("ga").parse, (RealtimeProtocolError,), _realtime_samples(ga_cases())),
    Row("realtime-beta", lambda: dialect_for("beta").parse, (RealtimeProtocolError,), _realtime_samples(beta_cases())),
    Row("gpt-live", _live_parse, (RealtimeProtocolError,), _live_samples()),
    Row("escalation-signature", _signature_parse, (), _signature_samples()),
    Row("webhook-form", _webform_parse, (FormRefused,), _webform_samples()),
    Row("exotel-upgrade-query", lambda: _exotel_query, (ValueError,),
        ("sample-rate=16000", "sample-rate=8000&k=v", "", "sample-rate=11025", "sample-rate=1&sample-rate=2")),
    Row("stream-token", _token_parse, (StreamTokenError,),
        (mint_stream_token(_TOKEN_KEY, _CALL, 60, now=1_800_000_000), "v1.1.a.b.c", "")),
)
