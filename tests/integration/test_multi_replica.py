"""Two gateway processes on one redis-server: calls spread over both, one replica SIGKILLed mid-call.

Shows (issue: scale across replicas) that the dead replica's pending escalation is delivered by the
survivor (XAUTOCLAIM of the idle delivery), exactly once at the receiver's dedupe, and that the
active-call index is corrected once the dead replica's heartbeat expires.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import RedisServer, free_port
from tests.integration.test_call_bridge import API_KEY
from tests.integration.test_drain import start_gateway_process
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn
from tests.standins.webhook_receiver import Reply, Request, WebhookReceiver

AUTH = "test-auth-" + secrets.token_hex(16)  # random per process (issue 12.1)
SECRET = "whsec-multi"


@pytest.mark.slow
async def test_sigkill_one_replica_the_other_delivers_and_reaps(redis_server: RedisServer, tmp_path: Path) -> None:
    def hold_first_attempt(request: Request) -> Reply:
        return Reply(hold=True) if request.attempt == 1 else Reply(200)

    receiver = WebhookReceiver(SECRET, policy=hold_first_attempt)
    await receiver.up()
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    processes: list[asyncio.subprocess.Process] = []
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=300)) as rt:
        try:
            for index, port in enumerate(ports):
                processes.append(await start_gateway_process(port, {
                    "CALLBRIDGE_REALTIME_PROVIDER": "openai", "CALLBRIDGE_REALTIME_API_KEY": API_KEY,
                    "CALLBRIDGE_REALTIME_URL": rt.url, "CALLBRIDGE_REDIS_URL": redis_server.url,
                    "CALLBRIDGE_TWILIO_AUTH_TOKEN": AUTH, "CALLBRIDGE_PUBLIC_URL": bases[index],
                    "CALLBRIDGE_REPLICA_ID": f"replica-{index}",
                    "CALLBRIDGE_ESCALATION_WEBHOOK_URL": receiver.url,
                    "CALLBRIDGE_ESCALATION_WEBHOOK_SECRET": SECRET,
                    "CALLBRIDGE_ESCALATION_CLAIM_IDLE_S": "2", "CALLBRIDGE_HEARTBEAT_INTERVAL_S": "0.5",
                    "CALLBRIDGE_HEARTBEAT_TTL_S": "2", "CALLBRIDGE_GREETING": "false", "CALLBRIDGE_LOG_FORMAT": "json",
                }, tmp_path / f"gateway-{index}.log"))
            callers = [TwilioCallerStandIn(base, AUTH) for base in bases]
            calls: list[list[CallHandle]] = [[], []]
            for n in range(4):  # spread calls over both replicas, as a load balancer would
                calls[n % 2].append(await callers[n % 2].place_call())
            await rt.wait_for_session(3)
            client = aioredis.from_url(redis_server.url)
            async with asyncio.timeout(10):
                while await client.zcard("cb:calls:active") < 4:
                    await asyncio.sleep(0.05)  # the write-behind queue lands the index entries
            # Replica 0 escalates one of its calls; its worker picks the delivery up and the receiver holds it.
            await calls[0][0].send_dtmf("0")
            assert await receiver.wait_for(lambda r: len(r.requests) >= 1, 15)
            processes[0].send_signal(signal.SIGKILL)
            await processes[0].wait()
            receiver.release()  # the held connection belonged to the dead replica
            # The survivor claims the idle delivery and the receiver accepts it once.
            assert await receiver.wait_for(lambda r: len(r.accepted) == 1, 30)
            accepted = next(iter(receiver.accepted.values()))
            assert accepted.signature_ok
            assert accepted.payload["call_id"] == calls[0][0].call_sid
            assert accepted.payload["trigger"] == "dtmf"
            assert all(r.idempotency_key == accepted.idempotency_key for r in receiver.requests)
            # The dead replica's calls leave the active index once its heartbeat expires.
            dead = {c.call_sid for c in calls[0]}
            async with asyncio.timeout(20):
                while True:
                    active = {m.decode() for m in await client.zrange("cb:calls:active", 0, -1)}
                    if not (active & dead):
                        break
                    await asyncio.sleep(0.2)  # reaping runs on the survivor's heartbeat period
            assert {c.call_sid for c in calls[1]} <= active
            states = {sid: (await client.hget(f"cb:call:{sid}", "state") or b"").decode() for sid in dead}
            assert set(states.values()) <= {"orphaned", "escalating"}
            assert not any(c.closed for c in calls[1])  # the survivor's calls never noticed
            for call in calls[1]:
                await call.hang_up()
            await client.aclose()
            for caller in callers:
                await caller.aclose()
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await receiver.down()
