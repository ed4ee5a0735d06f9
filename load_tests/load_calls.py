"""Concurrent-call load scenario: N simulated carrier calls through a real gateway process.

    .venv/bin/python -m load_tests.load_calls --calls 50 --steady 30
    .venv/bin/python -m load_tests.load_calls --calls 200 --caller-procs 2 --ramp 20 --steady 30
    .venv/bin/python -m load_tests.load_calls --calls 50 --provider telnyx
    .venv/bin/python -m load_tests.load_calls --calls 50 --carriers twilio,signalwire,telnyx,plivo

Without ``--provider``/``--carriers`` the callers are the Twilio stand-in of earlier runs (figures stay
comparable). ``--provider P`` runs the same scenario as carrier P (``service.simcaller.carrier_call``:
its signed webhook, its markup, its stream messages); ``--carriers`` runs it once per carrier, one after
the other on a fresh gateway each, and reports each carrier's CPU per call-second next to the first
carrier's (the baseline, measured in the same run), as a ratio.

Set-up: a private ``redis-server``, the protocol-exact Realtime stand-in in its own process (replies
with 1.5 s of audio streamed at 4x real time to every caller turn), the gateway (`callbridge serve`)
as a subprocess, and the caller side (protocol-exact Twilio stand-ins, real-time paced speech,
real-time playback with mark echoes) spread over ``--caller-procs`` processes so the generator is not
the bottleneck. Each call repeats: speak (~1.6 s of synthesized speech), listen 2.4 s; every third
turn the caller talks over the reply (a barge-in).

Phases: ramp (calls start evenly over ``--ramp`` s), steady (``--steady`` s, measured), then every
call hangs up. Report (table + JSON in load_tests/results/): frame-forward latency p50/p95/p99 and
first-audio and barge-in reaction quantiles (from the gateway's own Prometheus histograms over the
steady phase), errors, gateway CPU per call-second and RSS per call. Bounded: the run stops itself
after ramp + steady + 60 s at most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_tests.common import (
    AUTH_TOKEN,
    RESULTS,
    counter_delta,
    free_port,
    histogram_delta,
    histogram_quantile,
    print_table,
    private_redis,
    sample_tree,
    scrape,
    start_gateway,
    start_realtime_standin,
    write_result,
)

UTTERANCE = "Hello, I am calling about my order, it has not arrived yet."
INTERRUPTION = "Sorry, wait a moment please."


# --- caller worker (runs in a child process) ---------------------------------------------------------


CARRIER_PUBLIC_URL = "https://callbridge.load.test"
"""What the gateway believes it is reached at in carrier runs (SignalWire streams only to wss://); the
callers sign against it and re-aim its URLs at the gateway's 127.0.0.1 port."""
TELNYX_SEED = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="  # a test Ed25519 seed (bytes 1..32)
EXOTEL_USER, EXOTEL_PASSWORD = "exotel-load", "exotel-load-password-0123456789"
CARRIER_KEYS = {"twilio": AUTH_TOKEN, "signalwire": "PSK_load_test_signing_key_0123",
                "telnyx": TELNYX_SEED, "plivo": "MzRiNTQxMjQyYzAxOTdkNjhkMDk3Yz",
                "vonage": "vonage-load-test-signature-secret-0123456789",
                "exotel": f"{EXOTEL_USER}:{EXOTEL_PASSWORD}"}
"""What each carrier's simulated caller signs its webhooks with."""


def carrier_env() -> dict[str, str]:
    """Gateway settings that route every carrier with the callers' keys."""
    from service.simcaller.carriers import telnyx_public_key

    return {"CALLBRIDGE_PUBLIC_URL": CARRIER_PUBLIC_URL,
            "CALLBRIDGE_SIGNALWIRE_SIGNING_KEY": CARRIER_KEYS["signalwire"],
            "CALLBRIDGE_TELNYX_PUBLIC_KEY": telnyx_public_key(TELNYX_SEED),
            "CALLBRIDGE_PLIVO_AUTH_TOKEN": CARRIER_KEYS["plivo"],
            "CALLBRIDGE_VONAGE_SIGNATURE_SECRET": CARRIER_KEYS["vonage"],
            "CALLBRIDGE_EXOTEL_STREAM_USER": EXOTEL_USER, "CALLBRIDGE_EXOTEL_STREAM_PASSWORD": EXOTEL_PASSWORD}


def _frame_seconds(provider: str) -> float:
    """Audio per forwarded caller frame: 20 ms, but 100 ms for Exotel (its stream sends every 100 ms), so
    call-seconds counted from forwarded frames stay right for every carrier."""
    from service.simcaller.wires import ExotelWire

    return ExotelWire.frame_ms / 1000 if provider == "exotel" else 0.020


async def _place(base_url: str, provider: str, index: int, stack: contextlib.AsyncExitStack) -> Any:
    """One call as ``provider`` (the legacy Twilio stand-in when ``provider`` is empty)."""
    if not provider:
        from tests.standins.twilio_caller import TwilioCallerStandIn

        twilio = await stack.enter_async_context(TwilioCallerStandIn(base_url, AUTH_TOKEN))
        return await twilio.place_call(from_=f"+1555{index:07d}")
    from service.simcaller.carrier_call import CarrierCaller
    from service.simcaller.carriers import CARRIERS

    caller = await stack.enter_async_context(
        CarrierCaller(CARRIERS[provider], base_url, CARRIER_KEYS[provider], public_url=CARRIER_PUBLIC_URL))
    return await caller.place_call(from_=f"+1555{index:07d}")


async def _one_call(base_url: str, provider: str, index: int, start_at: float, end_at: float,
                    audio: Callable[[int], tuple[Any, Any, Callable[[int], Any]]],
                    results: list[dict[str, Any]]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    outcome: dict[str, Any] = {"index": index, "error": None}
    try:
        async with contextlib.AsyncExitStack() as stack:
            call = await _place(base_url, provider, index, stack)
            rate = call.wire.audio.rate if provider else 8000
            speech, interrupt, silence = audio(rate)
            turn = 0
            while loop.time() < end_at and not call.closed:
                turn += 1
                if turn % 3 == 0:
                    await call.send_audio(speech, silence(700), interrupt, silence(1700))  # barge-in
                else:
                    await call.send_audio(speech, silence(2400))
            outcome.update(
                closed_by_gateway=call.closed,
                close_code=call.close_code,
                violations=len(call.violations),
                clears=len(call.playback.clears),
                played_ms=call.playback.played_total * 1000 // call.playback.bps,
                marks=len(call.playback.marks),
                turns=turn,
            )
            await call.hang_up()
    except Exception as error:
        outcome["error"] = f"{type(error).__name__}: {error}"[:200]
    results.append(outcome)


async def _worker(base_url: str, provider: str, first: int, count: int, total: int, ramp_s: float,
                  steady_end: float) -> None:
    from tests.standins.speech import silence, synthesize

    cache: dict[int, tuple[Any, Any, Callable[[int], Any]]] = {}

    def audio(rate: int) -> tuple[Any, Any, Callable[[int], Any]]:
        if rate not in cache:
            cache[rate] = (synthesize(UTTERANCE, rate=rate), synthesize(INTERRUPTION, rate=rate),
                           lambda ms: silence(ms, rate=rate))
        return cache[rate]

    audio(8000)  # synthesize before the schedule starts
    loop = asyncio.get_running_loop()
    # Wall-clock -> loop clock for the shared schedule.
    offset = loop.time() - time.time()
    results: list[dict[str, Any]] = []
    tasks = []
    for i in range(first, first + count):
        start_at = offset + _ramp_start_wall + ramp_s * i / max(1, total)
        tasks.append(asyncio.create_task(_one_call(base_url, provider, i, start_at, offset + steady_end, audio,
                                                   results)))
    await asyncio.gather(*tasks)
    print(json.dumps(results))


_ramp_start_wall = 0.0


# --- orchestrator -------------------------------------------------------------------------------------


def run(calls: int, caller_procs: int, ramp_s: float, steady_s: float, name: str,
        gateway_workers: int = 1, replies: bool = True, ws_variant: str | None = None,
        provider: str = "", extra_env: dict[str, str] | None = None,
        model_standin: Callable[[], tuple[subprocess.Popen[str], str]] | None = None,
        gateway_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One load run. ``model_standin`` starts another model stand-in process (default: Realtime GA)
    and ``gateway_env`` adds gateway settings (e.g. the GPT-Live dialect, load_tests/bench_live.py)."""
    redis = private_redis()
    realtime_proc, realtime_url = (model_standin or (lambda: start_realtime_standin(replies=replies)))()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = RESULTS / f"{name}-gateway.log"
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**(carrier_env() if provider else {}), **(extra_env or {}), **(gateway_env or {})}
    gateway = start_gateway(port, redis.url, realtime_url, extra_env=env or None,
                            log_path=log_path, workers=gateway_workers, ws_variant=ws_variant)
    workers: list[subprocess.Popen[str]] = []
    try:
        idle = sample_tree(gateway.pid)
        ramp_start = time.time() + 3.0  # time for the worker processes to import and synthesize
        steady_start = ramp_start + ramp_s
        steady_end = steady_start + steady_s
        per_proc = [calls // caller_procs + (1 if i < calls % caller_procs else 0) for i in range(caller_procs)]
        first = 0
        for count in per_proc:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "load_tests.load_calls", "--worker", base, provider or "-", str(first),
                 str(count), str(calls), str(ramp_start), str(ramp_s), str(steady_end)],
                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
            ))
            first += count
        time.sleep(max(0.0, steady_start - time.time()))
        before, cpu_before = scrape(base), sample_tree(gateway.pid)
        active_at_steady = before.get("callbridge_active_calls", 0.0)
        time.sleep(max(0.0, steady_end - time.time()))
        after, cpu_after = scrape(base), sample_tree(gateway.pid)
        caller_results: list[dict[str, Any]] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=ramp_s + 90)
            lines = [line for line in out.splitlines() if line.startswith("[")]
            caller_results.extend(json.loads(lines[-1]) if lines else [])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=60)
        except subprocess.TimeoutExpired:
            gateway.kill()
        realtime_proc.send_signal(signal.SIGTERM)
        try:
            realtime_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            realtime_proc.kill()
        redis.stop()
        shutil.rmtree(redis.workdir, ignore_errors=True)

    steady = cpu_after.at - cpu_before.at
    frame = histogram_delta(before, after, "callbridge_frame_forward_seconds")
    call_seconds = (frame[-1][1] if frame else 0.0) * _frame_seconds(provider)
    first_audio = histogram_delta(before, after, "callbridge_first_audio_seconds")
    barge = histogram_delta(before, after, "callbridge_barge_in_reaction_seconds")

    def q(qv: float, buckets: list[tuple[float, float]], scale: float = 1000.0) -> float | None:
        value = histogram_quantile(qv, buckets)
        return None if value is None else round(value * scale, 3)

    errors = {
        "call_errors": sum(1 for r in caller_results if r.get("error")),
        "calls_closed_by_gateway": sum(1 for r in caller_results if r.get("closed_by_gateway")),
        "protocol_violations": sum(int(r.get("violations") or 0) for r in caller_results),
        "realtime_errors": counter_delta(before, after, "callbridge_realtime_errors_total"),
        "malformed_frames": counter_delta(before, after, "callbridge_malformed_frames_total"),
        "calls_missing": calls - len(caller_results),
        # just-in-time playback: the provider ran dry while the gateway held audio (docs/interruptions.md)
        "playout_underruns": counter_delta(before, after, "callbridge_playout_underruns_total"),
    }
    result = {
        "provider": provider or "twilio (legacy stand-in)",
        "calls": calls,
        "caller_procs": caller_procs,
        "gateway_workers": gateway_workers,
        "bot_replies": replies,
        "ws_variant": ws_variant or "wsio",
        "ramp_s": ramp_s,
        "steady_s": round(steady, 2),
        "active_calls_at_steady": active_at_steady,
        "frames_forwarded": frame[-1][1] if frame else 0,
        "frame_forward_ms": {"p50": q(0.5, frame), "p95": q(0.95, frame), "p99": q(0.99, frame)},
        "first_audio_ms": {"p50": q(0.5, first_audio), "p95": q(0.95, first_audio), "p99": q(0.99, first_audio),
                           "count": first_audio[-1][1] if first_audio else 0},
        "barge_in_reaction_ms": {"p50": q(0.5, barge), "p99": q(0.99, barge), "count": barge[-1][1] if barge else 0},
        "errors": errors,
        # call-seconds actually bridged in the steady phase: every call forwards one frame per 20 ms
        "call_seconds": round(call_seconds, 1),
        "gateway_cpu_ms_per_call_second": round((cpu_after.cpu_s - cpu_before.cpu_s) * 1000 / max(call_seconds, 1e-9), 3),
        "gateway_cpu_system_share": round((cpu_after.system_s - cpu_before.system_s)
                                          / max(cpu_after.cpu_s - cpu_before.cpu_s, 1e-9), 3),
        "gateway_cpu_cores": round((cpu_after.cpu_s - cpu_before.cpu_s) / steady, 3),
        "gateway_rss_mb": round(cpu_after.rss_mb, 1),
        "gateway_rss_idle_mb": round(idle.rss_mb, 1),
        "gateway_rss_per_call_mb": round((cpu_after.rss_mb - idle.rss_mb) / max(active_at_steady, 1.0), 3),
        "clears_seen_by_callers": sum(int(r.get("clears") or 0) for r in caller_results),
        "settings": dict(extra_env or {}),
        "media_out_per_call_second": round(counter_delta(before, after, "callbridge_frames_out_total")
                                           / max(call_seconds, 1e-9), 2),
        "interruptions": {kind: counter_delta(before, after, f'callbridge_interruptions_total{{kind="{kind}"}}')
                          for kind in ("real", "backchannel", "noise")},
        "call_error_samples": sorted({str(r["error"]) for r in caller_results if r.get("error")})[:5],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "--worker":
        base, provider, first, count, total, ramp_start, ramp_s, steady_end = args[1:9]
        global _ramp_start_wall
        _ramp_start_wall = float(ramp_start)
        asyncio.run(_worker(base, "" if provider == "-" else provider, int(first), int(count), int(total),
                            float(ramp_s), float(steady_end)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--caller-procs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--gateway-workers", type=int, default=1, help="callbridge serve --workers N")
    parser.add_argument("--no-replies", action="store_true",
                        help="the model never answers: measures the inbound streaming path alone")
    parser.add_argument("--name", default=None)
    parser.add_argument("--ws", default=None, choices=["wsio", "wsio-lane", "sansio"],
                        help="WebSocket layer of the gateway (load_tests/ws_variants.py; default: as committed)")
    parser.add_argument("--provider", default="", choices=["", *CARRIER_KEYS],
                        help="call as this carrier (default: the legacy Twilio stand-in)")
    parser.add_argument("--carriers", default="",
                        help="comma-separated carriers run one after the other; CPU per call-second vs the first")
    parser.add_argument("--playback-lead-ms", type=int, default=None, help="CALLBRIDGE_PLAYBACK_LEAD_MS")
    parser.add_argument("--lead-baseline-ms", type=int, default=None,
                        help="first run the same load with this CALLBRIDGE_PLAYBACK_LEAD_MS (e.g. 0) and report ratios")
    options = parser.parse_args(args)
    if options.carriers:
        return compare_carriers(options, [c.strip() for c in options.carriers.split(",") if c.strip()])
    name = options.name or f"load_calls_{options.calls}" + (f"_{options.provider}" if options.provider else "")
    env = {} if options.playback_lead_ms is None else {"CALLBRIDGE_PLAYBACK_LEAD_MS": str(options.playback_lead_ms)}
    baseline = None
    if options.lead_baseline_ms is not None:
        baseline = run(options.calls, options.caller_procs, options.ramp, options.steady, name + "-baseline",
                       options.gateway_workers, not options.no_replies, options.ws, options.provider,
                       {"CALLBRIDGE_PLAYBACK_LEAD_MS": str(options.lead_baseline_ms)})
    result = run(options.calls, options.caller_procs, options.ramp, options.steady, name, options.gateway_workers,
                 not options.no_replies, options.ws, options.provider, env)
    if baseline is not None:
        result["baseline"] = baseline
        result["ratio_vs_baseline"] = {
            key: round(result[key] / baseline[key], 3) if baseline[key] else None
            for key in ("gateway_cpu_ms_per_call_second", "media_out_per_call_second", "gateway_rss_per_call_mb")
        }
    path = write_result(name, result)
    print(f"\ncallbridge load: {options.calls} concurrent calls, {options.caller_procs} caller process(es), "
          f"{options.gateway_workers} gateway worker(s)")
    print_table([
        ("frame forward p50/p95/p99 ms", "{p50} / {p95} / {p99}".format(**result["frame_forward_ms"])),
        ("first audio p50/p95/p99 ms", "{p50} / {p95} / {p99}".format(**result["first_audio_ms"])),
        ("barge-in reaction p50/p99 ms", "{p50} / {p99}".format(**result["barge_in_reaction_ms"])),
        ("barge-ins (steady)", str(result["barge_in_reaction_ms"]["count"])),
        ("gateway CPU ms per call-second", str(result["gateway_cpu_ms_per_call_second"])),
        ("gateway CPU cores", str(result["gateway_cpu_cores"])),
        ("gateway CPU kernel share", str(result["gateway_cpu_system_share"])),
        ("gateway RSS MB (idle -> loaded)", f"{result['gateway_rss_idle_mb']} -> {result['gateway_rss_mb']}"),
        ("RSS per call MB", str(result["gateway_rss_per_call_mb"])),
        ("interruptions (steady)", json.dumps(result["interruptions"])),
        ("media messages per call-second", str(result["media_out_per_call_second"])),
        ("errors", json.dumps(result["errors"])),
        *([("ratio vs baseline lead", json.dumps(result["ratio_vs_baseline"]))] if baseline is not None else []),
    ])
    print(f"JSON: {path}")
    ok = (all(v == 0 for v in result["errors"].values()))
    return 0 if ok else 1


def compare_carriers(options: argparse.Namespace, carriers: list[str]) -> int:
    """The same scenario once per carrier (fresh gateway each); CPU per call-second next to the first's
    (the median of its runs when it is named more than once, e.g. first and last to show drift)."""
    unknown = [c for c in carriers if c not in CARRIER_KEYS]
    if unknown or not carriers:
        print(f"unknown carriers {unknown}; choose from {', '.join(CARRIER_KEYS)}", file=sys.stderr)
        return 2
    name = options.name or f"load_carriers_{options.calls}"
    runs: dict[str, dict[str, Any]] = {}
    for carrier in carriers:  # a carrier named twice (e.g. the baseline first and last) gets "#2"
        label = carrier if carrier not in runs else f"{carrier}#{sum(k.split('#')[0] == carrier for k in runs) + 1}"
        runs[label] = run(options.calls, options.caller_procs, options.ramp, options.steady,
                          f"{name}_{label.replace('#', '_')}", options.gateway_workers, not options.no_replies,
                          options.ws, carrier)
    baseline = statistics.median(r["gateway_cpu_ms_per_call_second"] for k, r in runs.items()
                                 if k.split("#")[0] == carriers[0])
    summary = {
        carrier: {
            "gateway_cpu_ms_per_call_second": r["gateway_cpu_ms_per_call_second"],
            "ratio_vs_" + carriers[0]: round(r["gateway_cpu_ms_per_call_second"] / max(baseline, 1e-9), 3),
            "call_seconds": r["call_seconds"],
            "frame_forward_ms_p99": r["frame_forward_ms"]["p99"],
            "barge_in_reaction_ms_p99": r["barge_in_reaction_ms"]["p99"],
            "barge_ins": r["barge_in_reaction_ms"]["count"],
            "gateway_rss_per_call_mb": r["gateway_rss_per_call_mb"],
            "errors": r["errors"],
        }
        for carrier, r in runs.items()
    }
    path = write_result(name, {"calls": options.calls, "steady_s": options.steady, "carriers": summary, "runs": runs})
    print(f"\ncallbridge load per carrier: {options.calls} concurrent calls each, baseline {carriers[0]}")
    print_table([(carrier, "{:.3f} ms CPU/call-s  x{:.2f}  p99 fwd {} ms  barge-ins {}  errors {}".format(
        row["gateway_cpu_ms_per_call_second"], row["ratio_vs_" + carriers[0]], row["frame_forward_ms_p99"],
        row["barge_ins"], sum(1 for v in row["errors"].values() if v)))
        for carrier, row in summary.items()])
    print(f"JSON: {path}")
    return 0 if all(all(v == 0 for v in row["errors"].values()) for row in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
