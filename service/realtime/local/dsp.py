"""Small, pure DSP helpers for the local engine: a streaming rational resampler and G.711 codecs.

Only numpy at run time (no scipy). The resampler is a polyphase windowed-sinc FIR:
``out_rate / in_rate = up / down`` in lowest terms; a Kaiser-windowed sinc low-pass at
``min(in_rate, out_rate) / 2 * rolloff`` is split into ``up`` phases. Streaming is exact: feeding a
signal in any chunking gives the same samples as feeding it whole (the class keeps the history it
needs between calls). The filter's group delay is compensated; ``flush()`` returns the
tail so a finite signal keeps its full length.

Ratios used: 24000->16000 (2/3, caller audio to the recogniser and VAD), 22050->24000 (160/147,
Piper's voice to the Realtime output rate), 8000<->16000/24000 for G.711 sessions.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from service.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16


@lru_cache(maxsize=16)
def _design(up: int, down: int, taps_per_phase: int, rolloff: float, beta: float) -> np.ndarray:
    """Polyphase bank, shape (up, taps_per_phase), float32; phase p holds h[p + k*up] (k ascending)."""
    n = up * taps_per_phase
    cutoff = rolloff / max(up, down)  # normalised to the upsampled Nyquist (1.0)
    # Odd length n-1, centred on an integer upsampled position (n//2 - 1), padded with one zero.
    t = np.arange(n - 1, dtype=np.float64) - (n - 2) / 2.0
    h = cutoff * np.sinc(cutoff * t) * np.kaiser(n - 1, beta)
    h = np.append(h * (up / h.sum()), 0.0)  # unity DC gain after zero-stuffing by `up`
    return h.reshape(taps_per_phase, up).T.astype(np.float32).copy()


class StreamResampler:
    """Streaming rational resampler for mono float32 (or int16) audio. Not thread-safe; cheap.

    Guarantees: output sample ``n`` corresponds to input time ``n * in_rate / out_rate`` minus a fixed
    delay; total output length of a finite signal after ``flush()`` is ``ceil(len * up / down)``.
    """

    def __init__(self, in_rate: int, out_rate: int, taps_per_phase: int = 32, rolloff: float = 0.9,
                 beta: float = 7.0) -> None:
        g = gcd(in_rate, out_rate)
        self.up = out_rate // g
        self.down = in_rate // g
        self.taps = taps_per_phase
        # Taps reversed so a sliding window (oldest..newest) dots straight into a phase row.
        self._bank = np.ascontiguousarray(_design(self.up, self.down, taps_per_phase, rolloff, beta)[:, ::-1])
        # History: enough past input for the oldest tap of the next output (zeros before the start).
        self._hlen = taps_per_phase + self.down // self.up + 2
        self._hist = np.zeros(self._hlen, dtype=np.float32)
        self._in_count = 0  # input samples consumed, excluding history
        self._out_count = 0  # output samples produced
        self._shift = (self.up * self.taps) // 2 - 1  # the filter's centre, in upsampled samples

    def _produce(self, buf: np.ndarray, limit_in: int) -> np.ndarray:
        """Outputs whose newest input index is < limit_in; ``buf`` = history + new input, whose
        first sample has absolute index ``self._in_count - self._hlen``."""
        base_abs = self._in_count - self._hlen
        start_n = self._out_count
        max_n = (limit_in * self.up - 1 - self._shift) // self.down
        if max_n < start_n:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(start_n, max_n + 1, dtype=np.int64)
        m = n * self.down + self._shift
        first = m // self.up - base_abs - (self.taps - 1)  # buf index of the oldest tap
        windows = np.lib.stride_tricks.sliding_window_view(buf, self.taps)[first]
        y = np.einsum("ij,ij->i", windows, self._bank[m % self.up])
        self._out_count = max_n + 1
        return y.astype(np.float32, copy=False)

    def _advance(self, buf: np.ndarray, count: int) -> None:
        self._hist = buf[-self._hlen:].copy()
        self._in_count += count

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples (float); return every output sample now computable (float32)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return np.zeros(0, dtype=np.float32)
        buf = np.concatenate([self._hist, x])
        y = self._produce(buf, self._in_count + x.size)
        self._advance(buf, x.size)
        return y

    def flush(self) -> np.ndarray:
        """Push the filter's delay out with zeros; return the remaining outputs (call once at the end)."""
        total_out = -(-self._in_count * self.up // self.down)
        already = self._out_count
        buf = np.concatenate([self._hist, np.zeros(self.taps, dtype=np.float32)])
        y = self._produce(buf, self._in_count + self.taps)
        self._advance(buf, self.taps)
        return y[: max(0, total_out - already)]


def resample_once(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole signal (float32 in, float32 out, length ceil(len*out/in))."""
    r = StreamResampler(in_rate, out_rate)
    return np.concatenate([r.process(x), r.flush()])


def pcm16_to_float(data: bytes) -> np.ndarray:
    """PCM16 little-endian bytes -> float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> bytes:
    """float32 -> PCM16 little-endian bytes, clipped (no wrap-around)."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


# --- G.711: mu-law from service.audio.g711; A-law (not needed by the gateway itself) here --------

def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ALAW_DEC = _alaw_decode_table()


def _build_encoder(decode: np.ndarray) -> np.ndarray:
    """65536-entry encoder: for every int16 value the code whose decoded value is nearest."""
    order = np.argsort(decode.astype(np.int32), kind="stable")
    levels = decode[order].astype(np.int32)
    values = np.arange(-32768, 32768, dtype=np.int32)
    pos = np.clip(np.searchsorted(levels, values), 1, len(levels) - 1)
    lower, upper = levels[pos - 1], levels[pos]
    pick = np.where(values - lower <= upper - values, pos - 1, pos)
    return order[pick].astype(np.uint8)


_ALAW_ENC = _build_encoder(_ALAW_DEC)


def ulaw_decode(data: bytes) -> np.ndarray:
    """mu-law bytes -> int16 samples (the gateway's own codec, bit-exact with audioop)."""
    return ulaw_to_pcm16(data)


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes (the gateway's own codec, bit-exact with audioop)."""
    return pcm16_to_ulaw(np.clip(samples, -32768, 32767).astype(np.int16))


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes -> int16 samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes (nearest level)."""
    return _ALAW_ENC[samples.astype(np.int32) + 32768].tobytes()
