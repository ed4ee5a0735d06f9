"""Shared pure machinery for the carriers whose media streams are Twilio-shaped JSON text frames
(SignalWire, Telnyx, Exotel): bounded field readers, id checks and one stream state machine.

Everything here raises ``ProtocolError`` (never another exception type) with a short, log-safe message:
values are described by type and a 40-character preview, never quoted whole. No I/O.

``JsonStreamDialect`` holds what the three share: the state machine (before start -> streaming ->
stopped; every other transition raises), frame decoding with a size limit, the stream-id check on every
message after ``start``, ``media``/``mark``/``dtmf``/``stop`` parsing and the outbound builders. A carrier
subclass names its keys and implements ``_parse_start`` (each carrier negotiates its format differently).
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from service.providers.base import (
    ANY_FRAMING,
    DtmfReceived,
    MarkEchoed,
    MediaFraming,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyEvent,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_MARK_NAME",
    "MAX_PARAMETERS",
    "JsonStreamDialect",
    "StreamPhase",
    "as_count",
    "check_id",
    "describe",
    "load_object",
    "object_field",
    "parameters",
    "string_field",
]

MAX_FRAME_BYTES = 65536
"""Largest inbound text frame accepted (Exotel sends ~100 ms chunks: 24 kHz L16 is 6.4 KB of base64)."""
MAX_PAYLOAD_BYTES = 49152
"""Largest decoded audio chunk accepted from a carrier (over 1 s of 16 kHz L16)."""
MAX_STRING = 256
"""Default bound on any string field we keep (ids, names, reasons)."""
MAX_MARK_NAME = 128
MAX_PARAMETERS = 16
MAX_PARAMETER_KEY = 64
MAX_PARAMETER_VALUE = 512
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SAFE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=+/-]{0,127}")
"""A carrier id we are willing to put into logs and Redis keys: printable, no spaces, <= 128 chars."""


def describe(value: object) -> str:
    """A short, log-safe description of an unexpected value (type and a bounded preview)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def load_object(message: str | bytes | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Decode one text frame into a JSON object, refusing frames longer than ``max_bytes`` (bytes, or
    characters for ``str``, so at most 4x that in memory) before parsing."""
    if not isinstance(message, str | bytes):
        raise ProtocolError(f"frame must be text, got {type(message).__name__}")
    if len(message) > max_bytes:
        raise ProtocolError(f"frame of {len(message)} bytes exceeds the {max_bytes}-byte limit")
    try:
        msg = orjson.loads(message)  # strict RFC 8259, UTF-8 checked; C parser, not ours
    except (ValueError, RecursionError):
        raise ProtocolError("frame is not valid JSON") from None
    if type(msg) is not dict:
        raise ProtocolError(f"frame must be a JSON object, got {type(msg).__name__}")
    return msg


def object_field(value: object, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        if value is None:
            raise ProtocolError(f"{what} is missing")
        raise ProtocolError(f"{what} must be an object, got {describe(value)}")
    return value


def string_field(
    container: Mapping[str, Any], key: str, what: str, *, required: bool = True, max_len: int = MAX_STRING
) -> str:
    """``container[key]`` as a string of at most ``max_len`` characters ("" if absent and optional)."""
    value = container.get(key)
    if value is None and not required:
        return ""
    if type(value) is not str:
        if value is None:
            raise ProtocolError(f"{what}.{key} is missing")
        raise ProtocolError(f"{what}.{key} must be a string, got {describe(value)}")
    if len(value) > max_len:
        raise ProtocolError(f"{what}.{key} is longer than {max_len} characters")
    return value


def as_count(value: object, what: str) -> int:
    """A non-negative counter sent as a decimal string ("4", at most 18 digits) or a JSON integer."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    elif kind is int:
        number: int = value  # type: ignore[assignment]
        if 0 <= number < 10**18:
            return number
    raise ProtocolError(f"{what} must be a non-negative decimal number, got {describe(value)}")


def check_id(value: str, what: str, pattern: re.Pattern[str] = SAFE_ID_RE) -> str:
    """``value`` if it fully matches ``pattern``; ids are checked before they reach logs or Redis keys."""
    if not pattern.fullmatch(value):
        raise ProtocolError(f"{what} is not a valid id ({len(value)} characters)")
    return value


def parameters(raw: object, what: str, max_items: int = MAX_PARAMETERS) -> dict[str, str]:
    """A bounded ``{str: str}`` map (custom parameters); absent gives ``{}``."""
    if raw is None:
        return {}
    body = object_field(raw, what)
    if len(body) > max_items:
        raise ProtocolError(f"{what} has {len(body)} entries (at most {max_items})")
    params: dict[str, str] = {}
    for key, value in body.items():
        if len(key) > MAX_PARAMETER_KEY:
            raise ProtocolError(f"{what} has a key longer than {MAX_PARAMETER_KEY} characters")
        if type(value) is not str:
            raise ProtocolError(f"{what}[{key[:40]!r}] must be a string, got {type(value).__name__}")
        if len(value) > MAX_PARAMETER_VALUE:
            raise ProtocolError(f"{what}[{key[:40]!r}] is longer than {MAX_PARAMETER_VALUE} characters")
        params[key] = value
    return params


class StreamPhase(enum.Enum):
    """Where one media stream is: waiting for ``start``, carrying media, or over."""

    BEFORE_START = "before_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class JsonStreamDialect:
    """Base of one stream's Twilio-shaped JSON dialect (``TelephonyDialect``).

    Transitions: ``connected`` only BEFORE_START; ``start`` BEFORE_START -> STREAMING; ``media``, ``mark``,
    ``dtmf`` only while STREAMING; ``stop`` STREAMING -> STOPPED; anything in STOPPED raises. A failed
    ``parse`` changes no state, so a caller may count malformed frames and go on. After ``start``, every
    message must name the started stream (when the carrier puts the id on it). Not thread-safe: one
    stream, one task. Memory: a few short strings, whatever a peer sends.
    """

    name: str = ""
    """The carrier's name (metrics label, logs); an instance attribute as ``TelephonyDialect`` declares it."""
    id_key: ClassVar[str] = "streamSid"
    """Key of the stream id on every message."""
    sequence_key: ClassVar[str] = "sequenceNumber"
    id_pattern: ClassVar[re.Pattern[str]] = SAFE_ID_RE
    outbound_id: ClassVar[bool] = True
    """Whether outbound messages carry the stream id."""
    media_tracks: ClassVar[frozenset[str]] = frozenset({"inbound"})
    """Accepted ``media.track`` values (absent is accepted too)."""
    media_framing: MediaFraming = ANY_FRAMING

    def __init__(self) -> None:
        self.phase = StreamPhase.BEFORE_START
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.started: StreamStarted | None = None
        self.last_sequence_number = 0
        """``sequence_number`` of the last accepted message (0 before any); gaps are not errors."""
        self._id_json = ""

    # --- inbound ---------------------------------------------------------------------------------

    def parse(self, message: str | bytes | memoryview) -> TelephonyEvent:
        """Turn one text frame into a typed event; raise ``ProtocolError`` for anything malformed or
        out of order (and never any other exception)."""
        msg = load_object(message)
        event = msg.get("event")
        if event == "media":
            return self._media(msg)
        if event == "mark":
            return self._mark(msg)
        if event == "dtmf":
            return self._dtmf(msg)
        if event == "start":
            return self._start(msg)
        if event == "stop":
            return self._stop(msg)
        if event == "connected":
            return self._connected(msg)
        if type(event) is not str:
            raise ProtocolError("frame has no string 'event'")
        return self._other(event, msg)

    def _other(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        """Carrier-specific events; the base knows none."""
        raise ProtocolError(f"unknown event {event[:40]!r}")

    def _sequence(self, msg: dict[str, Any]) -> int:
        seq = msg.get(self.sequence_key)
        return 0 if seq is None else as_count(seq, self.sequence_key)

    def _check_stream(self, msg: dict[str, Any], event: str) -> int:
        """Checks for every message after ``start``; returns the parsed sequence number."""
        if self.phase is StreamPhase.BEFORE_START:
            raise ProtocolError(f"'{event}' before 'start'")
        if self.phase is StreamPhase.STOPPED:
            raise ProtocolError(f"'{event}' after 'stop'")
        self._check_message_id(msg, event)
        return self._sequence(msg)

    def _check_message_id(self, msg: dict[str, Any], event: str) -> None:
        sid = msg.get(self.id_key)
        if sid != self.stream_id:
            if sid is None:
                raise ProtocolError(f"'{event}' without {self.id_key}")
            raise ProtocolError(f"'{event}' for another {self.id_key} ({describe(sid)})")

    def _accept(self, seq: int) -> None:
        if seq:
            self.last_sequence_number = seq

    def _connected(self, msg: dict[str, Any]) -> StreamConnected:
        if self.phase is not StreamPhase.BEFORE_START:
            raise ProtocolError(f"'connected' in phase {self.phase.value}")
        return StreamConnected(
            protocol=string_field(msg, "protocol", "connected", required=False, max_len=64),
            version=string_field(msg, "version", "connected", required=False, max_len=64),
        )

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.phase is not StreamPhase.BEFORE_START:
            raise ProtocolError("second 'start' on one stream" if self.phase is StreamPhase.STREAMING
                                else "'start' after 'stop'")
        sid = check_id(string_field(msg, self.id_key, "start message"), self.id_key, self.id_pattern)
        seq = self._sequence(msg)
        started = self._parse_start(msg, sid)
        # Commit state only once everything validated.
        self.phase = StreamPhase.STREAMING
        self.stream_id = sid
        self.call_id = started.call_id
        self.started = started
        self._id_json = orjson.dumps(sid).decode()
        self._accept(seq)
        return started

    def _parse_start(self, msg: dict[str, Any], stream_id: str) -> StreamStarted:
        raise NotImplementedError  # pragma: no cover - every carrier overrides it

    def _media(self, msg: dict[str, Any]) -> MediaReceived:
        seq = self._check_stream(msg, "media")
        media = object_field(msg.get("media"), "media")
        payload = media.get("payload")
        if type(payload) is not str:
            raise ProtocolError("media.payload is missing" if payload is None else "media.payload must be a string")
        if not payload:
            raise ProtocolError("media.payload is empty")
        if len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
            raise ProtocolError(f"media.payload exceeds {MAX_PAYLOAD_BYTES} bytes of audio")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media.payload is not valid base64") from None
        track = media.get("track")
        if track is not None and (type(track) is not str or track not in self.media_tracks):
            raise ProtocolError(f"media.track must be one of {sorted(self.media_tracks)}, got {describe(track)}")
        self._check_audio(audio)
        chunk = media.get("chunk")
        timestamp = media.get("timestamp")
        event = MediaReceived(
            audio,
            0 if timestamp is None else as_count(timestamp, "media.timestamp"),
            0 if chunk is None else as_count(chunk, "media.chunk"),
        )
        self._accept(seq)
        return event

    def _check_audio(self, audio: bytes) -> None:
        """Carrier hook: reject audio that cannot be in the negotiated format (e.g. odd-length PCM16)."""

    def _mark(self, msg: dict[str, Any]) -> MarkEchoed:
        seq = self._check_stream(msg, "mark")
        name = string_field(object_field(msg.get("mark"), "mark"), "name", "mark", max_len=MAX_MARK_NAME)
        self._accept(seq)
        return MarkEchoed(name)

    def _dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        seq = self._check_stream(msg, "dtmf")
        digit = object_field(msg.get("dtmf"), "dtmf").get("digit")
        if type(digit) is not str or len(digit) != 1 or digit not in DTMF_DIGITS:
            # The value is never quoted in the message: DTMF may be a card number or a PIN.
            raise ProtocolError(f"dtmf.digit must be one of 0-9 * # A-D (got a {type(digit).__name__})")
        self._accept(seq)
        return DtmfReceived(digit=digit.upper())

    def _stop(self, msg: dict[str, Any]) -> StreamStopped:
        seq = self._check_stream(msg, "stop")
        stopped = self._parse_stop(msg)
        self._accept(seq)
        self.phase = StreamPhase.STOPPED
        return stopped

    def _parse_stop(self, msg: dict[str, Any]) -> StreamStopped:
        return StreamStopped(call_id=self.call_id or "")

    # --- outbound --------------------------------------------------------------------------------

    def _streaming(self, what: str) -> None:
        if self.phase is StreamPhase.BEFORE_START:
            raise ProtocolError(f"no stream has started: cannot build '{what}'")
        if self.phase is StreamPhase.STOPPED:
            raise ProtocolError(f"the stream has stopped: cannot build '{what}'")

    def _envelope(self, event: str) -> str:
        """``{"event":...`` plus the stream id when the carrier wants it, without the closing brace."""
        self._streaming(event)
        head = '{"event":"' + event + '"'
        return head + ',"' + self.id_key + '":' + self._id_json if self.outbound_id else head

    def build_media(self, mulaw: bytes) -> str:
        """One ``media`` message carrying ``mulaw`` (wire audio in the stream's encoding, whatever its
        name) as base64; enforces ``media_framing``."""
        framing = self.media_framing
        size = len(mulaw)
        if not size:
            raise ProtocolError("refusing to build an empty media message")
        if size % framing.multiple_of:
            raise ProtocolError(f"media chunk of {size} bytes is not a multiple of {framing.multiple_of}")
        if framing.max_bytes and size > framing.max_bytes:
            raise ProtocolError(f"media chunk of {size} bytes exceeds {framing.max_bytes}")
        payload = binascii.b2a_base64(mulaw, newline=False).decode("ascii")
        return self._envelope("media") + ',"media":{"payload":"' + payload + '"}}'

    def build_mark(self, name: str) -> str:
        """A playback marker; the carrier echoes it once the audio sent before it has played."""
        if type(name) is not str or not name or len(name) > MAX_MARK_NAME:
            raise ProtocolError(f"mark name must be a non-empty string of at most {MAX_MARK_NAME} characters")
        return self._envelope("mark") + ',"mark":{"name":' + orjson.dumps(name).decode() + "}}"

    def build_clear(self) -> str:
        """Flush: the carrier drops the audio it has queued but not yet played."""
        return self._envelope("clear") + "}"
