"""The softphone's WebSocket (``/console/phone``, docs/providers/browser.md): one socket's frames <->
the typed events of ``providers.base``. Pure, no I/O.

Wire format (ours; the page in ``service/console/static/phone.js`` speaks it): caller audio is BINARY
frames: one tag byte ``0x01`` then 16-bit signed little-endian PCM, mono, 16 kHz (an even number of
bytes, at most ``MAX_AUDIO_BYTES``). The tag keeps audio and control apart on sockets that hand over
text and binary messages alike as bytes (``service.wsio``): a control frame is a JSON object, so it
starts with ``{``. Control is JSON text:

- page -> gateway: ``{"event":"start","call_id":...,"token":...,"sample_rate":16000}`` first (the call id
  and single-use stream token the console issued), then ``{"event":"mark","name":...}`` once the audio
  queued before our mark has played, ``{"event":"cleared"}`` after a flush, ``{"event":"dtmf","digit":"0"}``,
  ``{"event":"stop"}`` (hang-up). Closing the socket also ends the call (``connection_closed()``).
- gateway -> page: bot audio as ``{"event":"media","payload":<base64 PCM16LE 16 kHz>}`` (text, like
  every carrier dialect the call core speaks), ``{"event":"mark","name":...}`` and
  ``{"event":"clear"}`` (barge-in: the page drops everything it has not played yet).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from service.providers.base import (
    ENCODING_PCM16LE,
    ClearAcknowledged,
    DtmfReceived,
    MarkEchoed,
    MediaFraming,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    TelephonyEvent,
)
from service.providers.jsonwire import (
    DTMF_DIGITS,
    MAX_MARK_NAME,
    StreamPhase,
    check_id,
    describe,
    load_object,
    string_field,
)

__all__ = ["AUDIO_TAG", "CALL_ID_PREFIX", "MEDIA_PATH", "SAMPLE_RATE", "BrowserDialect"]

MEDIA_PATH = "/console/phone/media"
SAMPLE_RATE = 16000
CALL_ID_PREFIX = "WEB"
CALL_ID_RE = re.compile(CALL_ID_PREFIX + r"-[0-9a-f]{16}")
"""A softphone call id as the console issues it (``routes.issue_call``)."""
AUDIO_TAG = b"\x01"
"""First byte of every caller audio frame."""
MAX_CONTROL_BYTES = 2048
"""Largest control frame accepted (a ``start`` with its token is ~300 bytes)."""
MAX_AUDIO_BYTES = SAMPLE_RATE * 2
"""Largest binary audio frame accepted: 1 s of audio (the page sends 20 ms frames, 640 bytes)."""
_TOKEN_MAX = 512


class BrowserDialect:
    """The softphone's dialect for ONE WebSocket (``TelephonyDialect``, with binary media).

    Transitions: ``start`` BEFORE_START -> STREAMING; binary audio, ``mark``, ``cleared``, ``dtmf``
    only while STREAMING; ``stop`` or ``connection_closed()`` -> STOPPED; anything after that raises.
    A failed ``parse`` changes no state. Inbound audio is binary; outbound audio is text (base64). Memory: a few short strings and two counters, whatever a
    peer sends. Not thread-safe.
    """

    name = "browser"

    def __init__(self) -> None:
        self.encoding = ENCODING_PCM16LE
        self.sample_rate = SAMPLE_RATE
        self.media_framing = MediaFraming(multiple_of=2, min_bytes=2)
        self.phase = StreamPhase.BEFORE_START
        self.call_id: str | None = None
        self.frames_received = 0
        self._samples_received = 0

    # --- inbound ---------------------------------------------------------------------------------

    def parse(self, message: str | bytes | memoryview) -> TelephonyEvent:
        """Binary frame -> ``MediaReceived``; text frame -> the control event. ``ProtocolError`` for
        anything malformed or out of order, never another exception."""
        if isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            if data[:1] == AUDIO_TAG:
                return self._audio(data[1:])
            if data[:1] != b"{":
                raise ProtocolError("binary frame is neither tagged audio (0x01) nor a JSON object")
            message = data
        msg = load_object(message, MAX_CONTROL_BYTES)
        event = msg.get("event")
        if type(event) is not str:
            raise ProtocolError("frame has no string 'event'")
        if event == "start":
            return self._start(msg)
        if event not in ("mark", "cleared", "dtmf", "stop"):
            raise ProtocolError(f"unknown event {describe(event)}")
        self._streaming(event)
        if event == "mark":
            return MarkEchoed(string_field(msg, "name", "mark", max_len=MAX_MARK_NAME))
        if event == "cleared":
            return ClearAcknowledged()
        if event == "dtmf":
            digit = msg.get("digit")
            if type(digit) is not str or len(digit) != 1 or digit not in DTMF_DIGITS:
                raise ProtocolError("dtmf digit must be one of 0-9 * # A-D")  # never quote the value
            return DtmfReceived(digit=digit.upper())
        self.phase = StreamPhase.STOPPED
        return StreamStopped(call_id=self.call_id or "", reason="hangup")

    def _streaming(self, what: str) -> None:
        if self.phase is StreamPhase.BEFORE_START:
            raise ProtocolError(f"'{what}' before 'start'")
        if self.phase is StreamPhase.STOPPED:
            raise ProtocolError(f"'{what}' after the stream stopped")

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.phase is not StreamPhase.BEFORE_START:
            raise ProtocolError(f"'start' in phase {self.phase.value}")
        call_id = check_id(string_field(msg, "call_id", "start", max_len=64), "start.call_id", CALL_ID_RE)
        token = string_field(msg, "token", "start", max_len=_TOKEN_MAX)
        rate = msg.get("sample_rate")
        if rate != SAMPLE_RATE:
            raise ProtocolError(f"start.sample_rate must be {SAMPLE_RATE}, got {describe(rate)}")
        self.phase = StreamPhase.STREAMING
        self.call_id = call_id
        return StreamStarted(
            stream_id=call_id, call_id=call_id, account_id="console",
            custom_parameters={"token": token, "from": "browser"},
            encoding=ENCODING_PCM16LE, sample_rate=SAMPLE_RATE, channels=1,
        )

    def _audio(self, audio: bytes) -> MediaReceived:
        self._streaming("binary audio")
        size = len(audio)
        if not size or size % 2 or size > MAX_AUDIO_BYTES:
            raise ProtocolError(f"binary audio frame of {size} bytes (need an even length of 2..{MAX_AUDIO_BYTES})")
        timestamp_ms = self._samples_received * 1000 // SAMPLE_RATE
        self._samples_received += size // 2
        self.frames_received += 1
        return MediaReceived(audio, timestamp_ms, self.frames_received)

    def connection_closed(self) -> StreamStopped | None:
        """The socket closed: the ``StreamStopped`` to deliver if the stream was running, else None;
        the dialect is stopped afterwards either way. Idempotent."""
        running = self.phase is StreamPhase.STREAMING
        self.phase = StreamPhase.STOPPED
        return StreamStopped(call_id=self.call_id or "", reason="closed") if running else None

    # --- outbound --------------------------------------------------------------------------------

    def build_media(self, audio: bytes) -> str:
        """One text frame ``{"event":"media","payload":<base64 PCM16LE 16 kHz>}`` of bot audio (any
        non-empty even length: our own audio, chunked by the call core)."""
        self._streaming("media")
        if not audio or len(audio) % 2:
            raise ProtocolError(f"softphone media must be non-empty PCM16 (even length), got {len(audio)} bytes")
        return '{"event":"media","payload":"' + base64.b64encode(audio).decode("ascii") + '"}'

    def build_mark(self, name: str) -> str:
        """A marker; the page echoes it once everything queued before it has played."""
        self._streaming("mark")
        if type(name) is not str or not name or len(name) > MAX_MARK_NAME:
            raise ProtocolError(f"mark name must be a non-empty string of at most {MAX_MARK_NAME} characters")
        return orjson.dumps({"event": "mark", "name": name}).decode()

    def build_clear(self) -> str:
        """Barge-in: the page drops its unplayed audio, answers ``cleared`` and echoes no pending mark."""
        self._streaming("clear")
        return '{"event":"clear"}'


def _conforms(dialect: BrowserDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``BrowserDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect
