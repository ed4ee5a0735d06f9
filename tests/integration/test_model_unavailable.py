"""When the model is unavailable (issue 12, item 12): a fleet-wide cap on model sessions counted in
real Redis, and callers who find it reached, or whose session cannot be opened, are sent to a human
or told to call back; never just dropped. Real gateway, redis-server, Realtime and Twilio stand-ins,
webhook receiver."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
import redis.asyncio as aioredis

from service.state.keys import Keys
from service.state.model_leases import ModelLeases
from tests.conftest import RedisServer, free_port
from tests.integration.test_escalation_calls import escalation_setup
from tests.poll import wait_until


def _leases(redis_url: str, replica: str, limit: int, ttl_s: float = 2.0) -> ModelLeases:
    return ModelLeases(aioredis.from_url(redis_url), keys=Keys("cb"), replica_id=replica, limit=limit,
                       lease_ttl_s=ttl_s, refresh_s=0.2)


async def test_racing_replicas_get_exactly_the_cap(redis_server: RedisServer) -> None:
    replicas = [_leases(redis_server.url, f"r{n}", limit=5) for n in range(4)]
    results = await asyncio.gather(*(replicas[i % 4].acquire(f"CA{i:032x}") for i in range(40)))
    assert sum(results) == 5
    assert await replicas[0].count() == 5
    granted = [i for i, ok in enumerate(results) if ok]
    for i in granted:
        await replicas[i % 4].release(f"CA{i:032x}")
        await replicas[i % 4].release(f"CA{i:032x}")  # idempotent
    assert await replicas[0].count() == 0
    assert await replicas[1].acquire("CA" + "f" * 32)  # a slot is free again
    for leases in replicas:
        await leases.close()


async def test_a_dead_replicas_leases_lapse_and_a_live_ones_are_refreshed(redis_server: RedisServer) -> None:
    dead, live = _leases(redis_server.url, "dead", limit=2, ttl_s=1.0), _leases(redis_server.url, "live", limit=2, ttl_s=1.0)
    assert await dead.acquire("CA" + "1" * 32)
    await dead.close()  # stops refreshing, as a SIGKILLed replica would
    assert await live.acquire("CA" + "2" * 32)
    assert not await live.acquire("CA" + "3" * 32)  # at the cap

    async def dead_lease_lapsed() -> bool:
        return await live.acquire("CA" + "3" * 32)

    await wait_until(dead_lease_lapsed, timeout=5, what="the dead replica's lease lapsing")
    await asyncio.sleep(1.5)  # longer than the lease ttl: the live replica's refresher keeps its leases
    assert await live.count() == 2
    await live.close()


async def test_without_redis_a_replica_counts_its_own_sessions() -> None:
    leases = ModelLeases(aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2),
                         keys=Keys("cb"), replica_id="r", limit=1, lease_ttl_s=1, refresh_s=0.5, timeout_s=0.5)
    assert await leases.acquire("CA" + "1" * 32)
    assert not await leases.acquire("CA" + "2" * 32)
    await leases.release("CA" + "1" * 32)
    assert await leases.acquire("CA" + "2" * 32)
    await leases.close()


def _verbs(twiml: str | None) -> list[str]:
    return [element.tag for element in ET.fromstring(twiml or "<Response/>")]


@pytest.mark.parametrize("action", ["human", "message"])
async def test_cap_reached_the_caller_is_handed_off_or_told_to_call_back(redis_server: RedisServer,
                                                                         action: str) -> None:
    async with escalation_setup(redis_server, [], max_model_sessions=1, model_unavailable_action=action) as (
            _gw, realtime, caller, receiver):
        first = await caller.place_call()
        await realtime.wait_for_session()
        second = await caller.place_call()
        assert await second.wait_closed(timeout_s=15) == 1000
        assert len(realtime.sessions) == 1  # no model session was opened for the second caller
        if action == "human":
            assert _verbs(second.after_stream_twiml) == ["Enqueue"]
            assert await receiver.wait_for(lambda r: len(r.accepted) == 1, 15)
            record = next(iter(receiver.accepted.values())).payload
            assert record["call_id"] == second.call_sid and record["trigger"] == "model_unavailable"
        else:
            assert _verbs(second.after_stream_twiml) == ["Say", "Hangup"]
            assert "busy" in (second.after_stream_twiml or "")
            assert receiver.accepted == {}
        assert not first.closed  # the caller who has a session never noticed
        await first.hang_up()
        client = aioredis.from_url(redis_server.url)

        async def all_released() -> bool:
            return await client.zcard("cb:model_sessions") == 0

        await wait_until(all_released, timeout=10, what="every model-session lease released")
        await client.aclose()


async def test_connect_failure_hands_the_caller_to_a_human(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [], max_model_sessions=5,
                                realtime_url=f"ws://127.0.0.1:{free_port()}/v1/realtime",
                                realtime_connect_timeout_s=2) as (_gw, _realtime, caller, receiver):
        call = await caller.place_call()
        assert await call.wait_closed(timeout_s=20) == 1000
        assert _verbs(call.after_stream_twiml) == ["Enqueue"]
        assert await receiver.wait_for(lambda r: len(r.accepted) == 1, 15)
        assert next(iter(receiver.accepted.values())).payload["trigger"] == "model_unavailable"
        client = aioredis.from_url(redis_server.url)
        assert await client.zcard("cb:model_sessions") == 0  # released on the failure path too
        await client.aclose()
