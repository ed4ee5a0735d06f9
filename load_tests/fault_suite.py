"""Fault suite: concurrent calls through real gateway processes while parts of the system fail.

    .venv/bin/python -m load_tests.fault_suite [--calls 10] [--webhook-down-s 60] [--only NAME ...]

Everything runs on 127.0.0.1: a private ``redis-server``, the protocol-exact Realtime stand-in in its
own process (``load_tests/realtime_proc.py``), one or two ``callbridge serve`` processes, the
escalation webhook receiver stand-in (verifies every signature, dedupes by Idempotency-Key) and
protocol-exact Twilio callers (real-time paced synthesized speech, playback with mark echoes). Every
caller talks for a few turns, then presses 0 (an escalation); the fault is injected while calls are
up. Scenarios:

- ``redis_restart``: Redis is stopped for 2 s mid-call and started again on the same port and data;
- ``model_drop``: every model session is dropped with close code 1011 mid-call (the gateway replaces
  them and re-seeds the conversation);
- ``webhook_down``: the receiver is down for ``--webhook-down-s`` seconds while the escalations
  happen (the records wait in the Redis stream and are delivered when it is back);
- ``replica_kill_delivery``: two replicas; the receiver is down; the replica holding half of the
  escalations is SIGKILLed with its deliveries pending; the other replica claims them (XAUTOCLAIM);
- ``replica_kill_call``: two replicas behind a load-balancer stand-in; one is SIGKILLed mid-call;
  its callers' streams drop, Twilio's after-stream gets a fresh stream and the calls resume on the
  other replica (docs/resume.md), then escalate as usual. Reports calls resumed and the resume gaps
  (from the drop to the first bot audio on the new stream).

Per scenario: calls placed, calls dropped (closed by the gateway other than by the transfer, or
cut by a killed replica), escalations expected (callers who pressed 0 on a live replica), delivered
and lost, duplicates seen by the receiver, and the time until the last record arrived. Writes
``load_tests/results/fault_suite.json``; exit 1 if an escalation was lost or a call on a surviving
replica was dropped. Bounded: each scenario stops itself (deadline per wait, every process ended).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_tests.common import (
    AUTH_TOKEN,
    RESULTS,
    free_port,
    print_table,
    private_redis,
    start_gateway,
    start_realtime_standin,
    write_result,
)
from tests.standins.webhook_receiver import WebhookReceiver

SECRET = "fault-suite-webhook-secret"
UTTERANCE = "Hello, I am calling about my order, it has not arrived yet."


class Rig:
    """One scenario's processes; ``close`` ends every one of them (idempotent)."""

    def __init__(self, replicas: int, receiver: WebhookReceiver, name: str, ports: list[int] | None = None,
                 public_url: str | None = None) -> None:
        self.redis = private_redis()
        self.realtime, realtime_url = start_realtime_standin(reply_ms=1200)
        env = {
            "CALLBRIDGE_ESCALATION_WEBHOOK_URL": receiver.url,
            "CALLBRIDGE_ESCALATION_WEBHOOK_SECRET": SECRET,
            "CALLBRIDGE_ESCALATION_CLAIM_IDLE_S": "3",
            "CALLBRIDGE_ESCALATION_MAX_BACKOFF_S": "2",
            "CALLBRIDGE_HEARTBEAT_INTERVAL_S": "1",
            "CALLBRIDGE_HEARTBEAT_TTL_S": "3",
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.ports = ports or [free_port() for _ in range(replicas)]
        if public_url:
            env["CALLBRIDGE_PUBLIC_URL"] = public_url
        self.gateways = [
            start_gateway(port, self.redis.url, realtime_url, {**env, "CALLBRIDGE_REPLICA_ID": f"r{n}"},
                          log_path=RESULTS / f"fault_{name}_r{n}.log")
            for n, port in enumerate(self.ports)
        ]

    def base(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index % len(self.ports)]}"

    def close(self) -> None:
        for process in [*self.gateways, self.realtime]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self.redis.stop()


async def _caller(base_url: str, index: int, press_at: float, outcome: dict[str, Any], speech: bytes,
                  silence: Callable[[int], bytes]) -> None:
    from tests.standins.twilio_caller import TwilioCallerStandIn

    loop = asyncio.get_running_loop()
    outcome.update(index=index, base=base_url, pressed=False, code=None, error=None)
    try:
        async with TwilioCallerStandIn(base_url, AUTH_TOKEN) as caller:
            call = await caller.place_call(from_=f"+1555{index:07d}")
            outcome["call_id"] = call.call_sid
            while loop.time() < press_at and not call.closed:
                await call.send_audio(speech, silence(1200))
            if not call.closed:
                await call.send_dtmf("0")
                outcome["pressed"] = True
                outcome["pressed_at"] = time.time()
            outcome["code"] = await call.wait_closed(timeout_s=60)
    except Exception as error:  # a call that fails is what the suite counts, not a crash of the suite
        outcome["error"] = f"{type(error).__name__}: {error}"[:200]


async def _run_calls(rig: Rig, calls: int, press_after_s: float,
                     fault: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    from tests.standins.speech import silence, synthesize

    speech = synthesize(UTTERANCE)
    loop = asyncio.get_running_loop()
    outcomes: list[dict[str, Any]] = [{} for _ in range(calls)]
    press_at = loop.time() + press_after_s
    tasks = [asyncio.create_task(_caller(rig.base(i), i, press_at + 0.05 * i, outcomes[i], speech, silence))
             for i in range(calls)]
    await fault()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=press_after_s + 120)
    return outcomes


def _figures(outcomes: list[dict[str, Any]], receiver: WebhookReceiver, started: float,
             killed_bases: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    expected = {o["call_id"] for o in outcomes if o.get("pressed") and o.get("base") not in killed_bases}
    on_killed = [o for o in outcomes if o.get("base") in killed_bases]
    delivered = {r.payload.get("call_id") for r in receiver.accepted.values()}
    surviving = [o for o in outcomes if o.get("base") not in killed_bases]
    dropped = [o for o in surviving if o.get("error") or o.get("code") != 1000 or not o.get("pressed")]
    last = max((r.at for r in receiver.accepted.values()), default=started)
    return {
        "calls": len(outcomes),
        "calls_dropped": len(dropped),
        "calls_on_killed_replica": len(on_killed),
        "escalations_expected": len(expected),
        "escalations_delivered": len(expected & delivered),
        "escalations_lost": len(expected - delivered),
        "escalations_from_killed_replica_delivered": len({o.get("call_id") for o in on_killed if o.get("pressed")}
                                                         & delivered),
        "duplicates_at_receiver": receiver.duplicates,
        "bad_signatures": receiver.bad_signatures,
        "last_delivery_s": round(last - started, 1),
        "dropped_detail": [{k: o.get(k) for k in ("index", "code", "error", "pressed")} for o in dropped][:10],
    }


async def _wait_delivered(receiver: WebhookReceiver, outcomes: list[dict[str, Any]], timeout: float,
                          killed_bases: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    wanted = {o["call_id"] for o in outcomes if o.get("pressed") and "call_id" in o}

    def done(r: WebhookReceiver) -> bool:
        return wanted <= {req.payload.get("call_id") for req in r.accepted.values()}

    await receiver.wait_for(done, timeout)


async def redis_restart(calls: int, _options: argparse.Namespace) -> dict[str, Any]:
    async with _receiver() as receiver:
        rig = Rig(1, receiver, "redis_restart")
        try:
            started = time.time()

            async def fault() -> None:
                await asyncio.sleep(3)
                rig.redis.stop()
                await asyncio.sleep(2)
                rig.redis.start()

            outcomes = await _run_calls(rig, calls, 8, fault)
            await _wait_delivered(receiver, outcomes, 60)
            return _figures(outcomes, receiver, started)
        finally:
            rig.close()


async def model_drop(calls: int, _options: argparse.Namespace) -> dict[str, Any]:
    async with _receiver() as receiver:
        rig = Rig(1, receiver, "model_drop")
        try:
            started = time.time()

            async def fault() -> None:
                await asyncio.sleep(4)
                os.kill(rig.realtime.pid, signal.SIGUSR1)

            outcomes = await _run_calls(rig, calls, 9, fault)
            await _wait_delivered(receiver, outcomes, 60)
            return _figures(outcomes, receiver, started)
        finally:
            rig.close()


async def webhook_down(calls: int, options: argparse.Namespace) -> dict[str, Any]:
    async with _receiver() as receiver:
        rig = Rig(1, receiver, "webhook_down")
        try:
            started = time.time()

            async def fault() -> None:
                await receiver.down()
                asyncio.get_running_loop().call_later(options.webhook_down_s,
                                                      lambda: asyncio.ensure_future(receiver.up()))

            outcomes = await _run_calls(rig, calls, 6, fault)
            await _wait_delivered(receiver, outcomes, options.webhook_down_s + 90)
            return {**_figures(outcomes, receiver, started), "receiver_down_s": options.webhook_down_s}
        finally:
            rig.close()


async def replica_kill_delivery(calls: int, _options: argparse.Namespace) -> dict[str, Any]:
    async with _receiver() as receiver:
        rig = Rig(2, receiver, "replica_kill_delivery")
        killed = {rig.base(0)}
        try:
            started = time.time()

            async def fault() -> None:
                await receiver.down()

            outcomes = await _run_calls(rig, calls, 6, fault)
            # Every escalation is now in the outbox stream, the receiver down; kill replica 0 with
            # its deliveries pending, then bring the receiver back: replica 1 must claim them.
            rig.gateways[0].kill()
            rig.gateways[0].wait(timeout=10)
            await receiver.up()
            await _wait_delivered(receiver, outcomes, 90)
            figures = _figures(outcomes, receiver, started, killed)
            pressed_on_killed = [o for o in outcomes if o.get("base") in killed and o.get("pressed")]
            figures["escalations_lost"] += len(pressed_on_killed) - figures["escalations_from_killed_replica_delivered"]
            return figures
        finally:
            rig.close()


async def _resuming_caller(base_url: str, index: int, press_at: float, outcome: dict[str, Any], speech: bytes,
                           silence: Callable[[int], bytes]) -> None:
    """A caller whose stream may drop: it does what Twilio does (after-stream, then the new stream)."""
    from tests.standins.twilio_caller import TwilioCallerStandIn

    loop = asyncio.get_running_loop()
    outcome.update(index=index, base=base_url, pressed=False, code=None, error=None, resumed=0, gaps=[])
    try:
        async with TwilioCallerStandIn(base_url, AUTH_TOKEN) as caller:
            call = await caller.place_call(from_=f"+1555{index:07d}")
            outcome["call_id"] = call.call_sid
            while True:
                with contextlib.suppress(ConnectionError):  # the stream dropped mid-utterance
                    while loop.time() < press_at and not call.closed:
                        await call.send_audio(speech, silence(1200))
                if not call.closed:
                    break
                dropped_at = loop.time()
                await call.wait_closed(timeout_s=15)
                follow = await caller.follow(call)
                if follow is None:
                    outcome["code"] = call.close_code
                    return
                call = follow
                outcome["resumed"] += 1
                await call.wait_for(lambda c=call: any(r.event == "media" for r in c.received), timeout_s=15)
                outcome["gaps"].append(round(loop.time() - dropped_at, 2))
            await call.send_dtmf("0")
            outcome["pressed"] = True
            outcome["code"] = await call.wait_closed(timeout_s=60)
    except Exception as error:
        outcome["error"] = f"{type(error).__name__}: {error}"[:200]


async def replica_kill_call(calls: int, _options: argparse.Namespace) -> dict[str, Any]:
    """Two replicas behind a balancer; replica 0 is SIGKILLed mid-call; its callers resume on replica 1."""
    from tests.standins.balancer import Balancer
    from tests.standins.speech import silence, synthesize

    ports = [free_port(), free_port()]
    async with _receiver() as receiver, Balancer(ports, rotate=True) as balancer:
        rig = Rig(2, receiver, "replica_kill_call", ports=ports, public_url=balancer.url)
        try:
            started = time.time()
            speech = synthesize(UTTERANCE)
            loop = asyncio.get_running_loop()
            outcomes: list[dict[str, Any]] = [{} for _ in range(calls)]
            press_at = loop.time() + 10
            tasks = [asyncio.create_task(_resuming_caller(balancer.url, i, press_at + 0.05 * i, outcomes[i], speech,
                                                          silence)) for i in range(calls)]
            await asyncio.sleep(4)
            rig.gateways[0].kill()
            rig.gateways[0].wait(timeout=10)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=150)
            await _wait_delivered(receiver, outcomes, 60)
            figures = _figures(outcomes, receiver, started)
            gaps = sorted(g for o in outcomes for g in o.get("gaps", []))
            figures.update(calls_resumed=sum(1 for o in outcomes if o.get("resumed")),
                           resume_gap_s_median=gaps[len(gaps) // 2] if gaps else None,
                           resume_gap_s_max=gaps[-1] if gaps else None)
            return figures
        finally:
            rig.close()


class _receiver:
    async def __aenter__(self) -> WebhookReceiver:
        self.receiver = WebhookReceiver(SECRET, port=free_port())
        await self.receiver.up()
        return self.receiver

    async def __aexit__(self, *exc: object) -> None:
        await self.receiver.down()


SCENARIOS: dict[str, Callable[[int, argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "redis_restart": redis_restart,
    "model_drop": model_drop,
    "webhook_down": webhook_down,
    "replica_kill_delivery": replica_kill_delivery,
    "replica_kill_call": replica_kill_call,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--webhook-down-s", type=float, default=60.0)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    options = parser.parse_args()
    results: dict[str, Any] = {}
    for name in options.only or SCENARIOS:
        print(f"== {name} ({options.calls} calls)", flush=True)
        try:
            results[name] = asyncio.run(SCENARIOS[name](options.calls, options))
        except Exception as error:
            results[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
    for name, r in results.items():
        print(f"\n{name}")
        print_table([(key, str(r.get(key, "-"))) for key in (
            "calls", "calls_dropped", "calls_on_killed_replica", "escalations_expected", "escalations_delivered",
            "escalations_lost", "escalations_from_killed_replica_delivered", "duplicates_at_receiver",
            "last_delivery_s", "calls_resumed", "resume_gap_s_median", "resume_gap_s_max", "error")])
    path = write_result("fault_suite", {"calls": options.calls, "scenarios": results})
    print(f"JSON: {path}")
    failed = any(r.get("error") or r.get("escalations_lost") or r.get("calls_dropped") for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
