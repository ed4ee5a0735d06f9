"""First words: how long the caller waited, from the media stream's ``start`` to the first bot audio
sent to the provider (the greeting, or the resume line), measured once per call and by whether the
model session was pre-warmed (docs/first-words.md). Pure apart from the metric and one log line."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from service import metrics

log = structlog.get_logger(__name__)


class FirstWords:
    """``started_at``: the stream's ``start`` on ``clock`` (default: now). ``sent()`` is called for
    every chunk of bot audio sent; only the first counts. Not thread-safe (one call's loop)."""

    __slots__ = ("_clock", "ms", "prewarmed", "started_at")

    def __init__(self, clock: Callable[[], float], started_at: float | None = None, *, prewarmed: bool = False) -> None:
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.prewarmed = prewarmed
        self.ms: float | None = None  # set by the first bot audio

    def sent(self) -> None:
        if self.ms is not None:
            return
        seconds = max(0.0, self._clock() - self.started_at)
        self.ms = round(seconds * 1000, 1)
        metrics.FIRST_WORDS_SECONDS.labels("true" if self.prewarmed else "false").observe(seconds)
        log.info("call.first_words", first_words_ms=self.ms, prewarmed=self.prewarmed)
