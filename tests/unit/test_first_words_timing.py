"""``FirstWords``: measured once per call, from the stream's start, labelled by pre-warming."""

from __future__ import annotations

from prometheus_client import REGISTRY

from service.call.firstwords import FirstWords


def count(prewarmed: str) -> float:
    return REGISTRY.get_sample_value("callbridge_first_words_seconds_count", {"prewarmed": prewarmed}) or 0.0


def test_only_the_first_bot_audio_counts_from_the_stream_start() -> None:
    now = [100.0]
    before = count("true")
    words = FirstWords(lambda: now[0], started_at=99.25, prewarmed=True)
    now[0] = 100.5
    words.sent()
    now[0] = 105.0
    words.sent()  # later chunks change nothing
    assert words.ms == 1250.0
    assert count("true") == before + 1


def test_without_a_start_time_it_counts_from_construction() -> None:
    now = [7.0]
    before = count("false")
    words = FirstWords(lambda: now[0])
    now[0] = 7.4
    words.sent()
    assert words.ms == 400.0 and not words.prewarmed
    assert count("false") == before + 1
