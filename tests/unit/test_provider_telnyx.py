"""Telnyx: the pure dialect (every message incl. ``error``, both encoding spellings, codec negotiation,
state machine, every error path), Ed25519 webhook signatures with keys made here with PyNaCl, the TeXML
builders (bidirectional RTP mode always set), and the stand-in's framing over a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from websockets.asyncio.server import ServerConnection, serve

from service.providers.base import (
    ENCODING_ALAW,
    ENCODING_L16,
    ENCODING_MULAW,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    ProviderErrorReported,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    media_framing,
)
from service.providers.jsonwire import StreamPhase
from service.providers.telnyx.auth import (
    after_stream_texml,
    connect_stream_texml,
    stream_url,
    verify_telnyx_webhook,
)
from service.providers.telnyx.dialect import (
    STREAM_TOKEN_PARAMETER,
    MediaReorderer,
    TelnyxCodec,
    TelnyxDialect,
)
from tests.standins.json_stream_caller import validate_gateway_frame
from tests.standins.telnyx_caller import CarrierFrames, new_call_control_id, profile, run_stream

SID = "32de0dea-53cb-4b21-89a4-9e1819c043bc"
CALL = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


def started(codec: TelnyxCodec = "PCMU") -> tuple[TelnyxDialect, CarrierFrames]:
    dialect = TelnyxDialect(codec)
    frames = CarrierFrames(profile(codec), SID, CALL)
    assert isinstance(dialect.parse(frames.connected()), StreamConnected)
    assert isinstance(dialect.parse(frames.start({STREAM_TOKEN_PARAMETER: "tok"})), StreamStarted)
    return dialect, frames


def test_implements_the_protocol() -> None:
    dialect: TelephonyDialect = TelnyxDialect()
    assert dialect.name == "telnyx"


@pytest.mark.parametrize(
    ("codec", "mime", "encoding", "rate"),
    [
        ("PCMU", False, ENCODING_MULAW, 8000),
        ("PCMU", True, ENCODING_MULAW, 8000),
        ("PCMA", False, ENCODING_ALAW, 8000),
        ("PCMA", True, ENCODING_ALAW, 8000),
        ("L16", False, ENCODING_L16, 16000),
        ("L16", True, ENCODING_L16, 16000),
    ],
)
def test_full_stream_in_every_codec_and_spelling(codec: TelnyxCodec, mime: bool, encoding: str, rate: int) -> None:
    dialect = TelnyxDialect(codec)
    frames = CarrierFrames(profile(codec, mime_spelling=mime), SID, CALL)
    assert dialect.parse(frames.connected()) == StreamConnected(version="1.0.0")
    start = dialect.parse(frames.start({"stream_token": "abc"}))
    assert isinstance(start, StreamStarted)
    assert (start.stream_id, start.call_id, start.encoding, start.sample_rate) == (SID, CALL, encoding, rate)
    assert start.custom_parameters == {"stream_token": "abc"}
    assert start.account_id == "3e6f995f-85f7-4705-9741-53b116d28237"
    frame = bytes(range(256))[: rate // 50 * (2 if codec == "L16" else 1) % 256] or b"\x01\x02"
    assert dialect.parse(frames.media(frame)) == MediaReceived(frame, 0, 1)
    assert dialect.parse(frames.dtmf("#")) == DtmfReceived("#")
    assert dialect.parse(frames.mark("greeting-end")) == MarkEchoed("greeting-end")
    assert dialect.parse(frames.stop()) == StreamStopped(call_id=CALL)
    assert dialect.phase is StreamPhase.STOPPED and dialect.last_sequence_number == 5


def test_negotiated_format_must_match_the_configured_codec() -> None:
    dialect = TelnyxDialect("PCMA")
    frames = CarrierFrames(profile("PCMU"), SID, CALL)
    with pytest.raises(ProtocolError, match="configured PCMA"):
        dialect.parse(frames.start())
    assert dialect.phase is StreamPhase.BEFORE_START
    with pytest.raises(ValueError, match="unsupported"):
        TelnyxDialect("OPUS")  # type: ignore[arg-type]


def _start(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"call_control_id": CALL, "user_id": "u-1", "custom_parameters": {},
                            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
    msg: dict[str, Any] = {"event": "start", "sequence_number": "1", "stream_id": SID, "start": body}
    for key, value in changes.items():
        target, _, name = key.rpartition("__")
        where = msg if not target else body if target == "start" else body["media_format"]
        if value is _DELETE:
            del where[name]
        else:
            where[name] = value
    return msg


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stream_id": "not-a-uuid"}, "stream_id is not a valid id"),
        ({"stream_id": _DELETE}, "stream_id is missing"),
        ({"start": []}, "start must be an object"),
        ({"start__call_control_id": _DELETE}, "call_control_id is missing"),
        ({"start__call_control_id": "v3:has space"}, "call_control_id is not a valid id"),
        ({"start__call_control_id": "v3:" + "a" * 300}, "longer than"),
        ({"start__user_id": "x\ny"}, "user_id is not a valid id"),
        ({"start__media_format": _DELETE}, "media_format is missing"),
        ({"start__media_format__encoding": "OPUS"}, "unsupported media encoding"),
        ({"start__media_format__encoding": ["PCMU"]}, "unsupported media encoding"),
        ({"start__media_format__sample_rate": 48000}, "unsupported sample rate"),
        ({"start__media_format__sample_rate": True}, "decimal"),
        ({"start__media_format__channels": "2"}, "channel"),
        ({"start__custom_parameters": ["a"]}, "must be an object"),
        ({"sequence_number": "1.5"}, "sequence_number"),
    ],
)
def test_bad_start_is_rejected_and_leaves_the_stream_unstarted(changes: dict[str, Any], expected: str) -> None:
    dialect = TelnyxDialect()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(json.dumps(_start(**changes)))
    assert dialect.phase is StreamPhase.BEFORE_START and dialect.stream_id is None
    assert isinstance(dialect.parse(json.dumps(_start())), StreamStarted)


def _error(**body: Any) -> str:
    return json.dumps({"event": "error", "sequence_number": "6", "stream_id": SID, **body})


def test_error_messages_are_reported_and_change_nothing() -> None:
    dialect = TelnyxDialect()
    before = dialect.parse(_error(error={"title": "malformed_frame", "code": "100003", "detail": "bad"}))
    assert before == ProviderErrorReported(code="100003", title="malformed_frame", detail="bad")
    assert dialect.phase is StreamPhase.BEFORE_START
    dialect, _ = started()
    assert dialect.parse(_error(payload={"code": 100005, "title": "rate_limit_reached"})) == ProviderErrorReported(
        code="100005", title="rate_limit_reached")
    assert dialect.phase is StreamPhase.STREAMING


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (_error(), "error is missing"),
        (_error(error={"code": "abc"}), "error.code"),
        (_error(error={"code": None}), "error.code"),
        (_error(error={"code": "1", "title": "t" * 65}), "longer"),
        (json.dumps({"event": "error", "stream_id": "5d0fd1a5-5b45-4d0a-9c5e-1d51c0f9b2aa",
                     "error": {"code": "1"}}), "another stream_id"),
        ("{]", "not valid JSON"),
        ('{"event": "hello"}', "unknown event"),
        (json.dumps({"event": "media", "stream_id": SID, "media": {"payload": "AA==", "track": "outbound"}}), "track"),
        (json.dumps({"event": "media", "media": {"payload": "AA=="}}), "without stream_id"),
        (json.dumps({"event": "media", "stream_id": SID, "media": {"payload": "AA", "chunk": "1"}}), "base64"),
        (json.dumps({"event": "dtmf", "stream_id": SID, "dtmf": {"digit": ""}}), "dtmf.digit"),
        (json.dumps({"event": "stop", "stream_id": SID, "stop": {"call_control_id": "v3:other"}}), "differs"),
        (json.dumps({"event": "stop", "stream_id": SID, "stop": "now"}), "must be an object"),
    ],
)
def test_malformed_frames_raise_protocol_error_and_change_nothing(frame: str, expected: str) -> None:
    dialect, _ = started()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(frame)
    assert dialect.phase is StreamPhase.STREAMING


def test_l16_media_must_be_whole_samples() -> None:
    dialect, frames = started("L16")
    with pytest.raises(ProtocolError, match="odd length"):
        dialect.parse(frames.media(b"\x00\x01\x02"))
    assert dialect.parse(frames.media(b"\x00\x01")).payload == b"\x00\x01"  # type: ignore[union-attr]


def test_error_after_stop_and_messages_before_start() -> None:
    dialect, frames = started()
    dialect.parse(frames.stop())
    with pytest.raises(ProtocolError, match="after 'stop'"):
        dialect.parse(_error(error={"code": "1"}))
    fresh = TelnyxDialect()
    for event in ("media", "mark", "dtmf", "stop"):
        with pytest.raises(ProtocolError, match="before 'start'"):
            fresh.parse(json.dumps({"event": event, "stream_id": SID}))


def test_outbound_messages_carry_no_stream_id() -> None:
    dialect, _ = started()
    assert json.loads(dialect.build_media(b"\xff" * 160)) == {
        "event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert json.loads(dialect.build_mark("utt-17@4800")) == {"event": "mark", "mark": {"name": "utt-17@4800"}}
    assert json.loads(dialect.build_clear()) == {"event": "clear"}


def test_outbound_framing_follows_rtp_mode_rules() -> None:
    dialect, _ = started("L16")
    framing = media_framing(dialect)
    assert (framing.multiple_of, framing.min_bytes, framing.max_bytes) == (2, 640, 32000 * 30)
    with pytest.raises(ProtocolError, match="multiple of 2"):
        dialect.build_media(b"\x00" * 641)
    with pytest.raises(ProtocolError, match="exceeds"):
        dialect.build_media(b"\x00" * (32000 * 30 + 2))
    assert media_framing(TelnyxDialect("PCMU")).max_bytes == 8000 * 30


@settings(max_examples=150, deadline=None)
@given(audio=st.binary(min_size=1, max_size=3000).filter(lambda b: b[:4] != b"RIFF"),
       name=st.text(min_size=1, max_size=128))
def test_built_frames_pass_the_stand_in_validator(audio: bytes, name: str) -> None:
    dialect, _ = started()
    media, problems = validate_gateway_frame(profile("PCMU"), dialect.build_media(audio), SID)
    assert not problems and media is not None and base64.b64decode(media["media"]["payload"]) == audio
    mark, problems = validate_gateway_frame(profile("PCMU"), dialect.build_mark(name), SID)
    assert not problems and mark is not None and mark["mark"]["name"] == name


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "error"]),
       fields=st.dictionaries(st.sampled_from(["stream_id", "start", "media", "mark", "dtmf", "stop", "error",
                                               "payload", "sequence_number"]), _json_values, max_size=5))
def test_shaped_junk_raises_only_protocol_error(event: str, fields: dict[str, Any]) -> None:
    for dialect in (TelnyxDialect(), started()[0]):
        try:
            dialect.parse(json.dumps({"event": event, **fields}))
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_frames_raise_only_protocol_error(frame: str | bytes) -> None:
    try:
        started()[0].parse(frame)
    except ProtocolError:
        pass


# --- Ed25519 webhook signatures -------------------------------------------------------------------------

SIGNER = SigningKey(bytes(range(32)))
PUBLIC_KEY = base64.b64encode(bytes(SIGNER.verify_key)).decode()
BODY = b'{"data":{"event_type":"call.initiated","payload":{"call_control_id":"v3:abc"}}}'


def _sign(timestamp: str, body: bytes, signer: SigningKey = SIGNER) -> str:
    return base64.b64encode(signer.sign(timestamp.encode() + b"|" + body).signature).decode()


def test_signature_made_with_the_private_key_verifies() -> None:
    assert verify_telnyx_webhook(PUBLIC_KEY, BODY, _sign("1700000000", BODY), "1700000000", now=1700000100)


@pytest.mark.parametrize(
    ("key", "body", "signature", "timestamp", "now"),
    [
        (PUBLIC_KEY, BODY + b" ", _sign("1700000000", BODY), "1700000000", 1700000000),  # body changed
        (PUBLIC_KEY, BODY, _sign("1700000001", BODY), "1700000000", 1700000000),  # timestamp changed
        (PUBLIC_KEY, BODY, _sign("1700000000", BODY), "1700000000", 1700000301),  # too old (replay)
        (PUBLIC_KEY, BODY, _sign("1700000400", BODY), "1700000400", 1700000000),  # from the future
        (base64.b64encode(bytes(SigningKey(b"\x07" * 32).verify_key)).decode(), BODY,
         _sign("1700000000", BODY), "1700000000", 1700000000),  # another account's key
        ("", BODY, _sign("1700000000", BODY), "1700000000", 1700000000),
        ("not base64!", BODY, _sign("1700000000", BODY), "1700000000", 1700000000),
        (base64.b64encode(b"short").decode(), BODY, _sign("1700000000", BODY), "1700000000", 1700000000),
        (PUBLIC_KEY, BODY, None, "1700000000", 1700000000),
        (PUBLIC_KEY, BODY, "AAAA", "1700000000", 1700000000),
        (PUBLIC_KEY, BODY, "x" * 200, "1700000000", 1700000000),
        (PUBLIC_KEY, BODY, _sign("1700000000", BODY), None, 1700000000),
        (PUBLIC_KEY, BODY, _sign("1700000000", BODY), "-5", 1700000000),
        (PUBLIC_KEY, BODY, _sign("1700000000", BODY), "1e9", 1700000000),
    ],
)
def test_signature_rejections(key: str, body: bytes, signature: str | None, timestamp: str | None, now: int) -> None:
    assert not verify_telnyx_webhook(key, body, signature, timestamp, now=now)


@settings(max_examples=50, deadline=None)
@given(body=st.binary(max_size=500), skew=st.integers(-300, 300))
def test_any_signed_body_within_tolerance_verifies(body: bytes, skew: int) -> None:
    timestamp = "1700000000"
    assert verify_telnyx_webhook(PUBLIC_KEY, body, _sign(timestamp, body), timestamp, now=1700000000 + skew)


# --- TeXML ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "rate"), [("PCMU", "8000"), ("PCMA", "8000"), ("L16", "16000")])
def test_connect_stream_texml_is_bidirectional_rtp_with_the_token(codec: TelnyxCodec, rate: str) -> None:
    text = connect_stream_texml("https://gw.example.com/x", "tok", codec, {"from": "+1"})
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    connect, redirect = list(ET.fromstring(text))
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.get("url") == "wss://gw.example.com/x/telnyx/media"
    assert stream.get("bidirectionalMode") == "rtp"  # else Telnyx silently drops what we send
    assert stream.get("bidirectionalCodec") == codec and stream.get("bidirectionalSamplingRate") == rate
    assert stream.get("track") == "inbound_track"
    assert stream.get("codec") == (None if codec == "L16" else codec)
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {"stream_token": "tok", "from": "+1"}
    assert redirect.get("method") == "POST" and redirect.text == "https://gw.example.com/x/telnyx/after-stream"


def test_texml_builders_escape_and_refuse() -> None:
    text = connect_stream_texml("http://127.0.0.1:8080", "t", parameters={"note": '<a & "b">'})
    stream = ET.fromstring(text).find("Connect/Stream")
    assert stream is not None and stream.get("url") == "ws://127.0.0.1:8080/telnyx/media"
    assert [p.get("value") for p in stream.findall("Parameter")][-1] == '<a & "b">'
    with pytest.raises(ValueError, match="reserved"):
        connect_stream_texml("https://gw.example.com", "t", parameters={STREAM_TOKEN_PARAMETER: "x"})
    with pytest.raises(ValueError, match="token"):
        connect_stream_texml("https://gw.example.com", "")
    with pytest.raises(ValueError, match="codec"):
        connect_stream_texml("https://gw.example.com", "t", "G722")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="absolute"):
        stream_url("gw.example.com")


@pytest.mark.parametrize(
    ("escalated", "queue", "target", "verb", "child"),
    [
        (False, "support", "", "Hangup", None),
        (True, "support", "", "Enqueue", None),
        (True, "support", "+15550003333", "Dial", "Number"),
        (True, "", "sips:agent@pbx.example.com", "Dial", "Sip"),
    ],
)
def test_after_stream_texml(escalated: bool, queue: str, target: str, verb: str, child: str | None) -> None:
    (element,) = list(ET.fromstring(after_stream_texml(escalated, queue, target)))
    assert element.tag == verb
    if child:
        inner = element.find(child)
        assert inner is not None and inner.text == target
    elif verb == "Enqueue":
        assert element.text == queue
    with pytest.raises(ValueError, match="queue"):
        after_stream_texml(True, "", "")


# --- the stand-in over a real socket ------------------------------------------------------------------


async def test_stand_in_speaks_the_dialect_over_a_real_socket_in_l16() -> None:
    """16 kHz L16 both ways: the gateway echoes the caller's tone back; the stand-in plays it and echoes
    the mark after it; the level of what was played equals the level sent (no corruption in framing)."""
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(16000 * 0.2) / 16000)).astype("<i2").tobytes()
    mark_sent = asyncio.Event()

    async def gateway(ws: ServerConnection) -> None:
        dialect = TelnyxDialect("L16")
        buffered = b""
        async for message in ws:
            event = dialect.parse(message)
            if isinstance(event, MediaReceived):
                buffered += event.payload
                if len(buffered) == len(tone) and not mark_sent.is_set():
                    await ws.send(dialect.build_media(buffered))
                    await ws.send(dialect.build_mark("echo-done"))
                    mark_sent.set()
            elif isinstance(event, StreamStopped):
                await ws.close()

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        frames = CarrierFrames(profile("L16"), call_id=new_call_control_id())
        result = await run_stream(profile("L16"), f"ws://127.0.0.1:{port}", tone, frames=frames, duration_s=0.5)
    assert result.violations == []
    (mark,) = result.echoed_marks
    assert mark.name == "echo-done" and mark.played_total == len(tone)
    assert result.playback is not None
    # The playback model counts bytes, so the echo may start at an odd byte of its timeline: find it.
    raw = bytes(result.playback.played_mulaw())
    start = raw.find(tone[:64])
    assert start >= 0
    played = np.frombuffer(raw[start:start + len(tone)], dtype="<i2")
    sent = np.frombuffer(tone, dtype="<i2")
    assert played.size == sent.size
    noise = played.astype(float) - sent
    snr_db = 10 * np.log10(np.sum(sent.astype(float) ** 2) / max(np.sum(noise**2), 1e-12))
    assert snr_db > 90  # no transcoding on this path: the framing must carry the samples bit-exactly


# --- reordering (Telnyx does not guarantee frame order) -------------------------------------------------


def _frame(chunk: int) -> MediaReceived:
    return MediaReceived(chunk.to_bytes(2, "big"), 20 * chunk, chunk)


def test_reorderer_swaps_back_an_overtaken_frame_and_gives_up_on_a_lost_one() -> None:
    reorder = MediaReorderer(depth=2)
    assert [f.chunk for f in reorder.push(_frame(1))] == [1]
    assert reorder.push(_frame(3)) == []  # 2 is late: hold 3
    assert [f.chunk for f in reorder.push(_frame(2))] == [2, 3]
    assert reorder.push(_frame(5)) == [] and reorder.push(_frame(6)) == []
    assert [f.chunk for f in reorder.push(_frame(7))] == [5, 6, 7]  # 4 never came: given up after 2 held
    assert reorder.lost == 1
    assert reorder.push(_frame(4)) == [] and reorder.push(_frame(7)) == [] and reorder.dropped == 2
    assert reorder.push(_frame(9)) == [] and [f.chunk for f in reorder.flush()] == [9] and reorder.lost == 2
    unnumbered = MediaReceived(b"\x00", 0, 0)
    assert reorder.push(unnumbered) == [unnumbered]
    with pytest.raises(ValueError):
        MediaReorderer(0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), depth=st.integers(1, 4), data=st.data())
def test_reorderer_restores_any_bounded_displacement_without_loss(n: int, depth: int, data: st.DataObject) -> None:
    # Shuffle within windows of depth+1 frames: no frame moves more than `depth` places.
    chunks = list(range(1, n + 1))
    shuffled: list[int] = []
    for start in range(0, n, depth + 1):
        shuffled += data.draw(st.permutations(chunks[start:start + depth + 1]))
    reorder = MediaReorderer(depth)
    out = [f.chunk for c in shuffled for f in reorder.push(_frame(c))] + [f.chunk for f in reorder.flush()]
    assert out == chunks and reorder.lost == 0 and reorder.dropped == 0


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.integers(1, 40), max_size=80), depth=st.integers(1, 4))
def test_reorderer_output_is_increasing_and_bounded_for_any_input(chunks: list[int], depth: int) -> None:
    reorder = MediaReorderer(depth)
    out: list[int] = []
    for chunk in chunks:
        out += [f.chunk for f in reorder.push(_frame(chunk))]
        assert len(reorder._held) <= depth
    out += [f.chunk for f in reorder.flush()]
    assert out == sorted(set(out)) and len(out) + reorder.dropped == len(chunks)
