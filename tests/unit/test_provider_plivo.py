"""Plivo: the pure dialect (every message, format negotiation, the id inside ``start``, absent stream
ids on acknowledgements, close without ``stop``, state machine, every error path), V3 webhook
signatures with vectors computed here with hmac, the alphanumeric token encoding, the XML builders,
and the stand-in's framing over a real 127.0.0.1 socket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from service.providers.base import (
    ENCODING_MULAW,
    ENCODING_PCM16LE,
    ClearAcknowledged,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    build_media_frame,
    media_framing,
    stream_closed,
)
from service.providers.jsonwire import StreamPhase
from service.providers.plivo.auth import (
    STREAM_TOKEN_HEADER,
    stream_url,
    stream_xml,
    token_from_header,
    token_to_header,
    transfer_request,
    transfer_xml,
    verify_plivo_webhook,
)
from service.providers.plivo.dialect import PlivoDialect, parse_extra_headers
from service.providers.tokens import mint_stream_token
from tests.standins.plivo_caller import PlivoFrames, run_stream, validate_gateway_frame

CT_MULAW = "audio/x-mulaw;rate=8000"
CT_L16_16 = "audio/x-l16;rate=16000"


def started(content_type: Any = CT_MULAW, extra: str = "callbridgeToken=ab12") -> tuple[PlivoDialect, PlivoFrames]:
    frames = PlivoFrames(content_type, extra_headers=extra)
    dialect = PlivoDialect(content_type)
    event = dialect.parse(frames.start())
    assert isinstance(event, StreamStarted)
    return dialect, frames


def test_start_declares_format_ids_and_headers() -> None:
    frames = PlivoFrames(CT_L16_16, extra_headers="callbridgeToken=ab12,tenant=acme")
    dialect = PlivoDialect(CT_L16_16)
    event = dialect.parse(frames.start())
    assert event == StreamStarted(
        stream_id=frames.stream_id, call_id=frames.call_id, account_id="MAODZKMDFJMJU3MTEYNG",
        custom_parameters={"callbridgeToken": "ab12", "tenant": "acme"}, encoding=ENCODING_PCM16LE, sample_rate=16000,
    )
    assert dialect.phase is StreamPhase.STREAMING


def test_media_dtmf_acks_and_stop() -> None:
    dialect, frames = started()
    tone = bytes(range(160))
    media = dialect.parse(frames.media(tone))
    assert isinstance(media, MediaReceived) and media.payload == tone and media.chunk == 1
    assert media.timestamp_ms == frames.epoch_ms  # Unix epoch ms, not ms since start
    assert dialect.parse(frames.dtmf("5")) == DtmfReceived("5")
    assert dialect.parse(frames.played_stream("cp-7")) == MarkEchoed("cp-7")
    assert dialect.parse(frames.cleared_audio()) == ClearAcknowledged()
    assert dialect.last_sequence_number == frames.sequence - 1
    assert dialect.parse(frames.stop()) == StreamStopped(call_id=frames.call_id)
    assert dialect.phase is StreamPhase.STOPPED
    assert dialect.connection_closed() is None


def test_acks_without_stream_id_are_accepted_but_a_wrong_one_is_not() -> None:
    dialect, _frames = started()
    assert dialect.parse(json.dumps({"event": "playedStream", "name": "m1"})) == MarkEchoed("m1")
    assert dialect.parse(json.dumps({"event": "clearedAudio"})) == ClearAcknowledged()
    other = "0d6b7a8e-1f59-4b8e-9a3c-2c1d4e5f6a7b"
    with pytest.raises(ProtocolError, match="another streamId"):
        dialect.parse(json.dumps({"event": "playedStream", "streamId": other, "name": "m1"}))
    with pytest.raises(ProtocolError, match="without streamId"):
        dialect.parse(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))


def test_dtmf_and_stop_without_stream_id() -> None:
    dialect, frames = started()
    assert dialect.parse(json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}})) == DtmfReceived("#")
    assert dialect.parse(json.dumps({"event": "stop"})) == StreamStopped(call_id=frames.call_id)


def test_close_without_stop_is_the_end() -> None:
    dialect, frames = started()
    assert dialect.connection_closed() == StreamStopped(call_id=frames.call_id, reason="closed")
    assert dialect.connection_closed() is None
    with pytest.raises(ProtocolError, match="after 'stop'"):
        dialect.parse(frames.media(b"\xff" * 160))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: m["start"].update(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 8000}), "negotiated"),
        (lambda m: m["start"].update(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000}), "negotiated"),
        (lambda m: m["start"].pop("mediaFormat"), "mediaFormat is missing"),
        (lambda m: m["start"].update(callId="12345:transcript"), "callId is not a valid id"),
        (lambda m: m["start"].update(streamId="x" * 300), "longer than"),
        (lambda m: m["start"].update(accountId="MA' OR 1=1"), "accountId"),
        (lambda m: m["start"].update(tracks=["both"]), "tracks"),
        (lambda m: m.update(streamId="0d6b7a8e-1f59-4b8e-9a3c-2c1d4e5f6a7b"), "differs"),
        (lambda m: m.update(extra_headers="a=b;c"), "extra_headers"),
        (lambda m: m.update(extra_headers="a=b,a=c"), "repeats"),
        (lambda m: m.update(extra_headers="k=" + "v" * 600), "longer than"),
        (lambda m: m.update(extra_headers=7), "must be a string"),
        (lambda m: m.update(sequenceNumber=-1), "sequenceNumber"),
    ],
)
def test_bad_start_is_refused_without_state_change(mutate: Any, match: str) -> None:
    frames = PlivoFrames(CT_MULAW)
    msg = json.loads(frames.start())
    mutate(msg)
    dialect = PlivoDialect(CT_MULAW)
    with pytest.raises(ProtocolError, match=match):
        dialect.parse(json.dumps(msg))
    assert dialect.phase is StreamPhase.BEFORE_START
    assert isinstance(dialect.parse(frames.start()), StreamStarted)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"event": "media", "media": {"payload": "!!"}}, "base64"),
        ({"event": "media", "media": {"payload": ""}}, "empty"),
        ({"event": "media", "media": {"payload": "AAAA", "track": "outbound"}}, "track"),
        ({"event": "media", "media": {"payload": "AAAA", "chunk": -3}}, "chunk"),
        ({"event": "dtmf", "dtmf": {"digit": "55"}}, "dtmf.digit"),
        ({"event": "playedStream"}, "name is missing"),
        ({"event": "playedStream", "name": "n" * 200}, "longer than"),
        ({"event": "bogus"}, "unknown event"),
        ({"event": 5}, "no string 'event'"),
    ],
)
def test_bad_messages_while_streaming(message: dict[str, Any], match: str) -> None:
    dialect, frames = started()
    if message["event"] in ("media", "dtmf"):
        message["streamId"] = frames.stream_id
    with pytest.raises(ProtocolError, match=match):
        dialect.parse(json.dumps(message))
    assert dialect.phase is StreamPhase.STREAMING


def test_odd_l16_media_and_out_of_order_events() -> None:
    dialect, frames = started(CT_L16_16)
    with pytest.raises(ProtocolError, match="odd length"):
        dialect.parse(frames.media(b"\x00" * 639))
    with pytest.raises(ProtocolError, match="second 'start'"):
        dialect.parse(frames.start())
    fresh = PlivoDialect(CT_MULAW)
    for message in (frames.media(b"\x00" * 640), frames.played_stream("x"), frames.cleared_audio(), frames.stop()):
        with pytest.raises(ProtocolError, match="before"):
            fresh.parse(message)
    with pytest.raises(ProtocolError, match="no stream has started"):
        fresh.build_clear()


def test_outbound_messages_and_framing() -> None:
    dialect, frames = started(CT_L16_16)
    assert media_framing(dialect).multiple_of == 2
    pcm = np.arange(-320, 320, dtype="<i2").tobytes()
    frame = build_media_frame(dialect, pcm)
    assert isinstance(frame, str)
    msg = validate_gateway_frame(frame, frames)
    assert msg["audio"] == pcm and "streamId" not in msg
    assert json.loads(dialect.build_mark("cp-1")) == {"event": "checkpoint", "streamId": frames.stream_id, "name": "cp-1"}
    assert json.loads(dialect.build_clear()) == {"event": "clearAudio", "streamId": frames.stream_id}
    for bad in (b"", b"\x00" * 3, b"\x00" * (16000 * 2 * 10 + 2)):
        with pytest.raises(ProtocolError):
            dialect.build_media(bad)
    for name in ("", "n" * 129):
        with pytest.raises(ProtocolError):
            dialect.build_mark(name)
    dialect.connection_closed()
    with pytest.raises(ProtocolError, match="stopped"):
        dialect.build_media(pcm)


def test_stream_closed_helper_ignores_dialects_without_it() -> None:
    assert stream_closed(object()) is None
    dialect, frames = started()
    assert stream_closed(dialect) == StreamStopped(call_id=frames.call_id, reason="closed")


def test_conforms_and_rejects_unknown_content_type() -> None:
    dialect: TelephonyDialect = PlivoDialect()
    assert dialect.name == "plivo"
    with pytest.raises(ValueError):
        PlivoDialect("audio/x-alaw;rate=8000")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200))
def test_random_input_only_ever_raises_protocol_error(data: bytes | str) -> None:
    for dialect in (PlivoDialect(), started()[0]):
        try:
            dialect.parse(data)
        except ProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000).map(lambda b: b[: len(b) // 2 * 2] or b"\x00\x00"), st.text(min_size=1, max_size=128))
def test_build_then_parse_round_trips(audio: bytes, name: str) -> None:
    dialect, frames = started(CT_L16_16)
    played = validate_gateway_frame(dialect.build_media(audio), frames)
    assert played["audio"] == audio
    mark = json.loads(dialect.build_mark(name))["name"]
    assert dialect.parse(frames.played_stream(mark)) == MarkEchoed(name)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=128))
def test_token_header_encoding_round_trips_and_is_alphanumeric(token: str) -> None:
    encoded = token_to_header(token)
    assert encoded.isalnum() and token_from_header(encoded) == token
    assert parse_extra_headers(f"{STREAM_TOKEN_HEADER}={encoded}") == {STREAM_TOKEN_HEADER: encoded}


def test_token_from_header_refuses_garbage() -> None:
    for value in (None, "", "abc", "zz", "00", "ff" * 10, "a" * 300):
        assert token_from_header(value) is None


# --- V3 signatures: the base string is computed here from Plivo's documented rule ---------------------


def _v3(token: str, method: str, url: str, params: dict[str, str], nonce: str) -> str:
    base, _, query = url.partition("?")
    query_pairs = sorted(tuple(p.split("=", 1)) for p in query.split("&")) if query else []
    text = base
    if method == "GET":
        pairs = sorted(query_pairs + list(params.items()))
        text += ("?" + "&".join(f"{k}={v}" for k, v in pairs)) if pairs else ""
    else:
        if query_pairs or params:
            text += "?" + "&".join(f"{k}={v}" for k, v in query_pairs)
            if query_pairs:
                text += "."
            text += "".join(f"{k}{v}" for k, v in sorted(params.items()))
    mac = hmac.new(token.encode(), f"{text}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@pytest.mark.parametrize(
    ("method", "url", "params"),
    [
        ("POST", "https://gw.example.com/plivo/voice", {"CallUUID": "abc", "From": "4915112345678", "To": "4930"}),
        ("POST", "https://gw.example.com/plivo/voice?tenant=acme&a=1", {"CallUUID": "abc"}),
        ("GET", "https://gw.example.com/plivo/voice?z=2&a=1", {}),
    ],
)
def test_v3_signature_vectors(method: str, url: str, params: dict[str, str]) -> None:
    token, nonce = "MzRiNTQxMjQyYzAxOTdkNjhkMDk3Yz", "12345678901234567890"
    signature = _v3(token, method, url, params, nonce)
    assert verify_plivo_webhook(token, method, url, params, signature, nonce)
    assert verify_plivo_webhook(token, method, url, params, "bm90aXQ=," + signature, nonce)  # any listed passes
    assert not verify_plivo_webhook(token + "x", method, url, params, signature, nonce)
    assert not verify_plivo_webhook(token, method, url, params, signature, nonce + "1")
    assert not verify_plivo_webhook(token, method, url + "/other", params, signature, nonce)
    if params:
        assert not verify_plivo_webhook(token, method, url, {**params, "To": "4931"}, signature, nonce)


@pytest.mark.parametrize(
    ("token", "signature", "nonce", "method"),
    [("", "c2ln", "n", "POST"), ("t", None, "n", "POST"), ("t", "c2ln", None, "POST"), ("t", "x" * 2000, "n", "POST"),
     ("t", "c2ln", "n" * 200, "POST"), ("t", "c2ln", "n", "PUT"), ("t", "%%%", "n", "POST")],
)
def test_signature_edge_cases_are_false_never_raise(token: str, signature: str | None, nonce: str | None, method: str) -> None:
    assert not verify_plivo_webhook(token, method, "https://gw.example.com/plivo/voice", {"a": "b"}, signature, nonce)


# --- XML ------------------------------------------------------------------------------------------------


def test_stream_xml_carries_an_alphanumeric_token_and_redirects_after() -> None:
    token = mint_stream_token(b"k" * 32, "4a0f2c3e-1111-2222-3333-444455556666", 60)
    root = ET.fromstring(stream_xml("https://gw.example.com/cb", token, CT_L16_16, {"tenant": "acme"}))
    stream, redirect = list(root)
    assert stream.tag == "Stream" and stream.text == "wss://gw.example.com/cb/plivo/media"
    assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["audioTrack"] == "inbound" and stream.attrib["contentType"] == CT_L16_16
    headers = parse_extra_headers(stream.attrib["extraHeaders"])
    assert token_from_header(headers[STREAM_TOKEN_HEADER]) == token and headers["tenant"] == "acme"
    assert redirect.tag == "Redirect" and redirect.text == "https://gw.example.com/cb/plivo/after-stream"
    assert stream_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/plivo/media"


@pytest.mark.parametrize(
    "kwargs",
    [{"headers": {STREAM_TOKEN_HEADER: "x"}}, {"headers": {"a-b": "c"}}, {"headers": {"k": "v" * 600}},
     {"content_type": "audio/x-alaw;rate=8000"}, {"token": ""}, {"public_url": "ftp://x"}, {"public_url": "https://x/?q=1"}],
)
def test_stream_xml_refuses_bad_input(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"public_url": "https://gw.example.com", "token": "tok", **kwargs}
    with pytest.raises(ValueError):
        stream_xml(**args)


def test_transfer_xml() -> None:
    number = ET.fromstring(transfer_xml(number="+4915112345678", caller_id="+4930123456", timeout_s=20))
    dial = number.find("Dial")
    assert dial is not None and dial.attrib["timeout"] == "20" and dial.findtext("Number") == "+4915112345678"
    sip = ET.fromstring(transfer_xml(sip_uri="sip:agent@pbx.example.com"))
    assert sip.findtext("Dial/User") == "sip:agent@pbx.example.com"
    assert ET.fromstring(transfer_xml(conference="agents")).findtext("Conference") == "agents"
    for bad in ({}, {"number": "+49", "sip_uri": "sip:a@b"}, {"number": "12ab"}, {"sip_uri": "tel:1"},
                {"sip_uri": "sip:a b@c"}, {"conference": "a b"}, {"number": "+4915112345678", "timeout_s": 0}):
        with pytest.raises(ValueError):
            transfer_xml(**bad)  # type: ignore[arg-type]
    assert transfer_request("https://gw.example.com/plivo/after-stream") == {
        "legs": "aleg", "aleg_url": "https://gw.example.com/plivo/after-stream", "aleg_method": "POST"}
    for url in ("ftp://x/y", "/relative", "https://x/y#frag"):
        with pytest.raises(ValueError):
            transfer_request(url)


# --- the stand-in over a real socket ---------------------------------------------------------------


async def test_standin_framing_against_the_dialect_on_a_real_socket() -> None:
    """A tiny gateway made of the dialect: answers the first media frame with 100 ms of audio and a
    checkpoint, and clears after the DTMF; the stand-in's frames must all parse, and its acks must follow
    Plivo's rules (the checkpoint answered once played; clearAudio answered with clearedAudio)."""
    events: list[Any] = []
    dialect = PlivoDialect(CT_MULAW)

    async def gateway(ws: ServerConnection) -> None:
        async for raw in ws:
            event = dialect.parse(raw)
            events.append(event)
            if isinstance(event, MediaReceived) and event.chunk == 1:
                await ws.send(dialect.build_media(b"\x7f" * 800))
                await ws.send(dialect.build_mark("reply-1"))
            if isinstance(event, DtmfReceived):
                await ws.send(dialect.build_media(b"\x7f" * 16000))
                await ws.send(dialect.build_mark("never"))
                await ws.send(dialect.build_clear())
        closed = stream_closed(dialect)
        if closed is not None:
            events.append(closed)

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        frames = PlivoFrames(CT_MULAW, extra_headers="callbridgeToken=ab12")
        result = await run_stream(f"ws://127.0.0.1:{port}", frames, b"\xff" * 160 * 20, dtmf=[(15, "7")], send_stop=True)
    media = [e for e in events if isinstance(e, MediaReceived)]
    assert [m.chunk for m in media] == list(range(1, 21))
    assert DtmfReceived("7") in events and MarkEchoed("reply-1") in events
    assert ClearAcknowledged() in events and MarkEchoed("never") not in events
    assert result.echoed == ["reply-1"] and result.clears == 1
    assert len(result.bot_audio) == 16800
    assert isinstance(events[-1], StreamStopped)
    assert isinstance(events[0], StreamStarted) and events[0].encoding == ENCODING_MULAW
