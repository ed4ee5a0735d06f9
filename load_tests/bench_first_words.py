"""First words with and without pre-warmed model sessions, measured in the same run (docs/first-words.md).

Two gateways in this process (uvicorn on 127.0.0.1), identical but for ``CALLBRIDGE_PREWARM`` (0 and
4), share one Realtime stand-in whose server latencies are simulated: the WebSocket upgrade answer
waits ``--handshake-ms`` (TCP + TLS + upgrade to a hosted endpoint), ``session.created`` and each
``session.updated`` wait ``--session-ms``, and a response's first audio waits ``--model-ms``. The
Twilio caller stand-in places calls alternately on the two gateways, one at a time, waiting
``--stream-delay-ms`` between the TwiML answer and opening the media stream (what the carrier spends
there). Measured per call on the caller's side: from the moment it sent ``start`` to the arrival of
the first greeting audio. Reports median and p99 per arm and the ratio pre-warmed / cold.

    .venv/bin/python -m load_tests.bench_first_words --calls 20

Writes ``load_tests/results/bench_first_words.json`` (not committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import structlog

from load_tests.common import RESULTS
from tests.integration.conftest import AUTH_TOKEN, run_gateway
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.twilio_caller import TwilioCallerStandIn

API_KEY = "sk-bench-first-words-0123456789"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_call(caller: TwilioCallerStandIn, stream_delay_s: float) -> float:
    call = await caller.place_call(stream_delay_s=stream_delay_s)
    try:
        await call.wait_for(lambda: bool(call.playback.media), timeout_s=20)
        return (call.playback.media[0].at - call.origin) * 1000
    finally:
        await call.hang_up()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    behaviour = ScriptedBehaviour(reply_ms=300, handshake_delay_ms=args.handshake_ms, session_delay_ms=args.session_ms,
                                  first_delta_delay_ms=args.model_ms, validate_outgoing=False)
    results: dict[str, list[float]] = {"cold": [], "prewarmed": []}
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        common = {"realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                  "greeting": True, "input_transcription_model": "whisper-1", "log_level": "warning"}
        async with run_gateway(**common) as cold, run_gateway(prewarm=4, prewarm_ttl_s=5.0, **common) as warm, \
                TwilioCallerStandIn(cold.base_url, AUTH_TOKEN) as cold_caller, \
                TwilioCallerStandIn(warm.base_url, AUTH_TOKEN) as warm_caller:
            await one_call(cold_caller, 0.0)  # warm-up: imports, first connections
            await one_call(warm_caller, 0.0)
            started = time.monotonic()
            for _ in range(args.calls):
                results["cold"].append(await one_call(cold_caller, args.stream_delay_ms / 1000))
                results["prewarmed"].append(await one_call(warm_caller, args.stream_delay_ms / 1000))
            elapsed = time.monotonic() - started
            leftover = len(warm.gateway.prewarm_pool)
        violations = len(realtime.violations)
    summary: dict[str, Any] = {
        "calls_per_arm": args.calls,
        "simulated_ms": {"handshake": args.handshake_ms, "session": args.session_ms, "model_first_audio":
                         args.model_ms, "carrier_stream_delay": args.stream_delay_ms},
        "elapsed_s": round(elapsed, 2),
        "prewarm_pool_left": leftover,
        "standin_violations": violations,
    }
    for arm, values in results.items():
        summary[arm] = {"median_ms": round(statistics.median(values), 1), "p99_ms": round(quantile(values, 0.99), 1),
                        "min_ms": round(min(values), 1), "max_ms": round(max(values), 1)}
    summary["ratio_median"] = round(summary["prewarmed"]["median_ms"] / summary["cold"]["median_ms"], 3)
    summary["ratio_p99"] = round(summary["prewarmed"]["p99_ms"] / summary["cold"]["p99_ms"], 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per arm (default 20)")
    parser.add_argument("--handshake-ms", type=int, default=250)
    parser.add_argument("--session-ms", type=int, default=60)
    parser.add_argument("--model-ms", type=int, default=300)
    parser.add_argument("--stream-delay-ms", type=int, default=500)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    summary = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_first_words.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"first words (stream start -> first greeting audio at the caller), {args.calls} calls per arm: "
          f"cold median {summary['cold']['median_ms']} ms / p99 {summary['cold']['p99_ms']} ms, pre-warmed median "
          f"{summary['prewarmed']['median_ms']} ms / p99 {summary['prewarmed']['p99_ms']} ms, "
          f"ratio {summary['ratio_median']} (median), {summary['ratio_p99']} (p99)")


if __name__ == "__main__":
    main()
