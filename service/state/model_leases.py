"""A fleet-wide cap on concurrent model sessions (``CALLBRIDGE_MAX_MODEL_SESSIONS``), protecting the
operator's model quota across every replica.

Leases live in one Redis sorted set (``<prefix>:model_sessions``): member ``<replica>|<call>``,
score = when the lease lapses (unix ms). Taking one is a single atomic script (drop lapsed leases,
then add if fewer than the cap are held), so N replicas racing for M slots get exactly M. The holder
refreshes its leases every ``refresh_s`` (the replica heartbeat period); a SIGKILLed replica's leases
lapse after ``lease_ttl_s`` and never leak. ``release`` is idempotent and never raises. If Redis is
unavailable the replica falls back to counting its own sessions against the cap (documented:
the fleet may then exceed it by up to (replicas - 1) x cap until Redis is back).

Memory: one entry per model session held by this replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from service.aio import cancel_and_wait
from service.redaction import cap_text
from service.state.keys import Keys

log = structlog.get_logger(__name__)

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""


class ModelLeases:
    """One replica's view of the fleet-wide model-session cap. ``limit`` 0 means no cap."""

    def __init__(self, redis: Any, *, keys: Keys, replica_id: str, limit: int, lease_ttl_s: float,
                 refresh_s: float, timeout_s: float = 2.0) -> None:
        self._redis = redis
        self._key = f"{keys.prefix}:model_sessions"
        self._replica_id = replica_id
        self.limit = limit
        self._ttl_ms = max(1000, int(lease_ttl_s * 1000))
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._held: set[str] = set()  # call ids with a lease from this replica
        self._refresher: asyncio.Task[None] | None = None

    def _member(self, call_id: str) -> str:
        return f"{self._replica_id}|{call_id}"

    @property
    def held(self) -> int:
        return len(self._held)

    async def acquire(self, call_id: str) -> bool:
        """Take a slot for ``call_id`` (True), or False when the fleet is at the cap."""
        if self.limit <= 0:
            return True
        if call_id in self._held:
            return True
        if self._redis is not None:
            now = int(time.time() * 1000)
            try:
                ok = await asyncio.wait_for(self._redis.eval(
                    _ACQUIRE, 1, self._key, now, self._member(call_id), now + self._ttl_ms, self.limit),
                    self._timeout_s)
            except Exception as error:  # Redis down or slow: count this replica's own sessions
                log.warning("model.leases_degraded", error=cap_text(repr(error), 200))
                ok = len(self._held) < self.limit
        else:
            ok = len(self._held) < self.limit
        if ok:
            self._held.add(call_id)
            self._ensure_refresher()
        return bool(ok)

    async def release(self, call_id: str) -> None:
        """Give the slot back (idempotent; never raises: an unreleased lease lapses by itself)."""
        if call_id not in self._held:
            return
        self._held.discard(call_id)
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(self._redis.zrem(self._key, self._member(call_id)), self._timeout_s)
        except Exception as error:
            log.warning("model.lease_release_failed", error=cap_text(repr(error), 200))

    async def count(self) -> int:
        """Leases held fleet-wide now (lapsed ones excluded)."""
        now = int(time.time() * 1000)
        return int(await self._redis.zcount(self._key, now, "+inf")) if self._redis is not None else len(self._held)

    def _ensure_refresher(self) -> None:
        if self._redis is not None and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="model-leases")

    async def _refresh_loop(self) -> None:
        """Push this replica's leases' lapse time forward while it holds any (bounded: stops when none)."""
        while self._held:
            await asyncio.sleep(self._refresh_s)  # the refresh period, not synchronisation
            expiry = int(time.time() * 1000) + self._ttl_ms
            with contextlib.suppress(Exception):  # a missed refresh only shortens the lease
                await asyncio.wait_for(self._redis.zadd(
                    self._key, {self._member(call): expiry for call in list(self._held)}, xx=True), self._timeout_s)

    async def close(self) -> None:
        if self._refresher is not None:
            await cancel_and_wait(self._refresher)


def model_leases_for(gateway: Any) -> ModelLeases:
    """The gateway's leases, created on first use (Redis from its state store when one is configured)."""
    leases = getattr(gateway, "model_leases", None)
    if leases is None:
        settings = gateway.settings
        store = gateway.state_store
        leases = ModelLeases(store.redis if store is not None else None, keys=Keys(settings.redis_prefix),
                             replica_id=settings.replica_id, limit=settings.max_model_sessions,
                             lease_ttl_s=settings.heartbeat_ttl_s, refresh_s=settings.heartbeat_interval_s)
        gateway.model_leases = leases
    return leases
