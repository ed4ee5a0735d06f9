"""Per-call state in Redis behind a write-behind queue (docs/redis-schema.md).

Guarantees:
- The audio path never waits on Redis: ``CallStateWriter`` methods are plain functions that only
  append to memory and wake one background writer task. They must be called from the event-loop
  thread (they are not thread-safe), never block and never raise on Redis trouble.
- Per call, writes land in the order they were made. Hash fields are coalesced (latest value wins,
  so a call's ids, state and timestamps are never dropped); transcript turns and sentiment points
  sit in a bounded per-call queue of ``queue_max`` ops. When the bound is hit the OLDEST op is
  dropped, counted in ``callbridge_state_writes_dropped_total`` and logged (``state.write_dropped``,
  once per episode). Memory per call: <= queue_max x (~150 B + text, capped at 2,000 chars), i.e.
  ~0.5 MB for 2,000 typical turns, ~4 MB worst case.
- Writes reach Redis within ``write_delay_s`` (``CALLBRIDGE_STATE_WRITE_DELAY_MS``) of being made
  while Redis is healthy: the writer waits that long after the first write of a quiet period, so
  the state changes of all calls in the window share one MULTI/EXEC (at 50 calls, ~100 round trips
  a second become <= 20). ``flush`` waits for them like any other queued write.
- While Redis is down, calls go on; the writer retries with capped exponential backoff and writes
  everything still queued when Redis returns. Each batch is one MULTI/EXEC; turns carry a per-call
  ``seq`` so a batch replayed after an ambiguous failure is de-duplicated by ``load_call``.
- One call's refused writes (Redis answers with an error for its keys, e.g. WRONGTYPE) never hold
  up the other calls in the shared batch: they are retried ``CALL_WRITE_MAX_ATTEMPTS`` times, then
  dropped and logged (docs/security.md, "Limits").
- Every key gets the TTL ``ttl_s`` (refreshed on each write), and lists are LTRIM-capped, so nothing
  in Redis grows without bound and ended calls expire ``ttl_s`` after their last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from service.aio import cancel_and_wait, check_cancelled, wait_set
from service.metrics import REDIS_UP, STATE_QUEUE_DEPTH, STATE_WRITE_FAILURES, STATE_WRITES_DROPPED
from service.redaction import cap_text, mask_phone_number, redact_pii
from service.state import keys as k
from service.state.keys import Keys
from service.state.model import CallSnapshot, Role, SentimentPoint, TranscriptTurn

if TYPE_CHECKING:
    from service.config import Settings

log = structlog.get_logger(__name__)

MAX_TEXT_CHARS = 2000
"""Transcript text longer than this is truncated before it is queued (bounds queue memory)."""

CALL_WRITE_MAX_ATTEMPTS = 3
"""Batches in which Redis may refuse one call's commands before that call's pending writes are dropped."""

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What counts as "Redis is unavailable" for the store, the outbox and the delivery worker."""

MAX_EVENT_FIELDS = 8
MAX_EVENT_VALUE_CHARS = 200
"""Bounds on one call event (``CallStateWriter.event``): at most ~2 KB each."""

_NUMBER_FIELDS = frozenset({"from", "to", "caller", "called"})


# --------------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[tuple[str, int]]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``.

    Default sentinel port 26379. ``?sentinel_password=...`` authenticates to the sentinels themselves;
    the userinfo part authenticates to the primary. Raises ``ValueError`` on a malformed URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis+sentinel", "redis-sentinel", "sentinel"):
        raise ValueError(f"not a sentinel URL scheme: {parts.scheme!r}")
    netloc = parts.netloc
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":") or "26379"
        else:
            host, _, port = item.partition(":")
            port = port or "26379"
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError("sentinel URL needs host:port[,host:port...]/service_name")
    db = int(path[1]) if len(path) > 1 else 0
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0]
    return SentinelTarget(sentinels, unquote(path[0]), db, username, password, sentinel_password)


class _SentinelRedis(Redis):
    """A primary found through Sentinel; ``aclose`` also closes the connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def connect_redis(url: str, *, socket_timeout_s: float = 2.0, client_name: str | None = None) -> Redis:
    """One redis.asyncio client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://``.

    Does no I/O (connections open lazily). Each command fails within ~``socket_timeout_s`` when Redis
    is unreachable (one quick reconnect retry only): callers retry on their own schedule.
    """
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.01), 1),
        "health_check_interval": 10,
        "client_name": client_name,
    }
    if urlsplit(url).scheme in ("redis+sentinel", "redis-sentinel", "sentinel"):
        target = parse_sentinel_url(url)
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
        if target.sentinel_password:
            sentinel_kwargs["password"] = target.sentinel_password
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(
            target.service_name, redis_class=_SentinelRedis, db=target.db, username=target.username,
            password=target.password, **common,
        )
        assert isinstance(client, _SentinelRedis)
        client.sentinel_manager = sentinel
        return client
    return Redis.from_url(url, **common)


# --------------------------------------------------------------------------------------------------
# Write-behind queue
# --------------------------------------------------------------------------------------------------


@dataclass
class _Op:
    seq: int
    kind: str  # "transcript" | "sentiment" | "event"
    payload: str


@dataclass
class _CallQueue:
    """One call's pending writes. ``fields`` is coalesced; ``ops`` is bounded by the store."""

    call_id: str
    fields: dict[str, str] = field(default_factory=dict)
    ops: deque[_Op] = field(default_factory=deque)
    seq: int = 0
    dropped_in_episode: int = 0
    refusals: int = 0  # consecutive batches in which Redis refused this call's commands
    ended: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    # Small in-memory tails, so an escalation record can be built without reading Redis.
    info: dict[str, str] = field(default_factory=dict)
    tail_transcript: deque[TranscriptTurn] = field(default_factory=lambda: deque(maxlen=50))
    tail_sentiment: deque[SentimentPoint] = field(default_factory=lambda: deque(maxlen=200))

    def __post_init__(self) -> None:
        self.drained.set()


def _now() -> float:
    return time.time()


def _fmt_ts(ts: float) -> str:
    return f"{ts:.3f}"


def _mask_fields(fields: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if key in _NUMBER_FIELDS or "number" in key:
            text = mask_phone_number(text)
        out[key] = text
    return out


class CallStateWriter:
    """The bridge's handle on one call's state. Every method is non-async and non-blocking.

    Call from the event-loop thread only. Nothing here raises because of Redis.
    """

    def __init__(self, store: StateStore, queue: _CallQueue) -> None:
        self._store = store
        self._q = queue

    @property
    def call_id(self) -> str:
        return self._q.call_id

    @property
    def info(self) -> dict[str, str]:
        """The hash fields written so far (masked numbers, ids, state...), as last set in memory."""
        return dict(self._q.info)

    def started(self, fields: Mapping[str, object]) -> None:
        """Record a new call: ids, provider, numbers (masked here whatever is passed), state ``active``.

        Adds the call to the active-call index and stamps ``started_at`` and the owning replica.
        """
        now = _now()
        values = {"state": "active", k.F_ESCALATION_STATUS: "none", **_mask_fields(fields)}
        values.setdefault(k.F_STARTED_AT, _fmt_ts(now))
        values[k.F_CALL_ID] = self.call_id
        self._store._set_fields(self._q, values)

    def set_state(self, state: str) -> None:
        """Set the call's state word (e.g. ``active``, ``escalating``, ``transferring``)."""
        self._store._set_fields(self._q, {k.F_STATE: state})

    def set_fields(self, fields: Mapping[str, object]) -> None:
        """Set arbitrary extra hash fields (numbers are masked, ``None`` values skipped)."""
        self._store._set_fields(self._q, _mask_fields(fields))

    def transcript(self, role: Role, text: str, ts: float | None = None) -> None:
        """Append one finished turn (``caller`` from input transcription, ``bot`` from output transcripts)."""
        text = text.strip()
        if not text:
            return
        if self._store.redact_transcripts:  # before it is queued, kept in the tail or sent anywhere
            text = redact_pii(text)
        if len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        self._q.seq += 1
        turn = TranscriptTurn(role=role, text=text, ts=_now() if ts is None else ts, seq=self._q.seq)
        self._q.tail_transcript.append(turn)
        self._store._push(self._q, _Op(turn.seq, "transcript", turn.to_json()))

    def sentiment(self, point: SentimentPoint) -> None:
        """Append one point of the frustration-score series."""
        self._q.seq += 1
        point = SentimentPoint(**{**point.__dict__, "seq": self._q.seq})
        self._q.tail_sentiment.append(point)
        self._store._push(self._q, _Op(point.seq, "sentiment", point.to_json()))

    def event(self, kind: str, fields: Mapping[str, str | int | float | None] | None = None) -> None:
        """Append one call event for the console (``barge_in``, ``tool_call``, ``reconnect``,
        ``escalation``...). Values must be short and free of personal data: strings are capped at
        ``MAX_EVENT_VALUE_CHARS`` and at most ``MAX_EVENT_FIELDS`` fields are kept (bounded memory)."""
        self._q.seq += 1
        data: dict[str, object] = {"kind": kind[:40], "ts": round(_now(), 3), "seq": self._q.seq}
        for key, value in list((fields or {}).items())[:MAX_EVENT_FIELDS]:
            if value is None:
                continue
            data[str(key)[:40]] = cap_text(value, MAX_EVENT_VALUE_CHARS) if isinstance(value, str) else value
        self._store._push(self._q, _Op(self._q.seq, "event", json.dumps(data, ensure_ascii=False, separators=(",", ":"))))

    def ended(self, outcome: str) -> None:
        """Mark the call ended (state ``ended``, ``outcome``, ``ended_at``); removes it from the active index."""
        self._q.ended = True
        self._store._set_fields(
            self._q, {k.F_STATE: k.STATE_ENDED, k.F_OUTCOME: outcome, k.F_ENDED_AT: _fmt_ts(_now())}
        )

    def recent_transcript(self, n: int | None = None) -> list[TranscriptTurn]:
        """The last ``n`` turns written through this writer (at most 50 are kept in memory)."""
        turns = list(self._q.tail_transcript)
        return turns if n is None else turns[-n:] if n > 0 else []

    def recent_sentiment(self) -> list[SentimentPoint]:
        """The last sentiment points written through this writer (at most 200 kept in memory)."""
        return list(self._q.tail_sentiment)

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 (returns False on timeout)
        """Wait until this call's queued writes are in Redis; False on timeout. Cancel-safe."""
        return await self._store.flush_call(self.call_id, timeout)


class StateStore:
    """Redis-backed per-call state with a write-behind queue, replica heartbeats and reaping.

    ``start()`` launches the single background writer; ``close()`` flushes (bounded) and stops it.
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str = "cb",
        ttl_s: int = 86400,
        queue_max: int = 2000,
        replica_id: str = "replica",
        *,
        heartbeat_interval_s: float = 5.0,
        heartbeat_ttl_s: float = 15.0,
        transcript_max: int = 500,
        sentiment_max: int = 500,
        events_max: int = 200,
        batch_max: int = 512,
        write_delay_s: float = 0.0,
        retry_max_s: float = 2.0,
        socket_timeout_s: float = 2.0,
        redis: Redis | None = None,
        redact_transcripts: bool = False,
    ) -> None:
        if queue_max < 1 or transcript_max < 1 or sentiment_max < 1 or batch_max < 1:
            raise ValueError("queue_max, transcript_max, sentiment_max and batch_max must be >= 1")
        if not 0.0 <= write_delay_s <= 1.0:
            raise ValueError("write_delay_s must be within 0..1 s")
        self.keys = Keys(prefix)
        self.ttl_s = int(ttl_s)
        self.queue_max = queue_max
        self.replica_id = replica_id
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.transcript_max = transcript_max
        self.sentiment_max = sentiment_max
        self.events_max = max(1, events_max)
        self.batch_max = batch_max
        self.write_delay_s = write_delay_s
        self.retry_max_s = retry_max_s
        self.redact_transcripts = redact_transcripts  # CALLBRIDGE_PII_REDACTION=all
        self.redis: Redis = redis or connect_redis(
            redis_url, socket_timeout_s=socket_timeout_s, client_name=f"callbridge:{replica_id}"
        )
        self.draining = False  # set when the replica drains; carried by the heartbeat (console fleet view)
        self._queues: dict[str, _CallQueue] = {}
        self._dirty: dict[str, _CallQueue] = {}  # insertion-ordered: round-robin over calls
        self._pending = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = asyncio.Event()
        self._write_now = asyncio.Event()  # set by close(): skip the coalescing window
        self._writer_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._healthy = False
        self._outage_started: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> StateStore:
        """Build from ``Settings`` (redis_url, redis_prefix, call_ttl_s, state_queue_max, replica_id, heartbeat_*)."""
        params: dict[str, Any] = {
            "heartbeat_interval_s": settings.heartbeat_interval_s,
            "heartbeat_ttl_s": settings.heartbeat_ttl_s,
            "write_delay_s": settings.state_write_delay_ms / 1000.0,
            "redact_transcripts": settings.pii_redaction == "all",
            **overrides,
        }
        return cls(
            settings.redis_url, settings.redis_prefix, settings.call_ttl_s, settings.state_queue_max,
            settings.replica_id, **params,
        )

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the background writer and probe Redis once (never raises if Redis is down)."""
        if self._writer_task is None:
            self._closing.clear()
            self._writer_task = asyncio.create_task(self._writer_loop(), name="state-writer")
        await self.ping()

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Flush for up to ``flush_timeout`` s, stop the heartbeat (deleting it) and the writer, close Redis."""
        if self._writer_task is not None:
            self._write_now.set()  # no coalescing window from here on
            await self.flush(flush_timeout)
        if self._heartbeat_task is not None:
            await cancel_and_wait(self._heartbeat_task)
            self._heartbeat_task = None
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.wait_for(self.redis.delete(self.keys.replica(self.replica_id)), 1.0)
        self._closing.set()
        if self._writer_task is not None:
            await cancel_and_wait(self._writer_task)
            self._writer_task = None
        if self._pending:
            log.warning("state.close_unflushed", pending=self._pending)
        await self.redis.aclose()

    @property
    def healthy(self) -> bool:
        """True when the last Redis round trip (write, heartbeat or ping) succeeded."""
        return self._healthy

    @property
    def pending_ops(self) -> int:
        """List ops queued over all calls (hash-field updates are coalesced and not counted)."""
        return self._pending

    async def ping(self, timeout: float = 1.0) -> bool:  # noqa: ASYNC109 (returns False on timeout)
        """One PING with a timeout; updates ``healthy`` and ``callbridge_redis_up``. For /readyz."""
        try:
            ok = bool(await asyncio.wait_for(self.redis.ping(), timeout))
        except REDIS_ERRORS:
            ok = False
        self._set_healthy(ok)
        return ok

    def _set_healthy(self, ok: bool) -> None:
        if ok and not self._healthy and self._outage_started is not None:
            log.info("state.redis_recovered", outage_s=round(time.monotonic() - self._outage_started, 3),
                     pending=self._pending)
            self._outage_started = None
        if not ok and self._healthy:
            log.warning("state.redis_unavailable", pending=self._pending)
        if not ok and self._outage_started is None:
            self._outage_started = time.monotonic()
        self._healthy = ok
        REDIS_UP.set(1 if ok else 0)

    # ---------------------------------------------------------------------------------- writers

    def call(self, call_id: str) -> CallStateWriter:
        """The writer for ``call_id`` (created on first use; the same queue while the call has work)."""
        queue = self._queues.get(call_id)
        if queue is None:
            queue = self._queues[call_id] = _CallQueue(call_id)
        return CallStateWriter(self, queue)

    def _set_fields(self, queue: _CallQueue, values: Mapping[str, str]) -> None:
        queue.fields.update(values)
        queue.info.update(values)
        self._mark_dirty(queue)

    def _push(self, queue: _CallQueue, op: _Op) -> None:
        if len(queue.ops) >= self.queue_max:
            queue.ops.popleft()
            self._pending -= 1
            STATE_WRITES_DROPPED.inc()
            queue.dropped_in_episode += 1
            if queue.dropped_in_episode == 1:
                log.warning("state.write_dropped", call_id=queue.call_id, queue_max=self.queue_max,
                            redis_healthy=self._healthy)
        queue.ops.append(op)
        self._pending += 1
        STATE_QUEUE_DEPTH.set(self._pending)
        self._mark_dirty(queue)

    def _mark_dirty(self, queue: _CallQueue) -> None:
        self._queues.setdefault(queue.call_id, queue)
        self._dirty[queue.call_id] = queue
        queue.drained.clear()
        self._drained.clear()
        self._wake.set()

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 (returns False on timeout)
        """Wait until every queued write is in Redis; False on timeout. Cancel-safe."""
        return await wait_set(self._drained, timeout)

    async def flush_call(self, call_id: str, timeout: float) -> bool:  # noqa: ASYNC109 (returns False on timeout)
        """Wait until one call's queued writes are in Redis; False on timeout. Cancel-safe."""
        queue = self._queues.get(call_id)
        if queue is None:
            return True
        return await wait_set(queue.drained, timeout)

    async def _writer_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            if self.write_delay_s and not self._write_now.is_set():
                # Coalesce: the writes of every call made within the window go in one MULTI/EXEC
                # (one round trip instead of one per state change); close() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._write_now.wait(), self.write_delay_s)
            self._wake.clear()
            while self._dirty:
                check_cancelled()
                try:
                    some_call_failed = await self._write_batch()
                except Exception as error:  # Redis trouble (or a bug): keep the data, back off, retry
                    STATE_WRITE_FAILURES.inc()
                    if isinstance(error, REDIS_ERRORS):
                        self._set_healthy(False)
                        log.debug("state.write_failed", error=type(error).__name__, pending=self._pending)
                    else:
                        log.exception("state.writer_error", pending=self._pending)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                self._set_healthy(True)
                if some_call_failed:  # Redis answered; one call's keys refused (e.g. WRONGTYPE): pace retries
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                backoff = 0.05
            self._drained.set()

    async def _write_batch(self) -> bool:
        """Write up to ``batch_max`` ops (plus coalesced fields) of the dirty calls in one MULTI/EXEC.

        Each call's commands are judged on their own replies: a call whose command Redis refuses
        (e.g. WRONGTYPE on a key something else wrote) keeps its writes for a retry while every
        other call's writes commit; after ``CALL_WRITE_MAX_ATTEMPTS`` refusals its batch is dropped
        and logged (``state.call_writes_dropped``), so one bad call can never wedge the writer.
        Returns True if some call's writes were refused. Raises on connection trouble (whole batch)."""
        now = _now()
        budget = self.batch_max
        planned: list[tuple[_CallQueue, dict[str, str], int, int, int]] = []
        pipe = self.redis.pipeline(transaction=True)
        for queue in list(self._dirty.values()):
            if budget <= 0:
                break
            fields = dict(queue.fields)
            ops = [queue.ops[i] for i in range(min(budget, len(queue.ops)))]
            budget -= max(1, len(ops))
            first = len(pipe.command_stack)
            self._plan_call(pipe, queue, fields, ops, now)
            planned.append((queue, fields, ops[-1].seq if ops else 0, first, len(pipe.command_stack)))
        replies = await pipe.execute(raise_on_error=False)
        some_failed = False
        for queue, fields, last_seq, first, end in planned:
            refusal = next((r for r in replies[first:end] if isinstance(r, Exception)), None)
            if refusal is None:
                queue.refusals = 0
                self._commit(queue, fields, last_seq)
                continue
            some_failed = True
            self._refused(queue, refusal, fields, last_seq)
        return some_failed

    def _refused(self, queue: _CallQueue, refusal: BaseException, fields: dict[str, str], last_seq: int) -> None:
        """One call's writes were refused by Redis: retry later, or drop them after the last attempt."""
        queue.refusals += 1
        STATE_WRITE_FAILURES.inc()
        error = cap_text(str(refusal), 200)
        if queue.refusals < CALL_WRITE_MAX_ATTEMPTS:
            log.warning("state.call_write_refused", call_id=queue.call_id, attempt=queue.refusals, error=error)
            self._dirty.pop(queue.call_id, None)  # to the back: the other calls go first
            self._dirty[queue.call_id] = queue
            return
        dropped = sum(1 for op in queue.ops if op.seq <= last_seq)
        STATE_WRITES_DROPPED.inc(dropped + (1 if fields else 0))
        log.error("state.call_writes_dropped", call_id=queue.call_id, attempts=queue.refusals, ops=dropped,
                  fields=len(fields), error=error)
        queue.refusals = 0
        self._commit(queue, fields, last_seq)

    def _plan_call(self, pipe: Any, queue: _CallQueue, fields: dict[str, str], ops: list[_Op], now: float) -> None:
        call_key = self.keys.call(queue.call_id)
        mapping = {**fields, k.F_UPDATED_AT: _fmt_ts(now), k.F_REPLICA: self.replica_id}
        pipe.hset(call_key, mapping=mapping)
        pipe.expire(call_key, self.ttl_s)
        state = fields.get(k.F_STATE)
        if state == k.STATE_ENDED:
            pipe.zrem(self.keys.active_calls, queue.call_id)
        elif state is not None:
            started = queue.info.get(k.F_STARTED_AT)
            score = float(started) if started else now
            pipe.zadd(self.keys.active_calls, {queue.call_id: score}, nx=True)
        for kind, key, cap in (
            ("transcript", self.keys.transcript(queue.call_id), self.transcript_max),
            ("sentiment", self.keys.sentiment(queue.call_id), self.sentiment_max),
            ("event", self.keys.events(queue.call_id), self.events_max),
        ):
            values = [op.payload for op in ops if op.kind == kind]
            if values:
                pipe.rpush(key, *values)
                pipe.ltrim(key, -cap, -1)
                pipe.expire(key, self.ttl_s)

    def _commit(self, queue: _CallQueue, fields: dict[str, str], last_seq: int) -> None:
        for key, value in fields.items():
            if queue.fields.get(key) == value:
                del queue.fields[key]
        while queue.ops and queue.ops[0].seq <= last_seq:
            queue.ops.popleft()
            self._pending -= 1
        STATE_QUEUE_DEPTH.set(self._pending)
        if not queue.fields and not queue.ops:
            self._dirty.pop(queue.call_id, None)
            if queue.dropped_in_episode:
                log.info("state.writes_recovered", call_id=queue.call_id, dropped=queue.dropped_in_episode)
                queue.dropped_in_episode = 0
            queue.drained.set()
            if queue.ended:
                self._queues.pop(queue.call_id, None)
        else:
            # Move to the back so other calls get their turn (fairness under a flood from one call).
            self._dirty.pop(queue.call_id, None)
            self._dirty[queue.call_id] = queue

    # ---------------------------------------------------------------------------------- reading

    async def load_call(self, call_id: str) -> CallSnapshot | None:
        """Read one call's hash, transcript, sentiment series and events (None if nothing is stored).

        Raises ``redis.exceptions.RedisError``/``OSError`` if Redis is unavailable.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.call(call_id))
        pipe.lrange(self.keys.transcript(call_id), 0, -1)
        pipe.lrange(self.keys.sentiment(call_id), 0, -1)
        pipe.lrange(self.keys.events(call_id), 0, -1)
        raw_hash, raw_turns, raw_points, raw_events = await pipe.execute()
        if not raw_hash and not raw_turns and not raw_points:
            return None
        fields = {_s(key): _s(value) for key, value in raw_hash.items()}
        turns = [TranscriptTurn.from_json(raw) for raw in _dedupe(raw_turns)]
        points = [SentimentPoint.from_json(raw) for raw in _dedupe(raw_points)]
        events = [event for event in (_load_event(raw) for raw in _dedupe(raw_events)) if event is not None]
        return CallSnapshot(call_id=call_id, fields=fields, transcript=turns, sentiment=points, events=events)

    async def active_calls(self) -> list[str]:
        """Call ids in the active-call index, oldest first."""
        members: list[Any] = await self.redis.zrange(self.keys.active_calls, 0, -1)
        return [_s(m) for m in members]

    # ---------------------------------------------------------------------------------- replicas

    async def heartbeat_once(self) -> None:
        """Write ``replica:<id>`` with a TTL of ``heartbeat_ttl_s`` (raises if Redis is down)."""
        value = json.dumps({"replica": self.replica_id, "ts": _now(), "calls": len(self._queues),
                            "draining": self.draining})
        await self.redis.set(self.keys.replica(self.replica_id), value, px=max(1, int(self.heartbeat_ttl_s * 1000)))

    def start_heartbeat(self, reap_every_s: float | None = None) -> asyncio.Task[None]:
        """Start the heartbeat task (every ``heartbeat_interval_s``); optionally reap dead replicas too.

        The task survives Redis outages (it logs and keeps beating). ``close()`` cancels it.
        """
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(reap_every_s), name="state-heartbeat")
        return self._heartbeat_task

    async def _heartbeat_loop(self, reap_every_s: float | None) -> None:
        last_reap = time.monotonic()
        while True:
            try:
                await self.heartbeat_once()
                self._set_healthy(True)
                if reap_every_s is not None and time.monotonic() - last_reap >= reap_every_s:
                    last_reap = time.monotonic()
                    await self.reap_dead_replicas()
            except REDIS_ERRORS as error:
                self._set_healthy(False)
                log.debug("state.heartbeat_failed", error=type(error).__name__)
            check_cancelled()
            await asyncio.sleep(self.heartbeat_interval_s)

    _REAP_SCRIPT = """
    if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
    local owner = redis.call('HGET', KEYS[2], 'replica')
    if owner and owner ~= ARGV[2] then return 0 end
    redis.call('ZREM', KEYS[1], ARGV[1])
    if owner then
      redis.call('HSET', KEYS[2], 'state', 'orphaned', 'orphaned_at', ARGV[3], 'reaped_by', ARGV[4])
    end
    return 1
    """

    async def reap_dead_replicas(self, chunk: int = 500) -> list[str]:
        """Correct the active-call index: calls owned by replicas whose heartbeat expired become
        ``orphaned`` (hash kept, removed from the index); index entries whose hash expired are removed.

        Each correction is one atomic script that re-checks the heartbeat and the owner, so a call a
        live replica has just taken over is left alone. Returns the call ids corrected. This replica's
        own calls are never reaped. Raises on Redis errors.
        """
        call_ids = await self.active_calls()
        corrected: list[str] = []
        script = self.redis.register_script(self._REAP_SCRIPT)
        for start in range(0, len(call_ids), chunk):
            batch = call_ids[start : start + chunk]
            pipe = self.redis.pipeline(transaction=False)
            for call_id in batch:
                pipe.hget(self.keys.call(call_id), k.F_REPLICA)
            owners = [_s(o) if o is not None else None for o in await pipe.execute()]
            distinct = sorted({o for o in owners if o and o != self.replica_id})
            pipe = self.redis.pipeline(transaction=False)
            for replica in distinct:
                pipe.exists(self.keys.replica(replica))
            alive = dict(zip(distinct, await pipe.execute(), strict=True)) if distinct else {}
            dead_owners: set[str] = set()
            for call_id, owner in zip(batch, owners, strict=True):
                if owner == self.replica_id or (owner and alive.get(owner)):
                    continue
                reaped = await script(
                    keys=[self.keys.active_calls, self.keys.call(call_id), self.keys.replica(owner or "")],
                    args=[call_id, owner or "", _fmt_ts(_now()), self.replica_id],
                )
                if reaped:
                    corrected.append(call_id)
                    if owner:
                        dead_owners.add(owner)
            for owner in sorted(dead_owners):
                log.warning("state.replica_reaped", dead_replica=owner,
                            calls=sum(1 for c, o in zip(batch, owners, strict=True) if o == owner and c in corrected))
        return corrected


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _load_event(raw: bytes) -> dict[str, Any] | None:
    """One stored call event, or None for an entry that is not a JSON object (never raises)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _dedupe(raws: list[bytes]) -> list[bytes]:
    """Drop byte-identical repeats: a replayed MULTI/EXEC appends the very same JSON (same seq and ts)."""
    seen: set[bytes] = set()
    out = []
    for raw in raws:
        if raw not in seen:
            seen.add(raw)
            out.append(raw)
    return out


def ceil_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up (Redis PX/min-idle arguments)."""
    return max(1, math.ceil(seconds * 1000))
