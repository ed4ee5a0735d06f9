"""Short generated signals the gateway plays itself (no model involved)."""

from __future__ import annotations

import math

import numpy as np


def apology_pcm16(rate: int = 24000) -> bytes:
    """0.6 s descending two-note chime at about -12 dBFS, PCM16 mono at ``rate`` (played when a call
    fails, so the caller hears something before the line closes)."""
    t = np.arange(int(0.3 * rate)) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    notes = [np.sin(2 * math.pi * f * t) * env for f in (660.0, 440.0)]
    return (np.concatenate(notes) * 8000).astype("<i2").tobytes()


def waiting_chime_pcm16(rate: int = 24000, seconds: float = 4.0) -> bytes:
    """A soft "still working" pattern for while a business tool runs: every 1 s a short rising
    two-note chime (0.12 s per note, 10 ms fades) at about -24 dBFS peak, silence between.
    PCM16 mono at ``rate``; ``seconds`` long (a whole number of 1 s periods)."""
    n = int(0.12 * rate)
    t = np.arange(n) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    chime = np.concatenate([np.sin(2 * math.pi * f * t) * env for f in (523.25, 659.25)])
    period = np.zeros(rate)
    period[: chime.size] = chime
    return (np.tile(period, max(1, round(seconds))) * 2000).astype("<i2").tobytes()
