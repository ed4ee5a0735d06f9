"""Telnyx's bidirectional media stream (TeXML ``<Connect><Stream bidirectionalMode="rtp">``): one stream's
JSON frames <-> the typed events of ``providers.base``. Pure, no I/O.

Wire facts this relies on (docs/providers/telnyx.md, "Wire format"): snake_case keys; ``stream_id`` is
top-level on every message (not inside ``start``); counters are decimal strings; ``media.payload`` is
the base64 RTP *payload* (no RTP header) in the negotiated codec; ``media_format.encoding`` is spelled
either as a codec name (``PCMU``) or a MIME-like name (``audio/x-mulaw``) depending on the account;
Telnyx also sends ``error`` messages, reported as ``ProviderErrorReported``. Our outbound ``media``,
``mark`` and ``clear`` carry no stream id (one bidirectional stream per call).

Telnyx does not guarantee frame order: ``MediaReceived.chunk`` carries Telnyx's chunk number, and
``MediaReorderer`` (pure, bounded) puts frames back in order for a consumer that wants it; the dialect
itself never holds frames back.
"""

from __future__ import annotations

import heapq
from typing import Any, ClassVar, Literal

from service.providers.base import (
    ENCODING_ALAW,
    ENCODING_L16,
    ENCODING_MULAW,
    MediaFraming,
    MediaReceived,
    ProtocolError,
    ProviderErrorReported,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
    TelephonyEvent,
)
from service.providers.jsonwire import (
    SAFE_ID_RE,
    UUID_RE,
    JsonStreamDialect,
    StreamPhase,
    as_count,
    check_id,
    describe,
    object_field,
    parameters,
    string_field,
)

__all__ = [
    "AFTER_STREAM_PATH",
    "CODECS",
    "MEDIA_PATH",
    "STREAM_TOKEN_PARAMETER",
    "VOICE_PATH",
    "MediaReorderer",
    "TelnyxCodec",
    "TelnyxDialect",
]

VOICE_PATH = "/telnyx/voice"
MEDIA_PATH = "/telnyx/media"
AFTER_STREAM_PATH = "/telnyx/after-stream"
STREAM_TOKEN_PARAMETER = "stream_token"

TelnyxCodec = Literal["PCMU", "PCMA", "L16"]
CODECS: dict[str, tuple[str, int]] = {
    "PCMU": (ENCODING_MULAW, 8000),
    "PCMA": (ENCODING_ALAW, 8000),
    "L16": (ENCODING_L16, 16000),
}
"""Codec name -> (our encoding name, the rate we ask for). L16 is taken at 16 kHz."""

_ENCODING_NAMES = {
    "PCMU": ENCODING_MULAW, "audio/x-mulaw": ENCODING_MULAW,
    "PCMA": ENCODING_ALAW, "audio/x-alaw": ENCODING_ALAW,
    "L16": ENCODING_L16, "audio/L16": ENCODING_L16, "audio/l16": ENCODING_L16,
}
_RATES = frozenset({8000, 16000})
_MAX_PAYLOAD_SECONDS = 30


class TelnyxDialect(JsonStreamDialect):
    """Telnyx's dialect for ONE stream (``TelephonyDialect``); see ``JsonStreamDialect`` for the state
    machine. ``codec`` is what we configured for the stream (both directions): a ``start`` negotiating
    another format is refused, since the audio path would misread it. ``error`` messages are accepted in
    any phase but ``stopped`` and never change state.
    """

    name = "telnyx"
    id_key: ClassVar[str] = "stream_id"
    sequence_key: ClassVar[str] = "sequence_number"
    id_pattern = UUID_RE
    outbound_id: ClassVar[bool] = False

    def __init__(self, codec: TelnyxCodec = "PCMU") -> None:
        super().__init__()
        if codec not in CODECS:
            raise ValueError(f"unsupported Telnyx codec {codec!r} (PCMU, PCMA or L16)")
        self.codec = codec
        self.encoding, self.sample_rate = CODECS[codec]
        width = 2 if codec == "L16" else 1
        per_second = self.sample_rate * width
        # RTP mode: each media message carries 20 ms to 30 s of audio in the stream's codec.
        self.media_framing = MediaFraming(
            multiple_of=width, min_bytes=per_second // 50, max_bytes=per_second * _MAX_PAYLOAD_SECONDS
        )

    def _parse_start(self, msg: dict[str, Any], stream_id: str) -> StreamStarted:
        start = object_field(msg.get("start"), "start")
        call_id = check_id(string_field(start, "call_control_id", "start"), "start.call_control_id", SAFE_ID_RE)
        user = string_field(start, "user_id", "start", required=False)
        if user:
            check_id(user, "start.user_id", SAFE_ID_RE)
        fmt = object_field(start.get("media_format"), "start.media_format")
        name = fmt.get("encoding")
        encoding = _ENCODING_NAMES.get(name) if type(name) is str else None
        if encoding is None:
            raise ProtocolError(f"unsupported media encoding {describe(fmt.get('encoding'))} (PCMU, PCMA or L16)")
        rate = as_count(fmt.get("sample_rate"), "start.media_format.sample_rate")
        if rate not in _RATES:
            raise ProtocolError(f"unsupported sample rate {rate} (8000 or 16000)")
        channels = fmt.get("channels")
        if channels is not None and as_count(channels, "start.media_format.channels") != 1:
            raise ProtocolError("unsupported channel count (need 1)")
        if (encoding, rate) != (self.encoding, self.sample_rate):
            raise ProtocolError(
                f"stream negotiated {encoding} at {rate} Hz, configured {self.codec} ({self.encoding} at {self.sample_rate} Hz)"
            )
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=user,
            custom_parameters=parameters(start.get("custom_parameters"), "start.custom_parameters"),
            encoding=encoding,
            sample_rate=rate,
            channels=1,
        )

    def _check_audio(self, audio: bytes) -> None:
        if self.codec == "L16" and len(audio) % 2:
            raise ProtocolError(f"L16 media of odd length ({len(audio)} bytes)")

    def _parse_stop(self, msg: dict[str, Any]) -> StreamStopped:
        body = msg.get("stop")
        if body is not None:
            call_id = string_field(object_field(body, "stop"), "call_control_id", "stop", required=False)
            if call_id and call_id != self.call_id:
                raise ProtocolError("stop.call_control_id differs from the started call")
        return StreamStopped(call_id=self.call_id or "")

    def _other(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        if event != "error":
            raise ProtocolError(f"unknown event {event[:40]!r}")
        if self.phase is StreamPhase.STOPPED:
            raise ProtocolError("'error' after 'stop'")
        if self.phase is StreamPhase.STREAMING and msg.get(self.id_key) is not None:
            self._check_message_id(msg, "error")
        # The docs put the details under "error"; some integrators read them from "payload".
        body = msg.get("error") if msg.get("error") is not None else msg.get("payload")
        details = object_field(body, "error")
        code = details.get("code")
        if type(code) is int:
            code = str(as_count(code, "error.code"))
        elif type(code) is not str or not code.isascii() or not code.isdigit() or len(code) > 12:
            raise ProtocolError(f"error.code must be a decimal code, got {describe(code)}")
        return ProviderErrorReported(
            code=code,
            title=string_field(details, "title", "error", required=False, max_len=64),
            detail=string_field(details, "detail", "error", required=False, max_len=256),
        )


def _conforms(dialect: TelnyxDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``TelnyxDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect


class MediaReorderer:
    """Restores chunk order of one stream's media when frames overtake each other.

    ``push`` returns the frames now releasable, in ascending ``chunk`` order: the next expected chunk and
    whatever follows it contiguously; a frame whose predecessor is missing waits until ``depth`` frames
    are held, then the missing ones are given up as lost. Duplicates and frames older than what was
    released are dropped (counted in ``dropped``). Frames without a chunk number (0) pass straight
    through. Memory: at most ``depth`` frames (3 x 20 ms by default, i.e. at most 60 ms of added delay,
    and only while a frame is missing). Not thread-safe.
    """

    __slots__ = ("_held", "depth", "dropped", "lost", "next_chunk")

    def __init__(self, depth: int = 3, first_chunk: int = 1) -> None:
        if depth < 1 or first_chunk < 1:
            raise ValueError("depth and first_chunk must be at least 1")
        self.depth = depth
        self.next_chunk = first_chunk
        """The chunk number expected next (chunks count from 1, as on Twilio-shaped streams)."""
        self.dropped = 0
        self.lost = 0
        self._held: list[tuple[int, MediaReceived]] = []

    def push(self, frame: MediaReceived) -> list[MediaReceived]:
        chunk = frame.chunk
        if chunk == 0:
            return [frame]
        if chunk < self.next_chunk or any(held == chunk for held, _ in self._held):
            self.dropped += 1
            return []
        heapq.heappush(self._held, (chunk, frame))
        released: list[MediaReceived] = []
        while self._held and (self._held[0][0] == self.next_chunk or len(self._held) > self.depth):
            chunk, ready = heapq.heappop(self._held)
            self.lost += chunk - self.next_chunk
            released.append(ready)
            self.next_chunk = chunk + 1
        return released

    def flush(self) -> list[MediaReceived]:
        """Everything held, in order (the stream ended); gaps count as lost."""
        released: list[MediaReceived] = []
        while self._held:
            chunk, ready = heapq.heappop(self._held)
            self.lost += chunk - self.next_chunk
            released.append(ready)
            self.next_chunk = chunk + 1
        return released
