"""Benchmark of the warm-transfer webhooks against the plain after-stream webhook, in the same run.

Usage: ``.venv/bin/python load_tests/bench_transfer.py [--requests 300]``

A ``callbridge serve`` child (warm mode, fallbacks ``number,queue``) with a private redis-server. Each
escalated call gets a realistic escalation record (~2.5 KB) in its Redis call hash, as the outbox
writes it, and is unknown to the gateway's memory: the multi-replica case, where the whisper reads
the record from Redis. Signed form POSTs over keep-alive HTTP from this process, interleaved so that
machine noise hits every kind alike:

* baseline: ``/twilio/after-stream`` for a call that did not escalate (signature, two Redis reads and
  the resume claim, ``<Hangup/>``);
* whisper: ``/twilio/transfer/whisper`` with ``AnsweredBy=human`` (signature, Redis read of the
  record, the briefing, ``<Say>``);
* dial_done: ``/twilio/transfer/dial-done`` with ``DialCallStatus=no-answer`` (signature, the
  voicemail-mark read, the next step's ``<Dial>``).

Also the pure ``build_briefing`` and ``task_attributes`` per call (microseconds). Prints medians and
p99 in ms with the ratio to the baseline; writes ``load_tests/results/bench_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_tests.common import AUTH_TOKEN, free_port, print_table, private_redis, start_gateway, write_result
from service.escalation.briefing import build_briefing
from service.providers.twilio.dialect import AFTER_STREAM_PATH, compute_twilio_signature
from service.providers.twilio.transfer import DIAL_DONE_PATH, WHISPER_PATH, task_attributes
from service.simcaller.twilio_caller import new_sid


def _record(call_sid: str, index: int) -> dict[str, Any]:
    turns = []
    for n in range(5):
        turns.append({"role": "caller", "text": f"My order {4000 + n} still has not arrived and I was charged twice "
                                                 "for the delivery, this is the third time I call about it.",
                      "ts": "2026-12-04T21:00:00.000Z"})
        turns.append({"role": "bot", "text": "I can see the order; it left our warehouse on Monday and the carrier "
                                              "says it is delayed. Let me get a colleague to sort out the charge.",
                      "ts": "2026-12-04T21:00:05.000Z"})
    return {"type": "callbridge.escalation", "version": 1, "escalation_id": f"01JBENCH{index:018d}",
            "call_id": call_sid, "trigger": "sentiment", "reason": "frustration crossed the threshold",
            "caller_mood": "angry", "score": 0.86, "summary": 'Issue: "My order 4000 still has not arrived". '
            "Mood: angry (0.86).", "transcript": turns, "caller": "+1******4567",
            "sentiment": [{"score": 0.5 + n / 20, "ts": "2026-12-04T21:00:00.000Z"} for n in range(8)],
            "tools": [{"name": "lookup_order", "ok": True, "result": {"status": "delayed", "eta": "Friday"}}]}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per kind (default 300)")
    args = parser.parse_args()
    redis = private_redis()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = start_gateway(port, redis.url, "ws://127.0.0.1:9/v1/realtime", extra_env={
        "CALLBRIDGE_TRANSFER_MODE": "warm", "CALLBRIDGE_TRANSFER_NUMBER": "+15550100",
        "CALLBRIDGE_TRANSFER_FALLBACKS": "number,queue", "CALLBRIDGE_TRANSFER_FALLBACK_NUMBER": "+15550200"})
    try:
        import redis as redis_lib

        client = redis_lib.Redis.from_url(redis.url)
        calls = [new_sid("CA") for _ in range(args.requests)]
        records = [_record(call, i) for i, call in enumerate(calls)]
        for call, record in zip(calls, records, strict=True):
            body = json.dumps(record, separators=(",", ":"), sort_keys=True)
            client.hset(f"cb:call:{call}", mapping={"state": "escalated", "escalation_status": "pending",
                                                    "escalation_record": body})
        record_bytes = statistics.mean(len(json.dumps(r)) for r in records)
        timings: dict[str, list[float]] = {"baseline": [], "whisper": [], "dial_done": []}
        with httpx.Client(timeout=10.0) as http:

            def post(path: str, query: str, form: dict[str, str]) -> float:
                url = base + path + (f"?{query}" if query else "")
                headers = {"X-Twilio-Signature": compute_twilio_signature(AUTH_TOKEN, url, form)}
                started = time.perf_counter()
                response = http.post(url, data=form, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")
                return elapsed

            for i, call in enumerate(calls):  # the first 5% of each kind are dropped below (warm-up)
                form = {"CallSid": call, "AccountSid": "AC" + "0" * 32, "From": "+15551234567", "To": "+15557654321",
                        "CallStatus": "in-progress"}
                plain = {**form, "CallSid": new_sid("CA")}
                whisper = {**form, "CallSid": new_sid("CA"), "AnsweredBy": "human", "ParentCallSid": call}
                dial = {**form, "DialCallStatus": "no-answer", "DialCallSid": new_sid("CA")}
                query = f"call={call}&step=0"
                order = [("baseline", AFTER_STREAM_PATH, "", plain), ("whisper", WHISPER_PATH, query, whisper),
                         ("dial_done", DIAL_DONE_PATH, query, dial)]
                for kind, path, q, f in order[i % 3:] + order[: i % 3]:
                    timings[kind].append(post(path, q, f))
        pure_briefing, pure_task = [], []
        for record in records:
            started = time.perf_counter_ns()
            build_briefing(record)
            pure_briefing.append((time.perf_counter_ns() - started) / 1000)
            started = time.perf_counter_ns()
            task_attributes(record, language="en-US")
            pure_task.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gateway.terminate()
        gateway.wait(timeout=20)
        redis.stop()
    skip = max(1, args.requests // 20)
    result: dict[str, Any] = {"requests_per_kind": args.requests, "record_bytes_mean": round(record_bytes)}
    base_median = statistics.median(timings["baseline"][skip:])
    rows = []
    for kind, values in timings.items():
        kept = values[skip:]
        median, p99 = statistics.median(kept), _pct(kept, 0.99)
        result[kind] = {"median_ms": round(median, 3), "p99_ms": round(p99, 3),
                        "ratio_vs_baseline": round(median / base_median, 2)}
        rows.append((kind, f"median {median:6.2f} ms  p99 {p99:6.2f} ms  x{median / base_median:.2f} of baseline"))
    result["build_briefing_us"] = {"median": round(statistics.median(pure_briefing), 1),
                                   "p99": round(_pct(pure_briefing, 0.99), 1)}
    result["task_attributes_us"] = {"median": round(statistics.median(pure_task), 1),
                                    "p99": round(_pct(pure_task, 0.99), 1)}
    rows.append(("build_briefing", f"median {result['build_briefing_us']['median']} us  "
                                   f"p99 {result['build_briefing_us']['p99']} us"))
    rows.append(("task_attributes", f"median {result['task_attributes_us']['median']} us  "
                                    f"p99 {result['task_attributes_us']['p99']} us"))
    print(f"warm-transfer webhooks, {args.requests} requests per kind, record ~{round(record_bytes)} B:")
    print_table(rows)
    print(f"written: {write_result('bench_transfer', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
