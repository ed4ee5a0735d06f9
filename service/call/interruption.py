"""Pause, then decide: tell a real interruption from a cough, an echo or an "uh-huh".

Pure (no I/O; times are passed in, in seconds of the call's clock). When the caller starts speaking
while the bot speaks, the driver flushes the provider at once and calls ``pause``; it then feeds the
level of each caller frame (``caller_frame``), the server's ``speech_stopped`` and the input
transcription, and asks ``poll(now)`` (at the latest at ``deadline``). The decision is made once:

    IDLE --pause--> PAUSED --real--> CONFIRMED_REAL --reset--> IDLE
                    PAUSED --false--> FALSE --reset--> IDLE
    PAUSED --reset--> IDLE              (the call or the session ended while deciding)
    IDLE --reset--> IDLE

Rules, first match wins (docs/interruptions.md explains the choice of each):

1. A transcript arrived: a backchannel of the lexicon (English, Japanese) -> FALSE ``backchannel``;
   no words at all -> FALSE ``no_words``; anything else -> REAL ``words``.
2. The caller's voiced time (frames at or above ``min_level_dbfs``, the raised threshold while the
   bot speaks) reached ``sustained_ms`` -> REAL ``sustained_speech``; or the first ``QUIET_MS`` of
   caller audio after the pause held no voiced frame at all -> FALSE ``below_level`` (echo or line
   noise that only the server's lower VAD threshold heard: resumed without waiting the deadline).
3. At ``deadline`` (``pause`` + ``confirm_ms``): the caller is still speaking (a voiced frame in the
   last ``STILL_SPEAKING_MS`` of caller audio) after at least half of ``sustained_ms`` voiced -> REAL
   ``continuing_speech`` (backchannels and coughs are over by then; "wait, stop, ..." is not);
   no frame ever reached ``min_level_dbfs`` -> FALSE ``below_level`` (echo, line noise); otherwise
   FALSE ``short_no_words`` (a cough, a door, a short backchannel whose transcript is not in yet).

A decision is guaranteed by ``deadline``; the state is a few numbers (no buffers), so memory is
constant whatever the caller sends.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

from service.call.machine import Machine

# Short acknowledgements that do not take the turn. Compared after normalisation (lower case, NFKC,
# punctuation and spaces removed, a repeated token collapsed), so "Uh-huh." and "うん、うん" match.
BACKCHANNELS_EN = frozenset({
    "uhhuh", "uhuh", "mhm", "mmhm", "mhmm", "mmhmm", "mmkay", "hmm", "mm", "mmm", "hm", "uh", "um", "ah", "oh", "yeah", "yep", "yes",
    "yup", "ok", "okay", "right", "sure", "alright", "allright", "gotcha", "gotit", "isee", "ohok", "ohokay",
    "cool", "great", "fine", "ahok",
})
BACKCHANNELS_JA = frozenset({
    "はい", "うん", "ええ", "なるほど", "そうですね", "そうですか", "そう", "そうね", "ふーん", "ふん", "へえ", "へー",
    "ああ", "あー", "えー", "はいはい", "うんうん", "そっか", "たしかに", "ですね", "はあ", "ほう", "ほー",
})
BACKCHANNELS = BACKCHANNELS_EN | BACKCHANNELS_JA
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_MAX_TRANSCRIPT_CHARS = 200  # longer transcripts are real turns; never normalised in full
STILL_SPEAKING_MS = 200  # a voiced frame this recent (in caller audio) means the caller is still talking
QUIET_MS = 240  # this much caller audio after the pause without one voiced frame: not the caller talking


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation and whitespace removed (the long-vowel mark ー is kept)."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text[:_MAX_TRANSCRIPT_CHARS]).lower())


def is_backchannel(text: str) -> bool:
    """True if ``text`` is only an acknowledgement ("uh-huh", "okay, okay", "はい", "うん、うん")."""
    words = [normalise(w) for w in re.split(r"[\s,、。.!?！？]+", text[:_MAX_TRANSCRIPT_CHARS]) if normalise(w)]
    if not words or len(words) > 3:
        return False
    joined = "".join(words)
    return joined in BACKCHANNELS or all(w in BACKCHANNELS for w in words)


class InterruptState(enum.Enum):
    IDLE = "idle"
    PAUSED = "paused"
    CONFIRMED_REAL = "confirmed_real"
    FALSE = "false"


INTERRUPT_EVENTS = ("pause", "real", "false", "reset")
INTERRUPT_TRANSITIONS: dict[tuple[InterruptState, str], InterruptState] = {
    (InterruptState.IDLE, "pause"): InterruptState.PAUSED,
    (InterruptState.PAUSED, "real"): InterruptState.CONFIRMED_REAL,
    (InterruptState.PAUSED, "false"): InterruptState.FALSE,
    **{(state, "reset"): InterruptState.IDLE for state in InterruptState},
}


@dataclass(frozen=True, slots=True)
class InterruptPolicy:
    """``confirm_ms``: the longest the decision may take; ``sustained_ms``: voiced time that makes
    it real at once; ``min_level_dbfs``: the caller level that counts as speech while the bot speaks
    (above the session's VAD: speakerphone echo comes back quieter than the caller)."""

    confirm_ms: int = 600
    sustained_ms: int = 400
    min_level_dbfs: float = -40.0

    @classmethod
    def confirming_within(cls, confirm_ms: int, min_level_dbfs: float) -> InterruptPolicy | None:
        """The policy for ``CALLBRIDGE_INTERRUPT_CONFIRM_MS`` (None for 0: interrupt at once);
        sustained speech confirms a real interruption after three quarters of it."""
        if confirm_ms <= 0:
            return None
        return cls(confirm_ms, max(1, confirm_ms * 3 // 4), min_level_dbfs)

    def __post_init__(self) -> None:
        if self.confirm_ms <= 0 or self.sustained_ms <= 0:
            raise ValueError("confirm_ms and sustained_ms must be > 0")
        if self.sustained_ms > self.confirm_ms:
            raise ValueError("sustained_ms must not exceed confirm_ms")


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision and every input it was made from (logged as ``call.interruption``)."""

    real: bool
    reason: str  # words | sustained_speech | continuing_speech | backchannel | no_words | below_level | short_no_words
    after_ms: float  # from the pause to the decision
    voiced_ms: int
    peak_dbfs: float
    transcript: str  # as received, capped; the driver redacts before logging

    @property
    def kind(self) -> str:
        """The ``interruptions_total{kind}`` label: ``real``, or the false kind (``backchannel``, ``noise``)."""
        if self.real:
            return "real"
        return "backchannel" if self.reason == "backchannel" else "noise"


class InterruptionDecider:
    """One call's decider (see the module docstring). Not thread-safe; one event loop drives it."""

    def __init__(self, policy: InterruptPolicy | None = None) -> None:
        self.policy = policy or InterruptPolicy()
        self.machine: Machine[InterruptState] = Machine("interruption", InterruptState.IDLE, INTERRUPT_TRANSITIONS)
        self.decision: Decision | None = None
        self._paused_at = 0.0
        self._voiced_ms = 0
        self._audio_ms = 0  # caller audio heard since the pause
        self._last_voiced_end = -STILL_SPEAKING_MS - 1
        self._peak = -120.0
        self._transcript: str | None = None

    @property
    def state(self) -> InterruptState:
        return self.machine.state

    @property
    def deadline(self) -> float:
        """Clock time by which ``poll`` decides whatever it has heard (only meaningful while PAUSED)."""
        return self._paused_at + self.policy.confirm_ms / 1000.0

    def pause(self, now: float) -> None:
        """The caller started speaking while the bot spoke, and playback was flushed."""
        self.machine.fire("pause")
        self.decision = None
        self._paused_at, self._voiced_ms, self._peak, self._transcript = now, 0, -120.0, None
        self._audio_ms, self._last_voiced_end = 0, -STILL_SPEAKING_MS - 1

    def caller_frame(self, level_dbfs: float, frame_ms: int) -> None:
        """The level of one caller frame heard while paused (ignored in any other state)."""
        if self.state is not InterruptState.PAUSED:
            return
        self._peak = max(self._peak, level_dbfs)
        self._audio_ms += frame_ms
        if level_dbfs >= self.policy.min_level_dbfs:
            self._voiced_ms += frame_ms
            self._last_voiced_end = self._audio_ms

    def transcript(self, text: str) -> None:
        """The input transcription of the caller's speech (ignored unless PAUSED)."""
        if self.state is InterruptState.PAUSED:
            self._transcript = text[:_MAX_TRANSCRIPT_CHARS]

    def poll(self, now: float) -> Decision | None:
        """The decision, if the inputs so far (or the deadline) make one; returned once."""
        if self.state is not InterruptState.PAUSED:
            return None
        real: bool | None = None
        reason = ""
        if self._transcript is not None:
            if is_backchannel(self._transcript):
                real, reason = False, "backchannel"
            elif not normalise(self._transcript):
                real, reason = False, "no_words"
            else:
                real, reason = True, "words"
        elif self._voiced_ms >= self.policy.sustained_ms:
            real, reason = True, "sustained_speech"
        elif self._voiced_ms == 0 and self._audio_ms >= min(QUIET_MS, self.policy.confirm_ms):
            real, reason = False, "below_level"
        elif now >= self.deadline:
            speaking = self._audio_ms - self._last_voiced_end <= STILL_SPEAKING_MS
            if speaking and self._voiced_ms >= self.policy.sustained_ms / 2:
                real, reason = True, "continuing_speech"
            else:
                below = self._peak < self.policy.min_level_dbfs
                real, reason = False, "below_level" if below else "short_no_words"
        if real is None:
            return None
        self.machine.fire("real" if real else "false")
        self.decision = Decision(real, reason, round((now - self._paused_at) * 1000.0, 3), self._voiced_ms,
                                 round(self._peak, 1), self._transcript or "")
        return self.decision

    def reset(self) -> None:
        """Back to IDLE (after acting on a decision, or when the call/session ends)."""
        self.machine.fire("reset")
