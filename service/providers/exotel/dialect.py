"""Exotel's Voicebot applet stream (bidirectional): one stream's JSON frames <-> the typed events of
``providers.base``, and the packer that cuts our audio into the chunk sizes Exotel accepts. Pure, no I/O.

Wire facts this relies on (docs/providers/exotel.md, "Wire format"): Twilio's message set with snake_case
keys (``stream_sid``, ``call_sid``, ``sequence_number``); numbers as decimal strings; audio is base64 of raw
16-bit little-endian PCM ("slin"), mono, at the rate the applet URL asked for (8 kHz default; not mu-law);
caller audio arrives in chunks of roughly 100 ms, of variable length; our ``media``, ``mark`` and ``clear``
name the ``stream_sid``. Outbound chunks must be a multiple of 320 bytes and between 3.2 KB and 100 KB:
shorter chunks cause jitter, longer ones time out, ragged lengths leave gaps.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from service.providers.base import (
    ENCODING_PCM16LE,
    MediaFraming,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
)
from service.providers.jsonwire import (
    JsonStreamDialect,
    as_count,
    check_id,
    describe,
    object_field,
    parameters,
    string_field,
)

__all__ = [
    "CHUNK_MULTIPLE",
    "MAX_CHUNK",
    "MEDIA_PATH",
    "MIN_CHUNK",
    "SAMPLE_RATES",
    "ExotelDialect",
    "ExotelMediaPacker",
]

MEDIA_PATH = "/exotel/media"
SAMPLE_RATES = frozenset({8000, 16000, 24000})
CHUNK_MULTIPLE = 320
MIN_CHUNK = 3200
MAX_CHUNK = 100_000
_EXOTEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_REASON_RE = re.compile(r"[A-Za-z_-]{1,32}")
MAX_CUSTOM_PARAMETERS = 3
MAX_CUSTOM_TOTAL = 256
"""Exotel carries at most 3 custom key/values from the applet URL, 256 characters in all."""


class ExotelDialect(JsonStreamDialect):
    """Exotel's dialect for ONE Voicebot stream (``TelephonyDialect``); see ``JsonStreamDialect`` for the
    state machine. ``sample_rate`` is the rate the applet URL asked for; a ``start`` declaring another rate
    or anything but 16-bit raw PCM is refused. ``build_media`` enforces Exotel's chunk rules (a multiple
    of 320 bytes, at most 100 KB); ``ExotelMediaPacker`` produces such chunks from any audio.
    """

    name = "exotel"
    id_key: ClassVar[str] = "stream_sid"
    sequence_key: ClassVar[str] = "sequence_number"
    id_pattern = _EXOTEL_ID_RE
    outbound_id: ClassVar[bool] = True
    media_framing = MediaFraming(multiple_of=CHUNK_MULTIPLE, min_bytes=MIN_CHUNK, max_bytes=MAX_CHUNK)

    def __init__(self, sample_rate: int = 8000) -> None:
        super().__init__()
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"unsupported Exotel sample rate {sample_rate} (8000, 16000 or 24000)")
        self.sample_rate = sample_rate

    def _parse_start(self, msg: dict[str, Any], stream_id: str) -> StreamStarted:
        start = object_field(msg.get("start"), "start")
        inner = start.get("stream_sid")
        if inner is not None and inner != stream_id:
            raise ProtocolError("start.stream_sid differs from the message's stream_sid")
        call_id = check_id(string_field(start, "call_sid", "start"), "start.call_sid", _EXOTEL_ID_RE)
        account = string_field(start, "account_sid", "start", required=False)
        if account:
            check_id(account, "start.account_sid", _EXOTEL_ID_RE)
        fmt = object_field(start.get("media_format"), "start.media_format")
        encoding = fmt.get("encoding")
        if encoding != "audio/x-raw":
            raise ProtocolError(f"unsupported media encoding {describe(encoding)} (need audio/x-raw)")
        rate = as_count(fmt.get("sample_rate"), "start.media_format.sample_rate")
        if rate != self.sample_rate:
            raise ProtocolError(f"stream declares {rate} Hz, the applet was configured for {self.sample_rate} Hz")
        bits = fmt.get("bit_rate")
        if bits is not None and as_count(bits, "start.media_format.bit_rate") != 16:
            raise ProtocolError("unsupported sample width (need 16-bit)")
        params = parameters(start.get("custom_parameters"), "start.custom_parameters", MAX_CUSTOM_PARAMETERS)
        if sum(len(k) + len(v) for k, v in params.items()) > MAX_CUSTOM_TOTAL:
            raise ProtocolError(f"start.custom_parameters exceed {MAX_CUSTOM_TOTAL} characters")
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=account,
            custom_parameters=params,
            encoding=ENCODING_PCM16LE,
            sample_rate=rate,
            channels=1,
        )

    def _check_audio(self, audio: bytes) -> None:
        if len(audio) % 2:
            raise ProtocolError(f"PCM16 media of odd length ({len(audio)} bytes)")

    def _parse_stop(self, msg: dict[str, Any]) -> StreamStopped:
        body = msg.get("stop")
        reason = ""
        if body is not None:
            stop = object_field(body, "stop")
            call_id = string_field(stop, "call_sid", "stop", required=False)
            if call_id and call_id != self.call_id:
                raise ProtocolError("stop.call_sid differs from the started call")
            reason = string_field(stop, "reason", "stop", required=False, max_len=32)
            if reason and not _REASON_RE.fullmatch(reason):
                raise ProtocolError("stop.reason is not a plain word")
        return StreamStopped(call_id=self.call_id or "", reason=reason)


def _conforms(dialect: ExotelDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``ExotelDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect


class ExotelMediaPacker:
    """Cuts outbound PCM16 into chunks Exotel plays cleanly: ``push`` returns every complete chunk of
    ``chunk_bytes`` (default 3200 B, Exotel's minimum: 200 ms at 8 kHz, 100 ms at 16 kHz), in order;
    ``flush`` returns the remainder padded with silence to a multiple of 320 bytes (the end of a reply);
    ``reset`` drops the remainder (barge-in, after a ``clear``). Memory: under ``chunk_bytes`` held.
    """

    __slots__ = ("_pending", "chunk_bytes")

    def __init__(self, chunk_bytes: int = MIN_CHUNK) -> None:
        if chunk_bytes % CHUNK_MULTIPLE or not MIN_CHUNK <= chunk_bytes <= MAX_CHUNK:
            raise ValueError(f"chunk_bytes must be a multiple of {CHUNK_MULTIPLE} in [{MIN_CHUNK}, {MAX_CHUNK}]")
        self.chunk_bytes = chunk_bytes
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, pcm: bytes) -> list[bytes]:
        """Queue ``pcm`` (whole 16-bit samples); return the complete chunks now available."""
        if len(pcm) % 2:
            raise ValueError("PCM16 audio must be whole samples (even length)")
        self._pending += pcm
        size = self.chunk_bytes
        count = len(self._pending) // size
        chunks = [bytes(self._pending[i * size:(i + 1) * size]) for i in range(count)]
        del self._pending[: count * size]
        return chunks

    def flush(self) -> bytes | None:
        """The held remainder padded with zero samples to a multiple of 320 bytes, or None if empty."""
        if not self._pending:
            return None
        pad = -len(self._pending) % CHUNK_MULTIPLE
        tail = bytes(self._pending) + b"\x00" * pad
        self._pending.clear()
        return tail

    def reset(self) -> int:
        """Drop the held remainder; returns how many bytes were dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped
