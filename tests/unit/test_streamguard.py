"""StreamGuard without Redis (the per-replica fallback): single use, one stream per call, bounded memory."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from service.providers.streamguard import StreamGuard
from service.state.keys import Keys
from tests.conftest import free_port

CALL, OTHER = "CA" + "1" * 32, "CA" + "2" * 32


async def test_local_guard_single_use_and_one_stream_per_call() -> None:
    guard = StreamGuard(None, keys=Keys("t"), replica_id="r", claim_ttl_s=60)
    expiry = int(time.time()) + 60
    assert await guard.admit("tok1", expiry, CALL, "MZa") == "ok"
    assert await guard.admit("tok1", expiry, OTHER, "MZb") == "token_reused"
    assert await guard.admit("tok2", expiry, CALL, "MZc") == "call_streaming"
    await guard.release(CALL, "MZc")  # not the holder: nothing changes
    assert await guard.admit("tok3", expiry, CALL, "MZd") == "call_streaming"
    await guard.release(CALL, "MZa")
    assert await guard.admit("tok4", expiry, CALL, "MZe") == "ok"


async def test_local_memory_is_bounded_and_expired_ids_are_pruned() -> None:
    guard = StreamGuard(None, keys=Keys("t"), replica_id="r", claim_ttl_s=60, local_max=3)
    past, future = int(time.time()) - 1, int(time.time()) + 60
    for index in range(3):
        assert await guard.admit(f"old{index}", past if index < 2 else future, f"CA{index:032x}", "MZ") == "ok"
    assert await guard.admit("new", future, OTHER, "MZ") == "ok"  # two expired ids made room
    assert await guard.admit("newer", future, "CA" + "3" * 32, "MZ") == "ok"
    assert await guard.admit("full", future, "CA" + "4" * 32, "MZ") == "token_reused"  # full of live ids: refuse


async def test_redis_down_degrades_to_local_memory() -> None:
    redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    guard = StreamGuard(redis, keys=Keys("t"), replica_id="r", claim_ttl_s=60, timeout_s=1.0)
    try:
        expiry = int(time.time()) + 60
        assert await guard.admit("tok", expiry, CALL, "MZa") == "ok"
        assert await guard.admit("tok", expiry, OTHER, "MZb") == "token_reused"
        await guard.release(CALL, "MZa")  # never raises
    finally:
        await redis.aclose()
