"""SignalWire: the pure dialect (every message, every error, state machine), X-SignalWire-Signature in both
schemes with vectors computed here with ``hmac``, the cXML builders, and the stand-in's framing over a
real 127.0.0.1 WebSocket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from service.providers.base import (
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
)
from service.providers.jsonwire import StreamPhase
from service.providers.signalwire.auth import (
    after_stream_cxml,
    compute_json_signature,
    connect_stream_cxml,
    stream_url,
    validate_signalwire_request,
)
from service.providers.signalwire.dialect import STREAM_TOKEN_PARAMETER, SignalWireDialect
from tests.standins.json_stream_caller import validate_gateway_frame
from tests.standins.signalwire_caller import PROFILE, PROJECT_ID, CarrierFrames, run_stream

SID = "7a1f3c2e-5b6d-4e8f-9a0b-1c2d3e4f5a6b"
CALL = "0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b"


def started(params: dict[str, str] | None = None) -> tuple[SignalWireDialect, CarrierFrames]:
    dialect = SignalWireDialect()
    frames = CarrierFrames(PROFILE, SID, CALL)
    assert isinstance(dialect.parse(frames.connected()), StreamConnected)
    event = dialect.parse(frames.start(params or {STREAM_TOKEN_PARAMETER: "tok"}))
    assert isinstance(event, StreamStarted)
    return dialect, frames


def test_implements_the_protocol() -> None:
    dialect: TelephonyDialect = SignalWireDialect()
    assert dialect.name == "signalwire"


def test_full_stream_parses_to_typed_events() -> None:
    dialect = SignalWireDialect()
    frames = CarrierFrames(PROFILE, SID, CALL)
    connected = dialect.parse(frames.connected())
    assert connected == StreamConnected(protocol="Call", version="1.0.0")
    start = dialect.parse(frames.start({"stream_token": "abc", "from": "+15550001111"}))
    assert start == StreamStarted(
        stream_id=SID, call_id=CALL, account_id=PROJECT_ID,
        custom_parameters={"stream_token": "abc", "from": "+15550001111"},
        encoding="audio/x-mulaw", sample_rate=8000, channels=1,
    )
    assert dialect.phase is StreamPhase.STREAMING
    audio = bytes(range(160))
    media = dialect.parse(frames.media(audio))
    assert media == MediaReceived(audio, 0, 1)
    assert dialect.parse(frames.media(audio)) == MediaReceived(audio, 20, 2)
    assert dialect.parse(frames.dtmf("b")) == DtmfReceived("B")
    assert dialect.parse(frames.mark("m1")) == MarkEchoed("m1")
    assert dialect.last_sequence_number == 5  # start=1, media 2-3, dtmf 4, mark 5
    assert dialect.parse(frames.stop()) == StreamStopped(call_id=CALL)
    assert dialect.phase is StreamPhase.STOPPED


def test_bytes_frames_and_json_number_counters_are_accepted() -> None:
    dialect, _ = started()
    msg = {"event": "media", "streamSid": SID, "sequenceNumber": 9,
           "media": {"track": "inbound", "chunk": 3, "timestamp": 40, "payload": "//8="}}
    assert dialect.parse(json.dumps(msg).encode()) == MediaReceived(b"\xff\xff", 40, 3)
    assert dialect.last_sequence_number == 9


def _start(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "streamSid": SID, "accountSid": str(uuid.uuid4()), "callSid": CALL, "tracks": ["inbound"],
        "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    msg: dict[str, Any] = {"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": body}
    for key, value in changes.items():
        target, _, name = key.rpartition("__")
        where = msg if not target else body if target == "start" else body["mediaFormat"]
        if value is _DELETE:
            del where[name]
        else:
            where[name] = value
    return msg


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"streamSid": "MZ123"}, "streamSid is not a valid id"),
        ({"streamSid": _DELETE}, "streamSid is missing"),
        ({"start": _DELETE}, "start is missing"),
        ({"start__streamSid": str(uuid.uuid4())}, "differs"),
        ({"start__callSid": "CA0123"}, "start.callSid is not a valid id"),
        ({"start__callSid": 7}, "must be a string"),
        ({"start__accountSid": "x y"}, "accountSid is not a valid id"),
        ({"start__tracks": ["outbound"]}, "start.tracks"),
        ({"start__mediaFormat": _DELETE}, "start.mediaFormat is missing"),
        ({"start__mediaFormat__encoding": "audio/x-alaw"}, "unsupported media encoding"),
        ({"start__mediaFormat__sampleRate": 16000}, "sample rate"),
        ({"start__mediaFormat__sampleRate": "8k"}, "decimal"),
        ({"start__mediaFormat__channels": 2}, "channel"),
        ({"start__customParameters": {"k": 1}}, "must be a string"),
        ({"start__customParameters": {f"k{i}": "v" for i in range(17)}}, "entries"),
        ({"start__customParameters": {"k": "v" * 513}}, "longer than"),
        ({"sequenceNumber": "-1"}, "sequenceNumber"),
    ],
)
def test_bad_start_is_rejected_and_leaves_the_stream_unstarted(changes: dict[str, Any], expected: str) -> None:
    dialect = SignalWireDialect()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(json.dumps(_start(**changes)))
    assert dialect.phase is StreamPhase.BEFORE_START and dialect.stream_id is None
    assert isinstance(dialect.parse(json.dumps(_start())), StreamStarted)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"event": 3}', "no string 'event'"),
        ('{"event": "hello"}', "unknown event"),
        ("x" * 70000, "exceeds"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "!!"}}), "base64"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": ""}}), "empty"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": 5}}), "must be a string"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {}}), "payload is missing"),
        (json.dumps({"event": "media", "streamSid": SID}), "media is missing"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "AA==", "track": "outbound"}}), "track"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "AA==", "chunk": "x"}}), "chunk"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "A" * 70000}}), "exceeds"),
        (json.dumps({"event": "media", "media": {"payload": "AA=="}}), "without streamSid"),
        (json.dumps({"event": "media", "streamSid": CALL, "media": {"payload": "AA=="}}), "another streamSid"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "mark.name is missing"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "n" * 129}}), "longer"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "x"}}), "dtmf.digit"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}), "dtmf.digit"),
        (json.dumps({"event": "stop", "streamSid": SID, "stop": {"callSid": str(uuid.uuid4())}}), "differs"),
        (json.dumps({"event": "connected"}), "'connected' in phase streaming"),
        (json.dumps(_start()), "second 'start'"),
    ],
)
def test_malformed_frames_raise_protocol_error_and_change_nothing(frame: str, expected: str) -> None:
    dialect, _ = started()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(frame)
    assert dialect.phase is StreamPhase.STREAMING
    assert dialect.parse(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "ok"}})) == MarkEchoed("ok")


def test_protocol_errors_never_quote_dtmf_digits() -> None:
    dialect, _ = started()
    for digit in ("4111111111111111", 4111111111111111, ["4111"]):
        with pytest.raises(ProtocolError) as caught:
            dialect.parse(json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": digit}}))
        assert "4111" not in str(caught.value)


@pytest.mark.parametrize("event", ["media", "mark", "dtmf", "stop"])
def test_messages_before_start_are_rejected(event: str) -> None:
    dialect = SignalWireDialect()
    with pytest.raises(ProtocolError, match="before 'start'"):
        dialect.parse(json.dumps({"event": event, "streamSid": SID}))


def test_everything_after_stop_is_rejected_and_builders_refuse() -> None:
    dialect, frames = started()
    dialect.parse(frames.stop())
    for frame in (frames.media(b"\xff" * 160), frames.mark("x"), frames.dtmf("1"), frames.stop(), json.dumps(_start())):
        with pytest.raises(ProtocolError, match="after 'stop'"):
            dialect.parse(frame)
    with pytest.raises(ProtocolError, match="stopped"):
        dialect.build_clear()


def test_builders_emit_exact_twilio_shaped_json() -> None:
    dialect, _ = started()
    assert json.loads(dialect.build_media(b"\x00\x01")) == {
        "event": "media", "streamSid": SID, "media": {"payload": "AAE="}}
    assert json.loads(dialect.build_mark('a"b')) == {"event": "mark", "streamSid": SID, "mark": {"name": 'a"b'}}
    assert json.loads(dialect.build_clear()) == {"event": "clear", "streamSid": SID}


def test_builders_refuse_before_start_and_bad_input() -> None:
    dialect = SignalWireDialect()
    for build in (lambda: dialect.build_media(b"\xff"), lambda: dialect.build_mark("m"), dialect.build_clear):
        with pytest.raises(ProtocolError, match="no stream has started"):
            build()
    dialect, _ = started()
    with pytest.raises(ProtocolError, match="empty"):
        dialect.build_media(b"")
    with pytest.raises(ProtocolError, match="mark name"):
        dialect.build_mark("")


@settings(max_examples=200, deadline=None)
@given(audio=st.binary(min_size=1, max_size=4000), name=st.text(min_size=1, max_size=128))
def test_built_frames_round_trip_through_the_stand_in_validator(audio: bytes, name: str) -> None:
    assume(audio[:4] != b"RIFF")  # the stand-in flags WAV headers in media, rightly
    dialect, _ = started()
    media, problems = validate_gateway_frame(PROFILE, dialect.build_media(audio), SID)
    assert not problems and media is not None
    assert base64.b64decode(media["media"]["payload"]) == audio
    mark, problems = validate_gateway_frame(PROFILE, dialect.build_mark(name), SID)
    assert not problems and mark is not None and mark["mark"]["name"] == name


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_frames_raise_only_protocol_error(frame: str | bytes) -> None:
    for dialect in (SignalWireDialect(), started()[0]):
        try:
            dialect.parse(frame)
        except ProtocolError:
            pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop"]),
       fields=st.dictionaries(st.sampled_from(["streamSid", "start", "media", "mark", "dtmf", "stop",
                                               "sequenceNumber"]), _json_values, max_size=5))
def test_shaped_junk_raises_only_protocol_error(event: str, fields: dict[str, Any]) -> None:
    dialect, _ = started()
    try:
        dialect.parse(json.dumps({"event": event, **fields}))
    except ProtocolError:
        pass


# --- signatures ---------------------------------------------------------------------------------------

KEY = "PSK_test_signing_key_0123456789"
PUBLIC = "https://gw.example.com"


def _form_signature(key: str, url: str, form: dict[str, str]) -> str:
    """SignalWire's compatibility scheme, written out: URL + key/value pairs sorted by key, HMAC-SHA1, b64."""
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_form_signature_vector_validates() -> None:
    form = {"CallSid": CALL, "From": "+15550001111", "To": "+15550002222", "CallStatus": "ringing"}
    signature = _form_signature(KEY, PUBLIC + "/signalwire/voice", form)
    assert validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", form, signature)
    assert not validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", {**form, "To": "+1"}, signature)
    assert not validate_signalwire_request("other", PUBLIC, "/signalwire/voice", form, signature)
    assert not validate_signalwire_request(KEY, "https://evil.example.com", "/signalwire/voice", form, signature)


def test_json_signature_vector_validates_with_and_without_default_port() -> None:
    body = b'{"call_id":"abc","event":"calling.call.state"}'
    for signed_url in (PUBLIC + "/signalwire/voice", "https://gw.example.com:443/signalwire/voice"):
        expected = hmac.new(KEY.encode(), signed_url.encode() + body, hashlib.sha1).hexdigest()
        assert compute_json_signature(KEY, signed_url, body) == expected
        assert validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", body, expected)
        assert validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", body.decode(), expected)
        assert not validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", body + b" ", expected)


def test_json_body_falls_back_to_the_form_scheme_over_its_fields() -> None:
    fields = {"CallSid": CALL, "To": "+15550002222"}
    signature = _form_signature(KEY, PUBLIC + "/signalwire/voice", fields)
    assert validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", json.dumps(fields).encode(), signature)
    assert not validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", b"[1, 2]", signature)
    assert not validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", b"\xff not json", signature)


@pytest.mark.parametrize("signature", [None, "", "x" * 200, "sïg"])
def test_missing_or_absurd_signatures_are_refused(signature: str | None) -> None:
    assert not validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", {}, signature)
    assert not validate_signalwire_request("", PUBLIC, "/signalwire/voice", {}, "abc")


@settings(max_examples=100, deadline=None)
@given(form=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6),
       query=st.sampled_from(["", "a=1", "x=y&z=%20"]))
def test_any_signed_form_validates(form: dict[str, str], query: str) -> None:
    url = PUBLIC + "/signalwire/voice" + ("?" + query if query else "")
    assert validate_signalwire_request(KEY, PUBLIC, "/signalwire/voice", form, _form_signature(KEY, url, form), query)


# --- cXML ---------------------------------------------------------------------------------------------


def test_connect_stream_cxml_carries_the_token_and_redirects_after() -> None:
    root = ET.fromstring(connect_stream_cxml(PUBLIC + "/prefix", "tok.en", {"from": "+1555"}))
    connect, redirect = list(root)
    stream = connect.find("Stream")
    assert stream is not None and stream.get("url") == "wss://gw.example.com/prefix/signalwire/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {STREAM_TOKEN_PARAMETER: "tok.en", "from": "+1555"}
    assert redirect.tag == "Redirect" and redirect.get("method") == "POST"
    assert redirect.text == "https://gw.example.com/prefix/signalwire/after-stream"


def test_signalwire_refuses_ws_stream_urls() -> None:
    with pytest.raises(ValueError, match="wss"):
        stream_url("http://gw.example.com")
    with pytest.raises(ValueError, match="wss"):
        connect_stream_cxml("http://gw.example.com", "tok")
    with pytest.raises(ValueError, match="reserved"):
        connect_stream_cxml(PUBLIC, "tok", {STREAM_TOKEN_PARAMETER: "x"})
    with pytest.raises(ValueError, match="token"):
        connect_stream_cxml(PUBLIC, "")
    assert stream_url("https://gw.example.com:8443/") == "wss://gw.example.com:8443/signalwire/media"


@pytest.mark.parametrize(
    ("escalated", "queue", "target", "verb", "child"),
    [
        (False, "support", "", "Hangup", None),
        (True, "support", "", "Enqueue", None),
        (True, "support", "+15550003333", "Dial", "Number"),
        (True, "", "sip:agent@pbx.example.com", "Dial", "Sip"),
    ],
)
def test_after_stream_cxml(escalated: bool, queue: str, target: str, verb: str, child: str | None) -> None:
    (element,) = list(ET.fromstring(after_stream_cxml(escalated, queue, target)))
    assert element.tag == verb
    if child:
        inner = element.find(child)
        assert inner is not None and inner.text == target
    elif verb == "Enqueue":
        assert element.text == queue


def test_after_stream_cxml_needs_a_destination() -> None:
    with pytest.raises(ValueError, match="queue"):
        after_stream_cxml(True, " ", "")


# --- the stand-in, over a real socket --------------------------------------------------------------


async def test_stand_in_speaks_the_dialect_over_a_real_socket() -> None:
    """A minimal gateway parses every stand-in frame with the dialect, plays 100 ms of audio then a mark,
    and later clears: the stand-in echoes the mark only after the audio played, and stops cleanly."""
    seen: list[object] = []
    got_dtmf = asyncio.Event()

    async def gateway(ws: ServerConnection) -> None:
        dialect = SignalWireDialect()
        async for message in ws:
            event = dialect.parse(message)
            seen.append(event)
            if isinstance(event, StreamStarted):
                await ws.send(dialect.build_media(b"\xff" * 800))
                await ws.send(dialect.build_mark("after-100ms"))
            elif isinstance(event, DtmfReceived):
                got_dtmf.set()
                await ws.send(dialect.build_clear())
            elif isinstance(event, StreamStopped):
                await ws.close()

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        result = await run_stream(PROFILE, f"ws://127.0.0.1:{port}", b"\x7f" * 1600,
                                  parameters={"stream_token": "t"}, dtmf=[(0.2, "5")], duration_s=0.4)
    assert result.violations == []
    assert got_dtmf.is_set() and result.clears == 1
    (mark,) = result.echoed_marks
    assert mark.name == "after-100ms" and mark.echoed_at is not None
    assert mark.echoed_at - result.origin >= 0.1 - 0.005  # not echoed before its 800 bytes played
    kinds = [type(e).__name__ for e in seen]
    assert kinds[:2] == ["StreamConnected", "StreamStarted"] and kinds[-1] == "StreamStopped"
    media = [e for e in seen if isinstance(e, MediaReceived)]
    assert len(media) == 20 and media[0].payload == b"\x7f" * 160 and media[-1].payload == b"\xff" * 160
    assert [m.chunk for m in media] == list(range(1, 21))
    assert MarkEchoed("after-100ms") in seen
