"""Plivo's bidirectional Audio Stream (``<Stream bidirectional="true">``): one stream's JSON frames <->
the typed events of ``providers.base``. Pure, no I/O.

Wire facts this relies on (docs/providers/plivo.md, "Wire format"): camelCase keys; the stream id is
``start.streamId`` on ``start`` and top-level ``streamId`` on later messages (absent on some
``playedStream``/``clearedAudio`` acknowledgements, so it is checked only when present there);
``sequenceNumber`` and ``media.chunk`` are JSON numbers and ``media.timestamp`` is Unix epoch ms (a
string); the format is ``start.mediaFormat`` (``audio/x-mulaw`` 8 kHz or ``audio/x-l16`` 8/16 kHz);
the ``extraHeaders`` we set come back as the string ``extra_headers`` (``k=v,k2=v2``), parsed into
``StreamStarted.custom_parameters``. Playback acknowledgement: our ``checkpoint`` comes back as
``playedStream`` (``MarkEchoed``); our ``clearAudio`` as ``clearedAudio`` (``ClearAcknowledged``).
Plivo may end a stream by closing the socket without a ``stop``; a ``stop`` is accepted when it comes,
and ``connection_closed()`` gives the ``StreamStopped`` for a close.
"""

from __future__ import annotations

import binascii
import re
from typing import Any, ClassVar, Literal

import orjson

from service.providers.base import (
    ENCODING_MULAW,
    ENCODING_PCM16LE,
    ClearAcknowledged,
    MarkEchoed,
    MediaFraming,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    TelephonyEvent,
)
from service.providers.jsonwire import (
    MAX_MARK_NAME,
    MAX_PARAMETERS,
    UUID_RE,
    JsonStreamDialect,
    StreamPhase,
    as_count,
    check_id,
    describe,
    object_field,
    string_field,
)

__all__ = [
    "CONTENT_TYPES",
    "MEDIA_PATH",
    "SETTING_CONTENT_TYPES",
    "PlivoContentType",
    "PlivoDialect",
    "parse_extra_headers",
]

MEDIA_PATH = "/plivo/media"
PlivoContentType = Literal["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000"]
CONTENT_TYPES: dict[str, tuple[str, str, int]] = {
    "audio/x-mulaw;rate=8000": ("audio/x-mulaw", ENCODING_MULAW, 8000),
    "audio/x-l16;rate=8000": ("audio/x-l16", ENCODING_PCM16LE, 8000),
    "audio/x-l16;rate=16000": ("audio/x-l16", ENCODING_PCM16LE, 16000),
}
"""``<Stream contentType>`` -> (Plivo's encoding name on the wire, our encoding name, rate). Plivo's
``audio/x-l16`` is little-endian PCM, unlike RTP's L16 (docs/audio.md, "L16 framing"; confirm on a
live account: docs/providers/plivo.md, "Open questions")."""
SETTING_CONTENT_TYPES: dict[str, PlivoContentType] = {
    "mulaw": "audio/x-mulaw;rate=8000",
    "l16-8k": "audio/x-l16;rate=8000",
    "l16-16k": "audio/x-l16;rate=16000",
}
"""``CALLBRIDGE_PLIVO_CONTENT_TYPE`` value -> the ``contentType`` it stands for."""

MAX_EXTRA_HEADERS = 512
"""Plivo's own limit on ``extraHeaders`` (bytes)."""
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_ACCOUNT_RE = re.compile(r"[A-Z]{2}[A-Z0-9]{18}")
_MAX_PAYLOAD_SECONDS = 10


def parse_extra_headers(raw: object) -> dict[str, str]:
    """``"k=v,k2=v2"`` -> ``{"k": "v", "k2": "v2"}``. Plivo allows only [A-Za-z0-9] in keys and values,
    at most ``MAX_EXTRA_HEADERS`` bytes in all; anything else is a ``ProtocolError``. Absent or empty
    gives ``{}``."""
    if raw is None or raw == "":
        return {}
    if type(raw) is not str:
        raise ProtocolError(f"extra_headers must be a string, got {describe(raw)}")
    if len(raw) > MAX_EXTRA_HEADERS:
        raise ProtocolError(f"extra_headers is longer than {MAX_EXTRA_HEADERS} characters")
    headers: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not _ALNUM.fullmatch(key) or not _ALNUM.fullmatch(value):
            raise ProtocolError("extra_headers must be k=v pairs of [A-Za-z0-9] separated by commas")
        if key in headers:
            raise ProtocolError(f"extra_headers repeats key {key[:40]!r}")
        headers[key] = value
    if len(headers) > MAX_PARAMETERS:
        raise ProtocolError(f"extra_headers has {len(headers)} entries (at most {MAX_PARAMETERS})")
    return headers


class PlivoDialect(JsonStreamDialect):
    """Plivo's dialect for ONE stream (``TelephonyDialect``); see ``JsonStreamDialect`` for the state
    machine. ``content_type`` is what our ``<Stream contentType>`` asked for: a ``start`` negotiating
    another format is refused (the audio path would misread it). ``playedStream`` and ``clearedAudio``
    are accepted only while streaming. Memory: a few short strings whatever a peer sends.
    """

    name = "plivo"
    id_key: ClassVar[str] = "streamId"
    sequence_key: ClassVar[str] = "sequenceNumber"
    id_pattern = UUID_RE
    outbound_id: ClassVar[bool] = True

    def __init__(self, content_type: PlivoContentType = "audio/x-mulaw;rate=8000") -> None:
        super().__init__()
        if content_type not in CONTENT_TYPES:
            raise ValueError(f"unsupported Plivo contentType {content_type!r} ({', '.join(CONTENT_TYPES)})")
        self.content_type = content_type
        self.wire_encoding, self.encoding, self.sample_rate = CONTENT_TYPES[content_type]
        self.width = 2 if self.encoding == ENCODING_PCM16LE else 1
        per_second = self.sample_rate * self.width
        # playAudio is queued and played in order; any whole number of samples, at most 10 s per message.
        self.media_framing = MediaFraming(multiple_of=self.width, min_bytes=self.width, max_bytes=per_second * _MAX_PAYLOAD_SECONDS)
        self._media_head = (
            '{"event":"playAudio","media":{"contentType":"' + self.wire_encoding
            + '","sampleRate":' + str(self.sample_rate) + ',"payload":"'
        )

    # --- inbound ---------------------------------------------------------------------------------

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        # Plivo puts the stream id inside "start"; the base reads it from the top level.
        start = object_field(msg.get("start"), "start")
        sid = string_field(start, "streamId", "start")
        top = msg.get(self.id_key)
        if top is not None and top != sid:
            raise ProtocolError("start.streamId differs from the top-level streamId")
        return super()._start({**msg, self.id_key: sid})

    def _parse_start(self, msg: dict[str, Any], stream_id: str) -> StreamStarted:
        start = object_field(msg.get("start"), "start")
        call_id = check_id(string_field(start, "callId", "start"), "start.callId", UUID_RE)
        account = string_field(start, "accountId", "start", required=False, max_len=64)
        if account and not _ACCOUNT_RE.fullmatch(account):
            raise ProtocolError(f"start.accountId is not a valid id ({len(account)} characters)")
        tracks = start.get("tracks")
        if tracks is not None and tracks != ["inbound"]:
            raise ProtocolError(f"start.tracks must be ['inbound'] on a bidirectional stream, got {describe(tracks)}")
        fmt = object_field(start.get("mediaFormat"), "start.mediaFormat")
        wire = fmt.get("encoding")
        rate = as_count(fmt.get("sampleRate"), "start.mediaFormat.sampleRate")
        if (wire, rate) != (self.wire_encoding, self.sample_rate):
            raise ProtocolError(
                f"stream negotiated {describe(wire)} at {rate} Hz, configured {self.content_type}"
            )
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=account,
            custom_parameters=parse_extra_headers(msg.get("extra_headers")),
            encoding=self.encoding,
            sample_rate=rate,
            channels=1,
        )

    def _check_audio(self, audio: bytes) -> None:
        if len(audio) % self.width:
            raise ProtocolError(f"L16 media of odd length ({len(audio)} bytes)")

    def _check_message_id(self, msg: dict[str, Any], event: str) -> None:
        # Only media reliably names the stream; dtmf and stop may come without it (one stream per socket).
        if event != "media" and msg.get(self.id_key) is None:
            return
        super()._check_message_id(msg, event)

    def _ack_phase(self, event: str, msg: dict[str, Any]) -> None:
        if self.phase is not StreamPhase.STREAMING:
            raise ProtocolError(f"'{event}' {'before start' if self.phase is StreamPhase.BEFORE_START else 'after stop'}")
        self._check_message_id(msg, event)

    def _other(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        if event == "playedStream":
            self._ack_phase(event, msg)
            self._accept(self._sequence(msg))
            return MarkEchoed(string_field(msg, "name", "playedStream", max_len=MAX_MARK_NAME))
        if event == "clearedAudio":
            self._ack_phase(event, msg)
            return ClearAcknowledged()
        raise ProtocolError(f"unknown event {event[:40]!r}")

    def connection_closed(self) -> StreamStopped | None:
        """The socket closed: the authoritative end of a Plivo stream. Returns the ``StreamStopped`` to
        deliver if the stream was running (Plivo often sends no ``stop``), else None; the dialect is
        stopped afterwards either way. Idempotent."""
        running = self.phase is StreamPhase.STREAMING
        self.phase = StreamPhase.STOPPED
        return StreamStopped(call_id=self.call_id or "", reason="closed") if running else None

    # --- outbound --------------------------------------------------------------------------------

    def build_media(self, mulaw: bytes) -> str:
        """One ``playAudio`` carrying ``mulaw`` (wire audio in the stream's encoding, whatever the
        parameter's name) with the stream's ``contentType`` and ``sampleRate``; enforces
        ``media_framing``. Plivo queues it and plays messages in order."""
        self._streaming("playAudio")
        framing = self.media_framing
        size = len(mulaw)
        if not size or size % framing.multiple_of or size > framing.max_bytes:
            raise ProtocolError(
                f"media chunk of {size} bytes: need a non-empty multiple of {framing.multiple_of} of at most {framing.max_bytes}"
            )
        return self._media_head + binascii.b2a_base64(mulaw, newline=False).decode("ascii") + '"}}'

    def build_mark(self, name: str) -> str:
        """A ``checkpoint``: Plivo answers ``playedStream`` with the same name once everything queued
        before it has played. Not acknowledged when a clear discards it."""
        if type(name) is not str or not name or len(name) > MAX_MARK_NAME:
            raise ProtocolError(f"checkpoint name must be a non-empty string of at most {MAX_MARK_NAME} characters")
        return self._envelope("checkpoint") + ',"name":' + orjson.dumps(name).decode() + "}"

    def build_clear(self) -> str:
        """``clearAudio``: Plivo drops the queued audio and answers ``clearedAudio``."""
        return self._envelope("clearAudio") + "}"


def _conforms(dialect: PlivoDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``PlivoDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect

