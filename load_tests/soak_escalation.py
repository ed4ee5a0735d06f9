"""Escalation soak: N escalations through the real outbox and delivery workers to a flaky receiver.

Usage: ``.venv/bin/python load_tests/soak_escalation.py [--escalations 1000] [--rate 100] [--deadline 180]``

What runs (all real, all on 127.0.0.1): a private ``redis-server``; ``StateStore`` + ``EscalationPolicy``
driving synthetic angry calls until each escalates; ``Outbox`` appending the records; two delivery
workers (two consumer names, as on two replicas) POSTing to the stand-in receiver
(``tests/standins/webhook_receiver.py``), which verifies every signature, dedupes by Idempotency-Key and
fails ~20% of first-time requests: 8% HTTP 500, 6% timeouts (answers after the client gave up, so the
receiver has it and the retry is a duplicate), 6% HTTP 429 with ``Retry-After: 1``. Halfway through,
worker 1 is killed (its in-flight deliveries cancelled, entries left pending) and worker 3 starts, so the
XAUTOCLAIM takeover path is exercised under load.

Reports delivered / duplicated-at-receiver / lost / p50-p99 delivery time (decision -> receiver has it),
prints a table, writes ``load_tests/results/soak_escalation.json``. Exit 1 if anything was lost or a
signature failed; bounded by ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from service.escalation.outbox import Outbox  # noqa: E402
from service.escalation.policy import EscalationPolicy  # noqa: E402
from service.escalation.record import build_record  # noqa: E402
from service.escalation.webhook import DeliveryWorker  # noqa: E402
from service.state.keys import OUTBOX_GROUP  # noqa: E402
from service.state.store import StateStore  # noqa: E402
from tests.standins.webhook_receiver import Reply, Request, WebhookReceiver  # noqa: E402

SECRET = "soak-secret"
ANGRY = [
    "My order still hasn't arrived and it's been two weeks.",
    "This is the third time I'm calling about this!",
    "This is ridiculous, what a waste of time.",
    "I'm sick and tired of this useless service.",
]
CLIENT_TIMEOUT_S = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


def flaky_policy(seed: int) -> Any:
    rng = random.Random(seed)

    def policy(_req: Request) -> Reply:
        roll = rng.random()
        if roll < 0.08:
            return Reply(500, body=b"flaky")
        if roll < 0.14:
            return Reply(200, delay_s=CLIENT_TIMEOUT_S + 0.3)  # processed, but too late for the client
        if roll < 0.20:
            return Reply(429, headers={"Retry-After": "1"})
        return Reply(200)

    return policy


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="cb-soak-")
    proc, url = start_redis(workdir)
    receiver = WebhookReceiver(SECRET, flaky_policy(args.seed))
    await receiver.up()
    store = StateStore(url, prefix="soak", replica_id="soak-r1")
    await store.start()
    outbox = Outbox.for_store(store)
    await outbox.start()

    def worker(name: str) -> DeliveryWorker:
        return DeliveryWorker(store.redis, store.keys, url=receiver.url, secret=SECRET, consumer=name,
                              timeout_s=CLIENT_TIMEOUT_S, base_backoff_s=0.1, max_backoff_s=2.0, concurrency=16,
                              claim_min_idle_s=3.0, claim_every_s=0.5, block_ms=200)

    workers = {"w1": worker("w1"), "w2": worker("w2")}
    for w in workers.values():
        await w.start()

    ids: dict[str, float] = {}  # escalation id -> decided_at
    started = time.monotonic()
    killed_at: float | None = None
    try:
        interval = 1.0 / args.rate
        for i in range(args.escalations):
            call_id = f"CA{i:06d}"
            writer = store.call(call_id)
            writer.started({"provider": "twilio", "stream_id": f"MZ{i:06d}", "from": "+14155550123"})
            policy = EscalationPolicy(call_id=call_id, on_point=writer.sentiment)
            for text in ANGRY:
                writer.transcript("caller", text)
                decision = policy.on_caller_turn(text)
                if decision is not None:
                    record = build_record(writer, decision, replica=store.replica_id)
                    ids[outbox.enqueue(record)] = record.decided_at
                    writer.set_state("transferring")
                    writer.ended("escalated")
                    break
                writer.transcript("bot", "I'm sorry, let me check that for you.")
            if killed_at is None and i >= args.escalations // 2:
                await workers["w1"].stop(grace_s=0)  # killed mid-flight: its pending entries must be claimed
                workers["w3"] = worker("w3")
                await workers["w3"].start()
                killed_at = time.monotonic() - started
            target = started + (i + 1) * interval
            await asyncio.sleep(max(0.0, target - time.monotonic()))

        def all_in(r: WebhookReceiver) -> bool:
            return all(key in r.accepted for key in ids)

        finished = await receiver.wait_for(all_in, max(1.0, args.deadline - (time.monotonic() - started)))
        # let the last acknowledgements land, bounded
        for _ in range(200):  # <= 10 s: polling Redis, an external process
            if not await store.redis.xlen(store.keys.outbox):
                break
            await asyncio.sleep(0.05)
        backlog = int(await store.redis.xlen(store.keys.outbox))
        pel = (await store.redis.xpending(store.keys.outbox, OUTBOX_GROUP))["pending"]
        elapsed = time.monotonic() - started
    finally:
        for w in workers.values():
            await w.stop(grace_s=0)
        await outbox.close(flush_timeout=2)
        await store.close(flush_timeout=2)
        await receiver.down()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    latencies = [receiver.accepted[key].at - decided for key, decided in ids.items() if key in receiver.accepted]
    first_try = sum(1 for key in ids if key in receiver.accepted and receiver.accepted[key].attempt == 1)
    first_requests = sum(1 for req in receiver.requests if req.attempt == 1)
    lost = [key for key in ids if key not in receiver.accepted]
    return {
        "escalations": len(ids),
        "delivered": len(ids) - len(lost),
        "duplicated_at_receiver": receiver.duplicates,
        "lost": len(lost),
        "lost_ids": lost[:20],
        "bad_signatures": receiver.bad_signatures,
        "requests_total": len(receiver.requests),
        "requests_first_attempt": first_requests,
        "requests_retries": len(receiver.requests) - first_requests,
        "delivered_first_try": first_try,
        "delivery_p50_s": round(pct(latencies, 50), 4),
        "delivery_p90_s": round(pct(latencies, 90), 4),
        "delivery_p99_s": round(pct(latencies, 99), 4),
        "delivery_max_s": round(max(latencies), 4) if latencies else None,
        "delivery_mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
        "outbox_backlog_after": backlog,
        "pending_entries_after": pel,
        "worker_killed_at_s": round(killed_at or 0.0, 2),
        "finished_before_deadline": finished,
        "elapsed_s": round(elapsed, 2),
        "config": {"rate_per_s": args.rate, "seed": args.seed, "client_timeout_s": CLIENT_TIMEOUT_S,
                   "failure_mix": "8% 500, 6% timeout, 6% 429 Retry-After: 1", "workers": "2 (w1 killed at 50%, w3 started)",
                   "concurrency_per_worker": 16, "claim_min_idle_s": 3.0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--escalations", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="escalations per second (200+ saturates one core)")
    parser.add_argument("--deadline", type=float, default=180.0, help="give up after this many seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "load_tests" / "results" / "soak_escalation.json")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: keep output a table
    result = asyncio.run(soak(args))
    rows = [
        ("escalations", result["escalations"]), ("delivered", result["delivered"]),
        ("duplicated at receiver", result["duplicated_at_receiver"]), ("lost", result["lost"]),
        ("bad signatures", result["bad_signatures"]), ("HTTP requests", result["requests_total"]),
        ("delivered on 1st try", result["delivered_first_try"]),
        ("delivery p50 (s)", result["delivery_p50_s"]), ("delivery p90 (s)", result["delivery_p90_s"]),
        ("delivery p99 (s)", result["delivery_p99_s"]), ("delivery max (s)", result["delivery_max_s"]),
        ("outbox backlog after", result["outbox_backlog_after"]), ("pending entries after", result["pending_entries_after"]),
        ("elapsed (s)", result["elapsed_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"escalation soak ({result['config']['failure_mix']}; worker w1 killed at {result['worker_killed_at_s']} s)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    ok = result["lost"] == 0 and result["bad_signatures"] == 0 and result["outbox_backlog_after"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
