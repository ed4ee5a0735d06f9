"""Cost of one console active-calls snapshot against a real redis-server, next to a baseline measured in
the same run.

The feed (``/console/api/stream/calls``) builds one snapshot per second: every active call's row. The
baseline reads each call with ``StateStore.load_call`` (hash, whole transcript, whole sentiment series:
one round trip per call), as the first console slice did; the feed reads every call's hash and
sentiment tail in one pipelined round trip (``service.console.routes``). Each call carries a 40-turn
transcript and 20 sentiment points. Rounds alternate the two so they share the machine's noise.
Reports the median and p99 per snapshot and the median's ratio to the baseline's. Writes
``load_tests/results/bench_console_feed.json`` (not committed).

    .venv/bin/python -m load_tests.bench_console_feed [--calls 200] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from load_tests.common import print_table, private_redis, write_result
from service.console import views
from service.state.model import SentimentPoint
from service.state.store import StateStore


async def _populate(store: StateStore, calls: int) -> list[str]:
    ids = [f"CA-bench-{n:04d}" for n in range(calls)]
    for call_id in ids:
        writer = store.call(call_id)
        writer.started({"from": "+14155550123", "provider": "twilio"})
        for turn in range(40):
            writer.transcript("caller" if turn % 2 == 0 else "bot", f"turn {turn}: a sentence of ordinary length here")
        for turn in range(20):
            writer.sentiment(SentimentPoint(ts=time.time(), turn=turn, score=turn / 20, language="en"))
    assert await store.flush(60.0), "state did not reach Redis"
    return ids


async def _baseline(store: StateStore, ids: list[str]) -> int:
    now = time.time()
    rows = []
    for call_id in ids:
        snap = await store.load_call(call_id)
        if snap is not None:
            rows.append(views.call_row(snap, now))
    return len(rows)


async def _pipelined(store: StateStore, ids: list[str]) -> int:
    pipe = store.redis.pipeline(transaction=False)
    for call_id in ids:
        pipe.hgetall(store.keys.call(call_id))
        pipe.lrange(store.keys.sentiment(call_id), -views.SPARK_POINTS, -1)
    replies = await pipe.execute()
    now = time.time()
    rows = [views.call_row(snap, now) for snap in (
        views.row_snapshot(call_id, raw_hash, raw_points)
        for call_id, raw_hash, raw_points in zip(ids, replies[0::2], replies[1::2], strict=True)
    ) if snap is not None]
    return len(rows)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)}


async def _run(calls: int, rounds: int) -> dict[str, Any]:
    redis = private_redis()
    store = StateStore(redis.url, prefix="bench", replica_id="bench")
    await store.start()
    try:
        ids = await _populate(store, calls)
        times: dict[str, list[float]] = {"baseline_load_call": [], "pipelined_rows": []}
        for _ in range(rounds):
            for name, build in (("baseline_load_call", _baseline), ("pipelined_rows", _pipelined)):
                started = time.perf_counter()
                assert await build(store, ids) == calls
                times[name].append(time.perf_counter() - started)
        result: dict[str, Any] = {"calls": calls, "rounds": rounds,
                                  **{name: _stats(samples) for name, samples in times.items()}}
        result["ratio_median_vs_baseline"] = round(
            result["pipelined_rows"]["median_ms"] / result["baseline_load_call"]["median_ms"], 3)
        return result
    finally:
        await store.close()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(_run(args.calls, args.rounds))
    path = write_result("bench_console_feed", result)
    print_table([(key, str(value)) for key, value in result.items()])
    print(f"  written: {path}")


if __name__ == "__main__":
    main()
