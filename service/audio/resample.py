"""Streaming 8 kHz <-> 24 kHz polyphase resamplers (ratio exactly 3) and the two per-call audio paths.

Reference: shared/reference/audio.md section 3 (why a real filter, design numbers, polyphase form).

Filter: one linear-phase Kaiser-windowed-sinc low-pass prototype at 24 kHz, designed once at import with
numpy only: ``FILTER_TAPS`` = 87 taps, cutoff 4 kHz (-6 dB), Kaiser beta for 70 dB. Measured (tests and
``load_tests/bench_audio.py``): passband ripple < 0.01 dB over 300-3400 Hz, >= 68 dB attenuation from
4.6 kHz up, in both directions. Group delay 43 samples at 24 kHz = 1.79 ms per direction; the
down-sampler additionally holds back at most 2 input samples (0.08 ms) until a 3-sample group is complete.
Nothing else is buffered: every call returns all output its input makes possible.

Exactness: the coefficients are rounded to multiples of 2**-20 and the inputs are integers, so every
product and every partial sum is exactly representable in float64 (|sum| < 2**22 with 20 fractional bits).
The filter arithmetic is therefore exact whatever order BLAS sums in, and the output (round-to-nearest,
clipped to int16) does not depend on how the stream is chunked: chunked == one-shot, bit for bit.

Speed: numpy costs ~1 us per call, so each chunk is handled with a fixed handful of calls. The input is
cut into blocks; one block's output depends only on that block and the previous one, so one
``matmul`` of the ``(blocks + 1, B)`` input matrix against a precomputed ``(B, 2 * outputs_per_block)``
matrix ``[A0 | A1]`` followed by one ``add`` of the two halves gives every output (audio.md 3.3).
Views for each block count are cached (a few sizes occur in practice; the cache is cleared if it grows
past 16 entries).

Two implementations of the per-call paths: ``NumpyCallerToModel``/``NumpyModelToCaller`` here (the
reference) and their compiled twins in ``service/_hotpath.c`` (the same coefficients and tables,
installed from this module; bit-identical output, ~5x faster per 20 ms frame). ``CallerToModel`` and
``ModelToCaller`` name the compiled ones when the extension was built, else the reference.

Memory per object: buffers grow to the largest chunk seen; for 20 ms caller frames the up-sampler holds
~7 KiB, for 100 ms model deltas the down-sampler ~45 KiB (float64 work buffers), plus the shared
coefficient matrices (~100 KiB, module level).

Not thread-safe: one object per call direction, used from one task.
"""

from __future__ import annotations

import binascii
import sys
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from .g711 import ULAW_DECODE_F64, ULAW_ENCODE_TABLE, ULAW_SILENCE

__all__ = [
    "COMPILED",
    "DOWN_HELD_BACK_MAX",
    "FILTER_ATTEN_DB",
    "FILTER_CUTOFF_HZ",
    "FILTER_TAPS",
    "GROUP_DELAY_MS",
    "PROTOTYPE",
    "PROTOTYPE_QUANTIZED",
    "CallerToModel",
    "Downsampler",
    "InboundAudio",
    "ModelToCaller",
    "NumpyCallerToModel",
    "NumpyModelToCaller",
    "OutboundAudio",
    "Upsampler",
    "design_lowpass",
    "kaiser_beta",
]

RATE_LOW: Final = 8000
RATE_HIGH: Final = 24000
FACTOR: Final = 3
FILTER_TAPS: Final = 87
FILTER_CUTOFF_HZ: Final = 4000.0
FILTER_ATTEN_DB: Final = 70.0
#: Linear-phase group delay of the prototype, in milliseconds, per direction.
GROUP_DELAY_MS: Final = (FILTER_TAPS - 1) / 2 / RATE_HIGH * 1000.0
#: The most 24 kHz input samples a Downsampler can hold back (an incomplete group of 3).
DOWN_HELD_BACK_MAX: Final = FACTOR - 1

_FRAC_BITS: Final = 20
_SCALE: Final = float(1 << _FRAC_BITS)
_UP_BLOCK: Final = 32  # input samples (8 kHz) per block; must be >= taps per branch - 1
_DOWN_BLOCK_OUT: Final = 28  # output samples (8 kHz) per block; 3 * this must be >= FILTER_TAPS - 3
_MAX_CACHED_SHAPES: Final = 16
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


def _quantize(coeffs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(np.round(coeffs * _SCALE) / _SCALE, dtype=np.float64)


PROTOTYPE: Final = design_lowpass(FILTER_TAPS, FILTER_CUTOFF_HZ, RATE_HIGH, FILTER_ATTEN_DB)
PROTOTYPE.flags.writeable = False
#: The prototype on the 2**-20 grid, as actually used by the Downsampler (the Upsampler uses 3x it,
#: quantised the same way).
PROTOTYPE_QUANTIZED: Final = _quantize(PROTOTYPE)
PROTOTYPE_QUANTIZED.flags.writeable = False


def _up_matrix(h: npt.NDArray[np.float64], block: int) -> npt.NDArray[np.float64]:
    """``[[A1], [A0]]`` for y[3t+k] = sum_j c_k[j] x[t-j], c_k[j] = 3 h[3j+k] (audio.md 3.3, up by 3).

    Rows 0..block-1 are the input positions of the previous block, rows block..2*block-1 those of the
    current block; column 3p+k is output phase k of current-block input position p.
    """
    c = _quantize(FACTOR * h)
    w = np.zeros((2 * block, FACTOR * block), dtype=np.float64)
    for p in range(block):
        for i in range(len(c)):  # tap i = 3 * lag + k
            lag, k = divmod(i, FACTOR)
            w[block + p - lag, FACTOR * p + k] = c[i]
    return w


def _down_matrix(h: npt.NDArray[np.float64], block_out: int) -> npt.NDArray[np.float64]:
    """``[[D1], [D0]]`` for y[n] = sum_i h[i] x[3n + 2 - i] (audio.md 3.3, down by 3).

    Input blocks hold 3 * block_out samples aligned on 3-sample groups (rows: previous block, then
    current block); output p of a block uses the group ending at position 3p + 2 as its newest input.
    """
    c = _quantize(h)
    block_in = FACTOR * block_out
    w = np.zeros((2 * block_in, block_out), dtype=np.float64)
    for p in range(block_out):
        for i in range(len(c)):
            w[block_in + FACTOR * p + FACTOR - 1 - i, p] = c[i]
    return w


if FACTOR * _DOWN_BLOCK_OUT < FILTER_TAPS - FACTOR or _UP_BLOCK < (FILTER_TAPS - 1) // FACTOR:
    raise AssertionError("block sizes too small for the filter length")

_UP_W: Final = _up_matrix(PROTOTYPE, _UP_BLOCK)
_UP_W.flags.writeable = False
_DOWN_W: Final = _down_matrix(PROTOTYPE, _DOWN_BLOCK_OUT)
_DOWN_W.flags.writeable = False


class _Plan(NamedTuple):
    """Cached views for one chunk shape (all into the owner's buffers)."""

    slot: npt.NDArray[np.float64]  # where the new input samples go
    full: npt.NDArray[np.float64]  # history block + pending + new samples (from the buffer start)
    windows: npt.NDArray[np.float64]  # (blocks, 2 * block_in) read-only overlapping view: [prev | cur]
    out2d: npt.NDArray[np.float64]  # (blocks, block_out) float results
    i16_2d: npt.NDArray[np.int16]  # (blocks, block_out) rounded results
    result: npt.NDArray[np.int16]  # the part of i16 returned to the caller
    hist_dst: npt.NDArray[np.float64]  # history (+ carried samples) move: dst <- src
    hist_src: npt.NDArray[np.float64]
    pending_after: int


class _BlockFilter:
    """Shared machinery: float64 input buffer ``[history block | new samples]``, cached per-shape views.

    ``block_in`` input samples make ``block_out`` outputs; output block i is
    ``[block i-1 | block i] @ weights``, one ``np.dot`` over an overlapping strided view (numpy copies
    the small window matrix once and calls BLAS).
    """

    __slots__ = ("_block_in", "_block_out", "_cache", "_cap_blocks", "_ext", "_i16", "_out", "_pending", "_w")

    def __init__(self, weights: npt.NDArray[np.float64], block_in: int, block_out: int) -> None:
        self._w = weights
        self._block_in = block_in
        self._block_out = block_out
        self._cap_blocks = 0
        self._pending = 0
        self._ext = np.zeros(0, dtype=np.float64)
        self._out = np.zeros(0, dtype=np.float64)
        self._i16 = np.zeros(0, dtype=np.int16)
        self._cache: dict[int, _Plan] = {}
        self._grow(8)

    def _grow(self, blocks: int) -> None:
        """Make room for ``blocks`` blocks of new input (plus one spare), keeping history and pending."""
        blocks = max(blocks, 2 * self._cap_blocks)
        bi, bo = self._block_in, self._block_out
        ext = np.zeros((blocks + 2) * bi, dtype=np.float64)
        ext[: self._ext.size] = self._ext
        self._ext = ext
        self._out = np.zeros(blocks * bo, dtype=np.float64)
        self._i16 = np.zeros(blocks * bo, dtype=np.int16)
        self._cap_blocks = blocks
        self._cache.clear()

    def _plan(self, n: int) -> _Plan:
        """Views for ``n`` new input samples given the current pending count (cached)."""
        key = n * FACTOR + self._pending
        plan = self._cache.get(key)
        if plan is not None:
            return plan
        bi, bo = self._block_in, self._block_out
        total = self._pending + n
        if total > self._cap_blocks * bi:
            self._grow(-(-total // bi))
        if len(self._cache) >= _MAX_CACHED_SHAPES:
            self._cache.clear()
        ratio_in, ratio_out = (1, FACTOR) if bo > bi else (FACTOR, 1)
        groups = total // ratio_in  # complete input groups -> ratio_out outputs each
        n_out = groups * ratio_out
        used = groups * ratio_in
        nb = max(1, -(-n_out // bo))
        ext = self._ext
        windows = np.lib.stride_tricks.as_strided(
            ext, shape=(nb, 2 * bi), strides=(bi * ext.itemsize, ext.itemsize), writeable=False
        )
        rest = total - used
        plan = _Plan(
            slot=ext[bi + self._pending : bi + total],
            full=ext[: bi + total],
            windows=windows,
            out2d=self._out[: nb * bo].reshape(nb, bo),
            i16_2d=self._i16[: nb * bo].reshape(nb, bo),
            result=self._i16[:n_out],
            hist_dst=ext[: bi + rest],
            hist_src=ext[used : used + bi + rest],
            pending_after=rest,
        )
        self._cache[key] = plan
        return plan

    def _filter(self, plan: _Plan) -> npt.NDArray[np.int16]:
        """Filter the buffer per ``plan`` (no state change); returns a view valid until the next call.

        Samples past the end of the input in the last block are stale but finite; they only meet zero
        coefficients for the outputs kept (the filter is causal), so they need no clearing.
        Round-to-nearest (ties to even), clipped to int16.
        """
        if plan.result.size:
            out2d = plan.out2d
            np.dot(plan.windows, self._w, out=out2d)
            np.minimum(out2d, 32767.0, out=out2d)
            np.maximum(out2d, -32768.0, out=out2d)
            np.rint(out2d, out=plan.i16_2d, casting="unsafe")
        return plan.result

    def _run(self, plan: _Plan) -> npt.NDArray[np.int16]:
        """Filter the samples placed in ``plan.slot`` and advance the state (history, pending)."""
        self._filter(plan)
        np.copyto(plan.hist_dst, plan.hist_src)
        self._pending = plan.pending_after
        return plan.result

    def _process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
        x = np.asarray(samples).reshape(-1)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        plan = self._plan(x.size)
        np.copyto(plan.slot, x, casting="unsafe")
        return self._run(plan).copy()

    def _reset(self) -> None:
        self._ext[: self._block_in + FACTOR] = 0.0
        self._pending = 0
        self._cache.clear()


class Upsampler(_BlockFilter):
    """Stateful 8 kHz -> 24 kHz interpolator (caller -> model).

    Guarantees: for every call, exactly ``3 * len(input)`` samples out, ordered, nothing held back;
    output of any chunking of a stream equals one-shot output exactly. Latency = filter group delay
    (``GROUP_DELAY_MS``) only.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_UP_W, _UP_BLOCK, FACTOR * _UP_BLOCK)

    @property
    def held_back(self) -> int:
        """Input samples received but not yet reflected in any output (always 0)."""
        return self._pending

    def reset(self) -> None:
        """Forget the history (back to silence); the next output is what a fresh object would give."""
        self._reset()

    def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """int16-valued samples at 8 kHz -> new int16 array at 24 kHz, length ``3 * len(samples)``."""
        return self._process(samples)


class Downsampler(_BlockFilter):
    """Stateful 24 kHz -> 8 kHz decimator (model -> caller).

    Guarantees: ordered; after a total of T input samples, exactly ``T // 3`` outputs have been returned
    (the decimation phase is carried across calls, so chunks need not be multiples of 3); at most 2
    input samples are held back (``held_back``); chunked output equals one-shot output exactly.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_DOWN_W, FACTOR * _DOWN_BLOCK_OUT, _DOWN_BLOCK_OUT)

    @property
    def held_back(self) -> int:
        """Input samples received but not yet used by any output (0..2)."""
        return self._pending

    def reset(self) -> None:
        """Barge-in: drop history and any incomplete group, back to silence.

        Chosen over a fade: the queued bot audio is being discarded, so letting ~1.8 ms of its tail
        ring into the next response would replay cancelled content; zero history makes the next
        response start exactly as from a fresh resampler, i.e. the band-limited onset of the new audio
        after silence (no step is introduced here). The caller-side cut itself is the provider's
        ``clear``.
        """
        self._reset()

    def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """int16-valued samples at 24 kHz -> new int16 array at 8 kHz (see class guarantees)."""
        return self._process(samples)


class NumpyCallerToModel:
    """Inbound hot path, numpy reference: mu-law 8 kHz bytes -> PCM16 little-endian 24 kHz bytes
    (6x the length). ``CallerToModel`` is the compiled twin when it was built (same output).

    Ordered, nothing held back, exact regardless of chunking (see ``Upsampler``). The history is kept
    as the last 32 mu-law bytes, so decoding the history plus the frame is one table lookup and no
    float history has to be moved. ``reset()`` returns to silence.
    """

    __slots__ = ("_hist", "_up")

    def __init__(self) -> None:
        self._up = Upsampler()
        self._hist = ULAW_SILENCE * _UP_BLOCK

    def process(self, mulaw: bytes) -> bytes:
        n = len(mulaw)
        if n == 0:
            return b""
        up = self._up
        plan = up._cache.get(n * FACTOR) or up._plan(n)
        cat = self._hist + mulaw
        self._hist = cat[-_UP_BLOCK:]
        ULAW_DECODE_F64.take(np.frombuffer(cat, dtype=np.uint8), out=plan.full, mode="wrap")  # method: no dispatch
        out = up._filter(plan)
        return out.tobytes() if _NATIVE_LE else out.astype("<i2").tobytes()

    def process_b64(self, mulaw: bytes) -> str:
        """``process`` as standard base64 (padded, no newline): what a Realtime append carries."""
        return binascii.b2a_base64(self.process(mulaw), newline=False).decode("ascii")

    @property
    def held_back(self) -> int:
        """Input samples received but not yet in any output (always 0)."""
        return 0

    def reset(self) -> None:
        self._hist = ULAW_SILENCE * _UP_BLOCK


class NumpyModelToCaller:
    """Outbound hot path, numpy reference: PCM16 little-endian 24 kHz bytes -> mu-law 8 kHz bytes.
    ``ModelToCaller`` is the compiled twin when it was built (same output).

    Ordered; after B input bytes in total, exactly ``B // 6`` bytes out (an odd trailing byte and an
    incomplete 3-sample group are carried to the next call); exact regardless of chunking.
    ``reset()`` on barge-in (see ``Downsampler.reset``).
    """

    __slots__ = ("_down", "_odd")

    def __init__(self) -> None:
        self._down = Downsampler()
        self._odd = b""

    def process(self, pcm16_24k: bytes) -> bytes:
        if self._odd or len(pcm16_24k) & 1:
            pcm16_24k = self._odd + pcm16_24k
            cut = len(pcm16_24k) & ~1
            self._odd = pcm16_24k[cut:]
            pcm16_24k = pcm16_24k[:cut]
        n = len(pcm16_24k) >> 1
        if n == 0:
            return b""
        down = self._down
        plan = down._cache.get(n * FACTOR + down._pending) or down._plan(n)
        np.copyto(plan.slot, np.frombuffer(pcm16_24k, dtype="<i2"), casting="unsafe")
        out = down._run(plan)
        return ULAW_ENCODE_TABLE[out.view(np.uint16)].tobytes()

    @property
    def held_back(self) -> int:
        """24 kHz samples received but not yet in any output (0..2; an odd byte counts as none)."""
        return self._down.held_back

    def reset(self) -> None:
        """Barge-in: drop all carried state (history, incomplete group, odd byte)."""
        self._down.reset()
        self._odd = b""


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


# The compiled kernels (service/_hotpath.c) do the same arithmetic in one C call per chunk; they get
# their coefficients and mu-law tables from here, so this module stays the single definition.
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
        _quantize(FACTOR * PROTOTYPE).tobytes(),
        PROTOTYPE_QUANTIZED.tobytes(),
        np.ascontiguousarray(ULAW_DECODE_F64, dtype=np.float64).tobytes(),
        np.ascontiguousarray(ULAW_ENCODE_TABLE, dtype=np.uint8).tobytes(),
    )
    CallerToModel = _hotpath.CallerToModel
    ModelToCaller = _hotpath.ModelToCaller
else:
    CallerToModel = NumpyCallerToModel
    ModelToCaller = NumpyModelToCaller
