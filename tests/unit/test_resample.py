"""Streaming resamplers (8 <-> 24 kHz, 16 <-> 24 kHz): design, signal quality (measured), latency,
chunking, reset.

Quality is measured on signals in narrow FFT bins or by exact-cycle complex amplitude, never on lengths
(docs/audio.md, "Resampling"). scipy is the reference for the design (``firwin``) and for the filtering
itself (``upfirdn``), against which the numpy.convolve reference must be bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from service.audio import (
    DOWN_HELD_BACK_MAX,
    FILTER_ATTEN_DB,
    FILTER_TAPS,
    PROTOTYPE,
    PROTOTYPE_QUANTIZED,
    WIDE_FILTER_TAPS,
    WIDE_PROTOTYPE,
    CallerToModel,
    Down24To16,
    Downsampler,
    ModelToCaller,
    Resampler,
    Up16To24,
    Upsampler,
    design_lowpass,
    kaiser_beta,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

AMP = 16384.0  # -6 dBFS
SKIP = 200  # 8 kHz samples of start-up transient left out of measurements
HALF_LSB_DB = 20 * np.log10(0.5 / 32768)


def tone(freq: float, fs: int, n: int, amp: float = AMP, phase: float = 0.3) -> np.ndarray:
    return np.rint(amp * np.cos(2 * np.pi * freq * np.arange(n) / fs + phase)).astype(np.int16)


def chunked(obj: Resampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        step = sizes[k % len(sizes)]
        out.append(obj.process(x[i : i + step]))
        i += step
        k += 1
    return np.concatenate(out)


def line_db(y: np.ndarray, fs: int, lo: float, hi: float) -> float:
    """Largest Blackman-windowed spectral line in [lo, hi] Hz, dB re full scale (floored at 0.5 LSB)."""
    w = np.blackman(len(y))
    spec = np.abs(np.fft.rfft(y.astype(np.float64) * w)) / (w.sum() / 2) / 32768.0
    f = np.fft.rfftfreq(len(y), 1 / fs)
    peak = spec[(f >= lo) & (f <= hi)].max()
    return max(HALF_LSB_DB, float(20 * np.log10(peak + 1e-30)))


def complex_amp(y: np.ndarray, freq: float, fs: int) -> complex:
    t = np.arange(len(y)) / fs
    return complex(2 / len(y) * np.sum(y.astype(np.float64) * np.exp(-2j * np.pi * freq * t)))


# ------------------------------------------------------------------------------------------ design
def test_prototype_equals_scipy_firwin() -> None:
    ref = signal.firwin(FILTER_TAPS, 4000, window=("kaiser", signal.kaiser_beta(FILTER_ATTEN_DB)), fs=24000)
    assert np.allclose(PROTOTYPE, ref, rtol=0, atol=1e-14)
    assert kaiser_beta(FILTER_ATTEN_DB) == pytest.approx(signal.kaiser_beta(FILTER_ATTEN_DB))
    assert np.array_equal(PROTOTYPE, PROTOTYPE[::-1])  # linear phase
    with pytest.raises(ValueError):
        design_lowpass(80, 4000, 24000, 60)


def test_quantised_prototype_response_with_freqz() -> None:
    f, resp = signal.freqz(PROTOTYPE_QUANTIZED, worN=np.linspace(0, 12000, 12001), fs=24000)
    db = 20 * np.log10(np.abs(resp) + 1e-30)
    passband = db[(f >= 0) & (f <= 3400)]
    assert np.ptp(passband) < 0.02
    assert db[f >= 4600].max() < -65.0
    assert np.max(np.abs(PROTOTYPE_QUANTIZED - PROTOTYPE)) <= 2.0**-21


def test_one_shot_equals_scipy_upfirdn_exactly() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-20000, 20000, 3001).astype(np.int16)
    coeffs = np.round(3 * PROTOTYPE * 2**20) / 2**20
    ref_up = np.clip(np.rint(signal.upfirdn(coeffs, x.astype(np.float64), up=3)[: 3 * len(x)]), -32768, 32767)
    assert np.array_equal(Upsampler().process(x), ref_up)
    x24 = rng.integers(-20000, 20000, 9002).astype(np.int16)
    full = signal.lfilter(PROTOTYPE_QUANTIZED, [1.0], x24.astype(np.float64))
    ref_down = np.clip(np.rint(full[2::3]), -32768, 32767)
    assert np.array_equal(Downsampler().process(x24), ref_down)


def test_clipping_saturates_instead_of_wrapping() -> None:
    square = np.where(np.arange(3000) % 8 < 4, 32767, -32768).astype(np.int16)  # 1 kHz at 8 kHz
    y = Upsampler().process(square)
    coeffs = np.round(3 * PROTOTYPE * 2**20) / 2**20
    raw = signal.upfirdn(coeffs, square.astype(np.float64), up=3)[: len(y)]
    assert raw.max() > 32767 and raw.min() < -32768  # the filter overshoots full scale
    assert np.array_equal(y, np.clip(np.rint(raw), -32768, 32767))


# ----------------------------------------------------------------------------------------- quality
@pytest.mark.parametrize("freq", [4600, 5500, 7000, 8000, 10000, 11900])
def test_a_down_rejects_aliases_by_60_db(freq: int) -> None:
    n = 3 * (8000 + SKIP)
    ref = chunked(Downsampler(), tone(1000, 24000, n), [480])[SKIP:]
    out = chunked(Downsampler(), tone(freq, 24000, n), [480])[SKIP:]
    alias = abs(freq - 8000)
    alias = 8000 - alias if alias > 4000 else alias
    ref_db = line_db(ref, 8000, 995, 1005)
    assert ref_db == pytest.approx(-6.0, abs=0.1)
    assert ref_db - line_db(out, 8000, max(0, alias - 5), alias + 5) >= 60.0
    # and nothing else in the band either
    assert ref_db - line_db(out, 8000, 0, 4000) >= 60.0


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_b_up_images_60_db_below_tone(freq: int) -> None:
    out = chunked(Upsampler(), tone(freq, 8000, 8000 + SKIP), [160])[3 * SKIP :]
    tone_db = line_db(out, 24000, freq - 5, freq + 5)
    assert tone_db == pytest.approx(-6.0, abs=0.1)
    assert tone_db - line_db(out, 24000, 4600, 12000) >= 60.0
    for image in (8000 - freq, 8000 + freq):
        assert tone_db - line_db(out, 24000, image - 5, image + 5) >= 60.0


def _passband(direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gain (dB) and phase (rad) of exact-cycle tones 300..3400 Hz through a fresh resampler."""
    freqs = np.arange(300, 3401, 100)
    gains, phases = [], []
    for f in freqs:
        if direction == "up":
            x = tone(f, 8000, 2000 + SKIP)
            y = chunked(Upsampler(), x, [160])[3 * SKIP :]
            a_in, a_out = complex_amp(x[SKIP:], f, 8000), complex_amp(y, f, 24000)
        else:
            x = tone(f, 24000, 3 * (2000 + SKIP))
            y = chunked(Downsampler(), x, [500, 37])[SKIP:]
            a_in, a_out = complex_amp(x[3 * SKIP :], f, 24000), complex_amp(y, f, 8000)
        gains.append(20 * np.log10(abs(a_out) / abs(a_in)))
        phases.append(np.angle(a_out / a_in))
    return freqs, np.array(gains), np.unwrap(phases)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_c_passband_ripple_and_d_group_delay(direction: str) -> None:
    freqs, gains, phases = _passband(direction)
    assert np.ptp(gains) <= 0.1
    assert np.abs(gains).max() <= 0.1
    slope, intercept = np.polyfit(2 * np.pi * freqs, phases, 1)
    group_delay_ms = -slope * 1000
    # linear phase: phase is a straight line through 0 (mod 2 pi), i.e. every tone is delayed alike
    assert np.abs(phases - np.polyval([slope, intercept], 2 * np.pi * freqs)).max() < 0.01
    assert abs((intercept + np.pi) % (2 * np.pi) - np.pi) < 0.01
    held_ms = 0.0 if direction == "up" else DOWN_HELD_BACK_MAX / 24.0
    assert 0.0 < group_delay_ms + held_ms <= 3.0


def test_d_nothing_held_back_beyond_two_samples() -> None:
    """Up: 3 outputs per input on every call. Down: T // 3 after T inputs, so at most 2 held (0.083 ms)."""
    rng = np.random.default_rng(7)
    up, down = Upsampler(), Downsampler()
    fed = got_up = got_down = 0
    worst = 0
    for _ in range(200):
        k = int(rng.integers(0, 900))
        x = rng.integers(-1000, 1000, k).astype(np.int16)
        n_up = len(up.process(x))
        assert n_up == 3 * k and up.held_back == 0
        got_up += n_up
        got_down += len(down.process(x))
        fed += k
        assert got_down == fed // 3
        assert down.held_back == fed - 3 * got_down
        worst = max(worst, down.held_back)
    assert worst == DOWN_HELD_BACK_MAX


def test_d_impulse_latency() -> None:
    """An impulse comes out centred (FILTER_TAPS - 1) / 2 samples (24 kHz) later, on the first call that can."""
    x = np.zeros(160, dtype=np.int16)
    x[10] = 10000
    y = Upsampler().process(x)
    assert int(np.argmax(y)) - 3 * 10 == (FILTER_TAPS - 1) // 2
    x24 = np.zeros(480, dtype=np.int16)
    x24[4] = 30000  # output n uses x[3n + 2 - i]; the centre tap i = 43 meets x[4] at n = 15
    y8 = Downsampler().process(x24)
    assert int(np.argmax(y8)) == (4 + (FILTER_TAPS - 1) // 2 - 2) // 3 == 15


# ---------------------------------------------------------------------------------------- chunking
chunkings = st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(sizes=chunkings, seed=st.integers(0, 2**32 - 1))
def test_e_chunked_equals_one_shot(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    x = (rng.standard_normal(total) * 9000).clip(-32768, 32767).astype(np.int16)
    whole_up, whole_down = Upsampler().process(x), Downsampler().process(x)
    up, down = Upsampler(), Downsampler()
    parts_up, parts_down, i = [], [], 0
    for k in sizes:
        parts_up.append(up.process(x[i : i + k]))
        parts_down.append(down.process(x[i : i + k]))
        i += k
    got_up = np.concatenate(parts_up) if parts_up else np.zeros(0, np.int16)
    got_down = np.concatenate(parts_down)
    assert len(got_up) == len(whole_up) == 3 * total
    assert len(got_down) == len(whole_down) == total // 3
    assert np.abs(got_up.astype(np.int32) - whole_up).max(initial=0) <= 1
    assert np.abs(got_down.astype(np.int32) - whole_down).max(initial=0) <= 1
    assert np.array_equal(got_up, whole_up) and np.array_equal(got_down, whole_down)  # in fact exact


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=1500), min_size=1, max_size=10),
       seed=st.integers(0, 2**32 - 1))
def test_e_mulaw_wrappers_chunked_equal_one_shot(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    mulaw = rng.integers(0, 256, sum(sizes), dtype=np.uint8).tobytes()
    pcm24 = rng.integers(-20000, 20000, sum(sizes) // 2 + 1, dtype=np.int16).astype("<i2").tobytes()[: sum(sizes)]
    c2m_whole = CallerToModel().process(mulaw)
    m2c_whole = ModelToCaller().process(pcm24)
    c2m, m2c = CallerToModel(), ModelToCaller()
    got_in, got_out, i = [], [], 0
    for k in sizes:
        got_in.append(c2m.process(mulaw[i : i + k]))
        got_out.append(m2c.process(pcm24[i : i + k]))  # byte chunks: odd lengths split samples
        i += k
    assert b"".join(got_in) == c2m_whole and len(c2m_whole) == 6 * len(mulaw)
    assert b"".join(got_out) == m2c_whole and len(m2c_whole) == (len(pcm24) // 2) // 3
    # the wrappers are the plain resamplers plus G.711
    up_ref = Upsampler().process(ulaw_to_pcm16(mulaw))
    assert np.array_equal(np.frombuffer(c2m_whole, dtype="<i2"), up_ref)
    down_ref = Downsampler().process(np.frombuffer(pcm24[: len(pcm24) & ~1], dtype="<i2"))
    assert m2c_whole == pcm16_to_ulaw(down_ref)


# ------------------------------------------------------------------------------------------- reset
def test_reset_after_barge_in_behaves_like_a_fresh_object() -> None:
    loud = tone(3000, 24000, 4801, amp=30000)  # odd count: leaves an incomplete group behind
    nxt = tone(440, 24000, 2400, amp=8000, phase=-np.pi / 2)  # a new response starting from zero
    m2c = ModelToCaller()
    m2c.process(loud.astype("<i2").tobytes() + b"\x01")  # plus an odd byte
    assert m2c.held_back > 0
    m2c.reset()
    assert m2c.held_back == 0
    silence = m2c.process(bytes(960))
    assert silence == b"\xff" * 160  # no tail of the interrupted response leaks out
    m2c.reset()
    fresh = ModelToCaller().process(nxt.astype("<i2").tobytes())
    assert m2c.process(nxt.astype("<i2").tobytes()) == fresh

    down = Downsampler()
    down.process(loud)
    down.reset()
    y = down.process(nxt)
    assert np.array_equal(y, Downsampler().process(nxt))
    # no click: the output after the reset moves no faster than the new 440 Hz tone itself can
    max_step = 1.05 * 8000 * 2 * np.pi * 440 / 8000
    assert np.abs(np.diff(y.astype(np.int32), prepend=0)).max() <= max_step
    # (without the reset the tail of the interrupted 3 kHz tone would be there: the check is sensitive)
    kept = Downsampler()
    kept.process(loud)
    assert np.abs(np.diff(kept.process(nxt).astype(np.int32), prepend=0)).max() > 4 * max_step

    c2m = CallerToModel()
    c2m.process(pcm16_to_ulaw(tone(1000, 8000, 800, amp=30000)))
    c2m.reset()
    assert c2m.process(b"\xff" * 160) == bytes(960)
    up = Upsampler()
    up.process(tone(1000, 8000, 333, amp=30000))
    up.reset()
    assert np.array_equal(up.process(tone(500, 8000, 160)), Upsampler().process(tone(500, 8000, 160)))


def test_large_and_empty_chunks() -> None:
    x = tone(1000, 24000, 48000)
    d = Downsampler()
    assert d.process(np.zeros(0, np.int16)).size == 0
    assert len(d.process(x)) == 16000  # grows its buffers for a 2 s chunk
    assert len(d.process(x[:480])) == 160
    assert CallerToModel().process(b"") == b"" and ModelToCaller().process(b"") == b""
    assert ModelToCaller().process(b"\x00") == b""


# ------------------------------------------------------------------------------ all four resamplers
# (class, up L, down M, input rate, output rate, coefficients incl. the gain L)
KINDS = {
    "8->24": (Upsampler, 3, 1, 8000, 24000, np.round(3 * PROTOTYPE * 2**20) / 2**20),
    "24->8": (Downsampler, 1, 3, 24000, 8000, PROTOTYPE_QUANTIZED),
    "16->24": (Up16To24, 3, 2, 16000, 24000, np.round(3 * WIDE_PROTOTYPE * 2**20) / 2**20),
    "24->16": (Down24To16, 2, 3, 24000, 16000, np.round(2 * WIDE_PROTOTYPE * 2**20) / 2**20),
}


def upfirdn_reference(coeffs: np.ndarray, x: np.ndarray, up: int, down: int) -> np.ndarray:
    """What every resampler must output, from scipy: output j is the up-sampled, filtered stream at
    index j*M + M - 1 (the newest sample of its group), clipped, rounded half to even."""
    full = signal.upfirdn(coeffs, x.astype(np.float64), up=up, down=1)
    count = len(x) * up // down
    return np.rint(np.clip(full[down - 1 :: down][:count], -32768, 32767)).astype(np.int16)


@pytest.mark.parametrize("kind", list(KINDS))
def test_reference_equals_scipy_upfirdn_bit_for_bit(kind: str) -> None:
    cls, up, down, _, _, coeffs = KINDS[kind]
    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 160, 4801):
        x = (rng.standard_normal(n) * 12000).clip(-32768, 32767).astype(np.int16)
        assert np.array_equal(cls().process(x), upfirdn_reference(coeffs, x, up, down))
    loud = np.where(np.arange(3000) % 6 < 3, 32767, -32768).astype(np.int16)  # overshoots: clipping
    assert np.array_equal(cls().process(loud), upfirdn_reference(coeffs, loud, up, down))


def test_wide_prototype_design() -> None:
    beta = signal.kaiser_beta(FILTER_ATTEN_DB)
    assert np.allclose(WIDE_PROTOTYPE, signal.firwin(WIDE_FILTER_TAPS, 8000, window=("kaiser", beta), fs=48000),
                       rtol=0, atol=1e-14)
    f, resp = signal.freqz(np.round(WIDE_PROTOTYPE * 2**20) / 2**20, worN=np.linspace(0, 24000, 24001), fs=48000)
    db = 20 * np.log10(np.abs(resp) + 1e-30)
    assert np.ptp(db[(f >= 50) & (f <= 7000)]) < 0.02
    assert db[f >= 9000].max() < -65.0


@pytest.mark.parametrize("freq", [9000, 9500, 10000, 11000, 11900])
def test_a_wide_down_rejects_aliases_by_60_db(freq: int) -> None:
    """24 -> 16 kHz: model audio between 9 and 12 kHz would fold onto 4-7 kHz; it must be >= 60 dB down."""
    n = 3 * (16000 + SKIP)
    ref = chunked(Down24To16(), tone(1000, 24000, n), [480])[2 * SKIP :]
    out = chunked(Down24To16(), tone(freq, 24000, n), [480])[2 * SKIP :]
    ref_db = line_db(ref, 16000, 995, 1005)
    assert ref_db == pytest.approx(-6.0, abs=0.1)
    alias = 16000 - freq
    assert ref_db - line_db(out, 16000, alias - 5, alias + 5) >= 60.0
    assert ref_db - line_db(out, 16000, 0, 7000) >= 60.0


@pytest.mark.parametrize("freq", [100, 1000, 3000, 5000, 7000])
def test_b_wide_up_images_60_db_below_tone(freq: int) -> None:
    """16 -> 24 kHz: the images of zero-stuffing (16k -/+ f, 32k -/+ f at 48 kHz, which the decimation by 2
    folds onto |8k - f| and 8k + f, the latter mirrored at 12 kHz) are >= 60 dB down."""
    out = chunked(Up16To24(), tone(freq, 16000, 16000 + 2 * SKIP), [320])[3 * SKIP :]
    tone_db = line_db(out, 24000, freq - 5, freq + 5)
    assert tone_db == pytest.approx(-6.0, abs=0.1)
    spectrum_elsewhere = max(line_db(out, 24000, 0, freq - 20), line_db(out, 24000, freq + 20, 12000))
    assert tone_db - spectrum_elsewhere >= 60.0
    for image in (abs(8000 - freq), min(8000 + freq, 16000 - freq)):
        assert tone_db - line_db(out, 24000, image - 5, image + 5) >= 60.0


@pytest.mark.parametrize("kind", ["16->24", "24->16"])
def test_c_wide_passband_ripple_and_d_latency(kind: str) -> None:
    cls, up, down, fs_in, fs_out, _ = KINDS[kind]
    freqs = np.arange(50, 7001, 50)
    gains, phases = [], []
    for f in freqs:
        x = tone(f, fs_in, fs_in // 4 + 3 * SKIP)
        y = chunked(cls(), x, [fs_in // 50])
        skip_in, skip_out = 3 * SKIP, 3 * SKIP * up // down
        a_in, a_out = complex_amp(x[skip_in:], f, fs_in), complex_amp(y[skip_out:], f, fs_out)
        gains.append(20 * np.log10(abs(a_out) / abs(a_in)))
        phases.append(np.angle(a_out / a_in))
    assert np.ptp(gains) <= 0.1 and np.abs(gains).max() <= 0.1
    unwrapped = np.unwrap(phases)
    slope, intercept = np.polyfit(2 * np.pi * freqs, unwrapped, 1)
    assert np.abs(unwrapped - np.polyval([slope, intercept], 2 * np.pi * freqs)).max() < 0.01  # linear phase
    held_ms = (down - 1) / up / fs_in * 1000  # the most a group can hold back, in input time
    assert 0.0 < -slope * 1000 + held_ms <= 3.0


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(list(KINDS)), sizes=chunkings, seed=st.integers(0, 2**32 - 1))
def test_e_every_resampler_chunked_equals_one_shot(kind: str, sizes: list[int], seed: int) -> None:
    cls, up, down, _, _, _ = KINDS[kind]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(sum(sizes)) * 9000).clip(-32768, 32767).astype(np.int16)
    whole = cls().process(x)
    obj, parts, fed, i = cls(), [], 0, 0
    for k in sizes:
        parts.append(obj.process(x[i : i + k]))
        i += k
        fed += k
        assert sum(len(p) for p in parts) == fed * up // down  # everything its input makes possible
        assert 0 <= obj.held_back < max(1, down // up + 1)
    assert np.array_equal(np.concatenate(parts), whole) and len(whole) == len(x) * up // down


@pytest.mark.parametrize("kind", ["16->24", "24->16"])
def test_wide_reset_returns_to_a_fresh_state(kind: str) -> None:
    cls, *_ = KINDS[kind]
    used = cls()
    used.process(tone(3000, 16000, 1001, amp=30000))
    used.reset()
    assert used.held_back == 0
    fresh_input = tone(440, 16000, 640)
    assert np.array_equal(used.process(fresh_input), cls().process(fresh_input))
