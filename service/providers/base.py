"""Provider-neutral typed events and the ``TelephonyDialect`` interface the call bridge talks to.

Sans-I/O: a dialect turns one inbound WebSocket message (``str`` or ``bytes``) into one typed event
and builds outbound messages; it never touches sockets or asyncio. Adding a provider means adding a
module that implements ``TelephonyDialect``; the bridge does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


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
    """One chunk of caller audio: raw G.711 mu-law bytes at 8 kHz (already base64-decoded).

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
class StreamStopped:
    """The stream ended on the provider's side (hang-up, or the stream was stopped)."""

    call_id: str = ""


TelephonyEvent = StreamConnected | StreamStarted | MediaReceived | DtmfReceived | MarkEchoed | StreamStopped


class TelephonyDialect(Protocol):
    """One provider's bidirectional media-stream wire format, for one stream.

    ``parse`` raises ``ProtocolError`` on anything malformed and never any other exception type.
    Builders return the exact text frame to send. They require ``StreamStarted`` to have been parsed
    first where the provider needs the stream id on outbound messages.
    """

    name: str

    def parse(self, message: str | bytes) -> TelephonyEvent: ...

    def build_media(self, mulaw: bytes) -> str: ...

    def build_mark(self, name: str) -> str: ...

    def build_clear(self) -> str: ...
