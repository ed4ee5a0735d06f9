"""The filler (docs/first-words.md, "No dead air"): the pure plan's table and timing, the asyncio
driver against recording fakes (no sleeps: every wait is on an event), and the synthesised clip
measured as a signal (level, pitch, spectrum) and as a WAV loader's output."""

from __future__ import annotations

import asyncio
import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from service.audio.filler_clip import RATE, ClipError, load_wav_clip, synthesize_hmm
from service.call.filler import (
    AUDIBLE_RECHECK_S,
    FILLER_EVENTS,
    FILLER_TRANSITIONS,
    MAX_PLAYS,
    SOUNDING_MARGIN_S,
    Filler,
    FillerClip,
    FillerPlan,
    FillerState,
    NoFiller,
    filler_settings,
    make_filler,
)
from service.call.machine import InvalidTransition
from service.config import Settings
from service.providers.base import ENCODING_L16, ENCODING_MULAW

CLIP_S = 0.5


def plan(after_s: float = 0.8, repeat_s: float = 2.0) -> FillerPlan:
    return FillerPlan(after_s=after_s, repeat_s=repeat_s, clip_s=CLIP_S)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(FillerState, FILLER_EVENTS)))
def test_every_state_and_event_follows_the_table(state: FillerState, event: str) -> None:
    machine = plan().machine
    machine.state = state
    if (state, event) in FILLER_TRANSITIONS:
        assert machine.fire(event) is FILLER_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            machine.fire(event)
        assert machine.state is state


def test_a_wait_plays_after_its_delay_then_repeats_after_the_gap() -> None:
    p = plan()
    assert p.start("turn", now=10.0) == pytest.approx(10.8)
    assert p.start("tool", now=10.5) is None  # a second reason keeps the first deadline
    assert p.reason == "turn"
    assert p.due(10.8, audible=False) is True
    assert p.state is FillerState.PLAYING
    p.played(10.8)
    assert p.deadline == pytest.approx(10.8 + CLIP_S + 2.0)
    assert p.due(p.deadline, audible=False) is True
    p.played(13.3)
    assert p.plays == 2


def test_plays_are_bounded_per_wait() -> None:
    p = plan(repeat_s=0.1)
    p.start("tool", now=0.0)
    now = 0.8
    while p.deadline is not None:
        now = p.deadline
        if p.due(now, audible=False):
            p.played(now)
    assert p.plays == MAX_PLAYS


def test_repeat_zero_plays_once() -> None:
    p = plan(repeat_s=0.0)
    p.start("turn", now=0.0)
    assert p.due(0.8, audible=False)
    p.played(0.8)
    assert p.deadline is None


def test_an_audible_bot_postpones_the_filler() -> None:
    p = plan()
    p.start("tool", now=0.0)
    assert p.due(0.8, audible=True) is False
    assert p.state is FillerState.WAITING
    assert p.deadline == pytest.approx(0.8 + AUDIBLE_RECHECK_S)
    assert p.due(p.deadline, audible=False) is True


def test_stop_flushes_only_while_the_clip_may_still_sound() -> None:
    p = plan()
    p.start("turn", now=0.0)
    p.due(0.8, audible=False)
    p.played(0.8)
    decision = p.stop(0.8 + CLIP_S / 2)
    assert decision.flush and decision.plays == 1 and decision.reason == "turn"
    assert p.state is FillerState.IDLE and p.deadline is None

    p.start("turn", now=5.0)
    p.due(5.8, audible=False)
    p.played(5.8)
    assert not p.stop(5.8 + CLIP_S + SOUNDING_MARGIN_S + 0.01).flush  # it has ended: no clear needed

    p.start("turn", now=9.0)
    decision = p.stop(9.1)  # before it ever played
    assert not decision.flush and decision.plays == 0


class Provider:
    """Records what the filler sends, in order; ``audible`` is what the ledger would say."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.clip_sent = asyncio.Event()
        self.audible = False

    async def send_clip(self, wire: bytes) -> None:
        self.sent.append(("media", len(wire)))
        self.clip_sent.set()

    async def flush(self) -> None:
        self.sent.append(("clear", 0))


def driver(provider: Provider, *, after_ms: int = 20, repeat_ms: int = 0) -> Filler:
    clip = FillerClip(synthesize_hmm())
    loop = asyncio.get_running_loop()
    return Filler(clip=clip, codec=(ENCODING_MULAW, 8000), after_ms=after_ms, repeat_ms=repeat_ms,
                  send_clip=provider.send_clip, flush=provider.flush, audible=lambda: provider.audible,
                  clock=loop.time)


async def test_driver_plays_the_clip_then_stop_clears_it_before_real_audio() -> None:
    provider = Provider()
    filler = driver(provider)
    filler.start("turn")
    await asyncio.wait_for(provider.clip_sent.wait(), 5)
    await filler.stop("bot_audio")  # within the clip's duration: it may still sound
    assert provider.sent == [("media", len(FillerClip(synthesize_hmm()).wire((ENCODING_MULAW, 8000)))), ("clear", 0)]
    assert not filler.active and filler.plays_total == 1


async def test_driver_stopped_before_the_deadline_sends_nothing() -> None:
    provider = Provider()
    filler = driver(provider, after_ms=60_000)
    filler.start("turn")
    await filler.stop("bot_audio")
    filler.start("turn")
    filler.cancel()
    assert provider.sent == []
    assert not filler.active


async def test_driver_waits_while_the_bot_is_audible() -> None:
    provider = Provider()
    provider.audible = True
    filler = driver(provider)
    filler.start("tool")
    loop = asyncio.get_running_loop()
    quiet = loop.create_future()
    loop.call_later(0.15, lambda: (setattr(provider, "audible", False), quiet.set_result(loop.time())))
    await asyncio.wait_for(provider.clip_sent.wait(), 5)
    went_quiet = await quiet
    assert loop.time() >= went_quiet  # the clip went out only after the bot fell silent
    await filler.stop("bot_audio")


def test_no_filler_when_the_delay_is_zero() -> None:
    assert filler_settings(0, 2000, None) is None
    assert isinstance(make_filler(None, (ENCODING_MULAW, 8000), send_clip=Provider().send_clip, flush=Provider().flush,
                                  audible=lambda: False, clock=lambda: 0.0), NoFiller)


# --- the clip ---------------------------------------------------------------------------------------


def test_the_synthesised_clip_is_a_short_soft_low_hum_and_deterministic() -> None:
    pcm = synthesize_hmm()
    assert pcm == synthesize_hmm()
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert 0.4 <= len(x) / RATE <= 0.8
    rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)) / 32767)
    assert -28 < rms_db < -16, rms_db
    assert np.abs(x).max() < 32767 * 0.5  # no clipping, headroom left
    assert abs(x[:24]).max() < 500 and abs(x[-24:]).max() < 500  # soft attack and release: no click
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    assert spectrum[freqs < 1000].sum() / spectrum.sum() > 0.8  # a nasal murmur: energy low
    voiced = spectrum[(freqs > 60) & (freqs < 400)]
    pitch = freqs[(freqs > 60) & (freqs < 400)][np.argmax(voiced)]
    assert 90 <= pitch <= 300, pitch  # the fundamental or its second harmonic: a voice, not a tone


def test_the_clip_encodes_once_per_codec_and_keeps_its_length() -> None:
    clip = FillerClip(synthesize_hmm())
    mulaw = clip.wire((ENCODING_MULAW, 8000))
    assert clip.wire((ENCODING_MULAW, 8000)) is mulaw
    assert abs(len(mulaw) / 8000 - clip.duration_s) < 0.05
    l16 = clip.wire((ENCODING_L16, 16000))
    assert abs(len(l16) / 32000 - clip.duration_s) < 0.05


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_a_wav_clip_is_resampled_to_24k_keeping_its_tone(tmp_path: Path, rate: int) -> None:
    t = np.arange(int(rate * 0.5)) / rate
    tone = 8000 * np.sin(2 * np.pi * 500 * t)
    pcm = load_wav_clip(write_wav(tmp_path / "c.wav", tone, rate))
    y = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert abs(len(y) / RATE - 0.5) < 0.03
    spectrum = np.abs(np.fft.rfft(y[RATE // 20: -RATE // 20]))
    freqs = np.fft.rfftfreq(len(y) - RATE // 10, 1 / RATE)
    assert abs(freqs[np.argmax(spectrum)] - 500) < 10


def test_bad_wav_clips_are_refused_with_the_reason(tmp_path: Path) -> None:
    one_s = np.zeros(8000)
    cases = {
        "stereo": (write_wav(tmp_path / "s.wav", np.zeros(16000), 8000, channels=2), "mono"),
        "rate": (write_wav(tmp_path / "r.wav", np.zeros(44100), 44100), "sample rate"),
        "long": (write_wav(tmp_path / "l.wav", np.zeros(8000 * 4), 8000), "at most"),
        "empty": (write_wav(tmp_path / "e.wav", one_s[:0], 8000), "no audio"),
    }
    (tmp_path / "n.wav").write_bytes(b"not a wav file at all")
    cases["garbage"] = (tmp_path / "n.wav", "not a readable WAV")
    cases["missing"] = (tmp_path / "missing.wav", "not a readable WAV")
    for path, words in cases.values():
        with pytest.raises(ClipError, match=words):
            load_wav_clip(path)


def test_a_bad_filler_file_stops_start_up_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        Settings(filler_file=write_wav(tmp_path / "r.wav", np.zeros(4410), 44100))
    good = write_wav(tmp_path / "g.wav", 4000 * np.sin(np.arange(4000) / 5), 8000)
    settings = Settings(filler_file=good, filler_after_ms=500)
    configured = filler_settings(settings.filler_after_ms, settings.filler_repeat_ms, settings.filler_file)
    assert configured is not None and abs(configured.clip.duration_s - 0.5) < 0.03


async def test_a_failed_clip_send_is_logged_and_the_wait_can_still_stop() -> None:
    provider = Provider()
    failed = asyncio.Event()

    async def broken(wire: bytes) -> None:
        failed.set()
        raise ConnectionResetError("socket gone")

    loop = asyncio.get_running_loop()
    filler = Filler(clip=FillerClip(synthesize_hmm()), codec=(ENCODING_MULAW, 8000), after_ms=10, repeat_ms=0,
                    send_clip=broken, flush=provider.flush, audible=lambda: False, clock=loop.time)
    filler.start("turn")
    await asyncio.wait_for(failed.wait(), 5)
    await filler.stop("bot_audio")  # waits for the failed send; nothing raised
    assert filler.plays_total == 0 and not filler.active
