"""The softphone's dialect: an explicit state machine over our own wire format; every malformed or
out-of-order frame raises ProtocolError (and changes no state); memory stays bounded."""

from __future__ import annotations

import base64
import json

import pytest

from service.providers.base import (
    ENCODING_PCM16LE,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)
from service.providers.browser.dialect import AUDIO_TAG, MAX_AUDIO_BYTES, BrowserDialect

START = {"event": "start", "call_id": "WEB-0123456789abcdef", "token": "v1.tok", "sample_rate": 16000}


def _started() -> BrowserDialect:
    dialect = BrowserDialect()
    event = dialect.parse(json.dumps(START))
    assert isinstance(event, StreamStarted)
    return dialect


def test_start_then_tagged_audio_then_stop() -> None:
    dialect = BrowserDialect()
    started = dialect.parse(json.dumps(START).encode())  # control frames may arrive as bytes
    assert isinstance(started, StreamStarted)
    assert started.call_id == "WEB-0123456789abcdef" and started.encoding == ENCODING_PCM16LE
    assert started.sample_rate == 16000 and started.custom_parameters["token"] == "v1.tok"
    first = dialect.parse(AUDIO_TAG + b"\x10\x00" * 320)
    second = dialect.parse(AUDIO_TAG + b"\x7b\x00" * 320)  # audio whose first sample byte is "{"
    assert isinstance(first, MediaReceived) and first.payload == b"\x10\x00" * 320 and first.timestamp_ms == 0
    assert isinstance(second, MediaReceived) and second.timestamp_ms == 20
    assert isinstance(dialect.parse('{"event":"mark","name":"m1"}'), MarkEchoed)
    digit = dialect.parse('{"event":"dtmf","digit":"0"}')
    assert isinstance(digit, DtmfReceived) and digit.digit == "0"
    assert isinstance(dialect.parse('{"event":"stop"}'), StreamStopped)
    with pytest.raises(ProtocolError, match="after the stream stopped"):
        dialect.parse(AUDIO_TAG + b"\x00\x00")
    assert dialect.connection_closed() is None


@pytest.mark.parametrize("frame", [
    AUDIO_TAG + b"\x00\x00",  # audio before start
    '{"event":"mark","name":"m"}',
    '{"event":"stop"}',
])
def test_nothing_before_start(frame: str | bytes) -> None:
    dialect = BrowserDialect()
    with pytest.raises(ProtocolError, match="before 'start'"):
        dialect.parse(frame)
    assert isinstance(dialect.parse(json.dumps(START)), StreamStarted)  # a failed parse changed nothing


@pytest.mark.parametrize("start", [
    {**START, "call_id": "CA123"},  # not a softphone id
    {**START, "call_id": "WEB-../../etc"},
    {**START, "sample_rate": 48000},
    {**START, "token": 5},
    {k: v for k, v in START.items() if k != "token"},
])
def test_bad_start_is_refused(start: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        BrowserDialect().parse(json.dumps(start))


@pytest.mark.parametrize("frame", [
    AUDIO_TAG,  # empty audio
    AUDIO_TAG + b"\x00",  # odd length
    AUDIO_TAG + b"\x00" * (MAX_AUDIO_BYTES + 2),  # too long
    b"\x02\x00\x00",  # unknown tag
    b"",
    "not json",
    '{"event":"dtmf","digit":"12"}',
    '{"event":"media","payload":"AAA="}',  # media is one-way (gateway -> page)
    '{"event":' + '"x' * 2000 + '"}',  # over the control-frame limit
    json.dumps(START),  # a second start
])
def test_malformed_frames_raise_protocol_error_only(frame: str | bytes) -> None:
    dialect = _started()
    with pytest.raises(ProtocolError):
        dialect.parse(frame)
    assert isinstance(dialect.parse(AUDIO_TAG + b"\x00\x00"), MediaReceived)  # still streaming


def test_outbound_frames_and_close() -> None:
    dialect = BrowserDialect()
    with pytest.raises(ProtocolError):
        dialect.build_mark("m")  # nothing before start
    dialect = _started()
    media = json.loads(dialect.build_media(b"\x01\x02" * 5))
    assert media["event"] == "media" and base64.b64decode(media["payload"]) == b"\x01\x02" * 5
    with pytest.raises(ProtocolError):
        dialect.build_media(b"\x01")  # not PCM16
    assert json.loads(dialect.build_mark("m-7")) == {"event": "mark", "name": "m-7"}
    assert json.loads(dialect.build_clear()) == {"event": "clear"}
    closed = dialect.connection_closed()
    assert isinstance(closed, StreamStopped) and closed.call_id == START["call_id"]
    assert dialect.connection_closed() is None
