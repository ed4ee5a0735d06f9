"""Provider-neutral typed events and the ``TelephonyDialect`` interface the call bridge talks to.

Sans-I/O: a dialect turns one inbound WebSocket message (``str`` or ``bytes``) into one typed event
and builds outbound messages; it never touches sockets or asyncio. Adding a provider means adding a
module that implements ``TelephonyDialect``; the bridge does not change.

Audio on the wire is carried as raw bytes in the encoding and rate ``StreamStarted`` declares (one of
the ``ENCODING_*`` names below); converting it is the job of ``service/audio/``, never of a dialect.
Consumers must ignore event types they do not know (new ones may be added, e.g. ``ProviderErrorReported``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

ENCODING_MULAW = "audio/x-mulaw"
"""G.711 mu-law, one byte per sample."""
ENCODING_ALAW = "audio/x-alaw"
"""G.711 A-law, one byte per sample."""
ENCODING_L16 = "audio/L16"
"""Signed 16-bit linear PCM in network byte order (big-endian), as the MIME type and RTP define it."""
ENCODING_PCM16LE = "audio/x-pcm16le"
"""Signed 16-bit linear PCM, little-endian ("slin"), as Exotel and Vonage send it."""


class ProtocolError(ValueError):
    """A malformed or out-of-order provider message. ``str(error)`` says what was wrong, for the log."""


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The provider's handshake message (Twilio ``connected``)."""

    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """Stream metadata; the only place per-call parameters arrive on the socket."""

    stream_id: str
    call_id: str
    account_id: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class MediaReceived(NamedTuple):
    """One chunk of caller audio: raw wire bytes (already base64-decoded) in the encoding and rate the
    stream's ``StreamStarted`` declared (mu-law 8 kHz for Twilio).

    A NamedTuple rather than a frozen dataclass like the other events: it is built 50 times a
    second per call, and a frozen dataclass's ``__init__`` costs ~4x as much. Immutable all the same.
    """

    payload: bytes
    timestamp_ms: int
    chunk: int


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """The provider reached (played or cleared) a mark we sent earlier."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearAcknowledged:
    """The carrier confirmed a flush (Plivo ``clearedAudio``, Vonage ``websocket:cleared``): the audio
    queued before our clear will not play. Carriers without an acknowledgement never send it."""


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The stream ended on the provider's side (hang-up, or the stream was stopped).

    ``reason`` is the carrier's own short reason when it gives one (Exotel ``callended``), else ``""``."""

    call_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ProviderErrorReported:
    """The carrier reported an error on the stream (Telnyx ``error``): informational, the stream goes on.

    Fields are bounded and log-safe (the dialect checks them)."""

    code: str
    title: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MediaFraming:
    """What the carrier accepts as one outbound media chunk (bytes of wire audio).

    ``multiple_of``: every chunk's length must be a multiple of it; ``min_bytes``: chunks shorter than this
    play badly (only the last chunk of a reply should be shorter); ``max_bytes``: hard upper bound
    (0 = none; ``min_bytes == max_bytes`` means every chunk is exactly that long, Vonage's 20 ms frames);
    ``max_ahead_ms``: how much unplayed audio the carrier may be handed at once (0 = no limit; beyond it
    the call core paces its sends at real time). The default accepts any non-empty chunk at any pace,
    which is Twilio's rule."""

    multiple_of: int = 1
    min_bytes: int = 1
    max_bytes: int = 0
    max_ahead_ms: int = 0


ANY_FRAMING = MediaFraming()


def media_framing(dialect: object) -> MediaFraming:
    """The dialect's ``media_framing`` attribute, or ``ANY_FRAMING`` for dialects that predate it."""
    framing = getattr(dialect, "media_framing", None)
    return framing if isinstance(framing, MediaFraming) else ANY_FRAMING


TelephonyEvent = (
    StreamConnected
    | StreamStarted
    | MediaReceived
    | DtmfReceived
    | MarkEchoed
    | StreamStopped
    | ProviderErrorReported
    | ClearAcknowledged
)


def build_media_frame(dialect: object, audio: bytes) -> str | bytes:
    """One outbound media frame: the dialect's ``build_media_frame`` when it has one (carriers whose
    media is BINARY, e.g. Vonage, return ``bytes`` there and refuse ``build_media``), else its
    ``build_media`` (a text frame). An I/O adapter sends ``bytes`` as a binary frame, ``str`` as text."""
    binary = getattr(dialect, "build_media_frame", None)
    if binary is not None:
        frame: str | bytes = binary(audio)
        return frame
    text: str = dialect.build_media(audio)  # type: ignore[attr-defined]
    return text


class TelephonyDialect(Protocol):
    """One provider's bidirectional media-stream wire format, for one stream.

    ``parse`` raises ``ProtocolError`` on anything malformed and never any other exception type.
    Builders return the exact text frame to send. They require ``StreamStarted`` to have been parsed
    first where the provider needs the stream id on outbound messages. ``build_media`` takes wire audio
    in the stream's encoding; a dialect may also carry a ``media_framing`` (``MediaFraming``) attribute
    that its ``build_media`` enforces (read it with ``media_framing(dialect)``).

    Optional extensions (read through the helpers below, so older dialects keep working):
    ``build_media_frame(audio) -> str | bytes`` for carriers whose media is binary (Vonage; send it with
    ``build_media_frame(dialect, audio)``), and ``connection_closed() -> StreamStopped | None`` for
    carriers that end a stream by closing the socket without a stop message (Plivo, Vonage; call
    ``stream_closed(dialect)`` when the socket closes).
    """

    name: str

    def parse(self, message: str | bytes | memoryview) -> TelephonyEvent: ...

    def build_media(self, mulaw: bytes) -> str: ...

    def build_mark(self, name: str) -> str: ...

    def build_clear(self) -> str: ...


def stream_closed(dialect: object) -> StreamStopped | None:
    """The socket closed: the ``StreamStopped`` to deliver when the dialect has ``connection_closed`` and
    its stream was still running (the carrier sent no stop), else None."""
    closed = getattr(dialect, "connection_closed", None)
    if closed is None:
        return None
    event: StreamStopped | None = closed()
    return event
