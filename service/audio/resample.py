"""Streaming rational resamplers (8 kHz <-> 24 kHz, 16 kHz <-> 24 kHz) and the mu-law call paths.

Design (docs/audio.md, "Resampling"): every path is "up by L, low-pass, down by M" with a linear-phase
Kaiser-windowed-sinc prototype designed once at import (numpy only):

* 8 kHz <-> 24 kHz (L/M = 3 or 1/3): ``PROTOTYPE``, 87 taps at 24 kHz, cutoff 4 kHz, Kaiser 70 dB.
* 16 kHz <-> 24 kHz (3/2 and 2/3): ``WIDE_PROTOTYPE``, 105 taps at 48 kHz, cutoff 8 kHz, Kaiser 70 dB.

Measured (tests/unit/test_resample.py, load_tests/bench_audio.py): >= 60 dB alias/image rejection,
<= 0.1 dB ripple in the band (300-3400 Hz, resp. 50-7000 Hz), group delay 1.79 ms resp. 1.08 ms, and a
down-sampler holds back at most M - 1 input samples until its group is complete.

Exactness (docs/audio.md, "Exact arithmetic"): the coefficients are rounded to multiples of 2**-20 and the
inputs are int16, so every product and partial sum is exact in float64. The result therefore does not
depend on summation order: this reference (numpy.convolve per polyphase branch), ``scipy.signal.upfirdn``
and the compiled kernels in ``service/_hotpath.c`` agree bit for bit, and chunked output equals one-shot
output. Rounding: clip to int16, then round half to even (numpy ``rint``).

``CallerToModel``/``ModelToCaller`` (mu-law 8 kHz <-> PCM16 24 kHz, the Twilio hot path) are the compiled
kernels when the extension was built, else ``NumpyCallerToModel``/``NumpyModelToCaller`` (same bytes;
the benchmark shows the compiled ones pay). Not thread-safe: one object per call direction, one task.
"""

from __future__ import annotations

import binascii
import sys
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from .g711 import ULAW_DECODE_F64, ULAW_DECODE_TABLE, ULAW_ENCODE_TABLE

__all__ = [
    "COMPILED",
    "DOWN_HELD_BACK_MAX",
    "FACTOR",
    "FILTER_ATTEN_DB",
    "FILTER_CUTOFF_HZ",
    "FILTER_TAPS",
    "GROUP_DELAY_MS",
    "PROTOTYPE",
    "PROTOTYPE_QUANTIZED",
    "WIDE_FILTER_TAPS",
    "WIDE_GROUP_DELAY_MS",
    "WIDE_PROTOTYPE",
    "CallerToModel",
    "Down24To16",
    "Downsampler",
    "InboundAudio",
    "ModelToCaller",
    "NumpyCallerToModel",
    "NumpyModelToCaller",
    "OutboundAudio",
    "Resampler",
    "SampleResampler",
    "Up16To24",
    "Upsampler",
    "design_lowpass",
    "kaiser_beta",
    "make_resampler",
    "quantize",
]

RATE_LOW: Final = 8000
RATE_HIGH: Final = 24000
FACTOR: Final = 3
FILTER_TAPS: Final = 87
FILTER_CUTOFF_HZ: Final = 4000.0
FILTER_ATTEN_DB: Final = 70.0
#: Linear-phase group delay of the 8 <-> 24 kHz prototype, in milliseconds, per direction.
GROUP_DELAY_MS: Final = (FILTER_TAPS - 1) / 2 / RATE_HIGH * 1000.0
#: The most 24 kHz input samples a Downsampler can hold back (an incomplete group of 3).
DOWN_HELD_BACK_MAX: Final = FACTOR - 1

WIDE_RATE: Final = 48000  # the common rate of 16 kHz and 24 kHz
WIDE_FILTER_TAPS: Final = 105
WIDE_CUTOFF_HZ: Final = 8000.0
#: Linear-phase group delay of the 16 <-> 24 kHz prototype, in milliseconds, per direction.
WIDE_GROUP_DELAY_MS: Final = (WIDE_FILTER_TAPS - 1) / 2 / WIDE_RATE * 1000.0

_FRAC_BITS: Final = 20
_NATIVE_LE: Final = sys.byteorder == "little"


def kaiser_beta(atten_db: float) -> float:
    """Kaiser's empirical beta for a stop-band attenuation of ``atten_db`` dB."""
    if atten_db > 50.0:
        return 0.1102 * (atten_db - 8.7)
    if atten_db > 21.0:
        return 0.5842 * (atten_db - 21.0) ** 0.4 + 0.07886 * (atten_db - 21.0)
    return 0.0


def design_lowpass(numtaps: int, cutoff_hz: float, fs_hz: float, atten_db: float) -> npt.NDArray[np.float64]:
    """Linear-phase windowed-sinc low-pass (Kaiser window), DC gain exactly 1 before quantisation.

    Same definition as ``scipy.signal.firwin(numtaps, cutoff_hz, window=("kaiser", beta), fs=fs_hz)``
    (the tests check this); numpy only, so scipy stays a test-time dependency.
    """
    if numtaps < 1 or numtaps % 2 == 0:
        raise ValueError("numtaps must be odd and positive (type I linear phase)")
    fc = 2.0 * cutoff_hz / fs_hz  # cutoff as a fraction of Nyquist
    n = np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2.0
    h = fc * np.sinc(fc * n) * np.kaiser(numtaps, kaiser_beta(atten_db))
    return np.asarray(h / h.sum(), dtype=np.float64)


def quantize(coeffs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Round to the 2**-20 grid that makes all filter arithmetic exact (see the module docstring)."""
    scale = float(1 << _FRAC_BITS)
    return np.asarray(np.round(coeffs * scale) / scale, dtype=np.float64)


def _frozen(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a.flags.writeable = False
    return a


PROTOTYPE: Final = _frozen(design_lowpass(FILTER_TAPS, FILTER_CUTOFF_HZ, RATE_HIGH, FILTER_ATTEN_DB))
#: The prototype on the 2**-20 grid, as used by the Downsampler (the Upsampler uses ``quantize(3 * h)``).
PROTOTYPE_QUANTIZED: Final = _frozen(quantize(PROTOTYPE))
WIDE_PROTOTYPE: Final = _frozen(design_lowpass(WIDE_FILTER_TAPS, WIDE_CUTOFF_HZ, WIDE_RATE, FILTER_ATTEN_DB))


class Resampler:
    """Streaming "up by L, FIR, down by M" on int16 samples: the reference every kernel must equal.

    Output ``j`` is ``sum_i c[i] * u[j*M + M - 1 - i]`` where ``u`` is the input zero-stuffed by L (so
    ``c`` carries the gain L). It is emitted by the first call whose input contains the newest sample it
    needs, so after T inputs in total exactly ``T * L // M`` outputs have been returned (ordered;
    chunked == one-shot, bit for bit). Polyphase form: branch ``p`` holds ``c[p::L]`` and runs over the
    input with ``numpy.convolve``; output j reads branch ``(j*M + M - 1) % L`` at input index
    ``(j*M + M - 1) // L``. State (explicit, bounded): the last ``ceil(len(c) / L) - 1`` inputs as
    float64 plus two counters; per call, temporaries of ~(L + 2) * 8 bytes per input sample.
    """

    __slots__ = ("_branches", "_down", "_hist", "_n_in", "_n_out", "_up")

    def __init__(self, up: int, down: int, coeffs: npt.NDArray[np.float64]) -> None:
        if up < 1 or down < 1:
            raise ValueError("up and down must be positive")
        c = np.asarray(coeffs, dtype=np.float64)
        branch_len = -(-len(c) // up)
        padded = np.zeros(branch_len * up, dtype=np.float64)
        padded[: len(c)] = c
        self._branches = padded.reshape(branch_len, up).T.copy()  # [p, r] = c[p + up * r]
        self._up, self._down = up, down
        self._hist = np.zeros(branch_len - 1, dtype=np.float64)
        self._n_in = 0
        self._n_out = 0

    @property
    def held_back(self) -> int:
        """Input samples received but not yet used by any output (< M / L + 1)."""
        if self._n_out == 0:
            return self._n_in
        newest_used = ((self._n_out - 1) * self._down + self._down - 1) // self._up
        return self._n_in - newest_used - 1

    def reset(self) -> None:
        """Back to silence: the next output is what a fresh object would give (drops held-back input)."""
        self._hist[:] = 0.0
        self._n_in = 0
        self._n_out = 0

    def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """int16-valued samples -> a new int16 array of every output they complete (see class doc)."""
        x = np.asarray(samples).reshape(-1)
        buf = np.concatenate((self._hist, x.astype(np.float64)))  # buf[k] = input[n_in - H + k]
        first_index = self._n_in - len(self._hist)
        self._n_in += x.size
        stop = self._n_in * self._up // self._down
        pos = np.arange(self._n_out, stop) * self._down + (self._down - 1)
        self._n_out = stop
        if len(self._hist):
            self._hist = buf[-len(self._hist) :].copy()
        if pos.size == 0:
            return np.zeros(0, dtype=np.int16)
        filtered = np.stack([np.convolve(buf, branch) for branch in self._branches])
        y = filtered[pos % self._up, pos // self._up - first_index]
        return np.rint(np.clip(y, -32768.0, 32767.0)).astype(np.int16)


class Upsampler(Resampler):
    """8 kHz -> 24 kHz (caller -> model): exactly ``3 * len(input)`` samples per call, nothing held."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(FACTOR, 1, quantize(FACTOR * PROTOTYPE))


class Downsampler(Resampler):
    """24 kHz -> 8 kHz (model -> caller): ``T // 3`` outputs after T inputs, at most 2 held back.

    ``reset`` on barge-in: zero history rather than a fade, because the queued bot audio is being
    discarded; the next response then starts exactly as from a fresh resampler (docs/audio.md, Barge-in).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(1, FACTOR, PROTOTYPE_QUANTIZED)


class Up16To24(Resampler):
    """16 kHz -> 24 kHz (wideband caller -> model): ``T * 3 // 2`` outputs after T inputs."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(3, 2, quantize(3 * WIDE_PROTOTYPE))


class Down24To16(Resampler):
    """24 kHz -> 16 kHz (model -> wideband caller): ``T * 2 // 3`` outputs after T inputs, <= 1 held."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(2, 3, quantize(2 * WIDE_PROTOTYPE))


def _le_bytes(samples: npt.NDArray[np.int16]) -> bytes:
    return samples.tobytes() if _NATIVE_LE else samples.astype("<i2").tobytes()


class NumpyCallerToModel:
    """mu-law 8 kHz bytes -> PCM16 little-endian 24 kHz bytes (6x the length), in numpy.

    The reference of the compiled ``CallerToModel``; ordered, nothing held back, chunking-exact.
    """

    __slots__ = ("_up",)

    def __init__(self) -> None:
        self._up = Upsampler()

    def process(self, mulaw: bytes) -> bytes:
        return _le_bytes(self._up.process(ULAW_DECODE_TABLE[np.frombuffer(mulaw, dtype=np.uint8)]))

    def process_b64(self, mulaw: bytes) -> str:
        """``process`` as standard base64 (padded, no newline): what a Realtime append carries."""
        return binascii.b2a_base64(self.process(mulaw), newline=False).decode("ascii")

    @property
    def held_back(self) -> int:
        return 0

    def reset(self) -> None:
        self._up.reset()


class NumpyModelToCaller:
    """PCM16 little-endian 24 kHz bytes -> mu-law 8 kHz bytes, in numpy (reference of ``ModelToCaller``).

    After B input bytes in total, exactly ``B // 6`` bytes out: an odd trailing byte and an incomplete
    3-sample group are carried to the next call. ``reset()`` on barge-in drops both.
    """

    __slots__ = ("_down", "_odd")

    def __init__(self) -> None:
        self._down = Downsampler()
        self._odd = b""

    def process(self, pcm16_24k: bytes) -> bytes:
        data = self._odd + bytes(pcm16_24k)
        cut = len(data) & ~1
        self._odd = data[cut:]
        out = self._down.process(np.frombuffer(data[:cut], dtype="<i2"))
        return ULAW_ENCODE_TABLE[out.view(np.uint16)].tobytes()

    @property
    def held_back(self) -> int:
        """24 kHz samples received but not yet in any output (0..2; an odd byte counts as none)."""
        return self._down.held_back

    def reset(self) -> None:
        self._down.reset()
        self._odd = b""


class SampleResampler(Protocol):
    """What ``make_resampler`` returns: a ``Resampler`` or its compiled twin (same outputs)."""

    def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]: ...

    @property
    def held_back(self) -> int: ...

    def reset(self) -> None: ...


#: (input rate, output rate) -> (L, M, coefficients with the gain L): the four supported rate changes.
_RATE_CHANGES: Final = {
    (RATE_LOW, RATE_HIGH): (FACTOR, 1, quantize(FACTOR * PROTOTYPE)),
    (RATE_HIGH, RATE_LOW): (1, FACTOR, PROTOTYPE_QUANTIZED),
    (16000, RATE_HIGH): (3, 2, quantize(3 * WIDE_PROTOTYPE)),
    (RATE_HIGH, 16000): (2, 3, quantize(2 * WIDE_PROTOTYPE)),
}


def make_resampler(rate_in: int, rate_out: int, *, compiled: bool | None = None) -> SampleResampler:
    """A streaming resampler for one of the four rate changes (8k/16k <-> 24k); ``ValueError`` otherwise.

    The compiled generic kernel (``_hotpath.Resampler``) when built, unless ``compiled=False``; its output
    equals ``Resampler``'s bit for bit (tests/unit/test_hotpath.py).
    """
    try:
        up, down, coeffs = _RATE_CHANGES[(rate_in, rate_out)]
    except KeyError:
        raise ValueError(f"no resampler from {rate_in} Hz to {rate_out} Hz") from None
    if compiled is None:
        compiled = _hotpath is not None
    if compiled:
        if _hotpath is None:
            raise RuntimeError("the compiled kernels were not built")
        return _CompiledResampler(up, down, coeffs.tobytes())
    return Resampler(up, down, coeffs)


class InboundAudio(Protocol):
    """Caller -> model audio path of one call (``CallerToModel``)."""

    def process(self, mulaw: bytes) -> bytes: ...

    def process_b64(self, mulaw: bytes) -> str: ...

    @property
    def held_back(self) -> int: ...

    def reset(self) -> None: ...


class OutboundAudio(Protocol):
    """Model -> caller audio path of one call (``ModelToCaller``)."""

    def process(self, pcm16_24k: bytes) -> bytes: ...

    @property
    def held_back(self) -> int: ...

    def reset(self) -> None: ...


# The compiled kernels (service/_hotpath.c) get their coefficients and mu-law tables from here, so this
# module stays the single definition; base64 stays in Python (binascii), as does all parsing.
try:
    from service import _hotpath
except ImportError:  # built without a C compiler: the numpy reference, same output, slower
    _hotpath = None  # type: ignore[assignment]

#: True when ``CallerToModel``/``ModelToCaller`` are the compiled kernels.
COMPILED: Final = _hotpath is not None
CallerToModel: Callable[[], InboundAudio]
ModelToCaller: Callable[[], OutboundAudio]
if _hotpath is not None:
    _hotpath.install(
        quantize(FACTOR * PROTOTYPE).tobytes(),
        PROTOTYPE_QUANTIZED.tobytes(),
        np.ascontiguousarray(ULAW_DECODE_F64, dtype=np.float64).tobytes(),
        np.ascontiguousarray(ULAW_ENCODE_TABLE, dtype=np.uint8).tobytes(),
    )
    _b2a = binascii.b2a_base64

    class _CompiledCallerToModel(_hotpath.CallerToModel):
        """The compiled inbound kernel plus ``process_b64`` (binascii: base64 is not hand-written in C)."""

        __slots__ = ()

        def process_b64(self, mulaw: bytes) -> str:
            return _b2a(self.process(mulaw), newline=False).decode("ascii")

    class _CompiledResampler(_hotpath.Resampler):
        """The compiled generic kernel on numpy int16 arrays (the C type works on raw buffers)."""

        __slots__ = ()

        def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]:  # type: ignore[override]
            raw = super().process(np.ascontiguousarray(samples, dtype=np.int16).data)
            return np.frombuffer(raw, dtype=np.int16)

    CallerToModel = _CompiledCallerToModel
    ModelToCaller = _hotpath.ModelToCaller
else:
    CallerToModel = NumpyCallerToModel
    ModelToCaller = NumpyModelToCaller
