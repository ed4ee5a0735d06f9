"""Escalation outbox: one atomic step appends the record to a Redis Stream and marks the call hash.

Guarantees:
- ``enqueue`` is non-async and non-blocking (safe from the bridge's event handlers); it returns the
  escalation id at once. A background task writes records in enqueue order.
- The write is one Lua script (atomic): an idempotency guard ``escalation:<id>`` (SET NX, TTL), XADD to
  the outbox stream, HSET of the call's ``state``/``escalation_*`` fields (``escalation_record`` = the
  body, a few KB, read by the warm transfer's agent briefing on whichever replica answers Twilio). Replaying it after an
  ambiguous failure never appends a second entry for the same escalation id.
- If Redis is down, records wait in a bounded in-memory list (``pending_max``, ~5 KB each: 1,000 ->
  ~5 MB) and are retried with capped backoff until written; ``flush()`` drains it at shutdown. If the
  bound is hit the oldest record is dropped with an error log (``escalation.outbox_overflow``).
- Before writing, the call's queued state writes are flushed (bounded wait), so the hash never
  regresses to an older state after the escalation is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import structlog
from redis.asyncio import Redis

from service.aio import cancel_and_wait, check_cancelled, wait_set
from service.escalation.record import EscalationRecord
from service.metrics import ESCALATIONS_LOST
from service.state.keys import STATE_ESCALATED, Keys
from service.state.store import REDIS_ERRORS, StateStore

log = structlog.get_logger(__name__)

_local_pending = 0
"""Records held in memory by every Outbox of this process; the delivery worker adds it to the stream
length when it sets ``callbridge_escalation_outbox_pending``."""


def local_pending() -> int:
    return _local_pending


def _add_local(delta: int) -> None:
    global _local_pending
    _local_pending += delta


_ENQUEUE_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[6]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'escalation_id', ARGV[1], 'call_id', ARGV[2], 'trigger', ARGV[4], 'decided_at', ARGV[5], 'body', ARGV[3])
redis.call('HSET', KEYS[3], 'state', ARGV[8], 'escalation_status', 'pending', 'escalation_id', ARGV[1],
  'escalation_trigger', ARGV[4], 'escalated_at', ARGV[5], 'escalation_record', ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[9]) + 1))
return 1
"""
RECENT_ESCALATIONS_MAX = 500
"""Call ids kept in the recent-escalations index (the console's escalations page reads it)."""


class Outbox:
    """Durable hand-over of escalation records to Redis (see module docstring for guarantees)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl_s: int = 86400,
        pending_max: int = 1000,
        stream_maxlen: int = 50_000,
        store: StateStore | None = None,
        state_flush_s: float = 1.0,
        retry_max_s: float = 2.0,
        batch_max: int = 100,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.pending_max = pending_max
        self.stream_maxlen = stream_maxlen
        self._store = store
        self._state_flush_s = state_flush_s
        self._retry_max_s = retry_max_s
        self.batch_max = batch_max
        self._pending: deque[EscalationRecord] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._script = redis.register_script(_ENQUEUE_SCRIPT)

    @classmethod
    def for_store(cls, store: StateStore, **kwargs: object) -> Outbox:
        """An outbox sharing the store's Redis client, prefix and TTL."""
        return cls(store.redis, store.keys, ttl_s=store.ttl_s, store=store, **kwargs)  # type: ignore[arg-type]

    @property
    def pending(self) -> int:
        """Records not yet written to Redis by this outbox."""
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="escalation-outbox")

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Flush for up to ``flush_timeout`` s, then stop (anything left is logged as lost)."""
        await self.flush(flush_timeout)
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._pending:
            log.error("escalation.outbox_unflushed", count=len(self._pending),
                      escalation_ids=[r.escalation_id for r in self._pending][:20])

    def enqueue(self, record: EscalationRecord) -> str:
        """Queue ``record`` for the outbox stream; returns its escalation id. Never blocks or raises."""
        if len(self._pending) >= self.pending_max:
            lost = self._pending.popleft()
            _add_local(-1)
            ESCALATIONS_LOST.inc()
            log.error("escalation.outbox_overflow", escalation_id=lost.escalation_id, call_id=lost.call_id,
                      pending_max=self.pending_max)
        self._pending.append(record)
        _add_local(1)
        self._drained.clear()
        self._wake.set()
        log.info("escalation.enqueued", escalation_id=record.escalation_id, call_id=record.call_id,
                 trigger=record.trigger)
        return record.escalation_id

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 (returns False on timeout)
        """Wait until every enqueued record is in Redis; False on timeout. Cancel-safe."""
        return await wait_set(self._drained, timeout)

    async def write(self, record: EscalationRecord) -> bool:
        """The atomic outbox step for one record (True = appended, False = already there). Raises on Redis errors."""
        return (await self.write_many([record]))[0]

    async def write_many(self, records: list[EscalationRecord]) -> list[bool]:
        """The atomic step for each record, pipelined in one round trip (each script is atomic on its own).

        First waits (bounded by ``state_flush_s``) for the calls' queued state writes. Raises on Redis errors;
        replaying after a failure is safe (the idempotency guard).
        """
        if self._store is not None:
            deadline = time.monotonic() + self._state_flush_s
            for record in records:
                await self._store.flush_call(record.call_id, max(0.0, deadline - time.monotonic()))
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            await self._script(
                keys=[self.keys.escalation_guard(record.escalation_id), self.keys.outbox,
                      self.keys.call(record.call_id), self.keys.recent_escalations],
                args=[record.escalation_id, record.call_id, record.body, record.trigger, f"{record.decided_at:.3f}",
                      self.ttl_s, self.stream_maxlen, STATE_ESCALATED, RECENT_ESCALATIONS_MAX],
                client=pipe,
            )
        return [bool(result) for result in await pipe.execute()]

    async def _run(self) -> None:
        backoff = 0.05
        failing_since: float | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                check_cancelled()
                batch = [self._pending[i] for i in range(min(self.batch_max, len(self._pending)))]
                try:
                    appended = await self.write_many(batch)
                except REDIS_ERRORS as error:
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.warning("escalation.outbox_retry", escalation_id=batch[0].escalation_id,
                                    error=type(error).__name__, pending=len(self._pending))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._retry_max_s)
                    continue
                if failing_since is not None:
                    log.info("escalation.outbox_recovered", waited_s=round(time.monotonic() - failing_since, 3),
                             pending=len(self._pending))
                    failing_since = None
                backoff = 0.05
                written = {id(record) for record in batch}
                while self._pending and id(self._pending[0]) in written:  # overflow may have dropped some meanwhile
                    self._pending.popleft()
                    _add_local(-1)
                for record, fresh in zip(batch, appended, strict=True):
                    log.info("escalation.outboxed", escalation_id=record.escalation_id, call_id=record.call_id,
                             duplicate=not fresh)
            self._drained.set()
