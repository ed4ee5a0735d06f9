"""StateStore against a real redis-server: schema, TTLs, caps, outages, queue bound, heartbeats, reaping."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service.state.model import SentimentPoint
from service.state.store import StateStore, connect_redis, parse_sentinel_url
from tests.conftest import RedisServer, free_port
from tests.poll import wait_until


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0



@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[StateStore]:
    s = StateStore(redis_server.url, prefix="t", ttl_s=3600, queue_max=50, replica_id="r-a",
                   transcript_max=20, retry_max_s=0.2, socket_timeout_s=0.5)
    await s.start()
    yield s
    await s.close(flush_timeout=1)


async def test_call_round_trip_schema_ttl_and_index(store: StateStore) -> None:
    call = store.call("CA1")
    call.started({"provider": "twilio", "stream_id": "MZ1", "from": "+14155550123", "to": "+81312345678"})
    call.transcript("bot", "Hello, how can I help?", ts=1000.0)
    call.transcript("caller", "My bill is wrong.", ts=1001.5)
    call.sentiment(SentimentPoint(ts=1001.6, turn=1, score=0.31, text_score=0.3, language="en"))
    assert await call.flush(5)
    assert await store.active_calls() == ["CA1"]

    snap = await store.load_call("CA1")
    assert snap is not None
    assert snap.fields["provider"] == "twilio" and snap.fields["stream_id"] == "MZ1"
    assert snap.fields["from"] == "+*******0123" and snap.fields["to"] == "+*******5678"  # masked on the way in
    assert snap.state == "active" and snap.replica == "r-a" and snap.escalation_status == "none"
    assert [(t.role, t.text, t.ts) for t in snap.transcript] == [
        ("bot", "Hello, how can I help?", 1000.0), ("caller", "My bill is wrong.", 1001.5)]
    assert [(p.turn, p.score) for p in snap.sentiment] == [(1, 0.31)]
    for key in (store.keys.call("CA1"), store.keys.transcript("CA1"), store.keys.sentiment("CA1")):
        assert 3500 < await store.redis.ttl(key) <= 3600

    call.ended("completed")
    assert await store.flush(5)
    assert await store.active_calls() == []
    snap = await store.load_call("CA1")
    assert snap is not None and snap.state == "ended" and snap.fields["outcome"] == "completed"
    assert float(snap.fields["ended_at"]) >= float(snap.fields["started_at"])
    assert await store.load_call("nope") is None


async def test_lists_are_capped(store: StateStore) -> None:
    call = store.call("CA-cap")
    call.started({"provider": "twilio"})
    for i in range(45):
        call.transcript("caller", f"turn {i}", ts=float(i))
    assert await store.flush(5)
    snap = await store.load_call("CA-cap")
    assert snap is not None
    assert [t.text for t in snap.transcript] == [f"turn {i}" for i in range(25, 45)]  # transcript_max=20


async def test_redis_restart_mid_call_writes_land_in_order(store: StateStore, redis_server: RedisServer) -> None:
    call = store.call("CA-r")
    call.started({"provider": "twilio", "from": "+14155550199"})
    call.transcript("caller", "before outage")
    assert await store.flush(5)
    up_before = metric("callbridge_redis_up")
    assert up_before == 1.0

    redis_server.stop()
    failures_before = metric("callbridge_state_write_failures_total")
    started = time.perf_counter()
    for i in range(15):  # the frame path: must not wait on Redis
        call.transcript("caller" if i % 2 else "bot", f"during outage {i}")
    call.set_state("escalating")
    enqueue_s = time.perf_counter() - started
    assert enqueue_s < 1.0, f"15 enqueues took {enqueue_s * 1000:.1f} ms"  # never waits for Redis (2 s timeout)
    assert not await store.flush(0.5)  # cannot drain while Redis is down
    assert not await store.ping(0.5)
    assert not store.healthy and metric("callbridge_redis_up") == 0.0
    assert metric("callbridge_state_write_failures_total") > failures_before
    assert store.pending_ops == 15

    redis_server.start()
    assert await store.flush(10)
    assert store.healthy and metric("callbridge_redis_up") == 1.0
    snap = await store.load_call("CA-r")
    assert snap is not None
    texts = [t.text for t in snap.transcript]
    assert texts == ["before outage"] + [f"during outage {i}" for i in range(15)]  # all landed, in order, once
    assert snap.state == "escalating" and snap.fields["from"].endswith("0199")
    assert await store.active_calls() == ["CA-r"]


async def test_queue_bound_drops_oldest_and_counts(store: StateStore, redis_server: RedisServer) -> None:
    call = store.call("CA-q")
    call.started({"provider": "twilio"})
    assert await store.flush(5)
    redis_server.stop()
    dropped_before = metric("callbridge_state_writes_dropped_total")
    for i in range(70):  # queue_max=50
        call.transcript("caller", f"t{i}")
    assert metric("callbridge_state_writes_dropped_total") - dropped_before == 20
    assert metric("callbridge_state_queue_depth") == 50
    call.ended("completed")  # hash fields are coalesced, never dropped

    redis_server.start()
    assert await store.flush(10)
    snap = await store.load_call("CA-q")
    assert snap is not None
    assert [t.text for t in snap.transcript] == [f"t{i}" for i in range(50, 70)]  # the newest survive (cap 20)
    assert snap.state == "ended" and snap.fields["provider"] == "twilio"
    assert metric("callbridge_state_queue_depth") == 0


async def test_heartbeat_and_reaping_dead_replica(redis_server: RedisServer) -> None:
    a = StateStore(redis_server.url, prefix="t", replica_id="r-a", heartbeat_interval_s=0.05, heartbeat_ttl_s=0.25)
    b = StateStore(redis_server.url, prefix="t", replica_id="r-b", heartbeat_interval_s=0.05, heartbeat_ttl_s=5)
    await a.start()
    await b.start()
    try:
        task = a.start_heartbeat()
        await wait_until(lambda: a.redis.exists(a.keys.replica("r-a")))
        assert 0 < await a.redis.pttl(a.keys.replica("r-a")) <= 250
        await b.heartbeat_once()
        for store, call_id in ((a, "CA-a1"), (a, "CA-a2"), (b, "CA-b1")):
            writer = store.call(call_id)
            writer.started({"provider": "twilio"})
            writer.transcript("caller", f"hello from {call_id}")
        assert await a.flush(5) and await b.flush(5)
        assert await b.reap_dead_replicas() == []  # everyone alive

        task.cancel()  # replica a "dies": its heartbeat stops and expires on its own
        await asyncio.gather(task, return_exceptions=True)
        await wait_until(lambda: _gone(b, "r-a"), timeout=5)
        assert sorted(await b.reap_dead_replicas()) == ["CA-a1", "CA-a2"]
        assert await b.active_calls() == ["CA-b1"]
        snap = await b.load_call("CA-a1")  # enough for b to pick the call up
        assert snap is not None and snap.state == "orphaned" and snap.fields["reaped_by"] == "r-b"
        assert snap.replica == "r-a" and [t.text for t in snap.transcript] == ["hello from CA-a1"]
        assert await b.reap_dead_replicas() == []  # idempotent
    finally:
        await a.close(flush_timeout=1)
        await b.close(flush_timeout=1)


async def _gone(store: StateStore, replica: str) -> bool:
    return not await store.redis.exists(store.keys.replica(replica))


def test_parse_sentinel_url() -> None:
    target = parse_sentinel_url("redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/2?sentinel_password=sp")
    assert target.sentinels == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert (target.service_name, target.db, target.password, target.sentinel_password) == ("mymaster", 2, "pw", "sp")
    with pytest.raises(ValueError):
        parse_sentinel_url("redis+sentinel://s1:26379")


async def test_sentinel_url_reaches_the_primary(redis_server: RedisServer, tmp_path: Path) -> None:
    """A real redis-server in sentinel mode monitoring the fixture's server."""
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp_path}\n"
                    f"sentinel monitor cbmaster 127.0.0.1 {redis_server.port} 1\n")
    proc = await asyncio.create_subprocess_exec(binary, str(conf), "--sentinel", stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    try:
        client = connect_redis(f"redis+sentinel://127.0.0.1:{port}/cbmaster/0", socket_timeout_s=1)

        async def sentinel_serves() -> bool:  # the sentinel needs a moment to learn the primary
            try:
                return bool(await client.set("via-sentinel", "yes"))
            except Exception:
                return False

        await wait_until(sentinel_serves, timeout=10, what="a write through the sentinel")
        direct = connect_redis(redis_server.url)
        assert await direct.get("via-sentinel") == b"yes"
        await client.aclose()
        await direct.aclose()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def _exec_count(store: StateStore) -> int:
    stats = await store.redis.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


async def test_write_delay_coalesces_many_calls_into_one_transaction(redis_server: RedisServer) -> None:
    """With a coalescing window, state changes of many calls made within it cost one MULTI/EXEC; with
    none, each wake-up writes at once. Closing cuts a pending window short and still writes."""
    store = StateStore(redis_server.url, prefix="wd", queue_max=50, replica_id="r-w", write_delay_s=1.0)
    await store.start()
    try:
        assert await store.flush(5)
        before = await _exec_count(store)
        writers = [store.call(f"CA-w{i}") for i in range(20)]
        for writer in writers:
            writer.started({"provider": "twilio"})
            writer.set_state("bot_speaking")
        await asyncio.sleep(0)  # let the writer wake (it must now be waiting out the window)
        for writer in writers:
            writer.set_state("listening")
        assert await store.flush(5)
        assert await _exec_count(store) - before == 1
        snapshots = [await store.load_call(f"CA-w{i}") for i in range(20)]
        assert all(snap is not None and snap.state == "listening" for snap in snapshots)

        writers[0].set_state("interrupted")
        await asyncio.sleep(0)  # the writer is waiting out a 1 s window now
    finally:
        await store.close(flush_timeout=0.5)  # only if close cuts the window short is this written
    check = connect_redis(redis_server.url)
    try:
        assert await check.hget("wd:call:CA-w0", "state") == b"interrupted"
    finally:
        await check.aclose()


async def test_one_call_refused_by_redis_never_blocks_the_others(store: StateStore) -> None:
    """Regression (issue 12.2): a WRONGTYPE on one call's key used to fail the shared MULTI/EXEC on every
    retry, so no call's state reached Redis again and ``redis_up`` went to 0 while Redis was fine."""
    bad, good = "CA" + "b" * 32, "CA" + "a" * 32
    await store.redis.set(store.keys.transcript(bad), "not a list")  # forces WRONGTYPE on RPUSH
    bad_call, good_call = store.call(bad), store.call(good)
    bad_call.started({"provider": "twilio"})
    good_call.started({"provider": "twilio"})
    bad_call.transcript("caller", "this turn cannot be stored")
    good_call.transcript("caller", "first turn")
    assert await good_call.flush(5)
    snap = await store.load_call(good)
    assert snap is not None and [t.text for t in snap.transcript] == ["first turn"]
    good_call.transcript("bot", "second turn")  # the writer keeps serving the healthy call
    assert await good_call.flush(5)
    assert await bad_call.flush(10)  # the refused call's batch is dropped after its attempts
    assert store.healthy and store.pending_ops == 0
    snap = await store.load_call(good)
    assert snap is not None and [t.text for t in snap.transcript] == ["first turn", "second turn"]
    assert await store.redis.get(store.keys.transcript(bad)) == b"not a list"
