"""Business tools under slow back-ends: tool latency and the dead air a caller hears (docs/tools.md).

Usage: ``.venv/bin/python load_tests/bench_tools.py [--calls 10] [--slow-s 1.2] [--filler-after-ms 700]
[--model-delay-ms 400]`` (the stand-in model's time to its first answer audio).

Two gateways run in this process (the real app under uvicorn on 127.0.0.1), each with its own
Realtime stand-in that answers the caller's question with a ``lookup_order`` tool call, and one real
HTTP tool service (``tests/standins/tool_server.py``) that answers after ``--slow-s``:

* ``filler``: ``CALLBRIDGE_FILLER_AFTER_MS`` and the tool's ``filler_after_ms`` are
  ``--filler-after-ms`` (the call's filler, docs/first-words.md, repeats after 2 s by default);
* ``baseline``: the filler off (``CALLBRIDGE_FILLER_AFTER_MS=0``), measured in the same run, calls
  interleaved with the other gateway's so machine noise hits both alike.

Per call, from the caller stand-in's own playback model (audio plays from arrival, back to back; a
``clear`` cuts what is queued):

* ``tool_ms``: the gateway's tool latency (request to answer, ``callbridge_tool_seconds``'s source);
* ``dead_air_ms``: the longest stretch with nothing playing between the tool request reaching the
  service and the model's first answer audio (a filler clip counts as sound);
* ``filler_after_request_ms``: tool request -> first filler audio at the caller;
* ``clear_to_model_audio_ms``: the filler's ``clear`` -> the model's first audio.

Prints medians and p99 (over few calls p99 is the worst) and the ratio of dead air with and without
the filler; writes ``load_tests/results/bench_tools.json`` (not committed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_tests.common import print_table, write_result
from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.standins.realtime_server import FunctionCallScript, RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.tool_server import ToolServer
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn

API_KEY = "sk-bench-tools-0123456789"
SECRET = "bench-tool-secret-0123456789"
SCHEMA = {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]}


@contextlib.asynccontextmanager
async def _gateway(workdir: Path, server: ToolServer, mode: str, filler_after_ms: int, model_delay_ms: int
                   ) -> AsyncIterator[tuple[RunningGateway, RealtimeStandIn, TwilioCallerStandIn, list[dict[str, Any]]]]:
    behaviour = ScriptedBehaviour(transcripts=["where is my order"], cycle_transcripts=True, reply_ms=800,
                                  first_delta_delay_ms=model_delay_ms, function_calls={})
    tools = workdir / f"tools-{mode}.yaml"
    tools.write_text(yaml.safe_dump({"tools": [{
        "name": "lookup_order", "description": "Look up an order.", "parameters": SCHEMA,
        "url": server.url("slow"), "timeout_s": 10, "idempotent": True, "secret_env": "BENCH_TOOL_SECRET",
        "filler_after_ms": filler_after_ms}]}))
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        settings = {"realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                    "vad_silence_duration_ms": 300, "tools_file": str(tools), "log_level": "warning",
                    "filler_after_ms": 0 if mode == "baseline" else filler_after_ms}
        async with run_gateway(**settings) as gw, TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
            events: list[dict[str, Any]] = []
            gw.gateway.listeners.append(lambda kind, fields: events.append(fields) if kind == "tool_call" else None)
            yield gw, realtime, caller, events


def _playing_intervals(call: CallHandle) -> list[tuple[float, float]]:
    """When audio was playing at the caller: media back to back from arrival, cut by each clear."""
    intervals: list[tuple[float, float]] = []
    end = 0.0
    clears = sorted(c.at for c in call.playback.clears)
    for media in call.playback.media:
        start = max(media.at, end)
        end = start + media.length / 8000
        cut = next((c for c in clears if c >= media.at), None)
        if cut is not None and cut < end:
            end = max(start, cut)
        intervals.append((start, end))
    return intervals


def _longest_gap(intervals: list[tuple[float, float]], start: float, stop: float) -> float:
    cursor, longest = start, 0.0
    for lo, hi in sorted(intervals):
        if hi <= cursor:
            continue
        if lo >= stop:
            break
        longest = max(longest, lo - cursor)
        cursor = max(cursor, hi)
    return max(longest, stop - cursor)


async def _one_call(setup: tuple[RunningGateway, RealtimeStandIn, TwilioCallerStandIn, list[dict[str, Any]]],
                    server: ToolServer, question: Any, index: int) -> dict[str, float | None]:
    _gw, realtime, caller, events = setup
    call = await caller.place_call()
    session = await realtime.wait_for_session(index)
    session.queue_function_call(FunctionCallScript(name="lookup_order", arguments={"order_number": f"A-{index}"}))
    seen = len(server.requests)
    await call.send_audio(question, silence(400))
    await session.wait_until(lambda: session.responses_done >= 2, timeout_s=30)
    marks_before = len(call.playback.marks)
    await call.wait_for(lambda: len(call.playback.marks) > marks_before or call.playback.played_total > 0, 10)
    request = next(r for r in server.requests[seen:] if r.payload["arguments"]["order_number"] == f"A-{index}")
    model_audio = next(m.received_at for m in call.playback.marks if m.received_at >= request.at)
    first_model_media = max(m.at for m in call.playback.media if m.at <= model_audio)
    fillers = [m.at for m in call.playback.media if request.at <= m.at < first_model_media]
    clears = [c.at for c in call.playback.clears if c.at >= request.at]
    tool = next(e for e in reversed(events) if e["arguments"]["order_number"] == f"A-{index}")
    result = {
        "tool_ms": float(tool["latency_ms"]),
        "dead_air_ms": _longest_gap(_playing_intervals(call), request.at, first_model_media) * 1000,
        "filler_after_request_ms": (fillers[0] - request.at) * 1000 if fillers else None,
        "clear_to_model_audio_ms": (first_model_media - clears[0]) * 1000 if clears and fillers else None,
    }
    await call.hang_up()
    await call.wait_closed()
    return result


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p99": None, "n": 0}
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1),
            "p99": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1), "n": len(ordered)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["BENCH_TOOL_SECRET"] = SECRET
    question = synthesize("Where is my order?")
    rows: dict[str, list[dict[str, float | None]]] = {"filler": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        async with ToolServer(SECRET, slow_s=args.slow_s) as server, \
                _gateway(Path(tmp), server, "filler", args.filler_after_ms, args.model_delay_ms) as with_filler, \
                _gateway(Path(tmp), server, "baseline", args.filler_after_ms, args.model_delay_ms) as baseline:
            for index in range(args.calls):
                for mode, setup in (("filler", with_filler), ("baseline", baseline)):
                    rows[mode].append(await _one_call(setup, server, question, index))
            unsigned = sum(1 for r in server.requests if not r.signature_ok)
    summary: dict[str, Any] = {
        "calls_per_mode": args.calls, "slow_s": args.slow_s, "filler_after_ms": args.filler_after_ms,
        "model_delay_ms": args.model_delay_ms,
        "unsigned_requests": unsigned, "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    for mode, values in rows.items():
        for key in ("tool_ms", "dead_air_ms", "filler_after_request_ms", "clear_to_model_audio_ms"):
            summary[f"{mode}.{key}"] = _stats([v[key] for v in values if v[key] is not None])  # type: ignore[misc]
    with_f, without = summary["filler.dead_air_ms"]["median"], summary["baseline.dead_air_ms"]["median"]
    summary["dead_air_ratio_filler_vs_baseline"] = round(with_f / without, 3) if with_f and without else None
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--slow-s", type=float, default=1.2)
    parser.add_argument("--filler-after-ms", type=int, default=700)
    parser.add_argument("--model-delay-ms", type=int, default=400, help="the stand-in model's time to first audio")
    result = asyncio.run(main(parser.parse_args()))
    path = write_result("bench_tools", result)
    print_table([(k, str(v)) for k, v in sorted(result.items())])
    print(f"written: {path}")
