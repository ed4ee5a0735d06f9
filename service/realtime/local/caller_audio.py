"""Synthetic caller speech for tests, benchmarks and demos: Piper or espeak-ng, optionally passed
through the telephone path (PCM16 24 kHz -> 8 kHz mu-law -> back to 24 kHz with ``service.audio``).

Also ``word_errors`` (Levenshtein distance over words) for recognition accuracy figures. Blocking
functions (subprocess, synthesis): call them from a worker thread in async code.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from .dsp import float_to_pcm16, resample_once
from .lm import tokenize
from .tts import Synthesizer, VoiceSettings


def espeak_pcm24(text: str, voice: str = "en-us", speed: int = 160) -> bytes:
    """espeak-ng speech as PCM16 24 kHz. Its ``--stdout`` WAV header carries bogus size fields
    (docs/models/local.md#tts), so everything after the ``data`` chunk header is read as samples."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed")
    wav = subprocess.run([binary, "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True,
                         check=True, timeout=30).stdout
    rate = int.from_bytes(wav[24:28], "little")
    start = wav.find(b"data") + 8
    body = wav[start:start + (len(wav) - start) // 2 * 2]
    x = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
    return float_to_pcm16(resample_once(x, rate, 24000))


def piper_pcm24(text: str, synthesizer: Synthesizer, length_scale: float = 1.0) -> bytes:
    """Piper speech (the bundled voice) as PCM16 24 kHz."""
    return synthesizer.sentence_pcm24(text, VoiceSettings(length_scale=length_scale))


def telephone(pcm24: bytes) -> bytes:
    """PCM16 24 kHz through 8 kHz mu-law and back (the call path's own converters)."""
    from service.audio import CallerToModel, ModelToCaller

    mulaw = ModelToCaller().process(pcm24)
    return CallerToModel().process(mulaw)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference word count) after the recogniser's tokenisation."""
    ref, hyp = tokenize(reference), tokenize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
            prev, row[j] = row[j], cur
    return row[len(hyp)], len(ref)


# Caller sentences for accuracy figures: in-script examples and paraphrases (not in the script).
EVAL_SENTENCES: tuple[str, ...] = (
    "where is my order",
    "I want to check the status of my order",
    "my order number is four five six seven",
    "one two three four five",
    "I want a refund",
    "can I get my money back",
    "what are your opening hours",
    "are you open on the weekend",
    "I have a question about my bill",
    "why was I charged twice",
    "I want to speak to a human",
    "let me speak to an agent",
    "this is ridiculous",
    "this is the third time I'm calling",
    "thank you",
    "no that's all",
    "yes please",
    "goodbye",
    # paraphrases
    "when will my package be delivered",
    "I would like to return my order",
    "what time do you open",
    "can I talk to a person please",
    "I'm really frustrated",
    "my order number is eight one nine two",
)
