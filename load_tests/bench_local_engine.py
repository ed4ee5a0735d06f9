"""Benchmark of the local (offline) Realtime engine on this machine.

Measures, through the engine's real client interface (``open_local_session`` -> ``LocalTransport``):

1. recognition word accuracy on caller sentences (in-script and paraphrases,
   ``caller_audio.EVAL_SENTENCES``) synthesised with Piper and with espeak-ng, passed through 8 kHz
   mu-law and back to 24 kHz (``service.audio`` converters);
2. time from ``input_audio_buffer.speech_stopped`` to the first ``response.output_audio.delta``;
3. CPU real-time factor of one call (CPU seconds of this process + the recogniser worker processes,
   per second of call);
4. how many simultaneous calls the machine carries: N paced calls in one process, N increasing, until
   first-audio p95 > 1 s or the CPU load (CPU seconds / (wall seconds x cores)) > 1.

Prints a table and writes load_tests/results/bench_local_engine.json.
Usage: .venv/bin/python load_tests/bench_local_engine.py [--max-calls 16] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.realtime.events import RealtimeClosed
from service.realtime.local import load_models, open_local_session, shutdown_models
from service.realtime.local.caller_audio import (
    EVAL_SENTENCES,
    espeak_pcm24,
    piper_pcm24,
    telephone,
    word_errors,
)
from service.realtime.local.models import LocalModels

FRAME = 960  # 20 ms at 24 kHz PCM16
CALL_TURNS = ("where is my order", "my order number is four five six seven", "what are your opening hours")


def cpu_seconds(models: LocalModels) -> float:
    """CPU time of this process plus the recogniser worker processes."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for worker in models.recogniser._workers:
        try:
            fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def session_update(create_response: bool) -> dict[str, Any]:
    return {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500, "create_response": create_response,
                               "interrupt_response": True}}}}}


async def accuracy(sentences: tuple[str, ...], voice_audio: dict[str, list[bytes]]) -> dict[str, Any]:
    """Word accuracy per voice through a session (no replies, so only recognition runs). Transcripts
    may complete out of order (two recogniser processes): they are matched by item id."""
    out: dict[str, Any] = {}
    for voice, clips in voice_audio.items():
        transport = await open_local_session()
        await transport.send(json.dumps(session_update(create_response=False)))
        committed: list[str] = []
        heard: dict[str, str] = {}
        all_heard = asyncio.Event()

        async def reader(transport: Any = transport, committed: list[str] = committed,
                         heard: dict[str, str] = heard, all_heard: asyncio.Event = all_heard,
                         expected: int = len(clips)) -> None:
            while True:
                try:
                    event = json.loads(await transport.recv())
                except RealtimeClosed:
                    return
                if event["type"] == "input_audio_buffer.committed":
                    committed.append(event["item_id"])
                elif event["type"] == "conversation.item.input_audio_transcription.completed":
                    heard[event["item_id"]] = event["transcript"]
                    if len(heard) >= expected:
                        all_heard.set()

        task = asyncio.create_task(reader())
        for clip in clips:
            audio = b"\0" * 48 * 400 + clip + b"\0" * 48 * 900
            for i in range(0, len(audio), FRAME):
                await transport.send(json.dumps({"type": "input_audio_buffer.append",
                                                 "audio": base64.b64encode(audio[i:i + FRAME]).decode()}))
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(all_heard.wait(), 60)
        except TimeoutError:
            pass  # missing transcripts are counted below
        await transport.close()
        await task
        transcripts = [heard.get(item_id, "") for item_id in committed]
        transcripts += [""] * (len(clips) - len(transcripts))  # a missed turn counts as all words wrong
        errors = words = 0
        misses = []
        for ref, hyp in zip(sentences, transcripts, strict=False):
            e, n = word_errors(ref, hyp)
            errors += max(e, 0)
            words += n
            if e:
                misses.append({"said": ref, "heard": hyp})
        missing = len(clips) - len(heard)
        out[voice] = {"sentences": len(clips), "words": words, "word_errors": errors,
                      "accuracy": round(1 - errors / words, 3), "missing_transcripts": missing, "misses": misses}
    return out


async def paced_call(turns: list[bytes], gap_ms: int = 3500, start_delay: float = 0.0) -> dict[str, Any]:
    """One call paced at real time: caller turns separated by silence (the caller keeps streaming).
    Returns first-audio latencies (s) and the call's audio duration (s). ``start_delay`` staggers
    simultaneous calls (real calls do not all speak at the same instant)."""
    await asyncio.sleep(start_delay)
    transport = await open_local_session()
    await transport.send(json.dumps(session_update(create_response=True)))
    latencies: list[float] = []
    stopped_at: list[float] = []
    waiting = {"armed": False}

    async def reader() -> None:
        while True:
            try:
                event = json.loads(await transport.recv())
            except RealtimeClosed:
                return
            if event["type"] == "input_audio_buffer.speech_stopped":
                stopped_at.append(time.monotonic())
                waiting["armed"] = True
            elif event["type"] == "response.output_audio.delta" and waiting["armed"]:
                latencies.append(time.monotonic() - stopped_at[-1])
                waiting["armed"] = False

    task = asyncio.create_task(reader())
    audio = b"".join(b"\0" * 48 * 500 + t + b"\0" * 48 * gap_ms for t in turns)
    start = time.monotonic()
    for n, i in enumerate(range(0, len(audio), FRAME)):
        await transport.send(json.dumps({"type": "input_audio_buffer.append",
                                         "audio": base64.b64encode(audio[i:i + FRAME]).decode()}))
        delay = start + (n + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await transport.close()
    await task
    return {"latencies": latencies, "turns": len(turns), "seconds": len(audio) / 48000}


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def concurrency(models: LocalModels, turns: list[bytes], levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    cores = os.cpu_count() or 1
    for n in levels:
        cpu0, wall0 = cpu_seconds(models), time.monotonic()
        # Calls start staggered over 3 s; the reported figures cover the whole overlapping run.
        results = await asyncio.gather(*(paced_call(turns, start_delay=3.0 * i / n) for i in range(n)))
        cpu, wall = cpu_seconds(models) - cpu0, time.monotonic() - wall0
        lat = [x for r in results for x in r["latencies"]]
        expected = sum(r["turns"] for r in results)
        row = {"calls": n, "turns": expected, "replies": len(lat),
               "first_audio_p50_s": round(statistics.median(lat), 3) if lat else None,
               "first_audio_p95_s": round(p95(lat), 3) if lat else None,
               "cpu_load": round(cpu / (wall * cores), 3), "rtf_per_call": round(cpu / sum(r["seconds"] for r in results), 3)}
        rows.append(row)
        print(f"  {n:3d} calls: replies {len(lat)}/{expected}, first audio p50 {row['first_audio_p50_s']} s, "
              f"p95 {row['first_audio_p95_s']} s, CPU load {row['cpu_load']}, RTF/call {row['rtf_per_call']}",
              flush=True)
        if len(lat) < expected or (row["first_audio_p95_s"] or 99) > 1.0 or row["cpu_load"] > 1.0:
            break
    return rows


def write_result(result: dict[str, Any]) -> Path:
    out = Path(__file__).resolve().parent / "results" / "bench_local_engine.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-calls", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="fewer sentences and levels (smoke run)")
    args = parser.parse_args()
    t0 = time.monotonic()
    models = await asyncio.to_thread(load_models)
    load_s = time.monotonic() - t0
    sentences = EVAL_SENTENCES[:6] if args.quick else EVAL_SENTENCES
    print(f"models loaded in {load_s:.1f} s; synthesising {len(sentences)} caller sentences x 2 voices", flush=True)
    voice_audio = {
        "piper": [telephone(piper_pcm24(s, models.tts)) for s in sentences],
        "espeak-ng": [telephone(espeak_pcm24(s)) for s in sentences],
    }
    acc = await accuracy(sentences, voice_audio)
    total_words = sum(v["words"] for v in acc.values())
    overall = round(1 - sum(v["word_errors"] for v in acc.values()) / total_words, 3)

    turns = [telephone(piper_pcm24(s, models.tts)) for s in CALL_TURNS]
    cpu0 = cpu_seconds(models)
    single = await paced_call(turns)
    single_rtf = round((cpu_seconds(models) - cpu0) / single["seconds"], 3)
    levels = [n for n in (1, 2, 4, 6, 8, 12, 16, 24, 32) if n <= args.max_calls]
    if args.quick:
        levels = levels[:2]
    print("concurrency:", flush=True)
    rows = await concurrency(models, turns, levels)
    carried = max((r["calls"] for r in rows if r["replies"] == r["turns"] and (r["first_audio_p95_s"] or 99) <= 1.0
                   and r["cpu_load"] <= 1.0), default=0)

    result = {
        "machine": {"cores": os.cpu_count(), "note": "shared 2-core VM; other test suites may run concurrently"},
        "model_load_s": round(load_s, 2),
        "recognition": {**acc, "overall_accuracy": overall},
        "single_call": {"first_audio_s": [round(x, 3) for x in single["latencies"]],
                        "first_audio_max_s": round(max(single["latencies"]), 3) if single["latencies"] else None,
                        "call_seconds": single["seconds"], "cpu_rtf": single_rtf},
        "concurrency": rows,
        "calls_carried": carried,
        "targets": {"first_audio_s": 0.4, "accuracy": 0.85},
    }
    print()
    print(f"{'metric':44s} {'value':>12s}")
    for voice, v in acc.items():
        print(f"{'word accuracy, ' + voice + ' (telephone)':44s} {v['accuracy']:12.3f}")
    print(f"{'word accuracy, overall (target >= 0.85)':44s} {overall:12.3f}")
    for i, x in enumerate(single["latencies"]):
        print(f"{f'first audio after speech_stopped, turn {i + 1} (s)':44s} {x:12.3f}")
    print(f"{'CPU real-time factor, one call':44s} {single_rtf:12.3f}")
    print(f"{'simultaneous calls carried (p95<=1s, load<=1)':44s} {carried:12d}")
    print(f"\nwrote {write_result(result)}")
    shutdown_models()


if __name__ == "__main__":
    asyncio.run(main())
