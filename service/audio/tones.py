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
