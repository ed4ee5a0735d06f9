"""Voice features on synthetic signals of known F0 and level: harmonic sources, band-limited, noise."""

from __future__ import annotations

import numpy as np
import pytest

from service.audio import Downsampler
from service.audio.features import (
    SILENCE_DBFS,
    TurnFeatures,
    VoiceBaseline,
    analyze_turn,
    estimate_f0,
    rms_dbfs,
)


def harmonic(f0: float, fs: int, seconds: float, level_dbfs: float, first: int = 1,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """Harmonics first..(below 3.4 kHz) with 1/k amplitudes and random phases, scaled to an RMS level."""
    rng = rng or np.random.default_rng(0)
    t = np.arange(int(fs * seconds)) / fs
    ks = [k for k in range(first, 60) if k * f0 < min(3400.0, fs / 2)]
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in ks)
    x = np.asarray(x)
    x *= 10 ** (level_dbfs / 20) * 32768 / np.sqrt(np.mean(x**2))
    return np.rint(x).astype(np.int16)


def test_rms_dbfs_of_a_sine_and_of_silence() -> None:
    t = np.arange(24000) / 24000
    x = np.rint(10000 * np.sin(2 * np.pi * 1000 * t))
    assert rms_dbfs(x) == pytest.approx(20 * np.log10(10000 / np.sqrt(2) / 32768), abs=0.01)
    assert rms_dbfs(np.zeros(100)) == SILENCE_DBFS == rms_dbfs([])


@pytest.mark.parametrize("fs", [8000, 24000])
@pytest.mark.parametrize("f0", [70.0, 120.0, 210.0, 380.0])
def test_f0_and_level_of_harmonic_source(fs: int, f0: float) -> None:
    x = harmonic(f0, fs, 1.0, -20.0, rng=np.random.default_rng(int(f0)))
    feat = analyze_turn(x, fs)
    assert feat.f0_hz is not None
    assert feat.f0_hz == pytest.approx(f0, rel=0.02)
    assert feat.loudness_dbfs == pytest.approx(-20.0, abs=0.5)
    assert feat.rms_dbfs == pytest.approx(-20.0, abs=0.5)
    assert feat.voiced_fraction > 0.9


def test_missing_fundamental_telephone_band() -> None:
    """PSTN cuts below 300 Hz: a 110 Hz voice has only harmonics 3.. left; periodicity still gives F0."""
    x = harmonic(110.0, 8000, 1.0, -25.0, first=3)
    assert estimate_f0(x, 8000) == pytest.approx(110.0, rel=0.03)


def test_f0_survives_the_24k_to_8k_path() -> None:
    x24 = harmonic(160.0, 24000, 1.0, -18.0)
    x8 = Downsampler().process(x24)
    f24, f8 = analyze_turn(x24, 24000), analyze_turn(x8, 8000)
    assert f24.f0_hz == pytest.approx(160.0, rel=0.02) and f8.f0_hz == pytest.approx(160.0, rel=0.02)
    assert f8.loudness_dbfs == pytest.approx(f24.loudness_dbfs, abs=0.1)


def test_noise_and_silence_are_unvoiced() -> None:
    rng = np.random.default_rng(1)
    noise = np.rint(rng.standard_normal(24000) * 3000).astype(np.int16)
    feat = analyze_turn(noise, 24000)
    assert feat.f0_hz is None and feat.voiced_fraction < 0.1
    assert feat.loudness_dbfs == pytest.approx(20 * np.log10(3000 / 32768), abs=0.5)
    quiet = analyze_turn(np.zeros(8000, np.int16), 8000)
    assert quiet.f0_hz is None and quiet.loudness_dbfs == SILENCE_DBFS
    assert analyze_turn(np.zeros(10, np.int16), 8000).f0_hz is None


def test_pauses_do_not_lower_active_loudness() -> None:
    voiced = harmonic(150.0, 8000, 0.5, -15.0)
    turn = np.concatenate([voiced, np.zeros(8000, np.int16), voiced])
    feat = analyze_turn(turn, 8000)
    assert feat.loudness_dbfs == pytest.approx(-15.0, abs=0.5)
    assert feat.rms_dbfs == pytest.approx(-15.0 + 10 * np.log10(0.5), abs=0.5)  # half the time silent
    assert feat.f0_hz == pytest.approx(150.0, rel=0.02)


def test_baseline_deltas_relative_to_callers_own_voice() -> None:
    base = VoiceBaseline(window=8)
    first = base.update(analyze_turn(harmonic(150.0, 8000, 0.6, -22.0), 8000))
    assert first.loudness_delta_db is None and first.pitch_ratio is None and first.turns_in_baseline == 0
    for level in (-21.0, -23.0):
        base.update(analyze_turn(harmonic(150.0, 8000, 0.6, level), 8000))
    assert base.f0_hz == pytest.approx(150.0, rel=0.02)
    agitated = base.update(analyze_turn(harmonic(180.0, 8000, 0.6, -16.0), 8000))
    assert agitated.turns_in_baseline == 3
    assert agitated.loudness_delta_db == pytest.approx(6.0, abs=0.5)
    assert agitated.pitch_ratio == pytest.approx(1.2, rel=0.03)
    # the median baseline barely moves after one outlier turn
    assert base.loudness_dbfs == pytest.approx(-21.5, abs=0.6)
    # unvoiced turn: loudness delta yes, pitch ratio no
    rng = np.random.default_rng(2)
    noise = np.rint(rng.standard_normal(8000) * 2000).astype(np.int16)
    d = base.relative(analyze_turn(noise, 8000))
    assert d.pitch_ratio is None and d.loudness_delta_db is not None


def test_baseline_is_bounded_and_validates() -> None:
    base = VoiceBaseline(window=3)
    for level in (-40.0, -10.0, -10.0, -10.0):
        base.observe(TurnFeatures(level, level, 100.0, 1.0, 1.0))
    assert base.loudness_dbfs == -10.0  # the -40 turn fell out of the window
    with pytest.raises(ValueError):
        VoiceBaseline(window=0)
    with pytest.raises(ValueError):
        analyze_turn(np.zeros(100), 1000)
