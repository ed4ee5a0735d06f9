"""The JSON-stream carrier stand-ins themselves: their frame validator flags every kind of bad gateway
frame, their markup reader round-trips our cXML/TeXML, and their signed webhooks verify with our checks
(the stand-ins sign from the definition / with PyNaCl, independently of the code under test)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from service.providers.signalwire.auth import connect_stream_cxml, validate_signalwire_request
from service.providers.telnyx.auth import connect_stream_texml, verify_telnyx_webhook
from tests.standins import exotel_caller, signalwire_caller, telnyx_caller
from tests.standins.json_stream_caller import CarrierFrames, parse_stream_markup, validate_gateway_frame

SW = signalwire_caller.PROFILE
EXO = exotel_caller.profile(8000)
TX = telnyx_caller.profile("L16")
SID = "7a1f3c2e-5b6d-4e8f-9a0b-1c2d3e4f5a6b"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("profile", "frame", "problem"),
    [
        (SW, b"\x00\x01", "binary frame"),
        (SW, "nope", "not JSON"),
        (SW, "[]", "not a JSON object"),
        (SW, json.dumps({"event": "hangup", "streamSid": SID}), "unexpected event"),
        (SW, json.dumps({"event": "clear", "streamSid": "other"}), "streamSid"),
        (SW, json.dumps({"event": "media", "streamSid": SID, "media": {}}), "payload missing"),
        (SW, json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "%%"}}), "not valid base64"),
        (SW, json.dumps({"event": "media", "streamSid": SID, "media": {"payload": _b64(b"RIFF....WAVE")}}), "WAV"),
        (SW, json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": 3}}), "mark.name"),
        (EXO, json.dumps({"event": "media", "stream_sid": SID, "media": {"payload": _b64(b"\x00" * 330)}}), "multiple of 320"),
        (EXO, json.dumps({"event": "media", "stream_sid": SID, "media": {"payload": _b64(b"\x00" * 100_160)}}), "exceeds"),
        (TX, json.dumps({"event": "media", "media": {"payload": _b64(b"\x00" * 3)}}), "multiple of 2"),
    ],
)
def test_validator_flags_bad_gateway_frames(profile: object, frame: str | bytes, problem: str) -> None:
    _, problems = validate_gateway_frame(profile, frame, SID)  # type: ignore[arg-type]
    assert any(problem in p for p in problems), problems


def test_validator_accepts_good_frames_and_flags_frames_before_start() -> None:
    assert validate_gateway_frame(TX, json.dumps({"event": "clear"}), SID)[1] == []  # Telnyx: no id outbound
    assert validate_gateway_frame(EXO, json.dumps({"event": "clear", "stream_sid": SID}), SID)[1] == []
    assert "sent before start" in validate_gateway_frame(SW, json.dumps({"event": "clear"}), None)[1][0]


def test_carrier_frames_number_messages_like_the_carrier() -> None:
    frames = CarrierFrames(EXO, "s1", "c1")
    start = json.loads(frames.start({"k": "v"}))
    media = json.loads(frames.media(b"\x00" * 1600))
    second = json.loads(frames.media(b"\x00" * 1600))
    stop = json.loads(frames.stop())
    assert (start["sequence_number"], media["sequence_number"], stop["sequence_number"]) == ("1", "2", "4")
    assert (media["media"]["chunk"], media["media"]["timestamp"]) == ("1", "0")
    assert (second["media"]["chunk"], second["media"]["timestamp"]) == ("2", "100")  # 1600 B = 100 ms at 8 kHz
    assert "track" not in media["media"] and stop["stop"] == {"call_sid": "c1", "reason": "callended"}
    assert start["start"]["custom_parameters"] == {"k": "v"} and start["stream_sid"] == "s1"


_params = st.dictionaries(st.text("abcxyz_", min_size=1, max_size=8).filter(lambda k: k != "stream_token"),
                          st.text(max_size=30).filter(lambda v: all(c >= " " or c in "\t" for c in v)), max_size=4)


@settings(max_examples=100, deadline=None)
@given(token=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=100), params=_params)
def test_markup_round_trips_through_the_stand_in_reader(token: str, params: dict[str, str]) -> None:
    sw = parse_stream_markup(connect_stream_cxml("https://gw.example.com", token, params))
    assert sw.parameters == {"stream_token": token, **params}
    assert sw.url == "wss://gw.example.com/signalwire/media" and sw.after == "https://gw.example.com/signalwire/after-stream"
    tx = parse_stream_markup(connect_stream_texml("https://gw.example.com", token, "PCMA", params))
    assert tx.parameters == {"stream_token": token, **params} and tx.attributes["bidirectionalMode"] == "rtp"


def test_markup_reader_refuses_answers_without_a_stream() -> None:
    with pytest.raises(ValueError, match="Connect"):
        parse_stream_markup("<Response><Hangup/></Response>")
    with pytest.raises(ValueError, match="root"):
        parse_stream_markup("<Other/>")


def test_stand_in_webhooks_verify_with_the_gateway_checks() -> None:
    form, headers = signalwire_caller.voice_webhook("PSKkey", "https://gw.example.com", SID)
    assert headers["X-SignalWire-Signature"] == headers["X-Twilio-Signature"]
    assert validate_signalwire_request("PSKkey", "https://gw.example.com", "/signalwire/voice", form,
                                       headers["X-SignalWire-Signature"])
    assert not validate_signalwire_request("other", "https://gw.example.com", "/signalwire/voice", form,
                                           headers["X-SignalWire-Signature"])
    signer = SigningKey(b"\x05" * 32)
    public = base64.b64encode(bytes(signer.verify_key)).decode()
    body, tx_headers = telnyx_caller.voice_webhook(signer, "v3:abc", now=1_700_000_000)
    assert verify_telnyx_webhook(public, body, tx_headers["telnyx-signature-ed25519"],
                                 tx_headers["telnyx-timestamp"], now=1_700_000_010)
    assert not verify_telnyx_webhook(public, body + b"&x=1", tx_headers["telnyx-signature-ed25519"],
                                     tx_headers["telnyx-timestamp"], now=1_700_000_010)
