"""Vonage's Voice API WebSocket (NCCO ``connect`` to a ``websocket`` endpoint): one socket's frames <->
the typed events of ``providers.base``. Pure, no I/O.

Wire facts this relies on (docs/providers/vonage.md, "Wire format"): audio is BINARY frames of raw
16-bit signed little-endian PCM, mono, at the NCCO's ``content-type`` rate (8, 16 or 24 kHz), one 20 ms
frame per message in both directions; control is JSON text: ``websocket:connected`` first (carrying the
NCCO ``headers`` flattened to top-level keys), then ``websocket:dtmf`` (``digit``), ``websocket:notify``
(the echo of our ``notify``: the playback marker) and ``websocket:cleared`` (the echo of our
``clear``). Vonage sends no stop message: the socket closing ends the stream (``connection_closed()``).

Outbound media is binary, so ``build_media`` (text) is refused; use ``build_media_frame`` (or
``providers.base.build_media_frame``), which takes exactly one 20 ms frame; ``split_frames`` cuts a
reply into such frames and pads the last one with silence.
"""

from __future__ import annotations

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
    MAX_PARAMETER_KEY,
    MAX_PARAMETER_VALUE,
    MAX_PARAMETERS,
    UUID_RE,
    StreamPhase,
    as_count,
    check_id,
    describe,
    load_object,
    object_field,
    string_field,
)

__all__ = [
    "CALL_UUID_HEADER",
    "MEDIA_PATH",
    "SAMPLE_RATES",
    "STREAM_TOKEN_HEADER",
    "VonageDialect",
    "content_type",
    "split_frames",
]

MEDIA_PATH = "/vonage/media"
SAMPLE_RATES = (8000, 16000, 24000)
STREAM_TOKEN_HEADER = "stream_token"
"""NCCO ``headers`` key of the stream token (echoed on ``websocket:connected``)."""
CALL_UUID_HEADER = "call_uuid"
"""NCCO ``headers`` key of the call's UUID: Vonage puts no call id on the socket, so we send it along."""
MAX_CONTROL_BYTES = 4096
"""Largest text frame accepted (Vonage caps header data at 512 bytes)."""
MAX_AUDIO_BYTES = 24000 * 2
"""Largest binary frame accepted: 1 s at 24 kHz (Vonage sends 20 ms, 960 B at most)."""
MAX_AHEAD_MS = 15_000
"""Unplayed audio we hand Vonage at most: its current guide buffers 3072 frames (~61 s), an older one
1024 (~20 s); beyond 15 s the call core paces frames at real time (docs/providers/vonage.md, "Pacing")."""
_NOTIFY_KEY = "name"
_CONTENT_TYPE = re.compile(r"audio/l16;\s*rate=(\d{4,5})", re.IGNORECASE)


def content_type(sample_rate: int) -> str:
    """The NCCO ``content-type`` for ``sample_rate``."""
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"unsupported Vonage rate {sample_rate} (8000, 16000 or 24000)")
    return f"audio/l16;rate={sample_rate}"


def split_frames(pcm: bytes, sample_rate: int) -> list[bytes]:
    """``pcm`` (L16 little-endian) cut into 20 ms frames, the last padded with silence, as Vonage requires
    every outbound message to be exactly one frame. ``ValueError`` for an odd length or unknown rate."""
    frame = content_frame_bytes(sample_rate)
    if len(pcm) % 2:
        raise ValueError(f"L16 audio of odd length ({len(pcm)} bytes)")
    tail = len(pcm) % frame
    padded = pcm + b"\x00" * (frame - tail) if tail else pcm
    return [padded[i:i + frame] for i in range(0, len(padded), frame)]


def content_frame_bytes(sample_rate: int) -> int:
    """Bytes of one 20 ms L16 frame at ``sample_rate``."""
    content_type(sample_rate)
    return sample_rate * 2 // 50


class VonageDialect:
    """Vonage's dialect for ONE WebSocket (``TelephonyDialect``, with binary media).

    Transitions: ``websocket:connected`` BEFORE_START -> STREAMING (it is the start: Vonage has no
    separate handshake); binary audio, ``websocket:dtmf``/``notify``/``cleared`` only while STREAMING;
    ``connection_closed()`` -> STOPPED; anything after that raises. A failed ``parse`` changes no state.
    ``sample_rate`` is what our NCCO asked for; a ``connected`` announcing another rate is refused.
    Memory: a few short strings and two counters, whatever a peer sends. Not thread-safe.
    """

    name = "vonage"

    def __init__(self, sample_rate: int = 16000) -> None:
        self.content_type = content_type(sample_rate)
        self.sample_rate = sample_rate
        self.encoding = ENCODING_PCM16LE
        self.frame_bytes = content_frame_bytes(sample_rate)
        self.media_framing = MediaFraming(multiple_of=self.frame_bytes, min_bytes=self.frame_bytes,
                                          max_bytes=self.frame_bytes, max_ahead_ms=MAX_AHEAD_MS)
        self.phase = StreamPhase.BEFORE_START
        self.call_id: str | None = None
        self.started: StreamStarted | None = None
        self.frames_received = 0
        self._samples_received = 0

    # --- inbound ---------------------------------------------------------------------------------

    def parse(self, message: str | bytes | memoryview) -> TelephonyEvent:
        """Binary frame (``memoryview``, as ``service.wsio`` delivers binary messages) -> ``MediaReceived``;
        text frame (``str``, or UTF-8 ``bytes``) -> the control event. ``ProtocolError`` for anything
        malformed or out of order, never another exception."""
        if isinstance(message, memoryview):
            return self._audio(message.tobytes())
        msg = load_object(message, MAX_CONTROL_BYTES)
        event = msg.get("event")
        if event == "websocket:connected":
            return self._connected(msg)
        if type(event) is not str:
            raise ProtocolError("frame has no string 'event'")
        if event not in ("websocket:dtmf", "websocket:notify", "websocket:cleared"):
            raise ProtocolError(f"unknown event {event[:40]!r}")
        self._streaming(event)
        if event == "websocket:dtmf":
            return self._dtmf(msg)
        if event == "websocket:notify":
            payload = object_field(msg.get("payload"), "websocket:notify.payload")
            return MarkEchoed(string_field(payload, _NOTIFY_KEY, "websocket:notify.payload", max_len=MAX_MARK_NAME))
        return ClearAcknowledged()

    def _streaming(self, what: str) -> None:
        if self.phase is StreamPhase.BEFORE_START:
            raise ProtocolError(f"'{what}' before 'websocket:connected'")
        if self.phase is StreamPhase.STOPPED:
            raise ProtocolError(f"'{what}' after the socket closed")

    def _connected(self, msg: dict[str, Any]) -> StreamStarted:
        if self.phase is not StreamPhase.BEFORE_START:
            raise ProtocolError(f"'websocket:connected' in phase {self.phase.value}")
        declared = string_field(msg, "content-type", "websocket:connected", max_len=64)
        match = _CONTENT_TYPE.fullmatch(declared)
        if match is None:
            raise ProtocolError(f"unsupported content-type {describe(declared)} (audio/l16;rate=N)")
        if int(match.group(1)) != self.sample_rate:
            raise ProtocolError(f"socket announced {match.group(1)} Hz, the NCCO asked for {self.sample_rate}")
        headers = {key: value for key, value in msg.items() if key not in ("event", "content-type")}
        if len(headers) > MAX_PARAMETERS:
            raise ProtocolError(f"websocket:connected has {len(headers)} headers (at most {MAX_PARAMETERS})")
        params: dict[str, str] = {}
        for key, value in headers.items():
            if len(key) > MAX_PARAMETER_KEY:
                raise ProtocolError(f"header name longer than {MAX_PARAMETER_KEY} characters")
            if type(value) is not str or len(value) > MAX_PARAMETER_VALUE:
                raise ProtocolError(f"header {key[:40]!r} must be a string of at most {MAX_PARAMETER_VALUE} characters")
            params[key] = value
        call_id = params.get(CALL_UUID_HEADER)
        if call_id is None:
            raise ProtocolError(f"websocket:connected lacks the {CALL_UUID_HEADER!r} header our NCCO sets")
        check_id(call_id, CALL_UUID_HEADER, UUID_RE)
        started = StreamStarted(
            stream_id=call_id, call_id=call_id, account_id="", custom_parameters=params,
            encoding=ENCODING_PCM16LE, sample_rate=self.sample_rate, channels=1,
        )
        self.phase = StreamPhase.STREAMING
        self.call_id = call_id
        self.started = started
        return started

    def _audio(self, audio: bytes) -> MediaReceived:
        self._streaming("binary audio")
        size = len(audio)
        if not size or size % 2 or size > MAX_AUDIO_BYTES:
            raise ProtocolError(f"binary audio frame of {size} bytes (need an even length of 2..{MAX_AUDIO_BYTES})")
        timestamp_ms = self._samples_received * 1000 // self.sample_rate
        self._samples_received += size // 2
        self.frames_received += 1
        return MediaReceived(audio, timestamp_ms, self.frames_received)

    def _dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        digit = msg.get("digit")
        if digit is None and type(msg.get("dtmf")) is dict:
            digit = msg["dtmf"].get("digit")  # the nested spelling some integrations report
        if type(digit) is not str or len(digit) != 1 or digit not in DTMF_DIGITS:
            # Never quote the value: DTMF may be a card number or a PIN.
            raise ProtocolError(f"websocket:dtmf digit must be one of 0-9 * # A-D (got a {type(digit).__name__})")
        duration = msg.get("duration")
        if duration is not None:
            as_count(duration, "websocket:dtmf.duration")
        return DtmfReceived(digit=digit.upper())

    def connection_closed(self) -> StreamStopped | None:
        """The socket closed: the only end Vonage signals. The ``StreamStopped`` to deliver if the stream
        was running, else None; the dialect is stopped afterwards either way. Idempotent."""
        running = self.phase is StreamPhase.STREAMING
        self.phase = StreamPhase.STOPPED
        return StreamStopped(call_id=self.call_id or "", reason="closed") if running else None

    # --- outbound --------------------------------------------------------------------------------

    def build_media_frame(self, audio: bytes) -> bytes:
        """The binary frame for exactly one 20 ms frame of L16 little-endian audio at the stream's rate
        (``split_frames`` makes them). Vonage plays frames in order, buffering well ahead of real time."""
        self._streaming("binary audio")
        if len(audio) != self.frame_bytes:
            raise ProtocolError(f"Vonage media must be one 20 ms frame of {self.frame_bytes} bytes, got {len(audio)}")
        return bytes(audio)

    def build_media(self, mulaw: bytes) -> str:
        """Refused: Vonage media is binary (``build_media_frame``)."""
        raise ProtocolError("Vonage media is binary: use build_media_frame (providers.base.build_media_frame)")

    def build_mark(self, name: str) -> str:
        """A ``notify``: Vonage echoes it as ``websocket:notify`` once the audio queued before it has
        played. Whether pending ones are echoed on clear is undocumented; assume not."""
        self._streaming("notify")
        if type(name) is not str or not name or len(name) > MAX_MARK_NAME:
            raise ProtocolError(f"notify name must be a non-empty string of at most {MAX_MARK_NAME} characters")
        return orjson.dumps({"action": "notify", "payload": {_NOTIFY_KEY: name}}).decode()

    def build_clear(self) -> str:
        """``clear``: Vonage discards the queued audio and answers ``websocket:cleared``."""
        self._streaming("clear")
        return '{"action":"clear"}'


def _conforms(dialect: VonageDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``VonageDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect
