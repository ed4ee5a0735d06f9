"""Pre-warmed model sessions (docs/first-words.md, "Pre-warming") against the Realtime stand-in over
real sockets and a real redis-server for the fleet-wide cap: claim, expiry, the cap, a stream that
lands on another replica, shutdown, and the pure bookkeeping's table."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from service.call.machine import InvalidTransition
from service.config import Settings
from service.realtime import sessions as model_sessions
from service.realtime.events import RealtimeDialect, SessionConfig
from service.realtime.prewarm import (
    WARM_EVENTS,
    WARM_TRANSITIONS,
    PrewarmBook,
    PrewarmPool,
    WarmState,
    warm_lease_id,
)
from service.state.keys import Keys
from service.state.model_leases import ModelLeases
from tests.conftest import RedisServer
from tests.poll import wait_until
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour

API_KEY = "sk-test-prewarm-0123456789"
CALL = "CA" + "1" * 32


@pytest.mark.parametrize(("state", "event"), list(itertools.product(WarmState, WARM_EVENTS)))
def test_every_state_and_event_follows_the_table(state: WarmState, event: str) -> None:
    book = PrewarmBook(size=2, ttl_s=5.0)
    entry = book.reserve(CALL, now=0.0)
    assert not isinstance(entry, str)
    entry.machine.state = state
    if (state, event) in WARM_TRANSITIONS:
        book.fire(CALL, event)
        assert entry.state is WARM_TRANSITIONS[(state, event)]
        assert (CALL in book.entries) == (entry.state in (WarmState.OPENING, WarmState.READY))
    else:
        with pytest.raises(InvalidTransition):
            book.fire(CALL, event)


def test_the_book_is_bounded_and_knows_what_is_overdue() -> None:
    assert PrewarmBook(size=0, ttl_s=5).reserve(CALL, 0.0) == "off"
    book = PrewarmBook(size=2, ttl_s=5.0)
    assert not isinstance(book.reserve("a", 0.0), str)
    assert book.reserve("a", 0.1) == "duplicate"
    assert not isinstance(book.reserve("b", 1.0), str)
    assert book.reserve("c", 1.0) == "full"
    assert book.overdue(5.5) == ["a"]
    book.fire("a", "expire")
    assert list(book.entries) == ["b"] and book.reserve("c", 6.0) != "full"


def settings_for(server: RealtimeStandIn) -> Settings:
    return Settings(realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=server.url,
                    input_transcription_model="whisper-1")


def pool_for(settings: Settings, *, size: int = 4, ttl_s: float = 5.0, slots: ModelLeases | None = None) -> PrewarmPool:
    def model() -> tuple[RealtimeDialect, SessionConfig]:
        side = model_sessions.model_side(settings)
        return side.dialect, side.config

    return PrewarmPool(size=size, ttl_s=ttl_s, timeout_s=5.0, open_session=lambda: model_sessions.open_realtime(settings),
                       model=model, slots=slots)


@pytest.fixture
async def standin() -> AsyncIterator[RealtimeStandIn]:
    async with RealtimeStandIn(ScriptedBehaviour(), require_auth=("Authorization", f"Bearer {API_KEY}")) as server:
        yield server


def leases(redis_url: str, replica: str, limit: int) -> ModelLeases:
    return ModelLeases(aioredis.from_url(redis_url), keys=Keys("cbtest"), replica_id=replica, limit=limit,
                       lease_ttl_s=15.0, refresh_s=5.0)


async def test_a_claimed_session_is_configured_exactly_as_a_call_would_configure_it(standin: RealtimeStandIn) -> None:
    settings = settings_for(standin)
    pool = pool_for(settings)
    assert pool.warm(CALL) == "started"
    assert pool.warm(CALL) == "duplicate"  # a webhook retry does not open a second session
    session = await standin.wait_for_session()
    await session.wait_for_sent("session.updated")
    warm = await pool.claim(CALL, wait_s=5.0)
    assert warm is not None and len(pool) == 0
    assert session.received_types() == ["session.update"]
    expected = model_sessions.model_side(settings)
    assert warm.config == expected.config
    assert session.received[0].event["session"]["instructions"] == expected.config.instructions
    assert await pool.claim(CALL, wait_s=1.0) is None  # claimed once only
    # the claimed transport is live: the call can use it at once
    await warm.transport.send(warm.dialect.response_create())
    await session.wait_until(lambda: session.responses_done >= 1)
    await warm.transport.close()
    assert standin.violations == []


async def test_a_claim_while_opening_waits_for_the_session(standin: RealtimeStandIn) -> None:
    standin.behaviour.handshake_delay_ms = 200
    standin.behaviour.session_delay_ms = 100
    pool = pool_for(settings_for(standin))
    pool.warm(CALL)
    warm = await pool.claim(CALL, wait_s=5.0)  # at once: the entry is still opening
    assert warm is not None
    assert warm.opened_s >= 0.35  # handshake + session.created + session.updated delays
    await warm.transport.close()


async def test_an_unclaimed_session_is_closed_by_its_ttl(standin: RealtimeStandIn) -> None:
    pool = pool_for(settings_for(standin), ttl_s=0.5)
    pool.warm(CALL)
    session = await standin.wait_for_session()
    await session.wait_until(lambda: session.closed, timeout_s=5.0)
    assert session.close_code == 1000
    assert len(pool) == 0
    assert await pool.claim(CALL, wait_s=0.1) is None


async def test_the_pool_is_bounded(standin: RealtimeStandIn) -> None:
    pool = pool_for(settings_for(standin), size=2)
    assert [pool.warm(f"CA{n:032d}") for n in range(3)] == ["started", "started", "full"]
    await standin.wait_for_session(1)
    await pool.close()
    for session in standin.sessions:
        await session.wait_until(lambda s=session: s.closed)  # type: ignore[misc]
    assert len(standin.sessions) == 2


async def test_a_failed_open_leaks_nothing(redis_server: RedisServer) -> None:
    async with RealtimeStandIn(ScriptedBehaviour(), reject_status=503) as server:
        slots = leases(redis_server.url, "replica-a", limit=3)
        pool = pool_for(settings_for(server), slots=slots)
        pool.warm(CALL)
        await wait_until(lambda: len(pool) == 0, timeout=5, what="the failed entry to leave the pool")
        await wait_until(lambda: slots.held == 0, timeout=5, what="the lease to be released")
        assert await slots.count() == 0


async def test_the_cap_is_respected_and_a_claimed_lease_is_the_calls(standin: RealtimeStandIn,
                                                                    redis_server: RedisServer) -> None:
    slots = leases(redis_server.url, "replica-a", limit=2)
    assert await slots.acquire("CA-other-call")  # one slot is taken by a running call
    pool = pool_for(settings_for(standin), slots=slots)
    pool.warm(CALL)
    warm = await pool.claim(CALL, wait_s=5.0)
    assert warm is not None and warm.lease_id == warm_lease_id(CALL)
    assert await slots.count() == 2  # the claimed session holds its lease for the call
    pool.warm("CA" + "2" * 32)  # the fleet is at the cap: nothing is opened
    await wait_until(lambda: len(pool) == 0, timeout=5, what="the capped entry to fail")
    assert len(standin.sessions) == 1
    await slots.release(warm.lease_id)  # what the call does when it ends
    assert await slots.count() == 1
    await warm.transport.close()
    await slots.close()


async def test_a_stream_on_another_replica_is_not_claimed_there_and_the_ttl_closes_it(
        standin: RealtimeStandIn, redis_server: RedisServer) -> None:
    slots_a, slots_b = leases(redis_server.url, "replica-a", 4), leases(redis_server.url, "replica-b", 4)
    pool_a = pool_for(settings_for(standin), ttl_s=0.8, slots=slots_a)
    pool_b = pool_for(settings_for(standin), ttl_s=0.8, slots=slots_b)
    pool_a.warm(CALL)  # the voice webhook reached replica A
    warmed = await standin.wait_for_session()
    await warmed.wait_for_sent("session.updated")
    assert await pool_b.claim(CALL, wait_s=1.0) is None  # the stream reached replica B
    assert await slots_b.acquire(CALL)  # B's call takes its own lease, as CallSession does
    assert await slots_a.count() == 2  # counted twice until A's entry expires
    await warmed.wait_until(lambda: warmed.closed, timeout_s=5.0)
    await wait_until(lambda: slots_a.held == 0, timeout=5, what="A's lease to be released")
    client = aioredis.from_url(redis_server.url)
    members = {m.decode() for m in await client.zrange("cbtest:model_sessions", 0, -1)}
    assert members == {f"replica-b|{CALL}"}  # B's call keeps its lease: expiring A's never touched it
    await client.aclose()
    await slots_b.release(CALL)
    for slots in (slots_a, slots_b):
        await slots.close()


async def test_shutdown_closes_ready_and_opening_sessions_and_releases_their_leases(
        standin: RealtimeStandIn, redis_server: RedisServer) -> None:
    slots = leases(redis_server.url, "replica-a", 4)
    pool = pool_for(settings_for(standin), slots=slots)
    pool.warm(CALL)
    ready = await standin.wait_for_session()
    await ready.wait_for_sent("session.updated")
    standin.behaviour.session_delay_ms = 2000  # the second one is still opening at shutdown
    pool.warm("CA" + "3" * 32)
    opening = await standin.wait_for_session(1)
    await pool.close()
    await ready.wait_until(lambda: ready.closed)
    await opening.wait_until(lambda: opening.closed)
    assert len(pool) == 0 and slots.held == 0 and await slots.count() == 0
    await slots.close()


def test_a_bug_in_the_pool_never_fails_the_webhook() -> None:
    class Broken:
        settings = Settings(prewarm=2)
        draining = False

        @property
        def prewarm_pool(self) -> None:
            raise RuntimeError("boom")

    from service.realtime.prewarm import prewarm_call

    prewarm_call(Broken(), CALL)  # logs prewarm.failed (internal), raises nothing


async def test_a_claim_of_a_failing_or_late_session_returns_none_and_leaks_nothing(redis_server: RedisServer) -> None:
    async with RealtimeStandIn(ScriptedBehaviour(), reject_status=503) as failing:
        slots = leases(redis_server.url, "replica-a", limit=3)
        pool = pool_for(settings_for(failing), slots=slots)
        pool.warm(CALL)
        assert await pool.claim(CALL, wait_s=5.0) is None  # the opening failed while the claim waited
        await wait_until(lambda: slots.held == 0, timeout=5, what="the failed entry's lease to be released")
    async with RealtimeStandIn(ScriptedBehaviour(session_delay_ms=3000)) as slow:
        pool = pool_for(settings_for(slow), slots=slots)
        pool.warm(CALL)
        assert await pool.claim(CALL, wait_s=0.2) is None  # not ready in time: given up, the call connects
        assert len(pool) == 0
        session = await slow.wait_for_session()
        await session.wait_until(lambda: session.closed, timeout_s=5.0)
        await wait_until(lambda: slots.held == 0, timeout=5, what="the late entry's lease to be released")
        assert await slots.count() == 0
    await slots.close()
