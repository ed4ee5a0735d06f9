"""Cost of the outbound media path per carrier (``BotLeg.play``: resample 24 kHz -> wire, framing to the
carrier's ``MediaFraming``, the dialect's media frames and one playback marker), next to Twilio's, in one run.

Each round feeds every carrier the same model audio: 100 ms deltas of PCM16 24 kHz (what the Realtime API
sends), ``--batch`` of them. Twilio sends each delta as one mu-law text frame; Vonage cuts it into five
exact 640-byte binary frames; Exotel holds audio until a 3.2 KB chunk is complete. Rounds interleave the
carriers so they share the machine's noise. Reports the median and p99 per delta over rounds, each
median's ratio to Twilio's, and the cost per call-second of bot audio. Writes
``load_tests/results/bench_bot_leg.json`` (not committed).

    .venv/bin/python -m load_tests.bench_bot_leg [--rounds 100] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import numpy as np

from load_tests.common import print_table, write_result
from service.call.legs import BotLeg
from service.call.stats import CallStats
from service.providers.base import ENCODING_MULAW, ENCODING_PCM16LE
from service.providers.exotel.dialect import ExotelDialect
from service.providers.twilio.dialect import TwilioDialect
from service.providers.vonage.dialect import VonageDialect

TWILIO_SID = "MZ" + "0" * 32


def _twilio() -> Any:
    dialect = TwilioDialect()
    dialect.parse(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": TWILIO_SID,
        "start": {"streamSid": TWILIO_SID, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32,
                  "tracks": ["inbound"], "customParameters": {},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    return dialect


def _vonage() -> Any:
    dialect = VonageDialect(16000)
    dialect.parse(json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                              "call_uuid": str(uuid.uuid4()), "stream_token": "t"}))
    return dialect


def _exotel() -> Any:
    dialect = ExotelDialect(8000)
    dialect.parse(json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "MZ1",
                              "start": {"stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1",
                                        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000"}}}))
    return dialect


async def _sink(_frame: str | bytes) -> None:
    return None


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    t = np.arange(2400) / 24000
    delta = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()  # 100 ms at 24 kHz
    legs = {
        "twilio": BotLeg((ENCODING_MULAW, 8000), _twilio(), _sink, CallStats(), time.monotonic),
        "vonage-16k": BotLeg((ENCODING_PCM16LE, 16000), _vonage(), _sink, CallStats(), time.monotonic),
        "exotel-8k": BotLeg((ENCODING_PCM16LE, 8000), _exotel(), _sink, CallStats(), time.monotonic),
    }
    per_delta: dict[str, list[float]] = {name: [] for name in legs}
    for _ in range(args.rounds):
        for name, leg in legs.items():
            t0 = time.perf_counter_ns()
            for _ in range(args.batch):
                await leg.play("item", delta)
            t1 = time.perf_counter_ns()
            per_delta[name].append((t1 - t0) / args.batch / 1000)
            await leg.flush()  # the ledger stays small, as after a barge-in

    def quantiles(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    base, _ = quantiles(per_delta["twilio"])
    result: dict[str, Any] = {"rounds": args.rounds, "batch": args.batch, "delta_ms": 100, "carriers": {}}
    rows: list[tuple[str, str]] = []
    for name in legs:
        p50, p99 = quantiles(per_delta[name])
        result["carriers"][name] = {"play_median_us": p50, "play_p99_us": p99, "ratio_vs_twilio": p50 / base,
                                    "us_per_call_second": p50 * 10}
        rows.append((name, f"play {p50:7.2f} us per 100 ms delta (p99 {p99:7.2f}, x{p50 / base:4.2f} Twilio), "
                           f"{p50 * 10:7.1f} us per call-second of bot audio"))
    print_table(rows)
    print(f"  -> {write_result('bench_bot_leg', result)}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
