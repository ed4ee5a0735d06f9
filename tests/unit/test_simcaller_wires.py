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

from service.providers.base import DtmfReceived, MarkEchoed, MediaReceived, StreamStarted, StreamStopped
from service.providers.plivo.dialect import PlivoDialect
from service.providers.signalwire.dialect import SignalWireDialect
from service.providers.telnyx.dialect import TelnyxDialect
from service.providers.twilio.dialect import TwilioDialect
from service.simcaller.carriers import CARRIERS, parse_answer
from service.simcaller.wires import CallerWire, PlivoWire, SignalWireWire, TelnyxWire, TwilioWire, WireAudio

PAIRS: dict[str, tuple[Callable[[], CallerWire], Callable[[], Any]]] = {
    "twilio": (lambda: TwilioWire("CA" + "a" * 32), TwilioDialect),
    "signalwire": (lambda: SignalWireWire("6f1c0b52-5f57-4e0a-9d0e-2b9b7a4c1d11"), SignalWireDialect),
    "telnyx-pcmu": (lambda: TelnyxWire("v3:abc_DEF-123", "PCMU"), lambda: TelnyxDialect("PCMU")),
    "telnyx-l16": (lambda: TelnyxWire("v3:abc_DEF-123", "L16"), lambda: TelnyxDialect("L16")),
    "plivo": (lambda: PlivoWire("0f8b6c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f"), PlivoDialect),
    "plivo-l16": (lambda: PlivoWire("0f8b6c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f", "audio/x-l16;rate=16000"),
                  lambda: PlivoDialect("audio/x-l16;rate=16000")),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_what_the_simulated_carrier_sends_parses_as_what_it_means(name: str) -> None:
    make_wire, make_dialect = PAIRS[name]
    wire, dialect = make_wire(), make_dialect()
    token = "tok" if wire.carrier != "plivo" else "746f6b"
    events = [dialect.parse(frame) for frame in wire.opening({"stream_token": token, "from": "1"}
                                                            if wire.carrier != "plivo" else {"callbridgeToken": token})]
    started = events[-1]
    assert isinstance(started, StreamStarted)
    assert (started.stream_id, started.call_id, started.sample_rate) == (wire.stream_id, wire.call_id, wire.audio.rate)
    assert token in started.custom_parameters.values()
    chunk = bytes((i * 37) % 256 for i in range(wire.frame_bytes))
    media = dialect.parse(wire.media(chunk))
    assert isinstance(media, MediaReceived) and media.payload == chunk
    assert dialect.parse(wire.dtmf("7")) == DtmfReceived("7")
    assert dialect.parse(wire.ack("m-1")) == MarkEchoed("m-1")
    stop = wire.stop()
    if stop is not None:
        assert isinstance(dialect.parse(stop), StreamStopped)


@pytest.mark.parametrize("name", list(PAIRS))
def test_what_the_gateway_builds_reads_back_without_breaking_a_rule(name: str) -> None:
    make_wire, make_dialect = PAIRS[name]
    wire, dialect = make_wire(), make_dialect()
    for frame in wire.opening({"callbridgeToken": "746f6b"} if wire.carrier == "plivo" else {"stream_token": "t"}):
        dialect.parse(frame)
    audio = wire.audio.silence * (wire.frame_bytes // wire.audio.width)
    media = wire.read(dialect.build_media(audio))
    assert (media.kind, media.audio, media.problems) == ("media", audio, [])
    mark = wire.read(dialect.build_mark("utt-1@160"))
    assert (mark.kind, mark.name, mark.problems) == ("mark", "utt-1@160", [])
    clear = wire.read(dialect.build_clear())
    assert (clear.kind, clear.problems) == ("clear", [])
    assert bool(clear.replies) == (wire.carrier == "plivo")  # Plivo answers clearAudio with clearedAudio


@pytest.mark.parametrize("name", list(PAIRS))
def test_frames_breaking_the_carriers_rules_are_flagged(name: str) -> None:
    wire = PAIRS[name][0]()
    assert wire.read(b"\x00\x01").problems  # binary: these carriers take JSON text only
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
