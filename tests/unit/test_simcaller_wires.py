"""The simulated callers' carrier wires (``service/simcaller/wires.py``) against the gateway's own pure
dialects: every frame a simulated carrier sends parses into the event it stands for, every frame the
gateway builds reads back as media, marker or flush with no rule broken, and frames breaking a carrier's
rules are flagged. Two independent writings of each wire agreeing is what makes the stand-ins trustworthy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.providers.base import (
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    build_media_frame,
)
from service.providers.exotel.dialect import ExotelDialect
from service.providers.plivo.dialect import PlivoDialect
from service.providers.signalwire.dialect import SignalWireDialect
from service.providers.telnyx.dialect import TelnyxDialect
from service.providers.twilio.dialect import TwilioDialect
from service.providers.vonage.dialect import VonageDialect
from service.simcaller.carriers import CARRIERS, parse_answer, parse_ncco
from service.simcaller.wires import (
    CallerWire,
    ExotelWire,
    PlivoWire,
    SignalWireWire,
    TelnyxWire,
    TwilioWire,
    VonageWire,
    WireAudio,
)

VONAGE_CALL = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

PAIRS: dict[str, tuple[Callable[[], CallerWire], Callable[[], Any]]] = {
    "twilio": (lambda: TwilioWire("CA" + "a" * 32), TwilioDialect),
    "signalwire": (lambda: SignalWireWire("6f1c0b52-5f57-4e0a-9d0e-2b9b7a4c1d11"), SignalWireDialect),
    "telnyx-pcmu": (lambda: TelnyxWire("v3:abc_DEF-123", "PCMU"), lambda: TelnyxDialect("PCMU")),
    "telnyx-l16": (lambda: TelnyxWire("v3:abc_DEF-123", "L16"), lambda: TelnyxDialect("L16")),
    "plivo": (lambda: PlivoWire("0f8b6c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f"), PlivoDialect),
    "plivo-l16": (lambda: PlivoWire("0f8b6c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f", "audio/x-l16;rate=16000"),
                  lambda: PlivoDialect("audio/x-l16;rate=16000")),
    "vonage": (lambda: VonageWire(VONAGE_CALL, 16000), lambda: VonageDialect(16000)),
    "vonage-8k": (lambda: VonageWire(VONAGE_CALL, 8000), lambda: VonageDialect(8000)),
    "exotel": (lambda: ExotelWire("c0ffee" * 5), lambda: ExotelDialect(8000)),
    "exotel-16k": (lambda: ExotelWire("c0ffee" * 5, 16000), lambda: ExotelDialect(16000)),
}


def _delivered(dialect: Any, frame: str | bytes) -> Any:
    """Parse ``frame`` as the gateway's socket delivers it: a binary frame as a ``memoryview`` (service.wsio)."""
    return dialect.parse(memoryview(frame) if isinstance(frame, bytes) else frame)


def _echoed(wire: CallerWire, token: str) -> dict[str, str]:
    """What each carrier echoes from our set-up: the token under the name that carrier carries it."""
    if wire.carrier == "plivo":
        return {"callbridgeToken": token}
    if wire.carrier == "vonage":
        return {"stream_token": token, "call_uuid": wire.call_id}
    return {"stream_token": token}


@pytest.mark.parametrize("name", list(PAIRS))
def test_what_the_simulated_carrier_sends_parses_as_what_it_means(name: str) -> None:
    make_wire, make_dialect = PAIRS[name]
    wire, dialect = make_wire(), make_dialect()
    token = "746f6b"
    events = [_delivered(dialect, frame) for frame in wire.opening(_echoed(wire, token))]
    started = events[-1]
    assert isinstance(started, StreamStarted)
    assert (started.stream_id, started.call_id, started.sample_rate) == (wire.stream_id, wire.call_id, wire.audio.rate)
    assert token in started.custom_parameters.values()
    chunk = bytes((i * 37) % 256 for i in range(wire.frame_bytes))
    media = _delivered(dialect, wire.media(chunk))
    assert isinstance(media, MediaReceived) and media.payload == chunk
    assert _delivered(dialect, wire.dtmf("7")) == DtmfReceived("7")
    assert _delivered(dialect, wire.ack("m-1")) == MarkEchoed("m-1")
    stop = wire.stop()
    if stop is not None:
        assert isinstance(_delivered(dialect, stop), StreamStopped)


@pytest.mark.parametrize("name", list(PAIRS))
def test_what_the_gateway_builds_reads_back_without_breaking_a_rule(name: str) -> None:
    make_wire, make_dialect = PAIRS[name]
    wire, dialect = make_wire(), make_dialect()
    for frame in wire.opening(_echoed(wire, "746f6b")):
        _delivered(dialect, frame)
    audio = wire.audio.silence * (wire.frame_bytes // wire.audio.width)
    media = wire.read(build_media_frame(dialect, audio))
    assert (media.kind, media.audio, media.problems) == ("media", audio, [])
    mark = wire.read(dialect.build_mark("utt-1@160"))
    assert (mark.kind, mark.problems) == ("mark", [])
    assert mark.name == "utt-1@160" or wire.carrier == "vonage"  # Vonage's marker is its whole payload
    clear = wire.read(dialect.build_clear())
    assert (clear.kind, clear.problems) == ("clear", [])
    assert bool(clear.replies) == (wire.carrier in ("plivo", "vonage"))  # they acknowledge a flush
    ack = _delivered(dialect, wire.ack(mark.name))  # the acknowledgement names the marker the gateway sent
    assert ack == MarkEchoed("utt-1@160")


@pytest.mark.parametrize("name", list(PAIRS))
def test_frames_breaking_the_carriers_rules_are_flagged(name: str) -> None:
    wire = PAIRS[name][0]()
    assert wire.read(b"\x00\x01").problems  # binary: JSON text only (Vonage: exactly one 20 ms frame)
    assert wire.read("not json").problems
    assert wire.read(json.dumps({"event": "hangup"})).kind == "invalid"
    bad_payload = {"event": "media", "media": {"payload": "!!!"}, "streamSid": wire.stream_id}
    if wire.carrier == "plivo":
        bad_payload = {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                                                        "payload": "!!!"}}
    assert wire.read(json.dumps(bad_payload)).problems


def test_wire_audio_round_trips_each_codec() -> None:
    tone = (8000 * np.sin(np.arange(800) * 2 * np.pi * 440 / 8000)).astype(np.int16)
    for codec in ("mulaw", "alaw", "l16le", "l16be"):
        audio = WireAudio(codec, 8000)
        back = audio.decode(audio.encode(tone))
        error = np.sqrt(np.mean((back.astype(float) - tone) ** 2))
        snr_db = 20 * np.log10(np.sqrt(np.mean(tone.astype(float) ** 2)) / max(error, 1e-9))
        assert snr_db > (30 if codec in ("mulaw", "alaw") else 90), (codec, snr_db)
    assert WireAudio("l16be", 16000).encode(np.array([1], dtype=np.int16)) == b"\x00\x01"


def test_every_routed_carrier_has_a_simulated_caller() -> None:
    from service.providers.registry import registered

    assert {provider.name for provider in registered()} <= set(CARRIERS)


def test_vonage_and_exotel_callers_read_their_set_up() -> None:
    vonage = CARRIERS["vonage"]
    plan = parse_ncco(json.dumps([{"action": "connect", "eventUrl": ["https://x/vonage/event"], "endpoint": [
        {"type": "websocket", "uri": "wss://x/vonage/media", "content-type": "audio/l16;rate=8000",
         "headers": {"stream_token": "t", "call_uuid": VONAGE_CALL}}]}]))
    assert (plan.url, plan.after, plan.parameters["stream_token"]) == ("wss://x/vonage/media", "https://x/vonage/event", "t")
    assert vonage.new_wire(VONAGE_CALL, plan).audio.rate == 8000
    with pytest.raises(ValueError):
        parse_ncco('[{"action":"talk","text":"hi"}]')
    from service.providers.vonage.auth import verify_vonage_webhook

    request = vonage.sign("secret-0123456789-0123456789-0123456789", "https://x/vonage/answer", vonage.call_form(VONAGE_CALL, "+1", "+2", "ringing"))
    assert verify_vonage_webhook("secret-0123456789-0123456789-0123456789", request.headers["Authorization"], request.body)
    assert not verify_vonage_webhook("other-secret-0123456789-0123456789-012345", request.headers["Authorization"], request.body)
    exotel = CARRIERS["exotel"]
    assert exotel.fixed_plan is not None
    plan = exotel.fixed_plan("https://gw.example.test", "user:pass")
    from service.providers.exotel.auth import verify_basic_auth

    assert plan.url == "wss://gw.example.test/exotel/media?sample-rate=8000"
    assert verify_basic_auth(plan.headers["Authorization"], "user", "pass")


def test_parse_answer_refuses_markup_without_a_stream() -> None:
    with pytest.raises(ValueError):
        parse_answer("<Response><Hangup/></Response>")
    with pytest.raises(ValueError):
        parse_answer("<html/>")
    plan = parse_answer('<Response><Stream extraHeaders="a=1,b=2">wss://x/plivo/media</Stream>'
                        "<Redirect>https://x/after</Redirect></Response>")
    assert (plan.url, plan.parameters, plan.after) == ("wss://x/plivo/media", {"a": "1", "b": "2"}, "https://x/after")


def test_callbridge_call_offers_exactly_the_carriers_it_can_speak() -> None:
    from service.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["call", "http://127.0.0.1:1", "--provider", "plivo", "--key", "k"])
    assert (args.provider, args.key) == ("plivo", "k")
    call = next(a for a in parser._subparsers._group_actions[0].choices["call"]._actions  # type: ignore[union-attr]
                if a.dest == "provider")
    assert set(call.choices or ()) == set(CARRIERS)
