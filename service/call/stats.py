"""Per-call figures for the one ``call.summary`` line. Plain counters: O(1) memory apart from two
lists of per-turn latencies (one float per bot turn / barge-in)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallStats:
    started_at: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    bot_audio_ms: float = 0.0
    malformed_frames: int = 0
    barge_ins: int = 0
    truncates: int = 0
    dropped_deltas: int = 0
    provider_sends_dropped: int = 0  # messages for a provider socket that had already closed
    responses: int = 0
    response_latencies_ms: list[float] = field(default_factory=list)
    barge_in_reactions_ms: list[float] = field(default_factory=list)
    errors: int = 0
    invalid_transitions: int = 0  # peer events a state object refused (logged, skipped)
    resumed: int = 0  # times this call resumed on a replica after its stream dropped
    dtmf: int = 0  # keys pressed: a count only, never the digits (docs/security.md, "Personal data")
    fillers: int = 0  # filler clips played (docs/first-words.md)
    first_words_ms: float | None = None  # stream start -> first bot audio sent

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.response_latencies_ms)
        return {
            "duration_s": round(time.monotonic() - self.started_at, 2),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bot_audio_ms": round(self.bot_audio_ms),
            "malformed_frames": self.malformed_frames,
            "barge_ins": self.barge_ins,
            "truncates": self.truncates,
            "provider_sends_dropped": self.provider_sends_dropped,
            "responses": self.responses,
            "first_audio_ms_median": round(lat[len(lat) // 2], 1) if lat else None,
            "first_audio_ms_max": round(lat[-1], 1) if lat else None,
            "barge_in_reaction_ms_max": round(max(self.barge_in_reactions_ms), 2) if self.barge_in_reactions_ms else None,
            "errors": self.errors,
            "invalid_transitions": self.invalid_transitions,
            "dtmf_count": self.dtmf,
            "resumed": self.resumed,
            "fillers": self.fillers,
            "first_words_ms": self.first_words_ms,
        }
