"""Caller speech for the simulated caller: text -> 8 kHz mu-law bytes, as a phone would send it.

Uses Debian's ``espeak-ng`` (a voice clearly different from the bot's Piper voice, which helps in
the demo's stereo recording) and falls back to the bundled Piper voice when espeak-ng is missing.
Both go through the gateway's own 24 kHz -> 8 kHz mu-law converter. Blocking: call from a thread.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from service.audio import ModelToCaller

if TYPE_CHECKING:
    from service.realtime.local.tts import Synthesizer


def speak_mulaw(text: str, engine: str = "auto") -> bytes:
    """Synthesize ``text`` as 8 kHz G.711 mu-law (raw bytes, no header). ``engine``: ``piper`` (the
    bundled voice, slowed a little; what the offline recogniser understands best), ``espeak``, or
    ``auto`` (piper when the local extra is installed, else espeak-ng)."""
    if engine == "auto":
        try:
            import piper  # noqa: F401

            engine = "piper"
        except ImportError:
            engine = "espeak"
    if engine == "espeak" and shutil.which("espeak-ng"):
        from service.realtime.local.caller_audio import espeak_pcm24

        pcm24 = espeak_pcm24(text, speed=155)
    else:  # the Piper voice ships with the local extra
        from service.realtime.local.caller_audio import piper_pcm24

        pcm24 = piper_pcm24(text, _piper(), length_scale=1.15)
    return ModelToCaller().process(pcm24)


def wav_mulaw(path: str) -> bytes:
    """A WAV file (PCM16 mono/stereo at any rate) -> 8 kHz mu-law of its first channel."""
    import wave

    import numpy as np

    from service.realtime.local.dsp import resample_once

    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        frames = wav.readframes(wav.getnframes())
        channels, rate = wav.getnchannels(), wav.getframerate()
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, 0].astype(np.float32) / 32768.0
    pcm24 = (np.clip(resample_once(samples, rate, 24000), -1, 1) * 32767).astype("<i2").tobytes()
    return ModelToCaller().process(pcm24)


_SYNTH: list[Synthesizer] = []


def _piper() -> Synthesizer:
    """One Piper voice per process for caller lines (loaded on first use)."""
    if not _SYNTH:
        from service.realtime.local.tts import Synthesizer as _Synthesizer

        _SYNTH.append(_Synthesizer.bundled())
    return _SYNTH[0]
