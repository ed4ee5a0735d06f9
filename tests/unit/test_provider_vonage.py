"""Vonage: the pure dialect (binary L16 media, ``websocket:*`` control events, rate negotiation, close as
the end, exact 20 ms outbound frames, state machine, every error path), HS256 signed-webhook JWTs made
here with hmac (independently of the SDK), the NCCO builders, and the stand-in's framing over a real
127.0.0.1 socket with a measured signal."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from service.providers.base import (
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
from service.providers.vonage.auth import (
    connect_ncco,
    stream_url,
    transfer_ncco,
    transfer_request,
    verify_vonage_webhook,
)
from service.providers.vonage.dialect import (
    CALL_UUID_HEADER,
    STREAM_TOKEN_HEADER,
    VonageDialect,
    split_frames,
)
from tests.standins.vonage_caller import VonageFrames, run_stream, validate_gateway_frame

CALL = "63f61863-4a51-4f6b-86e1-46edebcf9356"


def headers(**extra: str) -> dict[str, str]:
    return {STREAM_TOKEN_HEADER: "v1.123.abc.def.ghi", CALL_UUID_HEADER: CALL, **extra}


def started(rate: int = 16000) -> tuple[VonageDialect, VonageFrames]:
    frames = VonageFrames(rate, headers())
    dialect = VonageDialect(rate)
    assert isinstance(dialect.parse(frames.connected()), StreamStarted)
    return dialect, frames


def sine(rate: int, seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_connected_is_the_start(rate: int) -> None:
    frames = VonageFrames(rate, headers(tenant="acme"))
    dialect = VonageDialect(rate)
    assert dialect.parse(frames.connected()) == StreamStarted(
        stream_id=CALL, call_id=CALL, account_id="", custom_parameters=headers(tenant="acme"),
        encoding=ENCODING_PCM16LE, sample_rate=rate,
    )
    assert media_framing(dialect).max_bytes == rate * 2 // 50 == frames.frame_bytes


def test_binary_media_counts_time_and_frames() -> None:
    dialect, frames = started()
    events = [dialect.parse(memoryview(chunk)) for chunk in frames.audio_frames(sine(16000, 0.1))]
    assert all(isinstance(e, MediaReceived) for e in events)
    assert [e.chunk for e in events] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert [e.timestamp_ms for e in events] == [0, 20, 40, 60, 80]  # type: ignore[union-attr]
    assert b"".join(e.payload for e in events) == sine(16000, 0.1)  # type: ignore[union-attr]


def test_control_events_and_close() -> None:
    dialect, frames = started()
    assert dialect.parse(frames.dtmf("5")) == DtmfReceived("5")
    assert dialect.parse(json.dumps({"event": "websocket:dtmf", "dtmf": {"digit": "#"}})) == DtmfReceived("#")
    assert dialect.parse(frames.notify({"name": "utt-1"})) == MarkEchoed("utt-1")
    assert dialect.parse(frames.cleared()) == ClearAcknowledged()
    assert dialect.connection_closed() == StreamStopped(call_id=CALL, reason="closed")
    assert dialect.connection_closed() is None
    assert dialect.phase is StreamPhase.STOPPED
    for late in (memoryview(b"\x00" * 640), frames.dtmf("1"), frames.cleared()):
        with pytest.raises(ProtocolError, match="after the socket closed"):
            dialect.parse(late)
    with pytest.raises(ProtocolError):
        dialect.build_clear()


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"event": "websocket:connected", "content-type": "audio/l16;rate=8000", CALL_UUID_HEADER: CALL}, "8000 Hz"),
        ({"event": "websocket:connected", "content-type": "audio/pcmu", CALL_UUID_HEADER: CALL}, "content-type"),
        ({"event": "websocket:connected", CALL_UUID_HEADER: CALL}, "content-type is missing"),
        ({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}, "lacks"),
        ({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", CALL_UUID_HEADER: "CA1:x"}, "not a valid id"),
        ({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", CALL_UUID_HEADER: CALL, "n": 5}, "must be a string"),
        ({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", CALL_UUID_HEADER: CALL,
          **{f"h{i}": "v" for i in range(20)}}, "headers"),
        ({"event": "websocket:dtmf", "digit": "5"}, "before"),
        ({"event": "websocket:unknown"}, "unknown event"),
        ({"no": "event"}, "no string 'event'"),
    ],
)
def test_bad_messages_before_start(message: dict[str, Any], match: str) -> None:
    dialect = VonageDialect(16000)
    with pytest.raises(ProtocolError, match=match):
        dialect.parse(json.dumps(message))
    assert dialect.phase is StreamPhase.BEFORE_START
    with pytest.raises(ProtocolError, match="before"):
        dialect.parse(memoryview(b"\x00" * 640))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (memoryview(b""), "binary audio frame of 0"),
        (memoryview(b"\x00" * 641), "641"),
        (memoryview(b"\x00" * 48002), "48002"),
        (b"\x00" * 640, "not valid JSON"),  # bytes are a TEXT frame (service.wsio): audio is a memoryview
        (json.dumps({"event": "websocket:dtmf", "digit": "55"}), "digit"),
        (json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": -1}), "duration"),
        (json.dumps({"event": "websocket:notify"}), "payload is missing"),
        (json.dumps({"event": "websocket:notify", "payload": {"id": "x"}}), "name is missing"),
        (json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}), "phase streaming"),
        ("x" * 5000, "exceeds"),
        ("[1]", "JSON object"),
    ],
)
def test_bad_messages_while_streaming(message: str | bytes | memoryview, match: str) -> None:
    dialect, _ = started()
    with pytest.raises(ProtocolError, match=match):
        dialect.parse(message)
    assert dialect.phase is StreamPhase.STREAMING


def test_dtmf_error_never_quotes_the_digits() -> None:
    dialect, _ = started()
    with pytest.raises(ProtocolError) as caught:
        dialect.parse(json.dumps({"event": "websocket:dtmf", "digit": "4111111111111111"}))
    assert "4111" not in str(caught.value)


def test_outbound_frames() -> None:
    dialect, frames = started()
    pcm = sine(16000, 0.05)  # 50 ms: two whole frames and a half one
    chunks = split_frames(pcm, 16000)
    assert [len(c) for c in chunks] == [640, 640, 640] and chunks[-1][320:] == b"\x00" * 320
    out = [build_media_frame(dialect, c) for c in chunks]
    assert all(isinstance(o, bytes) and validate_gateway_frame(o, frames)["audio"] for o in out)
    assert b"".join(out)[: len(pcm)] == pcm  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="binary"):
        dialect.build_media(chunks[0])
    for bad in (b"", b"\x00" * 320, b"\x00" * 1280):
        with pytest.raises(ProtocolError, match="one 20 ms frame"):
            dialect.build_media_frame(bad)
    assert validate_gateway_frame(dialect.build_mark("utt-1"), frames) == {"action": "notify", "payload": {"name": "utt-1"}}
    assert validate_gateway_frame(dialect.build_clear(), frames) == {"action": "clear"}
    for name in ("", "n" * 129):
        with pytest.raises(ProtocolError):
            dialect.build_mark(name)
    with pytest.raises(ValueError):
        split_frames(b"\x00" * 3, 16000)
    with pytest.raises(ValueError):
        VonageDialect(11025)
    fresh = VonageDialect()
    with pytest.raises(ProtocolError, match="before"):
        fresh.build_media_frame(chunks[0])
    conforming: TelephonyDialect = fresh
    assert conforming.name == "vonage"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=300))
def test_random_input_only_ever_raises_protocol_error(data: bytes | str) -> None:
    for dialect in (VonageDialect(), started()[0]):
        for message in (data, memoryview(data)) if isinstance(data, bytes) else (data,):
            try:
                dialect.parse(message)
            except ProtocolError:
                pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=2, max_size=5000).map(lambda b: b[: len(b) // 2 * 2]), st.text(min_size=1, max_size=128))
def test_build_then_parse_round_trips(pcm: bytes, name: str) -> None:
    dialect, frames = started()
    echoed = bytearray()
    for chunk in split_frames(pcm, 16000):
        event = dialect.parse(memoryview(build_media_frame(dialect, chunk)))  # Vonage's and our frames have one shape
        assert isinstance(event, MediaReceived)
        echoed += event.payload
    assert bytes(echoed[: len(pcm)]) == pcm and not any(echoed[len(pcm):])
    payload = json.loads(dialect.build_mark(name))["payload"]
    assert dialect.parse(frames.notify(payload)) == MarkEchoed(name)


# --- signed webhooks: JWTs made here with hmac, not with the SDK ---------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret: str, claims: dict[str, Any], alg: str = "HS256") -> str:
    head = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(mac)}"


SECRET = "0123456789abcdef0123456789abcdef"
BODY = b'{"uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","status":"disconnected"}'


def test_signed_webhook_vectors() -> None:
    now = int(time.time())
    good = make_jwt(SECRET, {"iat": now, "jti": str(uuid.uuid4()), "api_key": "abcd1234",
                             "payload_hash": hashlib.sha256(BODY).hexdigest()})
    assert verify_vonage_webhook(SECRET, f"Bearer {good}", BODY)
    assert not verify_vonage_webhook(SECRET, f"Bearer {good}", BODY + b" ")  # body swapped under a valid token
    assert not verify_vonage_webhook(SECRET + "x", f"Bearer {good}", BODY)
    assert not verify_vonage_webhook("", f"Bearer {good}", BODY)
    no_hash = make_jwt(SECRET, {"iat": now})
    assert verify_vonage_webhook(SECRET, f"Bearer {no_hash}", b"anything")
    expired = make_jwt(SECRET, {"iat": now - 7200, "exp": now - 3600})
    assert not verify_vonage_webhook(SECRET, f"Bearer {expired}", BODY)
    bad_hash_type = make_jwt(SECRET, {"payload_hash": 5})
    assert not verify_vonage_webhook(SECRET, f"Bearer {bad_hash_type}", BODY)
    unsigned = _b64url(b'{"alg":"none","typ":"JWT"}') + "." + _b64url(b"{}") + "."
    for header in (None, "", good, f"Basic {good}", "Bearer ", f"Bearer {unsigned}", "Bearer a.b.c", "Bearer " + "x" * 5000):
        assert not verify_vonage_webhook(SECRET, header, BODY)


# --- NCCO -------------------------------------------------------------------------------------------------


def test_connect_ncco() -> None:
    ncco = connect_ncco("https://gw.example.com/cb", "v1.tok", CALL, 24000, {"tenant": "acme"})
    assert ncco == [{
        "action": "connect", "eventType": "synchronous", "eventUrl": ["https://gw.example.com/cb/vonage/event"],
        "endpoint": [{"type": "websocket", "uri": "wss://gw.example.com/cb/vonage/media", "content-type": "audio/l16;rate=24000",
                      "headers": {STREAM_TOKEN_HEADER: "v1.tok", CALL_UUID_HEADER: CALL, "tenant": "acme"}}],
    }]
    # What Vonage echoes on connect is what the dialect reads the token and call from.
    frames = VonageFrames(24000, ncco[0]["endpoint"][0]["headers"])
    event = VonageDialect(24000).parse(frames.connected())
    assert isinstance(event, StreamStarted) and event.custom_parameters[STREAM_TOKEN_HEADER] == "v1.tok"
    assert stream_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/vonage/media"
    for kwargs in ({"token": ""}, {"call_uuid": "CA123"}, {"headers": {STREAM_TOKEN_HEADER: "x"}},
                   {"headers": {"big": "v" * 600}}, {"sample_rate": 44100}, {"public_url": "https://x?q=1"}):
        args: dict[str, Any] = {"public_url": "https://gw.example.com", "token": "t", "call_uuid": CALL, **kwargs}
        with pytest.raises(ValueError):
            connect_ncco(**args)


def test_transfer_ncco() -> None:
    assert transfer_ncco(number="+4915112345678", caller_id="+4930123456") == [
        {"action": "connect", "timeout": 30, "endpoint": [{"type": "phone", "number": "4915112345678"}], "from": "4930123456"}]
    assert transfer_ncco(sip_uri="sip:agent@pbx.example.com")[0]["endpoint"] == [{"type": "sip", "uri": "sip:agent@pbx.example.com"}]
    assert transfer_ncco(conversation="agents") == [{"action": "conversation", "name": "agents"}]
    assert transfer_request(transfer_ncco(conversation="agents"))["destination"]["type"] == "ncco"
    for bad in ({}, {"number": "+49", "sip_uri": "sip:a@b"}, {"number": "12ab"}, {"sip_uri": "tel:1"},
                {"conversation": "a b"}, {"number": "+4915112345678", "timeout_s": 1}, {"number": "+4915112345678", "caller_id": "x"}):
        with pytest.raises(ValueError):
            transfer_ncco(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        transfer_request([])


# --- the stand-in over a real socket ---------------------------------------------------------------


async def test_standin_against_the_dialect_on_a_real_socket() -> None:
    """A tiny gateway made of the dialect echoes the caller's audio back frame by frame, then a notify;
    on DTMF it queues 2 s more, a notify and a clear. The echoed audio must match the caller's (SNR),
    the first notify must come back, the second must not, and the clear must be acknowledged."""
    events: list[Any] = []
    dialect = VonageDialect(16000)
    caller = sine(16000, 0.4)

    async def gateway(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the stand-in hangs up like Vonage: mid-reply
            async for raw in ws:
                event = dialect.parse(memoryview(raw) if isinstance(raw, bytes) else raw)  # binary, as wsio delivers it
                events.append(event)
                if isinstance(event, MediaReceived):
                    await ws.send(build_media_frame(dialect, event.payload))
                    if event.chunk == 5:
                        await ws.send(dialect.build_mark("first-100ms"))
                if isinstance(event, DtmfReceived):
                    for chunk in split_frames(b"\x00" * 64000, 16000):
                        await ws.send(dialect.build_media_frame(chunk))
                    await ws.send(dialect.build_mark("never"))
                    await ws.send(dialect.build_clear())
        closed = stream_closed(dialect)
        if closed is not None:
            events.append(closed)

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        result = await run_stream(f"ws://127.0.0.1:{port}", VonageFrames(16000, headers()), caller, dtmf=[(15, "9")])
    # The echoes of frames 0-15 precede the DTMF reply; compare those.
    echoed = 16 * 640
    sent = np.frombuffer(caller[:echoed], "<i2").astype(np.float64)
    back = np.frombuffer(bytes(result.bot_audio[:echoed]), "<i2").astype(np.float64)
    snr_db = 10 * np.log10(np.sum(sent**2) / max(np.sum((sent - back) ** 2), 1e-9))
    assert snr_db > 90  # bit-exact L16 round trip through both framings
    assert result.echoed == [{"name": "first-100ms"}] and result.clears == 1
    assert MarkEchoed("first-100ms") in events and MarkEchoed("never") not in events
    assert ClearAcknowledged() in events and DtmfReceived("9") in events
    assert isinstance(events[0], StreamStarted) and isinstance(events[-1], StreamStopped)
