"""One small codec API for every carrier: wire payload <-> PCM16 little-endian 24 kHz (the model's audio).

    inbound = make_inbound("PCMA", 8000)     # caller -> model
    pcm24 = inbound.process(payload)          # bytes: PCM16 LE, 24 kHz
    outbound = make_outbound("l16", 16000)   # model -> caller
    wire = outbound.process(pcm24_delta)      # bytes in the carrier's format

Codec names (case-insensitive; docs/audio.md, "Codec names"):

=========================  ==============  ===============================================
name                       rates (Hz)      wire format
=========================  ==============  ===============================================
``mulaw``, ``PCMU``        8000            G.711 mu-law, 1 byte per sample
``alaw``, ``PCMA``         8000            G.711 A-law, 1 byte per sample
``l16``                    8000, 16000,    signed 16-bit little-endian PCM (Vonage, Plivo,
                           24000           Exotel)
``l16be``                  same            signed 16-bit big-endian PCM (RTP L16, RFC 3551
                                           network byte order)
=========================  ==============  ===============================================

Guarantees for every object made here: ordered; chunking-exact (any split of the input, odd byte
splits of 16-bit input included, gives the bytes of the one-shot conversion); the only audio held back
is an odd trailing byte and an incomplete resampler group (``held_back`` samples, < 0.1 ms); ``reset()``
drops it all and returns to silence (barge-in). Memory per object: a fixed filter history (< 1 KiB)
plus per-call temporaries proportional to the chunk. mu-law 8 kHz uses the dedicated compiled kernels
(``resample.CallerToModel``/``ModelToCaller``); the other paths do the G.711/L16 step with numpy and
the rate change with the compiled generic kernel (``resample.make_resampler``), about 4x cheaper per
frame than the numpy reference in load_tests/bench_audio.py (docs/audio.md, "Benchmark"). Without a
compiler every path falls back to the numpy reference (same bytes).
Not thread-safe: one object per call direction.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from .g711 import ALAW_DECODE_TABLE, ALAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ULAW_ENCODE_TABLE
from .resample import CallerToModel, ModelToCaller, SampleResampler, make_resampler

__all__ = [
    "CODEC_NAMES",
    "MODEL_RATE",
    "CodecSpec",
    "InboundCodec",
    "OutboundCodec",
    "codec_spec",
    "make_inbound",
    "make_outbound",
    "wire_level_dbfs",
]

#: The model side of every path: PCM16 little-endian, mono, 24 kHz.
MODEL_RATE: Final = 24000

_CANONICAL: Final = {
    "mulaw": "mulaw", "pcmu": "mulaw", "alaw": "alaw", "pcma": "alaw", "l16": "l16", "l16be": "l16be",
    # the MIME-style names providers declare in ``StreamStarted.encoding`` (service/providers/base.py)
    "audio/x-mulaw": "mulaw", "audio/x-alaw": "alaw", "audio/l16": "l16be", "audio/x-pcm16le": "l16",
}
#: Every accepted spelling (lower case; matching is case-insensitive).
CODEC_NAMES: Final = tuple(sorted(_CANONICAL))
_RATES: Final = {"mulaw": (8000,), "alaw": (8000,), "l16": (8000, 16000, 24000), "l16be": (8000, 16000, 24000)}


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A validated (codec, rate): what one wire sample looks like and how big 20 ms is."""

    codec: str  # canonical: mulaw, alaw, l16, l16be
    rate: int
    bytes_per_sample: int
    silence: bytes  # one sample of silence on the wire

    def frame_bytes(self, ms: int = 20) -> int:
        """Wire bytes for ``ms`` milliseconds (20 ms: 160 B mu-law/A-law, 320/640/960 B L16 at 8/16/24 kHz)."""
        return self.rate * ms // 1000 * self.bytes_per_sample


def codec_spec(codec: str, rate: int) -> CodecSpec:
    """Validate ``codec``/``rate``; raises ``ValueError`` naming what is accepted."""
    canonical = _CANONICAL.get(codec.lower()) if isinstance(codec, str) else None
    if canonical is None:
        raise ValueError(f"unknown codec {codec!r:.40}; expected one of {', '.join(CODEC_NAMES)}")
    if rate not in _RATES[canonical]:
        raise ValueError(f"codec {canonical} does not run at {rate!r:.20} Hz; expected one of {_RATES[canonical]}")
    if canonical == "mulaw":
        return CodecSpec(canonical, rate, 1, b"\xff")
    if canonical == "alaw":
        return CodecSpec(canonical, rate, 1, b"\xd5")
    return CodecSpec(canonical, rate, 2, b"\x00\x00")


class InboundCodec(Protocol):
    """Caller -> model path of one call: wire payload -> PCM16 LE 24 kHz."""

    def process(self, payload: bytes) -> bytes: ...

    def process_b64(self, payload: bytes) -> str: ...

    @property
    def held_back(self) -> int: ...

    def reset(self) -> None: ...


class OutboundCodec(Protocol):
    """Model -> caller path of one call: PCM16 LE 24 kHz -> wire payload."""

    def process(self, pcm16_24k: bytes) -> bytes: ...

    @property
    def held_back(self) -> int: ...

    def reset(self) -> None: ...


def _resampler(rate: int, inbound: bool, compiled: bool | None) -> SampleResampler | None:
    if rate == MODEL_RATE:
        return None
    pair = (rate, MODEL_RATE) if inbound else (MODEL_RATE, rate)
    return make_resampler(*pair, compiled=compiled)


class _Pcm16Splitter:
    """Cuts a byte stream into whole 16-bit samples, carrying an odd trailing byte (at most 1 byte)."""

    __slots__ = ("_dtype", "_odd")

    def __init__(self, dtype: str) -> None:
        self._dtype = dtype
        self._odd = b""

    def samples(self, data: bytes) -> npt.NDArray[np.int16]:
        if self._odd or len(data) & 1:
            data = self._odd + bytes(data)
            cut = len(data) & ~1
            self._odd, data = data[cut:], data[:cut]
        return np.frombuffer(data, dtype=self._dtype).astype(np.int16)

    def reset(self) -> None:
        self._odd = b""


class _Inbound:
    """Wire payload -> int16 (table decode or 16-bit split) -> optional resampler -> PCM16 LE 24 kHz."""

    __slots__ = ("_resampler", "_splitter", "_table")

    def __init__(self, spec: CodecSpec, compiled: bool | None) -> None:
        self._table = {"mulaw": ULAW_DECODE_TABLE, "alaw": ALAW_DECODE_TABLE}.get(spec.codec)
        self._splitter = _Pcm16Splitter(">i2" if spec.codec == "l16be" else "<i2")  # unused for G.711
        self._resampler = _resampler(spec.rate, True, compiled)

    def process(self, payload: bytes) -> bytes:
        table = self._table
        x = self._splitter.samples(payload) if table is None else table[np.frombuffer(payload, dtype=np.uint8)]
        y = x if self._resampler is None else self._resampler.process(x)
        return y.astype("<i2", copy=False).tobytes()

    def process_b64(self, payload: bytes) -> str:
        """``process`` as standard base64 (padded, no newline): what a Realtime append carries."""
        return binascii.b2a_base64(self.process(payload), newline=False).decode("ascii")

    @property
    def held_back(self) -> int:
        """Wire samples received but not yet in any output (an odd byte counts as none)."""
        return 0 if self._resampler is None else self._resampler.held_back

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()
        self._splitter.reset()


class _Outbound:
    """PCM16 LE 24 kHz (odd byte carried) -> optional resampler -> table encode or 16-bit bytes."""

    __slots__ = ("_dtype", "_resampler", "_splitter", "_table")

    def __init__(self, spec: CodecSpec, compiled: bool | None) -> None:
        self._table = {"mulaw": ULAW_ENCODE_TABLE, "alaw": ALAW_ENCODE_TABLE}.get(spec.codec)
        self._dtype = ">i2" if spec.codec == "l16be" else "<i2"
        self._splitter = _Pcm16Splitter("<i2")
        self._resampler = _resampler(spec.rate, False, compiled)

    def process(self, pcm16_24k: bytes) -> bytes:
        x = self._splitter.samples(pcm16_24k)
        y = x if self._resampler is None else self._resampler.process(x)
        if self._table is not None:
            return self._table[y.view(np.uint16)].tobytes()
        return y.astype(self._dtype, copy=False).tobytes()

    @property
    def held_back(self) -> int:
        """24 kHz samples received but not yet in any output (an odd byte counts as none)."""
        return 0 if self._resampler is None else self._resampler.held_back

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()
        self._splitter.reset()


def make_inbound(codec: str, rate: int, *, compiled: bool | None = None) -> InboundCodec:
    """The caller -> model converter for one call; ``ValueError`` for an unknown codec or rate.

    ``compiled=False`` forces the numpy reference (tests, benchmark); the default uses the compiled
    kernels when they were built.
    """
    spec = codec_spec(codec, rate)
    if spec.codec == "mulaw" and spec.rate == 8000 and compiled is not False:
        return CallerToModel()  # the dedicated kernel (resample.COMPILED), else its numpy twin
    return _Inbound(spec, compiled)


def make_outbound(codec: str, rate: int, *, compiled: bool | None = None) -> OutboundCodec:
    """The model -> caller converter for one call; ``ValueError`` for an unknown codec or rate."""
    spec = codec_spec(codec, rate)
    if spec.codec == "mulaw" and spec.rate == 8000 and compiled is not False:
        return ModelToCaller()
    return _Outbound(spec, compiled)


def wire_level_dbfs(spec: CodecSpec, payload: bytes) -> float:
    """RMS level of one wire payload in dBFS (-120 for silence or nothing): the interruption
    decision's loudness input (docs/interruptions.md). An odd trailing byte of L16 is ignored.
    About 5 us per 20 ms frame; only computed while a decision is pending."""
    if spec.bytes_per_sample == 1:
        table = ULAW_DECODE_TABLE if spec.codec == "mulaw" else ALAW_DECODE_TABLE
        x = table[np.frombuffer(payload, dtype=np.uint8)].astype(np.float64)
    else:
        usable = len(payload) - len(payload) % 2
        x = np.frombuffer(payload[:usable], dtype=">i2" if spec.codec == "l16be" else "<i2").astype(np.float64)
    if x.size == 0:
        return -120.0
    mean_square = float(np.mean(x * x))
    if mean_square <= 0.0:
        return -120.0
    return max(-120.0, 10.0 * float(np.log10(mean_square)) - 20.0 * float(np.log10(32768.0)))
class Passthrough:
    """Both directions when the model speaks the carrier's own codec (GPT-Live ``pcmu`` on a mu-law
    call): bytes in, the same bytes out, no DSP and no state (docs/models/live.md, audio formats)."""

    held_back = 0

    def process(self, payload: bytes) -> bytes:
        return payload

    def process_b64(self, payload: bytes) -> str:
        return binascii.b2a_base64(payload, newline=False).decode("ascii")

    def reset(self) -> None:
        pass


def passes_through(wire: tuple[str, int], model_audio: tuple[str, int]) -> bool:
    """True when the model's audio is the call's wire codec itself (nothing to convert)."""
    spec = codec_spec(*wire)
    return model_audio != ("pcm16", 24000) and (spec.codec, spec.rate) == model_audio
