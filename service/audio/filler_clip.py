"""The filler the caller hears while the bot is slow to answer: a short, soft "hmm", synthesised here.

Provenance (docs/first-words.md, "The filler clip"): the default clip is generated at start-up by this
module's own formant synthesiser (no recording, no third-party voice, no licence to track): a
Rosenberg glottal pulse train with a gently falling pitch (about 125 Hz to 100 Hz, slight jitter) and a
little breath noise, shaped by the resonances of a nasal murmur (/m/: about 270, 1200, 2300 and
3300 Hz) and a soft attack and release. It is deterministic (seeded), PCM16 24 kHz mono, about
550 ms long at about -21 dBFS RMS. An operator can replace it with a WAV file (``load_wav_clip``).

Pure numpy; runs once per process (a few tens of milliseconds), never on the frame path.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.audio.resample import make_resampler

RATE = 24000
#: A clip longer than this is refused: a filler is a short acknowledgement, not a hold message.
MAX_CLIP_S = 3.0
_FORMANTS = ((270.0, 80.0, 1.0), (1200.0, 250.0, 0.25), (2300.0, 300.0, 0.12), (3300.0, 400.0, 0.05))


class ClipError(ValueError):
    """A filler clip file that cannot be used (what is wrong is in the message)."""


def _resonate(x: npt.NDArray[np.float64], freq: float, bandwidth: float) -> npt.NDArray[np.float64]:
    """A two-pole resonator (unity gain at DC), the building block of a formant synthesiser."""
    r = math.exp(-math.pi * bandwidth / RATE)
    a1, a2 = 2 * r * math.cos(2 * math.pi * freq / RATE), -r * r
    gain = 1 - a1 - a2
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, value in enumerate(x.tolist()):
        y0 = gain * value + a1 * y1 + a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def synthesize_hmm(duration_s: float = 0.55, seed: int = 15) -> bytes:
    """The default filler: a thoughtful "hmm" (PCM16 24 kHz mono, little-endian), same bytes every run."""
    rng = np.random.default_rng(seed)
    n = int(RATE * duration_s)
    t = np.arange(n) / RATE
    f0 = 100.0 + 25.0 * np.exp(-3.0 * t / duration_s) + 4.0 * np.sin(2 * np.pi * 1.3 * t)
    source = np.zeros(n)
    position = 0
    while position < n:
        period = int(RATE / (f0[position] * (1 + rng.normal(0.0, 0.005))))
        open_len = int(period * 0.6)
        k = np.arange(min(period, n - position))
        # Rosenberg pulse: a rising half-cosine, then a quick closing quarter-cosine, then closed.
        pulse = np.where(k < open_len * 0.7, 0.5 * (1 - np.cos(np.pi * k / max(1, open_len * 0.7))),
                         np.where(k < open_len, np.cos(0.5 * np.pi * (k - open_len * 0.7) / max(1, open_len * 0.3)), 0.0))
        source[position:position + len(k)] = pulse
        position += period
    flow_derivative = np.diff(source, prepend=0.0)
    breath = rng.normal(0.0, 0.02, n)
    excitation = flow_derivative + breath * np.convolve(source, np.ones(8) / 8, mode="same")
    voice = np.zeros(n)
    for freq, bandwidth, weight in _FORMANTS:
        voice += weight * _resonate(excitation, freq, bandwidth)
    attack, release = int(0.06 * RATE), int(0.22 * RATE)
    envelope = np.ones(n)
    envelope[:attack] = 0.5 * (1 - np.cos(np.pi * np.arange(attack) / attack))
    envelope[n - release:] = 0.5 * (1 + np.cos(np.pi * np.arange(release) / release))
    voice *= envelope
    voice -= voice.mean()
    target_rms = 10 ** (-21.0 / 20) * 32767
    voice *= target_rms / max(1e-9, float(np.sqrt(np.mean(voice[attack:n - release] ** 2))))
    return np.clip(np.round(voice), -32767, 32767).astype("<i2").tobytes()


def load_wav_clip(path: Path) -> bytes:
    """A filler clip from a WAV file: mono, 16-bit PCM, 8, 16 or 24 kHz, at most ``MAX_CLIP_S`` long;
    returned as PCM16 24 kHz (resampled once). ``ClipError`` says what is wrong otherwise."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate, frames = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            if channels != 1 or width != 2:
                raise ClipError(f"{path}: need mono 16-bit PCM, got {channels} channel(s) of {8 * width} bits")
            if rate not in (8000, 16000, RATE):
                raise ClipError(f"{path}: sample rate {rate} Hz; use 8000, 16000 or 24000 Hz")
            if frames > MAX_CLIP_S * rate:
                raise ClipError(f"{path}: {frames / rate:.2f} s long; a filler must be at most {MAX_CLIP_S:.0f} s")
            if frames == 0:
                raise ClipError(f"{path}: no audio")
            data = wav.readframes(frames)
    except (OSError, EOFError, wave.Error) as error:
        raise ClipError(f"{path}: not a readable WAV file ({error})") from None
    if rate == RATE:
        return data
    samples = np.frombuffer(data, dtype="<i2")
    resampler = make_resampler(rate, RATE, compiled=False)
    tail = np.zeros(rate // 50, dtype=np.int16)  # 20 ms of silence pushes out what the filter holds back
    out = np.concatenate([resampler.process(samples), resampler.process(tail)])
    return out.astype("<i2").tobytes()
