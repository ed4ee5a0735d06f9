"""The recorder's voice features (loudness and pitch relative to the caller's baseline) read the stream's
own audio format: the same voice on mu-law 8 kHz (Twilio), L16 big-endian 8 kHz (Telnyx L16 is 16 kHz;
the decode is what matters) and little-endian PCM at 16 kHz (Vonage) or 8 kHz (Exotel) gives the same
figures. Before, every carrier's bytes were read as mu-law, so L16 carriers fed noise to the sentiment."""

from __future__ import annotations

import numpy as np
import pytest

from service.audio.features import VoiceBaseline
from service.audio.g711 import pcm16_to_ulaw
from service.call.recorder import _voice_features


def _voice(rate: int, f0: float, level: float, seconds: float = 1.2) -> np.ndarray:
    """A buzzy voiced sound: a harmonic series at ``f0`` (pitch trackers lock on it), at ``level`` of full scale."""
    t = np.arange(int(rate * seconds)) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (wave / np.max(np.abs(wave)) * level * 32767).astype(np.int16)


def _wire(samples: np.ndarray, codec: str) -> bytes:
    if codec == "mulaw":
        return pcm16_to_ulaw(samples)
    return samples.astype("<i2" if codec == "l16" else ">i2").tobytes()


@pytest.mark.parametrize(("codec", "rate"), [("mulaw", 8000), ("l16be", 8000), ("l16", 16000), ("l16", 8000),
                                             ("l16", 24000)])
def test_a_louder_higher_turn_reads_the_same_on_every_wire_format(codec: str, rate: int) -> None:
    baseline = VoiceBaseline()
    _voice_features(_wire(_voice(rate, 150, 0.1), codec), baseline, codec, rate)  # the caller's usual voice
    louder = _voice_features(_wire(_voice(rate, 210, 0.4), codec), baseline, codec, rate)  # shouting, higher
    assert louder.loudness_delta_db is not None and 10 <= louder.loudness_delta_db <= 14  # 4x amplitude: +12 dB
    assert louder.pitch_ratio is not None and 1.3 <= louder.pitch_ratio <= 1.5  # 210 / 150 = 1.4
