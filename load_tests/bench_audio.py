"""Benchmark of the per-frame audio paths, with the resampler quality figures measured on signals.

Usage: ``.venv/bin/python load_tests/bench_audio.py [--frames 20000] [--reps 5]``

Inbound (per 20 ms caller frame): Twilio ``media`` JSON text -> json.loads -> base64 decode -> mu-law
decode -> 8k->24k -> base64 encode -> ``input_audio_buffer.append`` JSON text.
Outbound (per 100 ms of model audio): Realtime ``response.output_audio.delta`` JSON text -> json.loads
-> base64 decode -> 24k->8k -> mu-law encode -> base64 encode -> Twilio ``media`` JSON text.

Each path is timed per frame with ``time.perf_counter_ns`` (gc disabled while timing), repetitions of the
paths interleaved so machine noise hits all of them alike, next to two baselines from the same run:

* floor: the straightforward ``json.loads`` / ``base64.b64decode`` / ``base64.b64encode`` /
  ``json.dumps`` with no DSP, encoding a payload of the size the real path sends (960 B in, 800 B out);
  an "echo" variant (re-encoding the decoded payload, 160 B) is shown too;
* audioop: stdlib ``ulaw2lin`` + ``ratecv`` inbound, ``ratecv`` + ``lin2ulaw`` outbound;
* numpy: the same path with the numpy reference resamplers instead of the compiled kernels
  (``service/_hotpath.c``); their outputs are checked equal before timing.

The other carrier codecs (``service/audio/codecs.py``, numpy reference resamplers, no compiled kernel)
are timed on the same per-frame work: ``in_alaw``/``out_alaw`` (A-law 8 kHz), ``in_l16_8k``/
``out_l16_8k`` and ``in_l16_16k``/``out_l16_16k`` (PCM16 LE; 16 kHz is the 3/2 resampler), each
with the same JSON/base64 envelope as the mu-law path. ``in_twilio`` is the bridge's real inbound
step: ``TwilioDialect.parse`` (orjson + binascii) then the compiled kernel and base64.

Writes ``load_tests/results/bench_audio.json``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.audio import (
    GROUP_DELAY_MS,
    WIDE_GROUP_DELAY_MS,
    CallerToModel,
    Down24To16,
    Downsampler,
    ModelToCaller,
    Resampler,
    Up16To24,
    Upsampler,
    make_inbound,
    make_outbound,
    pcm16_to_alaw,
    pcm16_to_ulaw,
)
from service.audio.resample import COMPILED, NumpyCallerToModel, NumpyModelToCaller
from service.providers.base import MediaReceived
from service.providers.twilio.dialect import TwilioDialect

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13 without audioop-lts
        audioop = None  # type: ignore[assignment]

STREAM_SID = "MZ" + "0123456789abcdef" * 2
APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
APPEND_SUFFIX = '"}'
MEDIA_PREFIX = '{"event":"media","streamSid":"' + STREAM_SID + '","media":{"payload":"'
MEDIA_SUFFIX = '"}}'


# ----------------------------------------------------------------------------------------- signals
def speechlike(n: int, fs: int, rng: np.random.Generator, level_dbfs: float = -18.0) -> np.ndarray:
    """Harmonic source with a wandering F0 plus some noise: realistic spectrum, not a benchmark of zeros."""
    t = np.arange(n) / fs
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / fs
    x = sum(np.sin(k * phase) / k for k in range(1, 25) if k * 170 < fs / 2)
    x = np.asarray(x) + 0.05 * rng.standard_normal(n)
    x *= 10 ** (level_dbfs / 20) * 32767 / np.sqrt(np.mean(x**2))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def inbound_messages(count: int, rng: np.random.Generator) -> list[str]:
    pcm8k = speechlike(160 * count, 8000, rng)
    mulaw = pcm16_to_ulaw(pcm8k)
    out = []
    for i in range(count):
        payload = base64.b64encode(mulaw[160 * i : 160 * (i + 1)]).decode("ascii")
        out.append(json.dumps({
            "event": "media", "sequenceNumber": str(i + 2),
            "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i), "payload": payload},
            "streamSid": STREAM_SID,
        }, separators=(",", ":")))
    return out


def codec_messages(count: int, rng: np.random.Generator, codec: str, rate: int) -> list[str]:
    """20 ms caller frames of one carrier codec in the same JSON envelope as Twilio's media message."""
    pcm = speechlike(rate // 50 * count, rate, rng)
    wire = pcm16_to_alaw(pcm) if codec == "alaw" else pcm.astype("<i2").tobytes()
    step = len(wire) // count
    return [json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {
        "payload": base64.b64encode(wire[step * i : step * (i + 1)]).decode("ascii")}}, separators=(",", ":"))
        for i in range(count)]


def outbound_messages(count: int, rng: np.random.Generator) -> list[str]:
    pcm24k = speechlike(2400 * count, 24000, rng)
    out = []
    for i in range(count):
        delta = base64.b64encode(pcm24k[2400 * i : 2400 * (i + 1)].astype("<i2").tobytes()).decode("ascii")
        out.append(json.dumps({
            "type": "response.output_audio.delta", "event_id": f"event_{i:08d}", "response_id": "resp_001",
            "item_id": "item_001", "output_index": 0, "content_index": 0, "delta": delta,
        }, separators=(",", ":")))
    return out


# ------------------------------------------------------------------------------------------- paths
def make_paths() -> dict[str, Callable[[str], str]]:
    c2m = CallerToModel()
    m2c = ModelToCaller()
    c2m_np = NumpyCallerToModel()
    m2c_np = NumpyModelToCaller()
    a2b = binascii.a2b_base64
    b2a = binascii.b2a_base64
    loads = json.loads

    def in_ours(text: str) -> str:  # what the bridge does (compiled kernels when built)
        return APPEND_PREFIX + c2m.process_b64(a2b(loads(text)["media"]["payload"])) + APPEND_SUFFIX

    def in_numpy(text: str) -> str:  # the numpy reference implementation of the same path
        pcm = c2m_np.process(a2b(loads(text)["media"]["payload"]))
        return APPEND_PREFIX + b2a(pcm, newline=False).decode("ascii") + APPEND_SUFFIX

    def in_ours_dumps(text: str) -> str:
        pcm = c2m.process(base64.b64decode(json.loads(text)["media"]["payload"]))
        return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    out960 = bytes(960)

    def in_floor(text: str) -> str:
        base64.b64decode(json.loads(text)["media"]["payload"])
        return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(out960).decode()})

    def in_floor_echo(text: str) -> str:
        raw = base64.b64decode(json.loads(text)["media"]["payload"])
        return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(raw).decode()})

    def out_ours(text: str) -> str:
        mulaw = m2c.process(a2b(loads(text)["delta"]))
        return MEDIA_PREFIX + b2a(mulaw, newline=False).decode("ascii") + MEDIA_SUFFIX

    def out_numpy(text: str) -> str:
        mulaw = m2c_np.process(a2b(loads(text)["delta"]))
        return MEDIA_PREFIX + b2a(mulaw, newline=False).decode("ascii") + MEDIA_SUFFIX

    def out_ours_dumps(text: str) -> str:
        mulaw = m2c.process(base64.b64decode(json.loads(text)["delta"]))
        return json.dumps({"event": "media", "streamSid": STREAM_SID,
                           "media": {"payload": base64.b64encode(mulaw).decode()}})

    out800 = bytes(800)

    def out_floor(text: str) -> str:
        base64.b64decode(json.loads(text)["delta"])
        return json.dumps({"event": "media", "streamSid": STREAM_SID,
                           "media": {"payload": base64.b64encode(out800).decode()}})

    paths: dict[str, Callable[[str], str]] = {
        "in_ours": in_ours, "in_numpy": in_numpy, "in_ours_dumps": in_ours_dumps, "in_floor": in_floor,
        "in_floor_echo": in_floor_echo,
        "out_ours": out_ours, "out_numpy": out_numpy, "out_ours_dumps": out_ours_dumps, "out_floor": out_floor,
    }
    def codec_in(codec: str, rate: int, compiled: bool | None = None) -> Callable[[str], str]:
        conv = make_inbound(codec, rate, compiled=compiled)

        def run(text: str) -> str:
            return APPEND_PREFIX + conv.process_b64(a2b(loads(text)["media"]["payload"])) + APPEND_SUFFIX
        return run

    def codec_out(codec: str, rate: int, compiled: bool | None = None) -> Callable[[str], str]:
        conv = make_outbound(codec, rate, compiled=compiled)

        def run(text: str) -> str:
            wire = conv.process(a2b(loads(text)["delta"]))
            return MEDIA_PREFIX + b2a(wire, newline=False).decode("ascii") + MEDIA_SUFFIX
        return run

    for codec, rate, short in (("alaw", 8000, "alaw"), ("l16", 8000, "l16_8k"), ("l16", 16000, "l16_16k")):
        paths[f"in_{short}"] = codec_in(codec, rate)
        paths[f"out_{short}"] = codec_out(codec, rate)
    paths["in_l16_16k_numpy"] = codec_in("l16", 16000, compiled=False)  # does the generic kernel pay?
    paths["out_l16_16k_numpy"] = codec_out("l16", 16000, compiled=False)

    dialect = TwilioDialect()
    dialect.parse(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": {
        "streamSid": STREAM_SID, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
        "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    c2m_twilio = CallerToModel()

    def in_twilio(text: str) -> str:  # the bytes a WebSocket frame carries, through the real dialect
        event = dialect.parse(text.encode())
        assert type(event) is MediaReceived
        return APPEND_PREFIX + c2m_twilio.process_b64(event.payload) + APPEND_SUFFIX

    paths["in_twilio"] = in_twilio
    if audioop is not None:
        state_in: list[Any] = [None]
        state_out: list[Any] = [None]

        def in_audioop(text: str) -> str:
            lin = audioop.ulaw2lin(base64.b64decode(json.loads(text)["media"]["payload"]), 2)
            pcm, state_in[0] = audioop.ratecv(lin, 2, 1, 8000, 24000, state_in[0])
            return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

        def out_audioop(text: str) -> str:
            raw = base64.b64decode(json.loads(text)["delta"])
            lin, state_out[0] = audioop.ratecv(raw, 2, 1, 24000, 8000, state_out[0])
            return json.dumps({"event": "media", "streamSid": STREAM_SID,
                               "media": {"payload": base64.b64encode(audioop.lin2ulaw(lin, 2)).decode()}})

        paths["in_audioop"] = in_audioop
        paths["out_audioop"] = out_audioop
    return paths


def time_path(fn: Callable[[str], str], msgs: list[str], frames: int) -> list[int]:
    clock = time.perf_counter_ns
    times = [0] * frames
    m = len(msgs)
    for i in range(frames):
        text = msgs[i % m]
        t0 = clock()
        fn(text)
        times[i] = clock() - t0
    return times


def check_outputs(paths: dict[str, Callable[[str], str]], inbound: list[str], outbound: list[str]) -> None:
    """The fast paths produce what the straightforward ones do (fresh objects, same input)."""
    a, b = make_paths(), make_paths()
    for text in inbound[:50]:
        ours = a["in_ours"](text)
        assert ours == a["in_numpy"](text)
        assert json.loads(ours) == json.loads(b["in_ours_dumps"](text))
    for name in ("l16_16k",):  # the generic kernel and the reference agree on the bench's own input
        for text in codec_messages(20, np.random.default_rng(2), "l16", 16000):
            assert a[f"in_{name}"](text) == a[f"in_{name}_numpy"](text)
        for text in outbound[:20]:
            assert a[f"out_{name}"](text) == a[f"out_{name}_numpy"](text)
    for text in outbound[:50]:
        ours = a["out_ours"](text)
        assert ours == a["out_numpy"](text)
        assert json.loads(ours) == json.loads(b["out_ours_dumps"](text))


# ----------------------------------------------------------------------------------------- quality
def tone(freq: float, fs: int, n: int, amp: float, phase: float = 0.3) -> np.ndarray:
    return np.rint(amp * np.cos(2 * np.pi * freq * np.arange(n) / fs + phase)).astype(np.int16)


def run_chunked(obj: Resampler, x: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([obj.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])


FLOOR_DB = 20 * math.log10(0.5 / 32768)  # a line below half an LSB rounds to exact zero


def peak_db(y: np.ndarray, fs: int, lo: float, hi: float) -> float:
    """Largest Blackman-windowed spectral line in [lo, hi] Hz, dB re full-scale sine.

    Floored at half an LSB (-96.3 dB): when the output is exactly zero the true figure is only known to
    be at least that good, and the report says ">=".
    """
    w = np.blackman(len(y))
    spec = np.abs(np.fft.rfft(y.astype(np.float64) * w)) / (np.sum(w) / 2) / 32768.0
    f = np.fft.rfftfreq(len(y), 1 / fs)
    sel = (f >= lo) & (f <= hi)
    return max(FLOOR_DB, float(20 * np.log10(np.max(spec[sel]) + 1e-20)))


def amp_phase(y: np.ndarray, freq: float, fs: int) -> complex:
    """Complex amplitude of the `freq` component (integer number of cycles over len(y))."""
    t = np.arange(len(y)) / fs
    return complex(2 / len(y) * np.sum(y * np.exp(-2j * np.pi * freq * t)))


def quality() -> dict[str, Any]:
    amp = 16384.0  # -6 dBFS
    res: dict[str, Any] = {}
    # a. 24k -> 8k alias rejection: tone f, alias at |f - 8000| folded into 0..4000.
    skip = 200
    n8 = 8000 + skip
    ref = run_chunked(Downsampler(), tone(1000, 24000, 3 * n8, amp), 480)[skip:]
    ref_db = peak_db(ref, 8000, 990, 1010)
    alias = {}
    for f in (4600, 5000, 5500, 6000, 7000, 8000, 9000, 10000, 11000, 11900):
        y = run_chunked(Downsampler(), tone(f, 24000, 3 * n8, amp), 480)[skip:]
        fa = abs(f - 8000)
        fa = min(fa, 8000 - fa) if fa > 4000 else fa
        alias[f] = round(ref_db - peak_db(y, 8000, max(0, fa - 5), fa + 5), 1)
    res["a_down_alias_atten_db"] = alias
    res["a_down_alias_atten_min_db"] = min(alias.values())
    res["a_note"] = (f"{round(ref_db - FLOOR_DB, 1)} dB means the alias line rounded to exact zero "
                     "(< 0.5 LSB): a lower bound")
    # b. 8k -> 24k images: worst spectral line in 4.6..12 kHz relative to the tone.
    images = {}
    for f in (300, 1000, 2000, 3000, 3400):
        y = run_chunked(Upsampler(), tone(f, 8000, 8000 + skip, amp), 160)[3 * skip :]
        images[f] = round(peak_db(y, 24000, f - 5, f + 5) - peak_db(y, 24000, 4600, 12000), 1)
    res["b_up_image_atten_db"] = images
    res["b_up_image_atten_min_db"] = min(images.values())
    # c. passband gain 300..3400 Hz (exact-cycle tones, complex amplitude), both directions.
    freqs = np.arange(300, 3401, 100)
    gains_up, gains_down, ph_up, ph_down = [], [], [], []
    for f in freqs:
        x8 = tone(f, 8000, 2000 + skip, amp)
        y = run_chunked(Upsampler(), x8, 160)[3 * skip :]
        a_in = amp_phase(x8[skip:].astype(float), f, 8000)
        a_out = amp_phase(y.astype(float), f, 24000)
        gains_up.append(20 * np.log10(abs(a_out) / abs(a_in)))
        ph_up.append(np.angle(a_out / a_in))
        x24 = tone(f, 24000, 6000 + 3 * skip, amp)
        d = Downsampler()
        y = run_chunked(d, x24, 500)[skip:]
        a_in = amp_phase(x24[3 * skip :].astype(float), f, 24000)
        a_out = amp_phase(y.astype(float), f, 8000)
        gains_down.append(20 * np.log10(abs(a_out) / abs(a_in)))
        ph_down.append(np.angle(a_out / a_in))
    res["c_ripple_up_db"] = round(float(np.ptp(gains_up)), 4)
    res["c_ripple_down_db"] = round(float(np.ptp(gains_down)), 4)
    # d. latency: group delay = -d(phase)/d(omega) over the passband, plus samples held back.
    def group_delay_ms(phases: list[float]) -> float:
        slope = np.polyfit(2 * np.pi * freqs, np.unwrap(phases), 1)[0]
        return float(-slope * 1000)

    held_up = held_down = 0
    u, d = Upsampler(), Downsampler()
    fed_u = out_u = fed_d = out_d = 0
    rng = np.random.default_rng(5)
    for _ in range(300):
        k = int(rng.integers(1, 700))
        out_u += len(u.process(np.zeros(k, np.int16)))
        fed_u += k
        held_up = max(held_up, 3 * fed_u - out_u)  # 24 kHz output samples owed
        out_d += len(d.process(np.zeros(k, np.int16)))
        fed_d += k
        held_down = max(held_down, fed_d - 3 * out_d)
    res["d_up_group_delay_ms"] = round(group_delay_ms(ph_up), 3)
    res["d_down_group_delay_ms"] = round(group_delay_ms(ph_down), 3)
    res["d_up_held_back_ms"] = round(held_up / 24.0, 3)
    res["d_down_held_back_ms"] = round(held_down / 24.0, 3)
    res["d_up_total_latency_ms"] = round(res["d_up_group_delay_ms"] + res["d_up_held_back_ms"], 3)
    res["d_down_total_latency_ms"] = round(res["d_down_group_delay_ms"] + res["d_down_held_back_ms"], 3)
    res["design_group_delay_ms"] = round(GROUP_DELAY_MS, 3)
    res.update(wide_quality(amp))
    return res


def wide_quality(amp: float) -> dict[str, Any]:
    """The same four figures for 16 kHz <-> 24 kHz (passband 50-7000 Hz, stopband from 9 kHz)."""
    res: dict[str, Any] = {}
    skip = 600  # 16 kHz samples of start-up left out
    ref = run_chunked(Down24To16(), tone(1000, 24000, 3 * (16000 + skip) // 2, amp), 480)[skip:]
    ref_db = peak_db(ref, 16000, 990, 1010)
    alias = {}
    for f in (9000, 9500, 10000, 11000, 11900):
        y = run_chunked(Down24To16(), tone(f, 24000, 3 * (16000 + skip) // 2, amp), 480)[skip:]
        alias[f] = round(ref_db - peak_db(y, 16000, 16000 - f - 5, 16000 - f + 5), 1)
    res["wide_a_down_alias_atten_min_db"] = min(alias.values())
    images = {}
    for f in (100, 1000, 3000, 5000, 7000):
        y = run_chunked(Up16To24(), tone(f, 16000, 16000 + skip, amp), 320)[3 * skip // 2 :]
        worst = max(peak_db(y, 24000, 0, f - 20), peak_db(y, 24000, f + 20, 12000))
        images[f] = round(peak_db(y, 24000, f - 5, f + 5) - worst, 1)
    res["wide_b_up_image_atten_min_db"] = min(images.values())
    freqs = np.arange(50, 7001, 50)
    for name, cls, fs_in, fs_out in (("up", Up16To24, 16000, 24000), ("down", Down24To16, 24000, 16000)):
        gains, phases = [], []
        for f in freqs:
            x = tone(f, fs_in, fs_in // 4 + skip * fs_in // 16000, amp)
            y = run_chunked(cls(), x, fs_in // 50)
            a_in = amp_phase(x[skip * fs_in // 16000 :].astype(float), f, fs_in)
            a_out = amp_phase(y[skip * fs_out // 16000 :].astype(float), f, fs_out)
            gains.append(20 * np.log10(abs(a_out) / abs(a_in)))
            phases.append(np.angle(a_out / a_in))
        res[f"wide_c_ripple_{name}_db"] = round(float(np.ptp(gains)), 4)
        slope = np.polyfit(2 * np.pi * freqs, np.unwrap(phases), 1)[0]
        res[f"wide_d_{name}_group_delay_ms"] = round(float(-slope * 1000), 3)
    res["wide_d_down_held_back_ms"] = round(1 / 24.0, 3)  # at most one 24 kHz sample (2 of a 3-group used)
    res["wide_design_group_delay_ms"] = round(WIDE_GROUP_DELAY_MS, 3)
    return res


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=20000, help="frames per repetition per path")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_audio.json"))
    args = ap.parse_args()

    rng = np.random.default_rng(1)
    inbound = inbound_messages(1000, rng)
    outbound = outbound_messages(200, rng)
    codec_inbound = {"in_alaw": codec_messages(1000, rng, "alaw", 8000),
                     "in_l16_8k": codec_messages(1000, rng, "l16", 8000),
                     "in_l16_16k": codec_messages(1000, rng, "l16", 16000)}
    codec_inbound["in_l16_16k_numpy"] = codec_inbound["in_l16_16k"]
    paths = make_paths()
    check_outputs(paths, inbound, outbound)

    samples: dict[str, list[int]] = {name: [] for name in paths}
    for rep in range(args.reps):
        names = list(paths)
        if rep % 2:
            names.reverse()
        for name in names:
            msgs = codec_inbound.get(name, inbound) if name.startswith("in_") else outbound
            frames = args.frames if name.startswith("in_") else max(1, args.frames // 5)
            time_path(paths[name], msgs, 500)  # warm-up
            gc.collect()
            gc.disable()
            try:
                samples[name].extend(time_path(paths[name], msgs, frames))
            finally:
                gc.enable()

    stats = {}
    for name, ts in samples.items():
        ts.sort()
        stats[name] = {
            "median_us": round(statistics.median(ts) / 1000, 2),
            "p99_us": round(ts[min(len(ts) - 1, math.ceil(0.99 * len(ts)) - 1)] / 1000, 2),
            "n": len(ts),
        }

    def ratio(a: str, b: str, key: str = "median_us") -> float | None:
        if a not in stats or b not in stats:
            return None
        return round(stats[a][key] / stats[b][key], 2)

    rows = []
    for direction, names in (("in", ("ours", "twilio", "numpy", "ours_dumps", "floor", "floor_echo", "audioop",
                                     "alaw", "l16_8k", "l16_16k", "l16_16k_numpy")),
                             ("out", ("ours", "numpy", "ours_dumps", "floor", "audioop", "alaw", "l16_8k", "l16_16k",
                                      "l16_16k_numpy"))):
        for short in names:
            name = f"{direction}_{short}"
            if name not in stats:
                continue
            rows.append((name, stats[name]["median_us"], stats[name]["p99_us"],
                         ratio(name, f"{direction}_floor"), ratio(name, f"{direction}_audioop")))

    print(f"audio path benchmark: {args.reps} reps x {args.frames} inbound frames (20 ms) / "
          f"{max(1, args.frames // 5)} outbound deltas (100 ms) per path; python {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs; compiled kernels: {COMPILED}")
    print(f"{'path':<16}{'median us':>11}{'p99 us':>10}{'x floor':>9}{'x audioop':>11}")
    for name, med, p99, rf, ra in rows:
        print(f"{name:<16}{med:>11.2f}{p99:>10.2f}{rf if rf is not None else '-':>9}{ra if ra is not None else '-':>11}")
    targets = {
        "inbound_ours_over_floor": ratio("in_ours", "in_floor"),
        "inbound_ours_over_floor_echo": ratio("in_ours", "in_floor_echo"),
        "outbound_ours_over_audioop": ratio("out_ours", "out_audioop"),
        "inbound_ours_over_numpy_reference": ratio("in_ours", "in_numpy"),
        "outbound_ours_over_numpy_reference": ratio("out_ours", "out_numpy"),
        "inbound_l16_16k_over_ours": ratio("in_l16_16k", "in_ours"),
        "outbound_l16_16k_over_ours": ratio("out_l16_16k", "out_ours"),
        "inbound_l16_16k_compiled_over_numpy": ratio("in_l16_16k", "in_l16_16k_numpy"),
        "outbound_l16_16k_compiled_over_numpy": ratio("out_l16_16k", "out_l16_16k_numpy"),
    }
    targets["inbound_target_met(<=2.5)"] = targets["inbound_ours_over_floor"] is not None and targets[
        "inbound_ours_over_floor"] <= 2.5
    targets["outbound_target_met(<=1.5)"] = (targets["outbound_ours_over_audioop"] is not None
                                             and targets["outbound_ours_over_audioop"] <= 1.5)
    print("targets:", json.dumps(targets))

    q = quality()
    print("quality (measured):")
    for k, v in q.items():
        print(f"  {k}: {v}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": {"frames": args.frames, "reps": args.reps, "python": platform.python_version(), "compiled": COMPILED,
                   "numpy": np.__version__, "cpus": os.cpu_count(), "machine": platform.machine()},
        "timings": stats, "targets": targets, "quality": q,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
