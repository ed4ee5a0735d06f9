"""G.711 mu-law (PCMU) and A-law (PCMA) <-> linear PCM16, vectorised with numpy lookup tables.

Facts: docs/audio.md, "G.711 mu-law" and "G.711 A-law". Guarantees:

* Decoding matches CPython's ``audioop.ulaw2lin(data, 2)`` for all 256 codes (range -32124..32124).
* Encoding matches ``audioop.lin2ulaw(data, 2)`` for all 65536 int16 values. That is the 14-bit
  "shift first" formulation (docs/audio.md, "G.711 mu-law"): ``x >> 2`` floors toward -inf, so e.g. -1..-4 encode
  to ``0x7E``, not ``0x7F``; ``0x7F`` is never produced.
* Tables are built once at import from the formulas (no ``audioop`` at run time; it is gone in 3.13):
  a 256-entry int16 decode table (plus a float64 twin used by the resampler, 2 KiB) and a 65536-entry
  uint8 encode table indexed by the int16 bit pattern (64 KiB). All functions are pure and thread-safe.
* A-law likewise matches ``audioop.alaw2lin``/``lin2alaw`` (13-bit form, even bits inverted with 0x55;
  decoded range -32256..32256; silence 0xD5), tables of the same sizes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ALAW_SILENCE",
    "ULAW_DECODE_F64",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ULAW_SILENCE",
    "alaw_to_pcm16",
    "pcm16_bytes_to_ulaw",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
    "ulaw_to_pcm16_bytes",
]

#: One mu-law byte of silence (+0). 20 ms of silence is ``ULAW_SILENCE * 160``.
ULAW_SILENCE = b"\xff"

_BIAS = 0x84  # 132, the 16-bit bias; the 14-bit encoder uses _BIAS >> 2 == 33.
# Upper ends of the eight segments of the 14-bit encoder (value + 33 compared against these).
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> npt.NDArray[np.int16]:
    """code -> int16 sample: invert the byte, split S/EEE/MMMM, ((M<<3)+0x84)<<E minus 0x84."""
    inv = (~np.arange(256, dtype=np.int32)) & 0xFF
    sign = inv & 0x80
    exp = (inv >> 4) & 0x07
    mant = inv & 0x0F
    mag = (((mant << 3) + _BIAS) << exp) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    """int16 bit pattern (as uint16 index) -> code, with the 14-bit shift-first algorithm."""
    pattern = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    x = pattern.view(np.int16).astype(np.int32)
    v = x >> 2  # arithmetic shift: floors toward -inf, as audioop does
    negative = v < 0
    mag = np.where(negative, -v, v) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left")  # first segment end >= mag
    mant = (mag >> np.minimum(seg + 1, 15)) & 0x0F
    uval = (np.minimum(seg, 7) << 4) | mant
    mask = np.where(negative, 0x7F, 0xFF)
    code = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return code.astype(np.uint8)


ULAW_DECODE_TABLE: npt.NDArray[np.int16] = _build_decode_table()
ULAW_DECODE_TABLE.flags.writeable = False
#: The decode table as float64 (exact integers), so the resampler can decode straight into its buffer.
ULAW_DECODE_F64: npt.NDArray[np.float64] = ULAW_DECODE_TABLE.astype(np.float64)
ULAW_DECODE_F64.flags.writeable = False
ULAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _build_encode_table()
ULAW_ENCODE_TABLE.flags.writeable = False


def ulaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to a new int16 array of the same length (== ``audioop.ulaw2lin``)."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to mu-law bytes, one byte per sample (== ``audioop.lin2ulaw``).

    ``samples`` must have dtype int16 (any byte order is accepted and converted to native).
    """
    arr = np.asarray(samples)
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 2:
        raise TypeError(f"pcm16_to_ulaw needs int16 samples, got {arr.dtype}")
    arr = arr.astype(np.int16, copy=False)  # native byte order
    return bytes(ULAW_ENCODE_TABLE[arr.reshape(-1).view(np.uint16)])


def ulaw_to_pcm16_bytes(data: bytes) -> bytes:
    """mu-law bytes -> PCM16 little-endian bytes (twice the length)."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)].astype("<i2", copy=False).tobytes()


def pcm16_bytes_to_ulaw(data: bytes) -> bytes:
    """PCM16 little-endian bytes -> mu-law bytes (half the length). Raises ValueError on an odd length."""
    if len(data) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
    return bytes(ULAW_ENCODE_TABLE[samples.view(np.uint16)])


# --- A-law (PCMA) ----------------------------------------------------------------------------------

#: One A-law byte of silence (+0 encodes to 0xD5, which decodes to +8).
ALAW_SILENCE = b"\xd5"
# Upper ends of the eight segments of the 13-bit A-law encoder.
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_alaw_decode_table() -> npt.NDArray[np.int16]:
    """code -> int16 sample: undo the 0x55 inversion, split S/EEE/MMMM; segment 0 is linear, segment
    e >= 1 is ((M << 4) + 0x108) << (e - 1); the half-step 8 centres each code in its interval."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mant = (a & 0x0F) << 4
    seg = (a >> 4) & 0x07
    mag = np.where(seg == 0, mant + 8, (mant + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    """int16 bit pattern (as uint16 index) -> code: 13-bit value (x >> 3, flooring), negative values
    as -v - 1 (one's complement magnitude), segment search, 4 mantissa bits, XOR 0xD5 / 0x55."""
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    v = x >> 3
    negative = v < 0
    mag = np.where(negative, -v - 1, v)
    mask = np.where(negative, 0x55, 0xD5)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    mant = np.where(seg < 2, mag >> 1, mag >> np.clip(seg, 1, 15)) & 0x0F
    code = np.where(seg >= 8, 0x7F ^ mask, ((np.minimum(seg, 7) << 4) | mant) ^ mask)
    return code.astype(np.uint8)


ALAW_DECODE_TABLE: npt.NDArray[np.int16] = _build_alaw_decode_table()
ALAW_DECODE_TABLE.flags.writeable = False
ALAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _build_alaw_encode_table()
ALAW_ENCODE_TABLE.flags.writeable = False


def alaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to a new int16 array of the same length (== ``audioop.alaw2lin``)."""
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_alaw(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to A-law bytes, one byte per sample (== ``audioop.lin2alaw``)."""
    arr = np.asarray(samples)
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 2:
        raise TypeError(f"pcm16_to_alaw needs int16 samples, got {arr.dtype}")
    return bytes(ALAW_ENCODE_TABLE[arr.astype(np.int16, copy=False).reshape(-1).view(np.uint16)])
