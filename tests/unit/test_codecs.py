"""The carrier codec API (service/audio/codecs.py): names, rates, byte order, exactness, signal quality.

Every (codec, rate) path must equal its parts (G.711 tables or 16-bit split, then the resampler that
test_resample.py checks against scipy), whatever the chunking, and carry a tone through a round trip at
the right level with the noise floor G.711 or 16-bit PCM allows (docs/audio.md, "Codec names").
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio import codecs, resample
from service.audio.codecs import CODEC_NAMES, codec_spec, make_inbound, make_outbound
from service.audio.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

PATHS = [("mulaw", 8000), ("alaw", 8000), ("l16", 8000), ("l16", 16000), ("l16", 24000), ("l16be", 16000)]
ALIASES = {"PCMU": "mulaw", "pcmu": "mulaw", "MULAW": "mulaw", "PCMA": "alaw", "alaw": "alaw", "L16": "l16",
           "L16BE": "l16be"}


def tone(freq: float, fs: int, n: int, amp: float = 16384.0) -> np.ndarray:
    return np.rint(amp * np.cos(2 * np.pi * freq * np.arange(n) / fs + 0.3)).astype(np.int16)


def line_db(y: np.ndarray, fs: int, lo: float, hi: float) -> float:
    w = np.blackman(len(y))
    spec = np.abs(np.fft.rfft(y.astype(np.float64) * w)) / (w.sum() / 2) / 32768.0
    f = np.fft.rfftfreq(len(y), 1 / fs)
    return float(20 * np.log10(spec[(f >= lo) & (f <= hi)].max() + 1e-12))


def wire_encode(codec: str, samples: np.ndarray) -> bytes:
    """What a carrier would put on the wire for these samples (independent of the code under test)."""
    if codec == "mulaw":
        return pcm16_to_ulaw(samples)
    if codec == "alaw":
        return pcm16_to_alaw(samples)
    return samples.astype("<i2" if codec == "l16" else ">i2").tobytes()


def wire_decode(codec: str, payload: bytes) -> np.ndarray:
    if codec == "mulaw":
        return ulaw_to_pcm16(payload)
    if codec == "alaw":
        return alaw_to_pcm16(payload)
    return np.frombuffer(payload, "<i2" if codec == "l16" else ">i2").astype(np.int16)


def resampler(rate: int, inbound: bool) -> resample.Resampler | None:
    return {
        (8000, True): resample.Upsampler, (8000, False): resample.Downsampler,
        (16000, True): resample.Up16To24, (16000, False): resample.Down24To16,
    }.get((rate, inbound), lambda: None)()


# ------------------------------------------------------------------------------------- names, rates
def test_names_are_case_insensitive_and_documented() -> None:
    for name, canonical in ALIASES.items():
        assert codec_spec(name, 8000).codec == canonical
    assert set(CODEC_NAMES) == {"mulaw", "pcmu", "alaw", "pcma", "l16", "l16be",
                                "audio/x-mulaw", "audio/x-alaw", "audio/l16", "audio/x-pcm16le"}


@pytest.mark.parametrize(("codec", "rate", "match"), [
    ("opus", 8000, "unknown codec"), ("", 8000, "unknown codec"), ("alaw", 16000, "does not run at"),
    ("PCMU", 24000, "does not run at"), ("l16", 44100, "does not run at"), ("l16", 0, "does not run at"),
])
def test_unknown_codec_or_rate_is_a_clear_error(codec: str, rate: int, match: str) -> None:
    for factory in (make_inbound, make_outbound, codec_spec):
        with pytest.raises(ValueError, match=match):
            factory(codec, rate)


def test_non_string_codec_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        codec_spec(None, 8000)  # type: ignore[arg-type]


def test_frame_sizes() -> None:
    assert codec_spec("PCMU", 8000).frame_bytes() == 160
    assert codec_spec("PCMA", 8000).frame_bytes() == 160
    assert [codec_spec("l16", r).frame_bytes() for r in (8000, 16000, 24000)] == [320, 640, 960]
    assert codec_spec("l16", 16000).frame_bytes(ms=100) == 3200


def test_mulaw_uses_the_hot_path_objects() -> None:
    assert isinstance(make_inbound("PCMU", 8000), resample.CallerToModel)  # type: ignore[arg-type]
    assert isinstance(make_outbound("mulaw", 8000), resample.ModelToCaller)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(("codec", "rate"), PATHS)
def test_inbound_and_outbound_equal_their_parts(codec: str, rate: int) -> None:
    rng = np.random.default_rng(rate + len(codec))
    caller = (rng.standard_normal(rate // 10) * 6000).clip(-32768, 32767).astype(np.int16)
    payload = wire_encode(codec, caller)
    up = resampler(rate, inbound=True)
    expected_in = wire_decode(codec, payload) if up is None else up.process(wire_decode(codec, payload))
    got_in = make_inbound(codec, rate).process(payload)
    assert got_in == expected_in.astype("<i2").tobytes()

    model = (rng.standard_normal(2400) * 6000).clip(-32768, 32767).astype(np.int16)
    down = resampler(rate, inbound=False)
    expected_samples = model if down is None else down.process(model)
    assert make_outbound(codec, rate).process(model.astype("<i2").tobytes()) == wire_encode(codec, expected_samples)


@settings(max_examples=80, deadline=None)
@given(path=st.sampled_from(PATHS), sizes=st.lists(st.integers(0, 900), min_size=1, max_size=10),
       seed=st.integers(0, 2**32 - 1))
def test_any_chunking_equals_one_shot(path: tuple[str, int], sizes: list[int], seed: int) -> None:
    """Byte-level chunks (odd splits of 16-bit samples included): nothing lost, nothing reordered."""
    codec, rate = path
    rng = np.random.default_rng(seed)
    wire = rng.integers(0, 256, sum(sizes), dtype=np.uint8).tobytes()
    pcm24 = rng.integers(0, 256, sum(sizes), dtype=np.uint8).tobytes()
    whole_in, whole_out = make_inbound(codec, rate).process(wire), make_outbound(codec, rate).process(pcm24)
    inbound, outbound = make_inbound(codec, rate), make_outbound(codec, rate)
    got_in, got_out, i = [], [], 0
    for k in sizes:
        got_in.append(inbound.process(wire[i : i + k]))
        got_out.append(outbound.process(pcm24[i : i + k]))
        i += k
    assert b"".join(got_in) == whole_in and b"".join(got_out) == whole_out
    samples_in = len(wire) // codec_spec(codec, rate).bytes_per_sample
    assert len(whole_in) == 2 * (samples_in * 24000 // rate)
    assert len(whole_out) == codec_spec(codec, rate).bytes_per_sample * ((len(pcm24) // 2) * rate // 24000)


def test_l16_byte_orders() -> None:
    x = tone(700, 16000, 640)
    little, big = x.astype("<i2").tobytes(), x.astype(">i2").tobytes()
    assert make_inbound("l16", 16000).process(little) == make_inbound("l16be", 16000).process(big)
    pcm24 = tone(700, 24000, 960).astype("<i2").tobytes()
    out_le = np.frombuffer(make_outbound("l16", 16000).process(pcm24), "<i2")
    out_be = np.frombuffer(make_outbound("l16be", 16000).process(pcm24), ">i2")
    assert np.array_equal(out_le, out_be) and np.abs(out_le).max() > 10000
    assert make_inbound("l16", 24000).process(little) == little  # the model's own format: unchanged


@pytest.mark.parametrize(("codec", "rate"), PATHS)
def test_reset_returns_to_silence(codec: str, rate: int) -> None:
    spec = codec_spec(codec, rate)
    inbound, outbound = make_inbound(codec, rate), make_outbound(codec, rate)
    inbound.process(wire_encode(codec, tone(1000, rate, rate // 10 + 1, amp=30000))[:-1])
    outbound.process(tone(1000, 24000, 2401, amp=30000).astype("<i2").tobytes() + b"\x01")
    inbound.reset()
    outbound.reset()
    assert inbound.held_back == 0 and outbound.held_back == 0
    silence = spec.silence * (spec.rate // 50)
    silence_in = inbound.process(silence)
    assert silence_in == make_inbound(codec, rate).process(silence)  # reset == fresh
    if int(wire_decode(codec, spec.silence)[0]) == 0:  # (A-law has no zero code: its silence is +8)
        assert not any(silence_in)
    assert outbound.process(bytes(960)) == spec.silence * (spec.rate // 50)


# ------------------------------------------------------------------------------------------ signal
@pytest.mark.parametrize(("codec", "rate"), PATHS)
def test_round_trip_keeps_a_tone_and_adds_only_codec_noise(codec: str, rate: int) -> None:
    """Model tone -> wire -> model: the 1 kHz line keeps its level (+-0.2 dB), everything else is at
    least 30 dB (G.711's quantisation floor) or 60 dB (16-bit PCM) below it."""
    pcm24 = tone(1000, 24000, 24000 * 2).astype("<i2").tobytes()
    outbound, inbound = make_outbound(codec, rate), make_inbound(codec, rate)
    back = np.frombuffer(b"".join(inbound.process(outbound.process(pcm24[i : i + 4800]))
                                  for i in range(0, len(pcm24), 4800)), "<i2")[2400:]
    level = line_db(back, 24000, 990, 1010)
    assert level == pytest.approx(-6.0, abs=0.2)
    rest = max(line_db(back, 24000, 0, 970), line_db(back, 24000, 1030, 12000))
    floor = 30.0 if codec in ("mulaw", "alaw") else 60.0
    assert level - rest >= floor, (level, rest)


def test_codec_objects_hold_no_more_than_a_group() -> None:
    """Bounded state: after any input, at most M - 1 input samples wait for their group."""
    outbound = make_outbound("l16", 16000)
    for n in range(1, 40):
        outbound.process(bytes(2 * n))
        assert outbound.held_back <= 2
    assert isinstance(codecs.MODEL_RATE, int)


@pytest.mark.parametrize(("codec", "rate"), PATHS)
def test_compiled_and_reference_paths_give_the_same_bytes(codec: str, rate: int) -> None:
    rng = np.random.default_rng(rate)
    wire = rng.integers(0, 256, 3 * rate // 50 + 1, dtype=np.uint8).tobytes()
    pcm24 = rng.integers(0, 256, 3 * 4800 + 1, dtype=np.uint8).tobytes()
    default_in, reference_in = make_inbound(codec, rate), make_inbound(codec, rate, compiled=False)
    default_out, reference_out = make_outbound(codec, rate), make_outbound(codec, rate, compiled=False)
    for i in range(0, len(wire), 97):
        assert default_in.process(wire[i : i + 97]) == reference_in.process(wire[i : i + 97])
    for i in range(0, len(pcm24), 1001):
        assert default_out.process(pcm24[i : i + 1001]) == reference_out.process(pcm24[i : i + 1001])
        assert default_out.held_back == reference_out.held_back


@pytest.mark.parametrize(("codec", "rate"), [("mulaw", 8000), ("alaw", 8000), ("l16", 16000), ("l16be", 8000)])
def test_wire_level_measures_a_sine_in_every_codec(codec: str, rate: int) -> None:
    """A full-scale/10 sine is -23 dBFS RMS (20*log10(0.1/sqrt 2)) on every wire format."""
    from service.audio.codecs import codec_spec, make_outbound, wire_level_dbfs

    spec = codec_spec(codec, rate)
    t = np.arange(24000 // 5) / 24000
    pcm = (3276.8 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    wire = make_outbound(codec, rate).process(pcm)
    assert wire_level_dbfs(spec, wire) == pytest.approx(-23.0, abs=0.5)
    assert wire_level_dbfs(spec, spec.silence * 160) <= -60.0
    assert wire_level_dbfs(spec, b"") == -120.0
    if spec.bytes_per_sample == 2:
        assert wire_level_dbfs(spec, wire + b"\x01") == wire_level_dbfs(spec, wire)
