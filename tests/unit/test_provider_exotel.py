"""Exotel: the pure dialect (every message, rates, state machine, every error path), the outbound chunk
packer (Exotel's 320-byte multiple and 3.2-100 KB rules), HTTP Basic on the upgrade with headers built
here from the credentials, the applet URL, and the stand-in over a real 127.0.0.1 socket with Basic auth."""

from __future__ import annotations

import base64
import http
import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from service.providers.base import (
    ENCODING_PCM16LE,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    media_framing,
)
from service.providers.exotel.auth import (
    PASSTHRU_AGENT,
    PASSTHRU_END,
    passthru_status,
    verify_basic_auth,
    voicebot_url,
)
from service.providers.exotel.dialect import ExotelDialect, ExotelMediaPacker
from service.providers.jsonwire import StreamPhase
from tests.standins.exotel_caller import CarrierFrames, basic_auth_header, profile, run_stream
from tests.standins.json_stream_caller import validate_gateway_frame

SID = "b2c1a0f9e8d7c6b5a4f3e2d1c0b9a8f7"
CALL = "0123456789abcdef0123456789abcdef"


def started(rate: int = 8000) -> tuple[ExotelDialect, CarrierFrames]:
    dialect = ExotelDialect(rate)
    frames = CarrierFrames(profile(rate), SID, CALL)
    assert isinstance(dialect.parse(frames.connected()), StreamConnected)
    assert isinstance(dialect.parse(frames.start({"lang": "hi"})), StreamStarted)
    return dialect, frames


def test_implements_the_protocol() -> None:
    dialect: TelephonyDialect = ExotelDialect()
    assert dialect.name == "exotel"
    with pytest.raises(ValueError, match="sample rate"):
        ExotelDialect(44100)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_full_stream_at_every_rate(rate: int) -> None:
    dialect = ExotelDialect(rate)
    frames = CarrierFrames(profile(rate), SID, CALL)
    assert dialect.parse(frames.connected()) == StreamConnected()
    start = dialect.parse(frames.start({"lang": "hi", "tier": "gold"}))
    assert start == StreamStarted(stream_id=SID, call_id=CALL, account_id="callbridgetest1",
                                  custom_parameters={"lang": "hi", "tier": "gold"},
                                  encoding=ENCODING_PCM16LE, sample_rate=rate, channels=1)
    chunk = (np.arange(rate // 10, dtype="<i2") * 7).tobytes()  # 100 ms, Exotel's cadence
    assert dialect.parse(frames.media(chunk)) == MediaReceived(chunk, 0, 1)
    assert dialect.parse(frames.media(chunk[:-2])) == MediaReceived(chunk[:-2], 100, 2)  # variable length
    assert dialect.parse(frames.dtmf("5")) == DtmfReceived("5")
    assert dialect.parse(frames.mark("m")) == MarkEchoed("m")
    assert dialect.parse(frames.stop("callended")) == StreamStopped(call_id=CALL, reason="callended")
    assert dialect.phase is StreamPhase.STOPPED and dialect.last_sequence_number == 6


def _start(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_sid": SID, "call_sid": CALL, "account_sid": "acc", "custom_parameters": {},
                            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}
    msg: dict[str, Any] = {"event": "start", "sequence_number": "1", "stream_sid": SID, "start": body}
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
        ({"stream_sid": "MZ 1"}, "stream_sid is not a valid id"),
        ({"stream_sid": "x" * 65}, "not a valid id"),
        ({"stream_sid": _DELETE}, "stream_sid is missing"),
        ({"start__stream_sid": "other"}, "differs"),
        ({"start__call_sid": _DELETE}, "call_sid is missing"),
        ({"start__call_sid": "../../etc"}, "call_sid is not a valid id"),
        ({"start__account_sid": "a b"}, "account_sid is not a valid id"),
        ({"start__media_format__encoding": "audio/x-mulaw"}, "need audio/x-raw"),
        ({"start__media_format__sample_rate": "16000"}, "configured for 8000"),
        ({"start__media_format__sample_rate": "8k"}, "decimal"),
        ({"start__media_format__bit_rate": "8"}, "16-bit"),
        ({"start__custom_parameters": {"a": "1", "b": "2", "c": "3", "d": "4"}}, "entries"),
        ({"start__custom_parameters": {"a": "x" * 200, "b": "y" * 60}}, "256"),
    ],
)
def test_bad_start_is_rejected_and_leaves_the_stream_unstarted(changes: dict[str, Any], expected: str) -> None:
    dialect = ExotelDialect()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(json.dumps(_start(**changes)))
    assert dialect.phase is StreamPhase.BEFORE_START
    assert isinstance(dialect.parse(json.dumps(_start())), StreamStarted)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (json.dumps({"event": "media", "stream_sid": SID, "media": {"payload": "AAEC"}}), "odd length"),
        (json.dumps({"event": "media", "stream_sid": "other", "media": {"payload": "AAA="}}), "another stream_sid"),
        (json.dumps({"event": "stop", "stream_sid": SID, "stop": {"call_sid": "zzz"}}), "differs"),
        (json.dumps({"event": "stop", "stream_sid": SID, "stop": {"reason": "call ended; DROP"}}), "plain word"),
        (json.dumps({"event": "dtmf", "stream_sid": SID, "dtmf": {"digit": 5}}), "dtmf.digit"),
        (json.dumps({"event": "mark", "stream_sid": SID}), "mark is missing"),
        (json.dumps({"event": "clear", "stream_sid": SID}), "unknown event"),
        (b"\x00\xff", "not valid JSON"),
    ],
)
def test_malformed_frames_raise_protocol_error_and_change_nothing(frame: str | bytes, expected: str) -> None:
    dialect, _ = started()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(frame)
    assert dialect.phase is StreamPhase.STREAMING


def test_outbound_messages_name_the_stream_and_obey_chunk_rules() -> None:
    dialect, _ = started()
    audio = b"\x01\x00" * 1600
    assert json.loads(dialect.build_media(audio)) == {
        "event": "media", "stream_sid": SID, "media": {"payload": base64.b64encode(audio).decode()}}
    assert json.loads(dialect.build_mark("m1")) == {"event": "mark", "stream_sid": SID, "mark": {"name": "m1"}}
    assert json.loads(dialect.build_clear()) == {"event": "clear", "stream_sid": SID}
    framing = media_framing(dialect)
    assert (framing.multiple_of, framing.min_bytes, framing.max_bytes) == (320, 3200, 100_000)
    with pytest.raises(ProtocolError, match="multiple of 320"):
        dialect.build_media(b"\x00" * 3202)
    with pytest.raises(ProtocolError, match="exceeds"):
        dialect.build_media(b"\x00" * 100_160)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.integers(0, 4000).map(lambda n: b"\x11\x22" * n), max_size=12),
       chunk_units=st.integers(10, 30))
def test_packer_output_is_the_input_in_order_in_legal_chunks(pieces: list[bytes], chunk_units: int) -> None:
    packer = ExotelMediaPacker(chunk_units * 320)
    dialect, _ = started()
    out: list[bytes] = []
    for piece in pieces:
        out += packer.push(piece)
        assert packer.pending_bytes < packer.chunk_bytes  # bounded
    assert all(len(c) == packer.chunk_bytes for c in out)
    tail = packer.flush()
    if tail is not None:
        out.append(tail)
        assert len(tail) % 320 == 0 and len(tail) <= packer.chunk_bytes
    joined = b"".join(out)
    sent = b"".join(pieces)
    assert joined[: len(sent)] == sent and set(joined[len(sent):]) <= {0} and len(joined) - len(sent) < 320
    for chunk in out:
        msg, problems = validate_gateway_frame(profile(), dialect.build_media(chunk), SID)
        assert not problems and msg is not None
    assert packer.flush() is None


def test_packer_reset_and_bad_input() -> None:
    packer = ExotelMediaPacker()
    assert packer.push(b"\x00\x01" * 100) == []
    assert packer.reset() == 200 and packer.flush() is None
    with pytest.raises(ValueError, match="even"):
        packer.push(b"\x00")
    for bad in (3000, 320, 100_160):
        with pytest.raises(ValueError, match="multiple of 320"):
            ExotelMediaPacker(bad)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_frames_raise_only_protocol_error(frame: str | bytes) -> None:
    for dialect in (ExotelDialect(), started()[0]):
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
       fields=st.dictionaries(st.sampled_from(["stream_sid", "start", "media", "mark", "dtmf", "stop",
                                               "sequence_number"]), _json_values, max_size=5))
def test_shaped_junk_raises_only_protocol_error(event: str, fields: dict[str, Any]) -> None:
    dialect, _ = started()
    try:
        dialect.parse(json.dumps({"event": event, **fields}))
    except ProtocolError:
        pass


# --- auth and the applet URL ----------------------------------------------------------------------------


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_auth_accepts_exactly_the_configured_pair() -> None:
    assert verify_basic_auth(_basic("exo:s3cr:et"), "exo", "s3cr:et")  # ':' allowed in the password
    assert verify_basic_auth("basic  " + base64.b64encode(b"exo:pw").decode(), "exo", "pw")


@pytest.mark.parametrize(
    "header",
    [None, "", _basic("exo:wrong"), _basic("other:pw"), _basic("exopw"), "Bearer abc", "Basic !!!",
     "Basic " + base64.b64encode(b"\xff:\xfe").decode(), _basic("exo:pw") + "x" * 2000],
)
def test_basic_auth_rejections(header: str | None) -> None:
    assert not verify_basic_auth(header, "exo", "pw")


def test_basic_auth_with_nothing_configured_refuses_everything() -> None:
    assert not verify_basic_auth(_basic(":"), "", "")
    assert not verify_basic_auth(_basic("exo:"), "exo", "")


def test_voicebot_url_carries_rate_credentials_and_custom_values() -> None:
    url = voicebot_url("https://gw.example.com/base", 16000, user="exo", password="p@ss/word",
                       custom={"tenant": "acme"})
    parts = urlsplit(url)
    assert parts.scheme == "wss" and parts.hostname == "gw.example.com" and parts.path == "/base/exotel/media"
    assert parts.username == "exo" and unquote(parts.password or "") == "p@ss/word"
    assert parse_qs(parts.query) == {"sample-rate": ["16000"], "tenant": ["acme"]}
    assert voicebot_url("https://gw.example.com") == "wss://gw.example.com/exotel/media?sample-rate=8000"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"public_url": "http://gw.example.com"}, "https"),
        ({"sample_rate": 11025}, "sample_rate"),
        ({"custom": {"a": "1", "b": "2", "c": "3", "d": "4"}}, "custom"),
        ({"custom": {"a": "x" * 300}}, "custom"),
        ({"custom": {"sample-rate": "16000"}}, "sample-rate"),
        ({"user": "exo"}, "both"),
    ],
)
def test_voicebot_url_refusals(kwargs: dict[str, Any], expected: str) -> None:
    args: dict[str, Any] = {"public_url": "https://gw.example.com", **kwargs}
    with pytest.raises(ValueError, match=expected):
        voicebot_url(**args)


def test_passthru_branches() -> None:
    assert passthru_status(True) == PASSTHRU_AGENT == 200
    assert passthru_status(False) == PASSTHRU_END != PASSTHRU_AGENT


# --- the stand-in over a real socket, Basic auth on the upgrade ----------------------------------------


def _guard(connection: ServerConnection, request: Request) -> Response | None:
    if verify_basic_auth(request.headers.get("Authorization"), "exo", "pw"):
        return None
    return Response(http.HTTPStatus.UNAUTHORIZED, "Unauthorized", Headers(), b"")


async def test_stand_in_over_a_real_socket_with_basic_auth() -> None:
    """The gateway answers 600 ms of caller audio with packed 200 ms chunks and a mark: every chunk is
    legal for Exotel, the mark is echoed only after all of it played, and an upgrade without the right
    credentials is refused before any stream starts."""
    starts = 0

    async def gateway(ws: ServerConnection) -> None:
        nonlocal starts
        dialect = ExotelDialect(8000)
        packer = ExotelMediaPacker()
        received = 0
        async for message in ws:
            event = dialect.parse(message)
            if isinstance(event, StreamStarted):
                starts += 1
            elif isinstance(event, MediaReceived) and received < 9600:  # answer the speech, not the silence
                received += len(event.payload)
                for chunk in packer.push(event.payload):
                    await ws.send(dialect.build_media(chunk))
                if received == 9600:
                    tail = packer.flush()
                    if tail:
                        await ws.send(dialect.build_media(tail))
                    await ws.send(dialect.build_mark("reply-end"))
            elif isinstance(event, StreamStopped):
                await ws.close()

    async with serve(gateway, "127.0.0.1", 0, process_request=_guard) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/exotel/media"
        with pytest.raises(InvalidStatus):
            await run_stream(profile(), url, headers=basic_auth_header("exo", "wrong"), duration_s=0.1)
        speech = (3000 * np.sin(np.arange(4800) / 5)).astype("<i2").tobytes()  # 600 ms
        result = await run_stream(profile(), url, speech, headers=basic_auth_header("exo", "pw"), duration_s=1.0)
    assert starts == 1
    assert result.violations == []
    media = [m for m in result.received if m["event"] == "media"]
    assert [len(base64.b64decode(m["media"]["payload"])) for m in media] == [3200, 3200, 3200]
    (mark,) = result.echoed_marks
    assert mark.name == "reply-end" and mark.played_total == 9600
    assert mark.echoed_at is not None and mark.echoed_at - result.origin >= 0.6  # after 600 ms of audio
