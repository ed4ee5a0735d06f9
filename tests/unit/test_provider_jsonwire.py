"""Properties shared by the JSON-stream carriers (SignalWire, Telnyx, Exotel), checked on each: what the
carrier's stand-in sends parses back to exactly what it carried, in order; and the base's limits hold."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.providers.base import (
    ANY_FRAMING,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    media_framing,
)
from service.providers.exotel.dialect import ExotelDialect
from service.providers.jsonwire import MAX_FRAME_BYTES, JsonStreamDialect, StreamPhase, load_object
from service.providers.signalwire.dialect import SignalWireDialect
from service.providers.telnyx.dialect import TelnyxDialect
from service.providers.twilio.dialect import TwilioDialect
from tests.standins import exotel_caller, signalwire_caller, telnyx_caller
from tests.standins.json_stream_caller import CarrierFrames, WireProfile

CARRIERS: dict[str, tuple[Callable[[], JsonStreamDialect], WireProfile]] = {
    "signalwire": (SignalWireDialect, signalwire_caller.PROFILE),
    "telnyx-pcmu": (TelnyxDialect, telnyx_caller.profile("PCMU")),
    "telnyx-l16": (lambda: TelnyxDialect("L16"), telnyx_caller.profile("L16")),
    "exotel-8k": (ExotelDialect, exotel_caller.profile(8000)),
    "exotel-16k": (lambda: ExotelDialect(16000), exotel_caller.profile(16000)),
}

_step = st.one_of(
    st.tuples(st.just("media"), st.integers(1, 400).map(lambda n: bytes(range(256)) * 2)
              .flatmap(lambda pool: st.integers(1, 200).map(lambda k: pool[: 2 * k]))),
    st.tuples(st.just("dtmf"), st.sampled_from("0123456789*#ABCD")),
    st.tuples(st.just("mark"), st.text(min_size=1, max_size=40)),
)


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=15),
       params=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=8), st.text(max_size=20), max_size=3))
def test_stand_in_frames_parse_back_to_what_they_carried(
    carrier: str, steps: list[tuple[str, object]], params: dict[str, str]
) -> None:
    make, wire = CARRIERS[carrier]
    dialect = make()
    frames = CarrierFrames(wire)
    dialect.parse(frames.connected())
    start = dialect.parse(frames.start(params))
    assert isinstance(start, StreamStarted) and start.custom_parameters == params
    assert start.stream_id == frames.stream_id and start.call_id == frames.call_id
    chunk = 0
    for kind, value in steps:
        if kind == "media":
            assert isinstance(value, bytes)
            chunk += 1
            event = dialect.parse(frames.media(value))
            assert isinstance(event, MediaReceived) and event.payload == value and event.chunk == chunk
        elif kind == "dtmf":
            assert dialect.parse(frames.dtmf(str(value))) == DtmfReceived(str(value))
        else:
            assert dialect.parse(frames.mark(str(value))) == MarkEchoed(str(value))
    assert dialect.last_sequence_number == 1 + len(steps)
    stopped = dialect.parse(frames.stop())
    assert isinstance(stopped, StreamStopped) and stopped.call_id == frames.call_id
    assert dialect.phase is StreamPhase.STOPPED


def test_frame_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        load_object(b"{" + b" " * MAX_FRAME_BYTES + b"}")
    with pytest.raises(ProtocolError, match="must be text"):
        load_object(memoryview(b"{}"))  # type: ignore[arg-type]
    assert load_object(json.dumps({"event": "x"})) == {"event": "x"}


def test_dialects_without_framing_rules_accept_any_chunk() -> None:
    assert media_framing(TwilioDialect()) is ANY_FRAMING
    assert media_framing(object()) is ANY_FRAMING
    assert media_framing(SignalWireDialect()) == ANY_FRAMING


def test_media_track_of_a_wrong_type_is_a_protocol_error() -> None:
    """Regression (found by tests/fuzz): a list as ``media.track`` raised TypeError (unhashable)."""
    import json as _json

    from service.providers.base import ProtocolError as _ProtocolError
    from service.providers.signalwire.dialect import SignalWireDialect
    from tests.standins.json_stream_caller import CarrierFrames
    from tests.standins.signalwire_caller import PROFILE

    frames = CarrierFrames(PROFILE)
    dialect = SignalWireDialect()
    dialect.parse(frames.connected())
    dialect.parse(frames.start({"stream_token": "t"}))
    media = _json.loads(frames.media(bytes(160)))
    media["media"]["track"] = ["inbound"]
    with pytest.raises(_ProtocolError, match=r"media\.track"):
        dialect.parse(_json.dumps(media))
