"""Outbound framing and pacing in the call core (service/call/framing.py, BotLeg in service/call/legs.py):
chunks valid for the carrier's ``MediaFraming`` whatever sizes the model's audio arrives in, nothing lost
or reordered, the reply's remainder padded at its end and dropped on barge-in, binary frames for a binary
dialect, and real-time pacing beyond ``max_ahead_ms``."""

from __future__ import annotations

import base64
import json
import time
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.call.framing import WireFramer, ahead_allowance
from service.call.legs import BotLeg
from service.call.stats import CallStats
from service.providers.base import ANY_FRAMING, MediaFraming
from service.providers.exotel.dialect import ExotelDialect
from service.providers.vonage.dialect import VonageDialect
from tests.poll import wait_until
from tests.standins.vonage_caller import VonageFrames

VONAGE_16K = MediaFraming(multiple_of=640, min_bytes=640, max_bytes=640)
EXOTEL = MediaFraming(multiple_of=320, min_bytes=3200, max_bytes=100_000)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9000).map(lambda n: n // 2 * 2), max_size=30),
       st.sampled_from([VONAGE_16K, EXOTEL, ANY_FRAMING]))
def test_chunks_are_valid_ordered_and_lossless(sizes: list[int], framing: MediaFraming) -> None:
    framer = WireFramer(framing, b"\x00\x00")
    sent, out = bytearray(), []
    for index, size in enumerate(sizes):
        audio = bytes((index + k) % 251 for k in range(size))
        sent += audio
        out += framer.push(audio)
    assert framer.pending_bytes < max(framing.min_bytes, framing.multiple_of) or framer.passthrough
    for chunk in out:
        assert len(chunk) % framing.multiple_of == 0 and len(chunk) >= framing.min_bytes
        assert not framing.max_bytes or len(chunk) <= framing.max_bytes
    tail = framer.finish()
    joined = b"".join(out) + (tail or b"")
    assert joined[: len(sent)] == bytes(sent) and not any(joined[len(sent):])  # padding is silence only
    if tail is not None:
        assert len(tail) % framing.multiple_of == 0 and (framing is not VONAGE_16K or len(tail) == 640)


def test_exotel_chunks_grow_to_the_minimum_then_the_tail_is_padded_to_320() -> None:
    framer = WireFramer(EXOTEL, b"\x00\x00")
    assert framer.push(b"\x01" * 1000) == []
    (chunk,) = framer.push(b"\x02" * 3000)
    assert len(chunk) == 3840 and framer.pending_bytes == 160
    assert framer.finish() == b"\x02" * 160 + b"\x00" * 160
    assert framer.finish() is None
    framer.push(b"\x03" * 700)
    assert framer.reset() == 700 and framer.finish() is None


def test_mulaw_padding_is_mulaw_silence_and_bad_framings_are_refused() -> None:
    framer = WireFramer(MediaFraming(multiple_of=160, min_bytes=160), b"\xff")
    framer.push(b"\x00" * 10)
    assert framer.finish() == b"\x00" * 10 + b"\xff" * 150
    with pytest.raises(ValueError):
        WireFramer(MediaFraming(multiple_of=320, min_bytes=3200, max_bytes=1000), b"\x00\x00")
    assert ahead_allowance(0, 1e9) == float("inf") and ahead_allowance(1000, 400) == 600 and ahead_allowance(100, 400) == 0


class _Wire:
    """What the bot leg sent, with monotonic times."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, str | bytes]] = []

    async def send(self, frame: str | bytes) -> None:
        self.frames.append((time.monotonic(), frame))

    def audio(self) -> list[bytes]:
        return [f for _, f in self.frames if isinstance(f, bytes)]


def _tone(ms: int) -> bytes:
    t = np.arange(24 * ms) / 24000
    return (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def _vonage(rate: int = 16000) -> VonageDialect:
    dialect = VonageDialect(rate)
    dialect.parse(VonageFrames(rate, {"call_uuid": str(uuid.uuid4()), "stream_token": "t"}).connected())
    return dialect


async def test_vonage_gets_exact_binary_frames_then_one_notify_per_batch_and_the_padded_tail() -> None:
    wire, dialect = _Wire(), _vonage()
    leg = BotLeg(("audio/x-pcm16le", 16000), dialect, wire.send, CallStats(), time.monotonic)
    for ms in (37, 101, 13, 250):  # model deltas of ragged sizes
        await leg.play("item1", _tone(ms))
    await leg.finish("item1")
    audio = wire.audio()
    assert audio and all(len(frame) == 640 for frame in audio)
    texts = [json.loads(f) for _, f in wire.frames if isinstance(f, str)]
    assert texts and all(t["action"] == "notify" for t in texts)
    assert isinstance(wire.frames[-1][1], str), "every batch of frames is followed by its notify"
    total_ms = sum(len(f) for f in audio) / 32
    assert 380 <= total_ms <= 401 + 20  # all of the 401 ms, the resampler's delay and one padded frame at most
    positions = await leg.flush()
    assert [p.item_id for p in positions] == ["item1"]
    assert json.loads(wire.frames[-1][1]) == {"action": "clear"}


async def test_exotel_replies_go_out_in_chunks_of_at_least_3200_bytes() -> None:
    wire = _Wire()
    dialect = ExotelDialect(8000)
    dialect.parse(json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "MZ1",
                              "start": {"stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1",
                                        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000"}}}))
    leg = BotLeg(("audio/x-pcm16le", 8000), dialect, wire.send, CallStats(), time.monotonic)
    for _ in range(12):
        await leg.play("item1", _tone(40))  # 40 ms deltas: 640 B each at 8 kHz
    await leg.finish("item1")
    media = [json.loads(f) for _, f in wire.frames if isinstance(f, str) and '"media"' in f]
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in media]
    assert sizes and all(s % 320 == 0 for s in sizes) and all(s >= 3200 for s in sizes[:-1])


async def test_pacing_holds_audio_beyond_max_ahead_and_releases_it_at_real_time() -> None:
    wire, dialect = _Wire(), _vonage()
    dialect.media_framing = MediaFraming(multiple_of=640, min_bytes=640, max_bytes=640, max_ahead_ms=100)
    leg = BotLeg(("audio/x-pcm16le", 16000), dialect, wire.send, CallStats(), time.monotonic)
    started = time.monotonic()
    await leg.play("item1", _tone(400))
    assert len(wire.audio()) <= 6, "at most ~100 ms handed over at once"  # 5 frames + rounding
    assert leg.playing
    await wait_until(lambda: len(wire.audio()) >= 19, timeout=5)
    last_sent = wire.frames[-1][0]
    assert last_sent - started >= 0.2, "the rest went out as playback made room, not at once"
    await leg.play("item1", _tone(400))
    held = len(wire.audio())
    await leg.flush()  # barge-in: what is held never goes out
    assert wire.frames[-1][1] == '{"action":"clear"}'
    leg.stop()
    assert len(wire.audio()) == held and not leg.playing
