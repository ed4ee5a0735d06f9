"""Pure parts of the local engine: resampler, G.711, the ARPA builder, the VAD."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio import ulaw_to_pcm16
from service.realtime.local.dsp import (
    StreamResampler,
    alaw_decode,
    alaw_encode,
    float_to_pcm16,
    resample_once,
    ulaw_decode,
    ulaw_encode,
)
from service.realtime.local.lm import build_arpa, tokenize
from service.realtime.local.vad import SpeechStart, Vad, VadConfig

RATES = [(24000, 16000), (22050, 24000), (8000, 16000), (24000, 8000)]


def tone(rate: int, freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_resampler_passes_a_tone_with_correct_phase_and_length(src: int, dst: int) -> None:
    y = resample_once(tone(src, 1000, 1.0), src, dst)
    assert len(y) == dst
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(y)) / dst)
    assert np.max(np.abs(y[200:-200] - ref[200:-200])) < 1e-3  # -60 dB error, no delay left


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (24000, 8000)])
def test_resampler_rejects_what_would_alias(src: int, dst: int) -> None:
    y = resample_once(tone(src, dst / 2 + 1500, 1.0), src, dst)
    level = 20 * math.log10(np.sqrt(np.mean(y[200:-200] ** 2)) / (0.5 / math.sqrt(2)))
    assert level < -50


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=30), st.sampled_from(RATES))
def test_resampler_streaming_equals_one_shot(chunks: list[int], rates: tuple[int, int]) -> None:
    src, dst = rates
    x = np.random.default_rng(len(chunks)).standard_normal(sum(chunks)).astype(np.float32) * 0.1
    r = StreamResampler(src, dst)
    parts, pos = [], 0
    for n in chunks:
        parts.append(r.process(x[pos:pos + n]))
        pos += n
    parts.append(r.flush())
    np.testing.assert_array_equal(np.concatenate(parts), resample_once(x, src, dst))


def test_g711_decoders_match_the_call_path_and_encoders_invert_them() -> None:
    codes = bytes(range(256))
    np.testing.assert_array_equal(ulaw_decode(codes), ulaw_to_pcm16(codes))
    for decode, encode in ((ulaw_decode, ulaw_encode), (alaw_decode, alaw_encode)):
        levels = decode(codes)
        assert decode(encode(levels)).tolist() == levels.tolist()
    ramp = np.arange(-32768, 32768, 7, dtype=np.int16)
    err = np.abs(ulaw_decode(ulaw_encode(ramp)).astype(int) - ramp)
    # companding: fine near zero (audioop rounds -1..-4 to the -8 level, docs/audio.md, mu-law encoding)
    assert err.max() <= 1024 and err[np.abs(ramp.astype(int)) < 100].max() <= 8


def test_tokenize_spells_digits_and_keeps_contractions() -> None:
    assert tokenize("Order 45, I'm here!") == ["order", "four", "five", "i'm", "here"]


def _parse_arpa(text: str) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    probs: dict[tuple[str, ...], float] = {}
    bows: dict[tuple[str, ...], float] = {}
    order = 0
    for line in text.splitlines():
        m = re.match(r"\\(\d)-grams:", line)
        if m:
            order = int(m.group(1))
            continue
        parts = line.split("\t")
        if order and len(parts) >= 2:
            gram = tuple(parts[1].split())
            probs[gram] = 10 ** float(parts[0])
            bows[gram] = 10 ** float(parts[2]) if len(parts) == 3 else 1.0
    return probs, bows


def test_arpa_model_distributions_sum_to_one() -> None:
    sents = [tokenize(s) for s in ["where is my order", "where is my refund", "my order is late", "yes", "no"]]
    vocab = {w for s in sents for w in s} | {"seven", "eight"}
    probs, bows = _parse_arpa(build_arpa(sents, vocab))
    targets = [*sorted(vocab), "</s>"]

    def p(history: tuple[str, ...], w: str) -> float:
        if (*history, w) in probs:
            return probs[(*history, w)]
        if not history:
            return probs[(w,)]
        return bows.get(history, 1.0) * p(history[1:], w)

    sums = defaultdict(float)
    for history in [(), ("<s>",), ("where",), ("my",), ("<s>", "where"), ("is", "my"), ("seven",)]:
        for w in targets:
            sums[history] += p(history, w)
    for history, total in sums.items():
        assert total == pytest.approx(1.0, abs=1e-3), history
    assert p(("is", "my"), "order") > p(("is", "my"), "yes")  # it learned something


def _frames(*segments: tuple[str, int]) -> bytes:
    """16 kHz PCM16: ("speech"|"silence", ms) segments; speech = a voiced harmonic buzz."""
    out = []
    rng = np.random.default_rng(1)
    for kind, ms in segments:
        n = 16 * ms
        if kind == "speech":
            t = np.arange(n) / 16000
            x = sum(0.3 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 20))
            x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
        else:
            x = rng.standard_normal(n) * 1e-4
        out.append(float_to_pcm16(np.asarray(x, dtype=np.float32)))
    return b"".join(out)


def test_vad_reports_cloud_style_times_with_padding_and_silence() -> None:
    vad = Vad(VadConfig(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    audio = _frames(("silence", 1000), ("speech", 1200), ("silence", 1000))
    events = []
    for i in range(0, len(audio), 320 * 2 * 3):  # 60 ms chunks
        events += vad.process(audio[i:i + 1920])
    assert len(events) == 2
    start, stop = events
    assert 980 <= start.detected_ms <= 1060
    assert start.audio_start_ms == start.detected_ms - 300  # includes prefix padding
    assert 2180 <= stop.last_voiced_ms <= 2260
    assert stop.audio_end_ms == stop.last_voiced_ms + 500  # includes the silence


def test_vad_threshold_gates_quiet_speech_and_clicks_do_not_start_turns() -> None:
    quiet = (np.frombuffer(_frames(("speech", 800)), "<i2") // 40).astype("<i2").tobytes()
    assert Vad(VadConfig(threshold=0.9)).process(quiet) == []
    events = Vad(VadConfig(threshold=0.1)).process(quiet)
    assert events and isinstance(events[0], SpeechStart)
    click = _frames(("silence", 200), ("speech", 40), ("silence", 1000))
    assert Vad(VadConfig()).process(click) == []
