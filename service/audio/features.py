"""Per-turn voice features for sentiment: loudness (dBFS) and pitch (F0), and a per-caller baseline.

Off the frame path: called once per caller turn on the turn's PCM16 (24 kHz or 8 kHz int16 numpy).
Pure numpy, no state except in ``VoiceBaseline``.

Definitions (what is guaranteed):

* dBFS here is RMS relative to full-scale RMS 32768, so a full-scale sine reads -3.01 dBFS and a sine of
  peak amplitude A reads ``20*log10(A / sqrt(2) / 32768)``. Silence reads ``SILENCE_DBFS`` (-120), never
  -inf, so it can be averaged.
* ``rms_dbfs`` is over the whole turn; ``loudness_dbfs`` is the active-speech level: RMS over the 20 ms
  frames within ``ACTIVE_RANGE_DB`` (30 dB) of the loudest frame, so pauses inside a turn do not lower it.
* F0: 40 ms frames every 20 ms; a frame is voiced if it is active and its normalised autocorrelation
  (each lag normalised by the energies of the two overlapping parts) peaks at >= ``VOICING_THRESHOLD``
  for a lag in the 60..400 Hz range. The period is the smallest lag whose correlation is within 10 % of
  the best one (avoids picking 2T), refined by parabolic interpolation. The turn's F0 is the median over
  voiced frames; ``None`` when fewer than ``MIN_VOICED_FRAMES`` frames are voiced. Works without the
  fundamental present (telephone band starts at 300 Hz) because the periodicity remains.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "F0_MAX_HZ",
    "F0_MIN_HZ",
    "SILENCE_DBFS",
    "TurnFeatures",
    "VoiceBaseline",
    "VoiceDelta",
    "analyze_turn",
    "estimate_f0",
    "rms_dbfs",
]

F0_MIN_HZ: Final = 60.0
F0_MAX_HZ: Final = 400.0
SILENCE_DBFS: Final = -120.0
ACTIVE_RANGE_DB: Final = 30.0
ACTIVE_FLOOR_DBFS: Final = -60.0  # frames below this are never active (line noise)
VOICING_THRESHOLD: Final = 0.6
MIN_VOICED_FRAMES: Final = 3
_FRAME_S: Final = 0.040
_HOP_S: Final = 0.020


def _db(mean_square: float) -> float:
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * float(np.log10(mean_square)) - 20.0 * float(np.log10(32768.0)))


def _db_array(mean_squares: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``_db`` over an array in one numpy pass."""
    with np.errstate(divide="ignore"):
        levels = 10.0 * np.log10(mean_squares) - 20.0 * np.log10(32768.0)
    return np.where(mean_squares > 0.0, np.maximum(levels, SILENCE_DBFS), SILENCE_DBFS)


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level of int16-valued samples in dBFS (see module docstring); SILENCE_DBFS for empty/zero."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return SILENCE_DBFS
    return _db(float(np.mean(x * x)))


def _frames(x: npt.NDArray[np.float64], length: int, hop: int) -> npt.NDArray[np.float64]:
    if x.size < length:
        return np.zeros((0, length))
    count = 1 + (x.size - length) // hop
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:count]


def _frame_f0(frames: npt.NDArray[np.float64], sample_rate: int) -> npt.NDArray[np.float64]:
    """F0 per frame in Hz, NaN where unvoiced by the correlation test."""
    n = frames.shape[1]
    lag_min = int(np.floor(sample_rate / F0_MAX_HZ))
    lag_max = min(int(np.ceil(sample_rate / F0_MIN_HZ)), n - 2)
    x = frames - frames.mean(axis=1, keepdims=True)
    nfft = 1 << int(np.ceil(np.log2(n + lag_max + 2)))  # enough for lags up to lag_max without wrap-around
    spec = np.fft.rfft(x, nfft, axis=1)
    acf = np.fft.irfft(spec * np.conj(spec), nfft, axis=1)[:, : lag_max + 2]
    cs = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x * x, axis=1)], axis=1)
    lags = np.arange(lag_max + 2)
    e_head = cs[:, n - lags]  # sum of x[0 : n - lag]^2
    e_tail = cs[:, n : n + 1] - cs[:, lags]  # sum of x[lag : n]^2
    norm = acf / np.sqrt(np.maximum(e_head * e_tail, 1e-12))
    # Vectorised over frames (one numpy pass, no per-frame Python loop): voicing test, then among the
    # local maxima within 10 % of the best take the shortest period (avoids 2T, 3T), then refine it
    # by parabolic interpolation.
    window = norm[:, lag_min : lag_max + 1]
    best = window.max(axis=1)
    peaks = (
        (window >= 0.9 * best[:, None])
        & (window >= np.roll(window, 1, axis=1))
        & (window >= np.roll(window, -1, axis=1))
    )
    first_peak = np.where(peaks.any(axis=1), peaks.argmax(axis=1), window.argmax(axis=1))
    k = first_peak + lag_min
    rows = np.arange(x.shape[0])
    a, b, c = norm[rows, k - 1], norm[rows, k], norm[rows, k + 1]
    denom = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(denom < 0, 0.5 * (a - c) / denom, 0.0)
    f0 = sample_rate / (k + np.clip(shift, -0.5, 0.5))
    return np.where(best >= VOICING_THRESHOLD, f0, np.nan)


@dataclass(frozen=True, slots=True)
class TurnFeatures:
    """Voice features of one caller turn."""

    rms_dbfs: float  # whole turn
    loudness_dbfs: float  # active-speech level
    f0_hz: float | None  # median F0 over voiced frames
    voiced_fraction: float  # voiced frames / all frames
    duration_s: float


def estimate_f0(samples: npt.ArrayLike, sample_rate: int) -> float | None:
    """Median F0 (Hz) over the voiced frames of ``samples``, or None when unvoiced."""
    return analyze_turn(samples, sample_rate).f0_hz


def analyze_turn(samples: npt.ArrayLike, sample_rate: int, *, pitch_hop_s: float = _HOP_S) -> TurnFeatures:
    """Loudness and pitch of one turn of int16-valued PCM at ``sample_rate`` (8000 or 24000 typical).

    Pitch is estimated on 40 ms frames every ``pitch_hop_s`` (20 ms: half-overlapping; 40 ms:
    adjacent, half the work, the same median on sustained speech)."""
    if sample_rate < 2 * F0_MAX_HZ * 4:
        raise ValueError("sample_rate too low for pitch estimation")
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    duration = x.size / sample_rate
    whole = rms_dbfs(x)
    hop = round(_HOP_S * sample_rate)
    # loudness on 20 ms non-overlapping frames
    short = _frames(x, hop, hop)
    if short.shape[0] == 0:
        return TurnFeatures(whole, whole, None, 0.0, duration)
    ms = np.mean(short * short, axis=1)
    frame_db = _db_array(ms)
    gate = max(float(frame_db.max()) - ACTIVE_RANGE_DB, ACTIVE_FLOOR_DBFS)
    active = frame_db >= gate
    loudness = _db(float(ms[active].mean())) if active.any() else whole
    # pitch on 40 ms frames every 20 ms, active ones only
    long = _frames(x, round(_FRAME_S * sample_rate), round(pitch_hop_s * sample_rate))
    if long.shape[0] == 0:
        return TurnFeatures(whole, loudness, None, 0.0, duration)
    long_db = _db_array(np.mean(long * long, axis=1))
    candidates = long_db >= gate
    f0s = np.full(long.shape[0], np.nan)
    if candidates.any():
        f0s[candidates] = _frame_f0(long[candidates], sample_rate)
    voiced = ~np.isnan(f0s)
    n_voiced = int(voiced.sum())
    f0 = float(np.median(f0s[voiced])) if n_voiced >= MIN_VOICED_FRAMES else None
    return TurnFeatures(whole, loudness, f0, n_voiced / long.shape[0], duration)


@dataclass(frozen=True, slots=True)
class VoiceDelta:
    """A turn relative to the caller's own baseline (None until there is a baseline)."""

    loudness_delta_db: float | None  # turn loudness minus baseline loudness
    pitch_ratio: float | None  # turn F0 / baseline F0
    turns_in_baseline: int


class VoiceBaseline:
    """Running per-caller baseline: median of the last ``window`` turns' loudness and F0.

    The median resists the very turns we want to detect (one shouted turn does not move it much).
    Bounded: two deques of at most ``window`` floats. Not thread-safe; one per call.
    """

    def __init__(self, window: int = 8, min_turns: int = 1) -> None:
        if window < 1 or min_turns < 1:
            raise ValueError("window and min_turns must be >= 1")
        self._min_turns = min_turns
        self._loudness: deque[float] = deque(maxlen=window)
        self._f0: deque[float] = deque(maxlen=window)

    @property
    def loudness_dbfs(self) -> float | None:
        return float(np.median(self._loudness)) if self._loudness else None

    @property
    def f0_hz(self) -> float | None:
        return float(np.median(self._f0)) if self._f0 else None

    def relative(self, turn: TurnFeatures) -> VoiceDelta:
        """Compare ``turn`` with the baseline without changing it."""
        loud = self.loudness_dbfs if len(self._loudness) >= self._min_turns else None
        f0 = self.f0_hz if len(self._f0) >= self._min_turns else None
        # an all-silent turn carries no loudness information
        delta = turn.loudness_dbfs - loud if loud is not None and turn.loudness_dbfs > SILENCE_DBFS else None
        ratio = turn.f0_hz / f0 if f0 is not None and turn.f0_hz is not None else None
        return VoiceDelta(delta, ratio, len(self._loudness))

    def observe(self, turn: TurnFeatures) -> None:
        """Fold ``turn`` into the baseline (silent turns and unvoiced pitch are skipped)."""
        if turn.loudness_dbfs > SILENCE_DBFS:
            self._loudness.append(turn.loudness_dbfs)
        if turn.f0_hz is not None:
            self._f0.append(turn.f0_hz)

    def update(self, turn: TurnFeatures) -> VoiceDelta:
        """``relative(turn)`` against the past turns, then ``observe(turn)``."""
        delta = self.relative(turn)
        self.observe(turn)
        return delta
