"""Escalation webhook: signing/verification (pure) and the delivery worker (asyncio + httpx + Redis).

Signature (docs/escalation-webhook.md, "Signature"): header
``Callbridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. Receivers
accept any ``v1`` that matches (several may be present during a secret rotation) and reject
timestamps more than ``tolerance_s`` away from their clock (replay protection).

Delivery worker guarantees:
- At-least-once: a record is XACK'd (and XDEL'd) only after a 2xx; every attempt carries the same
  body and ``Idempotency-Key: <escalation id>``, so receivers dedupe.
- Retries forever per record on timeouts, connection errors, 408, 429 and 5xx, with capped
  exponential backoff and full jitter; ``Retry-After`` (seconds or HTTP-date) is honoured (capped at
  ``retry_after_max_s``). Any other non-2xx goes to the dead-letter stream (status and a short body).
- While a worker retries an entry it re-claims it to itself (resetting its idle time); entries of a
  dead worker go idle and are taken over by another consumer with XAUTOCLAIM after ``claim_min_idle_s``.
- Bounded: at most ``concurrency`` HTTP requests in flight and at most ``max_records`` records owned
  (being posted or waiting for their next retry, ~5 KB each); backoff <= ``max_backoff_s``. A record
  waiting out a backoff or a ``Retry-After`` does not hold a request slot.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.aio import cancel_and_wait, check_cancelled
from service.escalation.outbox import local_pending
from service.metrics import OUTBOX_PENDING, WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_SECONDS
from service.state.keys import OUTBOX_GROUP, Keys
from service.state.store import REDIS_ERRORS, ceil_ms

if TYPE_CHECKING:
    from service.config import Settings
    from service.state.store import StateStore

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "Callbridge-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_S = 300

# --------------------------------------------------------------------------------------------------
# Signing (pure)
# --------------------------------------------------------------------------------------------------


class SignatureError(ValueError):
    """A webhook signature did not verify; the message says why (safe to show, holds no secret)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def compute_signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    return hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``Callbridge-Signature`` header value for ``body`` at ``timestamp`` (default: now)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={compute_signature(secret, ts, body)}"


_MAX_HEADER_CHARS = 4096
_MAX_TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658; a longer t= is not a timestamp
_HEX = frozenset("0123456789abcdef")


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """``"t=…,v1=…[,v1=…]"`` -> (timestamp, [v1 signatures]). Unknown schemes are ignored.

    Raises only ``SignatureError``: ``t`` must be 1-12 ASCII digits; a ``v1`` that is not 64 hex
    digits (non-ASCII included) can never match and is skipped."""
    if not isinstance(header, str) or len(header) > _MAX_HEADER_CHARS:
        raise SignatureError("header is not a string of at most 4096 characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            value = value.strip()
            if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS):
                raise SignatureError("timestamp t= is not an integer of at most 12 digits")
            timestamp = int(value)
        elif name == "v1":
            candidate = value.strip().lower()
            if len(candidate) == 64 and _HEX.issuperset(candidate):
                signatures.append(candidate)
    if timestamp is None:
        raise SignatureError("header has no t= timestamp")
    if not signatures:
        raise SignatureError("header has no v1= signature")
    return timestamp, signatures


def check_signature(
    secret: str | bytes, header: str, body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> int:
    """Verify ``header`` for the raw ``body``; return its timestamp or raise ``SignatureError`` (only that).

    ``tolerance_s`` must be a finite number >= 0: NaN would make every age pass, so it is refused."""
    if not _key(secret):
        raise SignatureError("no secret configured")
    if not (isinstance(tolerance_s, int | float) and math.isfinite(tolerance_s) and tolerance_s >= 0):
        raise SignatureError("tolerance must be a finite number of seconds >= 0")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise SignatureError("body must be bytes")
    timestamp, signatures = parse_signature_header(header)
    current = time.time() if now is None else now
    if not math.isfinite(current):
        raise SignatureError("the current time must be finite")
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp is {current - timestamp:+.0f} s from now (tolerance {tolerance_s:g} s)")
    expected = compute_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("no v1 signature matches this body and secret")
    return timestamp


def verify_signature(
    secret: str | bytes, header: str, body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> bool:
    """True when ``header`` is a valid, fresh signature of the raw ``body`` under ``secret``. Never raises:
    anything malformed (header, tolerance, types) is simply not a valid signature."""
    try:
        check_signature(secret, header, body, tolerance_s, now)
    except (SignatureError, ValueError, TypeError, OverflowError):
        return False
    return True


def main_verify_webhook(argv: Sequence[str] | None = None) -> int:
    """``callbridge verify-webhook``: check a signature header against a body file (or stdin).

    Exit 0 = valid, 1 = invalid (reason on stderr), 2 = usage error. The secret comes from
    ``--secret`` or ``CALLBRIDGE_ESCALATION_WEBHOOK_SECRET`` (prefer the variable: argv is visible in ps).
    """
    parser = argparse.ArgumentParser(prog="callbridge verify-webhook",
                                     description="Verify a Callbridge-Signature header for a webhook body.")
    parser.add_argument("--header", required=True, help='the header value, e.g. "t=1700000000,v1=ab12..."')
    parser.add_argument("--body", default="-", help="file with the raw request body ('-' = stdin, the default)")
    parser.add_argument("--secret", default=None, help="shared secret (default: $CALLBRIDGE_ESCALATION_WEBHOOK_SECRET)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_S, help="max clock skew in seconds")
    parser.add_argument("--now", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    secret = args.secret if args.secret is not None else os.environ.get("CALLBRIDGE_ESCALATION_WEBHOOK_SECRET", "")
    if not secret:
        print("verify-webhook: no secret (set CALLBRIDGE_ESCALATION_WEBHOOK_SECRET or pass --secret)", file=sys.stderr)
        return 2
    try:
        if args.body == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(args.body, "rb") as handle:
                body = handle.read()
    except OSError as error:
        print(f"verify-webhook: cannot read body: {error}", file=sys.stderr)
        return 2
    try:
        timestamp = check_signature(secret, args.header, body, args.tolerance, args.now)
    except (SignatureError, ValueError, TypeError, OverflowError) as error:
        print(f"signature INVALID: {error}", file=sys.stderr)
        return 1
    age = (time.time() if args.now is None else args.now) - timestamp
    print(f"signature valid (t={timestamp}, {age:.0f} s old, {len(body)} body bytes)")
    return 0


# --------------------------------------------------------------------------------------------------
# Retry policy (pure)
# --------------------------------------------------------------------------------------------------

Outcome = Literal["delivered", "retry", "dead_letter"]


RESPONSE_MAX_BYTES = 64 * 1024
"""At most this much of a receiver's response is read (a status and a short detail are all we keep)."""


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` raw bytes of ``response``'s body; the rest is never read (the connection is
    closed when the stream context exits). Memory: ``limit`` plus one network chunk."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


def classify_status(status: int) -> Outcome:
    """2xx delivered; 408, 429 and 5xx retried; anything else (other 4xx, 3xx: not followed) dead-lettered."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "dead_letter"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as a delay in seconds (delta-seconds or HTTP-date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))], never below base/2."""
    ceiling = min(cap_s, base_s * (2 ** min(max(attempt - 1, 0), 30)))
    return max(base_s / 2, ceiling * rand())


# --------------------------------------------------------------------------------------------------
# Delivery worker (asyncio adapter)
# --------------------------------------------------------------------------------------------------

_TOUCH_SCRIPT = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

_FINISH_SCRIPT = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] == 'dead_letter' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'escalation_id', ARGV[6], 'call_id', ARGV[7],
    'status', ARGV[8], 'response', ARGV[9], 'dead_at', ARGV[4], 'body', ARGV[10])
  if ARGV[11] ~= '0' then redis.call('XTRIM', KEYS[3], 'MINID', ARGV[11]) end
end
local current = redis.call('HGET', KEYS[2], 'escalation_status')
if current and current ~= 'returned' and current ~= 'none' then
  redis.call('HSET', KEYS[2], 'escalation_status', ARGV[3], 'escalation_' .. ARGV[3] .. '_at', ARGV[4])
end
return acked
"""
# The call hash's status is left alone when the call is no longer escalated: a failed warm transfer
# brought it back to the bot (``returned``, then ``none`` once the new stream starts; docs/transfer.md).


@dataclass(frozen=True)
class _Entry:
    entry_id: str
    escalation_id: str
    call_id: str
    decided_at: float | None
    body: bytes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> _Entry:
    data = {_text(k): v for k, v in fields.items()}
    decided = data.get("decided_at")
    try:
        decided_at = float(_text(decided)) if decided is not None else None
    except ValueError:
        decided_at = None
    body = data.get("body", b"")
    return _Entry(_text(entry_id), _text(data.get("escalation_id", "")), _text(data.get("call_id", "")),
                  decided_at, body if isinstance(body, bytes) else str(body).encode())


class DeliveryWorker:
    """One consumer of the outbox stream's ``delivery`` group (one per replica is enough)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        url: str,
        secret: str | bytes,
        consumer: str,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        retry_after_max_s: float = 600.0,
        concurrency: int = 8,
        max_records: int | None = None,
        claim_min_idle_s: float = 30.0,
        claim_every_s: float = 5.0,
        block_ms: int = 1000,
        dead_letter_maxlen: int = 10_000,
        dead_letter_max_age_s: int = 0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.redis = redis
        self.keys = keys
        self.url = url
        self._secret = _key(secret)
        if not self._secret:  # Settings refuses this too; a worker never signs with an empty key
            raise ValueError("refusing to deliver escalation webhooks with an empty secret")
        self.consumer = consumer
        self._client = client
        self._own_client = client is None
        self.timeout_s = timeout_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_after_max_s = retry_after_max_s
        self.concurrency = concurrency
        self.max_records = max_records or concurrency * 8
        self._requests = asyncio.Semaphore(concurrency)
        self.claim_min_idle_s = claim_min_idle_s
        self.claim_every_s = claim_every_s
        self.block_ms = block_ms
        self.dead_letter_maxlen = dead_letter_maxlen
        self.dead_letter_max_age_s = dead_letter_max_age_s  # 0 = no age bound
        self._rand = rand
        self._touch = redis.register_script(_TOUCH_SCRIPT)
        self._finish = redis.register_script(_FINISH_SCRIPT)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slot_free = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # no new reads/claims
        self._aborting = False  # in-flight deliveries must end now (grace expired)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: StateStore, *, consumer: str | None = None, **overrides: Any
    ) -> DeliveryWorker:
        """escalation_webhook_url/_secret/_timeout_s, escalation_max_backoff_s, escalation_claim_idle_s;
        consumer = replica id."""
        params: dict[str, Any] = {
            "url": settings.escalation_webhook_url,
            "secret": settings.escalation_webhook_secret.get_secret_value(),
            "consumer": consumer or settings.replica_id,
            "timeout_s": settings.escalation_webhook_timeout_s,
            "max_backoff_s": settings.escalation_max_backoff_s,
            "claim_min_idle_s": settings.escalation_claim_idle_s,
            "claim_every_s": min(5.0, settings.escalation_claim_idle_s / 2),
            "dead_letter_max_age_s": settings.dead_letter_max_age_s,
            **overrides,
        }
        return cls(store.redis, store.keys, **params)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        """Create the consumer group if needed and start consuming (returns at once)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
                timeout=self.timeout_s, follow_redirects=False,
            )
        if self._task is None:
            self._stopping = self._aborting = False
            self._task = asyncio.create_task(self._run(), name=f"escalation-delivery-{self.consumer}")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop reading; give in-flight deliveries ``grace_s`` to finish, then cancel them (they stay
        pending in Redis and are re-delivered by this consumer name or claimed by another)."""
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            await self._sweep()
        if self._inflight:
            _done, pending = await asyncio.wait(list(self._inflight.values()), timeout=grace_s)
            self._aborting = True
            await asyncio.gather(*(cancel_and_wait(task) for task in pending))
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ensure_group(self) -> None:
        """XGROUP CREATE ... 0 MKSTREAM (idempotent): entries added before the group exist are delivered."""
        try:
            await self.redis.xgroup_create(self.keys.outbox, OUTBOX_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    # ---------------------------------------------------------------------------------- main loop

    async def _run(self) -> None:
        backoff = self.base_backoff_s
        set_up = False
        next_claim = 0.0
        while not self._stopping:
            check_cancelled()
            try:
                if not set_up:
                    await self.ensure_group()
                    await self._read("0", block=False)  # our own pending entries (restart, same name)
                    set_up = True
                await self._wait_for_slot()
                if time.monotonic() >= next_claim:
                    await self._autoclaim()
                    await self._publish_pending()
                    next_claim = time.monotonic() + self.claim_every_s
                await self._wait_for_slot()
                await self._read(">", block=True)
                backoff = self.base_backoff_s
            except REDIS_ERRORS as error:
                log.warning("escalation.worker_redis_error", consumer=self.consumer, error=type(error).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _sweep(self) -> None:
        """At stop: start delivering what was enqueued just before it (a drain's own hand-offs), and
        entries a cancelled read had already moved to our pending list, so they get the grace period
        instead of waiting for another replica to claim them. Bounded: at most ``max_records`` more
        deliveries than the usual concurrency, for the grace period only."""
        try:
            for start in ("0", ">"):
                response: Any = await self.redis.xreadgroup(
                    OUTBOX_GROUP, self.consumer, {self.keys.outbox: start}, count=self.max_records)
                for _stream, messages in response or []:
                    for entry_id, fields in messages:
                        if fields:
                            self._spawn(_entry(entry_id, fields))
        except REDIS_ERRORS as error:
            log.warning("escalation.worker_redis_error", consumer=self.consumer, error=type(error).__name__)

    async def _wait_for_slot(self) -> None:
        while len(self._inflight) >= self.max_records:
            self._slot_free.clear()
            await self._slot_free.wait()

    async def _read(self, start: str, *, block: bool) -> None:
        free = self.max_records - len(self._inflight)
        if free <= 0:
            return
        response: Any = await self.redis.xreadgroup(
            OUTBOX_GROUP, self.consumer, {self.keys.outbox: start}, count=free,
            block=self.block_ms if block else None,
        )
        for _stream, messages in response or []:
            for entry_id, fields in messages:
                if fields and not self._stopping:  # read while stopping: left pending for another consumer  # deleted entries come back with no fields from the PEL read
                    self._spawn(_entry(entry_id, fields))

    async def _autoclaim(self) -> None:
        free = self.max_records - len(self._inflight)
        if free <= 0:
            return
        result = await self.redis.xautoclaim(
            self.keys.outbox, OUTBOX_GROUP, self.consumer, ceil_ms(self.claim_min_idle_s), "0-0", count=free,
        )
        for entry_id, fields in result[1] if len(result) > 1 else []:
            if fields and _text(entry_id) not in self._inflight:
                entry = _entry(entry_id, fields)
                log.info("escalation.claimed", consumer=self.consumer, escalation_id=entry.escalation_id,
                         entry_id=entry.entry_id)
                self._spawn(entry)

    async def _publish_pending(self) -> None:
        OUTBOX_PENDING.set(int(await self.redis.xlen(self.keys.outbox)) + local_pending())

    def _spawn(self, entry: _Entry) -> None:
        if entry.entry_id in self._inflight:
            return
        task = asyncio.create_task(self._deliver(entry), name=f"deliver-{entry.escalation_id}")
        self._inflight[entry.entry_id] = task
        entry_id = entry.entry_id
        task.add_done_callback(lambda _task: self._done(entry_id))

    def _done(self, entry_id: str) -> None:
        self._inflight.pop(entry_id, None)
        self._slot_free.set()

    # ---------------------------------------------------------------------------------- one record

    async def _redis_call(self, what: str, func: Callable[[], Any]) -> Any:
        """Run a Redis step, retrying through outages (capped backoff) until it succeeds."""
        delay = 0.05
        while True:
            if self._aborting:
                raise asyncio.CancelledError  # the worker is stopping; the entry stays pending in Redis
            check_cancelled()
            try:
                return await func()
            except REDIS_ERRORS as error:
                log.debug("escalation.worker_redis_retry", step=what, error=type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _still_mine(self, entry: _Entry) -> bool:
        result = await self._redis_call("touch", lambda: self._touch(
            keys=[self.keys.outbox], args=[OUTBOX_GROUP, self.consumer, entry.entry_id]))
        return bool(result)

    async def _deliver(self, entry: _Entry) -> None:
        attempt = 0
        while not self._aborting:
            check_cancelled()
            if not await self._still_mine(entry):
                log.info("escalation.delivery_abandoned", escalation_id=entry.escalation_id, consumer=self.consumer,
                         reason="entry acknowledged or claimed elsewhere")
                return
            attempt += 1
            outcome, status, detail, retry_after = await self._attempt(entry)
            if outcome == "delivered":
                await self._complete(entry, "delivered", status, "")
                if entry.decided_at is not None:
                    WEBHOOK_DELIVERY_SECONDS.observe(max(0.0, time.time() - entry.decided_at))
                WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
                log.info("escalation.delivered", escalation_id=entry.escalation_id, call_id=entry.call_id,
                         status=status, attempts=attempt, consumer=self.consumer)
                return
            if outcome == "dead_letter":
                await self._complete(entry, "dead_letter", status, detail)
                WEBHOOK_DELIVERIES.labels(outcome="dead_letter").inc()
                log.error("escalation.dead_lettered", escalation_id=entry.escalation_id, call_id=entry.call_id,
                          status=status, response=detail, attempts=attempt)
                return
            delay = (min(retry_after, self.retry_after_max_s) if retry_after is not None
                     else backoff_delay(attempt, self.base_backoff_s, self.max_backoff_s, self._rand))
            WEBHOOK_DELIVERIES.labels(outcome="retry").inc()
            log.warning("escalation.delivery_retry", escalation_id=entry.escalation_id, status=status,
                        error=detail, attempt=attempt, delay_s=round(delay, 3))
            await self._sleep_owned(entry, delay)

    async def _sleep_owned(self, entry: _Entry, delay: float) -> None:
        """Sleep ``delay`` s, re-claiming the entry often enough that XAUTOCLAIM never sees it idle."""
        step = max(0.05, self.claim_min_idle_s / 3)
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            check_cancelled()
            await asyncio.sleep(min(step, remaining))
            if remaining > step and not await self._still_mine(entry):
                return  # the next loop turn notices and abandons

    async def _attempt(self, entry: _Entry) -> tuple[Outcome, int | None, str, float | None]:
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, entry.body),
            IDEMPOTENCY_HEADER: entry.escalation_id,
            "User-Agent": "callbridge-escalation/1",
            "Accept-Encoding": "identity",  # raw bytes are read below: no decompression bomb
        }
        try:
            async with self._requests, self._client.stream(
                "POST", self.url, content=entry.body, headers=headers, timeout=self.timeout_s
            ) as response:
                head = await _read_capped(response, RESPONSE_MAX_BYTES)
        except httpx.TimeoutException:
            return "retry", None, "timeout", None
        except httpx.TransportError as error:
            return "retry", None, type(error).__name__, None
        except httpx.HTTPError as error:  # e.g. an invalid URL: keep the record, retry with backoff
            return "retry", None, f"{type(error).__name__}: {error}"[:200], None
        outcome = classify_status(response.status_code)
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if outcome == "retry" else None
        detail = "" if outcome == "delivered" else head.decode("utf-8", "replace")[:300]
        return outcome, response.status_code, detail, retry_after

    async def _complete(self, entry: _Entry, outcome: str, status: int | None, detail: str) -> None:
        clock = time.time()
        now = f"{clock:.3f}"
        # Entries older than the age bound go when a new one is added (ids are ms timestamps).
        min_id = f"{int((clock - self.dead_letter_max_age_s) * 1000)}-0" if self.dead_letter_max_age_s else "0"
        await self._redis_call("finish", lambda: self._finish(
            keys=[self.keys.outbox, self.keys.call(entry.call_id), self.keys.dead_letter],
            args=[OUTBOX_GROUP, entry.entry_id, outcome, now, self.dead_letter_maxlen, entry.escalation_id,
                  entry.call_id, "" if status is None else str(status), detail, entry.body, min_id],
        ))
