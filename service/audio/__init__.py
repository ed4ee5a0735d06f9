"""Audio for the call path: G.711 mu-law, 8 kHz <-> 24 kHz streaming resampling, voice features.

Imports only numpy (audio.md; architecture.md "Boundaries"). Public names re-exported here.
"""

from .features import (
    F0_MAX_HZ,
    F0_MIN_HZ,
    SILENCE_DBFS,
    TurnFeatures,
    VoiceBaseline,
    VoiceDelta,
    analyze_turn,
    estimate_f0,
    rms_dbfs,
)
from .g711 import (
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    ULAW_SILENCE,
    pcm16_bytes_to_ulaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
    ulaw_to_pcm16_bytes,
)
from .resample import (
    DOWN_HELD_BACK_MAX,
    FILTER_ATTEN_DB,
    FILTER_CUTOFF_HZ,
    FILTER_TAPS,
    GROUP_DELAY_MS,
    PROTOTYPE,
    PROTOTYPE_QUANTIZED,
    CallerToModel,
    Downsampler,
    ModelToCaller,
    Upsampler,
    design_lowpass,
    kaiser_beta,
)

__all__ = [
    "DOWN_HELD_BACK_MAX",
    "F0_MAX_HZ",
    "F0_MIN_HZ",
    "FILTER_ATTEN_DB",
    "FILTER_CUTOFF_HZ",
    "FILTER_TAPS",
    "GROUP_DELAY_MS",
    "PROTOTYPE",
    "PROTOTYPE_QUANTIZED",
    "SILENCE_DBFS",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ULAW_SILENCE",
    "CallerToModel",
    "Downsampler",
    "ModelToCaller",
    "TurnFeatures",
    "Upsampler",
    "VoiceBaseline",
    "VoiceDelta",
    "analyze_turn",
    "design_lowpass",
    "estimate_f0",
    "kaiser_beta",
    "pcm16_bytes_to_ulaw",
    "pcm16_to_ulaw",
    "rms_dbfs",
    "ulaw_to_pcm16",
    "ulaw_to_pcm16_bytes",
]
