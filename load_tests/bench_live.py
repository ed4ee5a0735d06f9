"""GPT-Live vs Realtime GA under the same load, in one run (issue 13.9).

    .venv/bin/python -m load_tests.bench_live --calls 50 --steady 30

Runs ``load_tests.load_calls`` twice back to back on the same machine: N calls on the Realtime GA
dialect (the Realtime stand-in: replies burst at 4x real time) and N calls on the GPT-Live dialect
(the GPT-Live stand-in: a continuous real-time output stream, one 100 ms delta every 100 ms per call,
mostly digital silence that the gateway parses and drops), optionally also GPT-Live with ``pcmu``
pass-through. Reports, per run, gateway CPU per call-second, frame-forward p50/p99 and RSS, and the
ratios against the GA baseline of the same run. JSON goes to load_tests/results/ (not committed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from load_tests.common import ROOT, print_table, write_result
from load_tests.load_calls import run


def start_live_standin() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "load_tests.live_proc"], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("ws://"):
        raise RuntimeError(f"GPT-Live stand-in did not start: {line!r}")
    return process, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--caller-procs", type=int, default=1)
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--pcmu", action="store_true", help="also run GPT-Live with CALLBRIDGE_LIVE_AUDIO_FORMAT=pcmu")
    options = parser.parse_args(argv)
    runs: dict[str, dict[str, Any]] = {}
    common = dict(calls=options.calls, caller_procs=options.caller_procs, ramp_s=options.ramp,
                  steady_s=options.steady)
    runs["realtime_ga"] = run(name="bench-live-ga", **common)  # type: ignore[arg-type]
    live_env = {"CALLBRIDGE_REALTIME_DIALECT": "live", "CALLBRIDGE_GREETING": "false"}
    runs["live_pcm16"] = run(name="bench-live-pcm16", model_standin=start_live_standin,  # type: ignore[arg-type]
                             gateway_env=live_env, **common)
    if options.pcmu:
        runs["live_pcmu"] = run(name="bench-live-pcmu", model_standin=start_live_standin,  # type: ignore[arg-type]
                                gateway_env={**live_env, "CALLBRIDGE_LIVE_AUDIO_FORMAT": "pcmu"}, **common)
    base = runs["realtime_ga"]
    rows = [("run", "CPU ms/call-s  (x GA) | fwd p50 / p99 ms (p99 x GA) | RSS MB | errors")]
    for key, result in runs.items():
        cpu = result["gateway_cpu_ms_per_call_second"]
        p99 = result["frame_forward_ms"]["p99"]
        ratio_cpu = cpu / base["gateway_cpu_ms_per_call_second"] if base["gateway_cpu_ms_per_call_second"] else 0
        ratio_p99 = (p99 or 0) / (base["frame_forward_ms"]["p99"] or 1)
        errors = sum(v for v in result["errors"].values() if isinstance(v, int | float))
        rows.append((key, f"{cpu:.3f} ({ratio_cpu:.2f}) | {result['frame_forward_ms']['p50']} / {p99} "
                          f"({ratio_p99:.2f}) | {result['gateway_rss_mb']} | {errors}"))
    print_table(rows)
    path = write_result("bench-live", {"calls": options.calls, "runs": runs})
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
