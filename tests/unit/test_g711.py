"""G.711 mu-law and A-law tables: bit-exact against stdlib audioop (audioop-lts on 3.13) and against the
ITU-T G.711 A-law algorithm written out plainly below; the facts of docs/audio.md, "G.711"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.audio import (
    ALAW_DECODE_TABLE,
    ALAW_ENCODE_TABLE,
    ALAW_SILENCE,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    pcm16_bytes_to_ulaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
    ulaw_to_pcm16_bytes,
)
from service.audio.g711 import alaw_to_pcm16, pcm16_to_alaw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13 without audioop-lts
        audioop = None  # type: ignore[assignment]

needs_audioop = pytest.mark.skipif(audioop is None, reason="stdlib audioop not available")
ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)


@needs_audioop
def test_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype="<i2")
    assert np.array_equal(ulaw_to_pcm16(ALL_CODES), expected)
    assert ulaw_to_pcm16_bytes(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


@needs_audioop
def test_encode_matches_audioop_for_all_65536_values() -> None:
    expected = audioop.lin2ulaw(ALL_PCM.astype("<i2").tobytes(), 2)
    assert pcm16_to_ulaw(ALL_PCM) == expected
    assert pcm16_bytes_to_ulaw(ALL_PCM.astype("<i2").tobytes()) == expected


def test_decode_range_and_signed_zero() -> None:
    dec = ulaw_to_pcm16(ALL_CODES)
    assert dec.dtype == np.int16
    assert dec.max() == 32124 and dec.min() == -32124
    assert dec[0xFF] == 0 and dec[0x7F] == 0
    assert dec[0x80] == 32124 and dec[0x00] == -32124
    assert ULAW_DECODE_TABLE.shape == (256,) and ULAW_ENCODE_TABLE.shape == (65536,)


def test_encode_shift_first_facts() -> None:
    """The 14-bit form floors negatives: -1..-4 -> 0x7E; 0..3 -> 0xFF; saturation points (docs/audio.md, G.711 mu-law)."""
    enc = pcm16_to_ulaw(np.array([0, 1, 3, 4, -1, -4, 31611, 31612, 32767, -32768], dtype=np.int16))
    assert list(enc) == [0xFF, 0xFF, 0xFF, 0xFE, 0x7E, 0x7E, 0x81, 0x80, 0x80, 0x00]
    assert 0x7F not in pcm16_to_ulaw(ALL_PCM)


def test_round_trip_is_identity_except_negative_zero() -> None:
    again = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    diffs = [c for c in range(256) if again[c] != c]
    assert diffs == [0x7F] and again[0x7F] == 0xFF
    err = np.abs(ulaw_to_pcm16(pcm16_to_ulaw(ALL_PCM)).astype(np.int32) - ALL_PCM)
    assert err.max() == 644


def test_quantisation_snr_of_a_sine() -> None:
    t = np.arange(8000) / 8000
    x = np.rint(10 ** (-10 / 20) * 32767 * np.sin(2 * np.pi * 1013 * t)).astype(np.int16)
    y = ulaw_to_pcm16(pcm16_to_ulaw(x)).astype(np.float64)
    snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((y - x) ** 2))
    assert 35.0 < snr < 40.0  # docs/audio.md: ~37 dB at -10 dBFS


def test_input_validation() -> None:
    with pytest.raises(TypeError):
        pcm16_to_ulaw(np.zeros(4, dtype=np.int32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pcm16_bytes_to_ulaw(b"\x00\x00\x00")
    assert pcm16_to_ulaw(np.array([], dtype=np.int16)) == b""
    assert ulaw_to_pcm16(b"").size == 0
    big_endian = np.array([4, -1], dtype=">i2")
    assert pcm16_to_ulaw(big_endian) == bytes([0xFE, 0x7E])  # type: ignore[arg-type]


@given(st.binary(max_size=400))
def test_bytes_helpers_agree_with_array_api(data: bytes) -> None:
    pcm = ulaw_to_pcm16_bytes(data)
    assert len(pcm) == 2 * len(data)
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), ulaw_to_pcm16(data))
    assert pcm16_bytes_to_ulaw(pcm) == pcm16_to_ulaw(ulaw_to_pcm16(data))


# --- A-law -------------------------------------------------------------------------------------------


def _itu_alaw_encode(sample: int) -> int:
    """G.711 A-law encoding of one 16-bit sample, written out step by step (13-bit input)."""
    value = sample >> 3  # the 13 most significant bits, flooring
    if value >= 0:
        invert = 0xD5  # sign bit 1 for positive, even bits inverted
    else:
        invert = 0x55
        value = -value - 1
    if value > 0xFFF:
        value = 0xFFF  # saturate to the top of segment 7
    segment = 0
    while segment < 7 and value > (0x20 << segment) - 1:  # segment ends 0x1F, 0x3F, ..., 0xFFF
        segment += 1
    mantissa = (value >> 1) & 0x0F if segment == 0 else (value >> segment) & 0x0F
    return ((segment << 4) | mantissa) ^ invert


def _itu_alaw_decode(code: int) -> int:
    """G.711 A-law decoding of one code to a 16-bit sample (mid-point of the quantisation interval)."""
    code ^= 0x55
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if segment == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def test_alaw_decode_matches_the_written_out_algorithm() -> None:
    assert [int(v) for v in alaw_to_pcm16(ALL_CODES)] == [_itu_alaw_decode(c) for c in range(256)]


def test_alaw_encode_matches_the_written_out_algorithm_for_all_65536_values() -> None:
    assert list(pcm16_to_alaw(ALL_PCM)) == [_itu_alaw_encode(int(v)) for v in ALL_PCM]


@needs_audioop
def test_alaw_matches_audioop() -> None:
    assert alaw_to_pcm16(ALL_CODES).astype("<i2").tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    assert pcm16_to_alaw(ALL_PCM) == audioop.lin2alaw(ALL_PCM.astype("<i2").tobytes(), 2)


def test_alaw_facts() -> None:
    """Silence 0xD5 (decodes to +8), 0x55 -> -8, range +-32256, every code survives a round trip."""
    assert pcm16_to_alaw(np.zeros(1, np.int16)) == ALAW_SILENCE == b"\xd5"
    assert ALAW_DECODE_TABLE[0xD5] == 8 and ALAW_DECODE_TABLE[0x55] == -8
    assert ALAW_DECODE_TABLE.max() == 32256 and ALAW_DECODE_TABLE.min() == -32256
    assert ALAW_ENCODE_TABLE.shape == (65536,)
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES  # no negative zero in A-law
    err = np.abs(alaw_to_pcm16(pcm16_to_alaw(ALL_PCM)).astype(np.int32) - ALL_PCM)
    assert err.max() == 512  # half of the top segment's 1024 step
    with pytest.raises(TypeError):
        pcm16_to_alaw(np.zeros(2, np.float32))  # type: ignore[arg-type]


def test_alaw_quantisation_snr_of_a_sine() -> None:
    t = np.arange(8000) / 8000
    for level_dbfs in (-10.0, -30.0):
        x = np.rint(10 ** (level_dbfs / 20) * 32767 * np.sin(2 * np.pi * 1013 * t)).astype(np.int16)
        y = alaw_to_pcm16(pcm16_to_alaw(x)).astype(np.float64)
        snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((y - x) ** 2))
        assert 33.0 < snr < 40.0, (level_dbfs, snr)  # G.711's ~38 dB segment SNR, a little less when quiet
