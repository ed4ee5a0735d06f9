"""Voice activity detection for the local engine: webrtcvad on 16 kHz frames + an energy gate.

Pure and cheap (~3 us per 20 ms frame for webrtcvad, plus an RMS). Times are milliseconds of audio
written to the input buffer since the session began, exactly as the cloud counts them
(docs/models/realtime.md#turn-detection): ``SpeechStart.audio_start_ms`` already includes ``prefix_padding_ms``
(clamped at 0) and ``SpeechStop.audio_end_ms`` includes the trailing silence.

Session knobs: ``threshold`` (0-1) picks the webrtcvad aggressiveness (0.5 -> 2) and an energy gate
(-55 dBFS + 30 dB x threshold: 0.5 -> -40 dBFS); ``silence_duration_ms`` ends a turn;
``prefix_padding_ms`` moves the reported start back. Speech starts after 3 voiced frames of the
last 4 (60-80 ms), so a click does not start a turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import webrtcvad

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2  # 640 bytes of PCM16
_START_WINDOW, _START_VOICED = 4, 3


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @property
    def aggressiveness(self) -> int:
        return 0 if self.threshold < 0.3 else 1 if self.threshold < 0.5 else 2 if self.threshold < 0.7 else 3

    @property
    def gate_dbfs(self) -> float:
        return -55.0 + 30.0 * self.threshold


@dataclass(frozen=True, slots=True)
class SpeechStart:
    audio_start_ms: int  # includes prefix padding
    detected_ms: int  # start of the first voiced frame


@dataclass(frozen=True, slots=True)
class SpeechStop:
    audio_end_ms: int  # includes the silence that ended the turn
    last_voiced_ms: int


class Vad:
    """Streaming VAD over 16 kHz PCM16. Not thread-safe. Feed any chunking; state is kept between
    calls (partial frames are buffered, at most 638 bytes)."""

    def __init__(self, config: VadConfig) -> None:
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self.config = config
        self._gate = (10 ** (config.gate_dbfs / 20.0) * 32768.0) ** 2  # mean-square gate
        self._pending = b""
        self._frames = 0  # frames processed
        self._recent: list[bool] = []
        self.in_speech = False
        self._silent_frames = 0
        self._last_voiced_end = 0

    def configure(self, config: VadConfig) -> None:
        """Change the knobs (takes effect at the next frame; state is kept)."""
        self.config = config
        self._vad.set_mode(config.aggressiveness)
        self._gate = (10 ** (config.gate_dbfs / 20.0) * 32768.0) ** 2

    def reset(self) -> None:
        """Forget any speech in progress (input_audio_buffer.clear); time keeps counting."""
        self._recent.clear()
        self.in_speech = False
        self._silent_frames = 0

    @property
    def processed_ms(self) -> int:
        return self._frames * FRAME_MS

    def skip(self, pcm16k_bytes: int) -> None:
        """Advance time without analysing (audio appended while VAD is off)."""
        total = len(self._pending) + pcm16k_bytes
        self._frames += total // FRAME_BYTES
        self._pending = b"\0" * (total % FRAME_BYTES)

    def process(self, pcm16k: bytes) -> list[SpeechStart | SpeechStop]:
        """Analyse more audio; return speech start/stop events in order."""
        data = self._pending + pcm16k
        usable = len(data) - len(data) % FRAME_BYTES
        self._pending = data[usable:]
        events: list[SpeechStart | SpeechStop] = []
        if not usable:
            return events
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32).reshape(-1, FRAME_BYTES // 2)
        energy = np.mean(samples * samples, axis=1)
        for index in range(samples.shape[0]):
            frame = data[index * FRAME_BYTES:(index + 1) * FRAME_BYTES]
            voiced = bool(energy[index] >= self._gate) and self._vad.is_speech(frame, RATE)
            start_ms = self._frames * FRAME_MS
            self._frames += 1
            if not self.in_speech:
                self._recent.append(voiced)
                if len(self._recent) > _START_WINDOW:
                    self._recent.pop(0)
                if sum(self._recent) >= _START_VOICED:
                    first = start_ms - (len(self._recent) - 1 - self._recent.index(True)) * FRAME_MS
                    self.in_speech = True
                    self._silent_frames = 0
                    self._last_voiced_end = start_ms + FRAME_MS
                    self._recent.clear()
                    events.append(SpeechStart(max(0, first - self.config.prefix_padding_ms), first))
            elif voiced:
                self._silent_frames = 0
                self._last_voiced_end = start_ms + FRAME_MS
            else:
                self._silent_frames += 1
                if self._silent_frames * FRAME_MS >= self.config.silence_duration_ms:
                    self.in_speech = False
                    self._silent_frames = 0
                    events.append(SpeechStop(start_ms + FRAME_MS, self._last_voiced_end))
        return events
