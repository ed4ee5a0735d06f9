"""How much of the gateway's CPU per call-second is the I/O floor, and how much is its own work.

    .venv/bin/python -m load_tests.bench_media_floor --calls 50 --seconds 20

Three processes per mode, all on 127.0.0.1: a generator (N WebSocket connections, each sending one
Twilio ``media`` message every 20 ms, paced, for ``--seconds``), a relay under test, and a sink (a
``websockets`` server that reads and discards, standing in for the Realtime API). The relay is
``service.wsio`` on both legs, as in the gateway, in one of two modes, run one after the other in
the same invocation:

* ``floor``: every frame received is answered by sending one fixed, pre-built
  ``input_audio_buffer.append`` of the right size (1.3 KB) upstream: WebSocket framing, the event
  loop and the two socket operations per frame, and nothing else;
* ``hot``: the gateway's per-frame work on top: Twilio dialect parse (orjson, base64), mu-law decode
  and 8 -> 24 kHz resampling, append JSON, plus the frame-forward histogram.

Reported per mode: relay CPU per call-second, sampled every second over the steady part (median and
p99 of those samples) and the kernel share; ``hot`` / ``floor`` is the ratio. Whatever the gateway
spends above ``hot`` (load_calls.py) is per-call side work (state, sentiment, turn handling).
Bounded: each mode ends after ``--seconds`` plus start-up; every child is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from load_tests.common import CLK_TCK, RESULTS, free_port

STREAM_SID = "MZ" + "0" * 32


# --- child roles -----------------------------------------------------------------------------------
async def _sink(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
        await asyncio.sleep(3600)


async def _relay(port: int, sink_port: int, mode: str) -> None:
    from service import metrics
    from service.audio.resample import CallerToModel
    from service.providers.base import MediaReceived
    from service.providers.twilio.dialect import TwilioDialect
    from service.realtime.protocol import GaDialect
    from service.wsio import ServerWebSocket, connect_websocket

    dialect = GaDialect()
    fixed = dialect.audio_append(bytes(960))

    async def handler(socket: ServerWebSocket) -> None:
        upstream = await connect_websocket(f"ws://127.0.0.1:{sink_port}/", ping_interval=None)
        twilio = TwilioDialect()
        twilio.parse(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": {
            "streamSid": STREAM_SID, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32,
            "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        inbound = CallerToModel()
        ended = asyncio.Event()

        def floor(_message: bytes) -> None:
            upstream.send_nowait(fixed)

        def hot(message: bytes) -> None:
            received = time.perf_counter()
            event = twilio.parse(message)
            if isinstance(event, MediaReceived):
                upstream.send_nowait(dialect.audio_append_b64(inbound.process_b64(event.payload)))
                metrics.FRAME_FORWARD.observe(time.perf_counter() - received)

        socket.set_message_handler(floor if mode == "floor" else hot, ended.set)
        await ended.wait()
        await upstream.close()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ServerWebSocket({"/m": handler}, ping_interval=None),
                                      "127.0.0.1", port)
    async with server:
        await asyncio.sleep(3600)


async def _generator(port: int, calls: int, seconds: float) -> None:
    from websockets.asyncio.client import connect

    payload = base64.b64encode(os.urandom(160)).decode()

    async def call() -> None:
        async with connect(f"ws://127.0.0.1:{port}/m", compression=None, ping_interval=None) as ws:
            start = time.monotonic()
            sent = 0
            while time.monotonic() - start < seconds:
                sent += 1
                await ws.send(json.dumps({"event": "media", "sequenceNumber": str(sent + 1), "streamSid": STREAM_SID,
                                          "media": {"track": "inbound", "chunk": str(sent),
                                                    "timestamp": str(sent * 20), "payload": payload}}))
                await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))  # real-time pacing

    await asyncio.gather(*(call() for _ in range(calls)))


# --- driver ----------------------------------------------------------------------------------------
def _cpu(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[12]) / CLK_TCK


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mode(mode: str, calls: int, seconds: float) -> dict[str, Any]:
    sink_port, relay_port = free_port(), free_port()
    me = [sys.executable, "-m", "load_tests.bench_media_floor"]
    children = [subprocess.Popen([*me, "--role", "sink", "--port", str(sink_port)])]
    try:
        children.append(subprocess.Popen([*me, "--role", "relay", "--port", str(relay_port),
                                          "--sink-port", str(sink_port), "--mode", mode]))
        relay = children[-1].pid
        time.sleep(1.5)  # start-up of the two servers (no readiness signal from plain children)
        children.append(subprocess.Popen([*me, "--role", "generator", "--port", str(relay_port),
                                          "--calls", str(calls), "--seconds", str(seconds)]))
        time.sleep(3.0)  # connections open and reach their pace before measuring
        samples: list[float] = []
        first_cpu, first_sys = _cpu(relay)
        last_cpu, last_at = first_cpu, time.monotonic()
        started = last_at
        while time.monotonic() - started < seconds - 5.0:  # bounded: stops before the generator does
            time.sleep(1.0)
            cpu, _ = _cpu(relay)
            now = time.monotonic()
            samples.append((cpu - last_cpu) / (now - last_at) / calls * 1000.0)  # ms per call-second
            last_cpu, last_at = cpu, now
        total_cpu, total_sys = _cpu(relay)
        children[-1].wait(timeout=seconds + 30)
    finally:
        for child in children:
            child.kill()
            child.wait()
    return {
        "mode": mode,
        "calls": calls,
        "samples": len(samples),
        "cpu_ms_per_call_second_median": round(statistics.median(samples), 3),
        "cpu_ms_per_call_second_p99": round(_quantile(samples, 0.99), 3),
        "cpu_us_per_frame_median": round(statistics.median(samples) * 1000 / 50, 1),
        "kernel_share": round((total_sys - first_sys) / max(total_cpu - first_cpu, 1e-9), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--role", choices=["driver", "sink", "relay", "generator"], default="driver")
    parser.add_argument("--mode", choices=["floor", "hot"], default="floor")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sink-port", type=int, default=0)
    args = parser.parse_args()
    if args.role != "driver":
        import uvloop

        role = {"sink": lambda: _sink(args.port), "relay": lambda: _relay(args.port, args.sink_port, args.mode),
                "generator": lambda: _generator(args.port, args.calls, args.seconds)}[args.role]
        uvloop.run(role())
        return 0
    results = [run_mode(mode, args.calls, args.seconds) for mode in ("floor", "hot")]
    floor, hot = results
    ratio = round(hot["cpu_ms_per_call_second_median"] / max(floor["cpu_ms_per_call_second_median"], 1e-9), 2)
    print(f"\nmedia relay CPU, {args.calls} calls x 50 frames/s (per 1-s sample: median / p99 ms per call-second)")
    for row in results:
        print(f"  {row['mode']:<6} {row['cpu_ms_per_call_second_median']:>7} / {row['cpu_ms_per_call_second_p99']:<7}"
              f"  = {row['cpu_us_per_frame_median']} us per frame, kernel share {row['kernel_share']}")
    print(f"  hot / floor = {ratio}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_media_floor_{args.calls}.json"
    out.write_text(json.dumps({"floor": floor, "hot": hot, "hot_over_floor": ratio}, indent=2))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
