"""Cost of the carrier dialects on the media path, next to Twilio's, measured in one run.

For each dialect: ``parse`` of one inbound media frame (20 ms; Exotel's cadence is 100 ms, which the
per-call-second figure accounts for) and ``build_media`` of 20 ms of outbound audio (Exotel: one 3.2 KB
chunk). Frames are ``str``, as a WebSocket text frame arrives, so Twilio runs its orjson path, not the
compiled recogniser (which takes only ``bytes``). Rounds interleave the dialects so that they share the
machine's noise; each round times a batch of frames. Reports the median and p99 over rounds, each median's
ratio to Twilio's from the same run, and the cost per call-second of caller audio. Writes
``load_tests/results/bench_carrier_dialects.json`` (not committed).

    .venv/bin/python -m load_tests.bench_carrier_dialects [--rounds 200] [--batch 200]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from load_tests.common import print_table, write_result
from service.providers.exotel.dialect import ExotelDialect
from service.providers.signalwire.dialect import SignalWireDialect
from service.providers.telnyx.dialect import TelnyxDialect
from service.providers.twilio.dialect import TwilioDialect
from tests.standins import exotel_caller, signalwire_caller, telnyx_caller
from tests.standins.json_stream_caller import CarrierFrames

TWILIO_SID = "MZ" + "0" * 32


def _twilio() -> tuple[Any, list[str], int]:
    dialect = TwilioDialect()
    dialect.parse(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": TWILIO_SID,
        "start": {"streamSid": TWILIO_SID, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32,
                  "tracks": ["inbound"], "customParameters": {},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    frames = [
        json.dumps({"event": "media", "sequenceNumber": str(k + 2), "streamSid": TWILIO_SID,
                    "media": {"track": "inbound", "chunk": str(k + 1), "timestamp": str(20 * k),
                              "payload": base64.b64encode(b"\xff" * 160).decode()}})
        for k in range(1000)
    ]
    return dialect, frames, 160


def _json_carrier(make: Callable[[], Any], profile: Any, frame_bytes: int) -> tuple[Any, list[str], int]:
    dialect = make()
    frames = CarrierFrames(profile)
    dialect.parse(frames.start({}))
    return dialect, [frames.media(bytes(frame_bytes)) for _ in range(1000)], frame_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()

    cases: dict[str, tuple[Any, list[str], int, int]] = {}
    for name, (dialect, frames, out_bytes) in {
        "twilio": _twilio(),
        "signalwire": _json_carrier(SignalWireDialect, signalwire_caller.PROFILE, 160),
        "telnyx-pcmu": _json_carrier(TelnyxDialect, telnyx_caller.profile("PCMU"), 160),
        "telnyx-l16": _json_carrier(lambda: TelnyxDialect("L16"), telnyx_caller.profile("L16"), 640),
        "exotel-8k": _json_carrier(ExotelDialect, exotel_caller.profile(8000), 1600),
    }.items():
        frames_per_second = 10 if name.startswith("exotel") else 50
        cases[name] = (dialect, frames, out_bytes, frames_per_second)

    parse_us: dict[str, list[float]] = {name: [] for name in cases}
    build_us: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(args.rounds):
        for name, (dialect, frames, out_bytes, _) in cases.items():
            start = round_no * args.batch % (len(frames) - args.batch)
            batch = frames[start:start + args.batch]
            t0 = time.perf_counter_ns()
            for frame in batch:
                dialect.parse(frame)
            t1 = time.perf_counter_ns()
            # Outbound: 20 ms of audio in the stream's format (Exotel: a 3.2 KB chunk, its minimum).
            audio = bytes(3200 if name.startswith("exotel") else out_bytes)
            for _ in range(args.batch):
                dialect.build_media(audio)
            t2 = time.perf_counter_ns()
            parse_us[name].append((t1 - t0) / args.batch / 1000)
            build_us[name].append((t2 - t1) / args.batch / 1000)

    def quantiles(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    base_parse, _ = quantiles(parse_us["twilio"])
    result: dict[str, Any] = {"rounds": args.rounds, "batch": args.batch, "dialects": {}}
    rows: list[tuple[str, str]] = []
    for name, (_, _, _, per_second) in cases.items():
        p50, p99 = quantiles(parse_us[name])
        b50, b99 = quantiles(build_us[name])
        result["dialects"][name] = {
            "parse_median_us": p50, "parse_p99_us": p99, "parse_ratio_vs_twilio": p50 / base_parse,
            "build_median_us": b50, "build_p99_us": b99,
            "parse_us_per_call_second": p50 * per_second,
        }
        rows.append((name, f"parse {p50:6.2f} us (p99 {p99:6.2f}, x{p50 / base_parse:4.2f} Twilio), "
                           f"{p50 * per_second:6.1f} us per call-second; build {b50:6.2f} us (p99 {b99:6.2f})"))
    print_table(rows)
    print(f"  -> {write_result('bench_carrier_dialects', result)}")


if __name__ == "__main__":
    main()
