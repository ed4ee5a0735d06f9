"""Pre-warmed model sessions: first words sooner (docs/first-words.md, "Pre-warming").

When the voice webhook arrives, the provider route calls ``PrewarmPool.warm(call_id)``: in the
background, a model session is opened and configured (``session.created`` -> ``session.update`` ->
``session.updated``) while the carrier is still setting up the media stream. When the stream's
``start`` arrives, ``claim(call_id)`` hands the ready session to the call, which skips connecting
and configuring and asks for the greeting at once.

Guarantees:
- Bounded: at most ``CALLBRIDGE_PREWARM`` entries per replica (opening or ready); more webhooks
  are not pre-warmed (``callbridge_prewarm_total{outcome="full"}``), the call connects as before.
- Never leaks: every entry ends in exactly one of claimed, expired (nobody claimed it within
  ``CALLBRIDGE_PREWARM_TTL_S`` of the webhook: its socket is closed and its model-session lease
  released), failed (connect or configure failed: closed, released) or closed with the pool.
- Respects the fleet-wide model-session cap: the entry takes a lease (``warm_lease_id``) before
  opening (``cap`` when the fleet is full). A claimed session hands that lease to the call, which
  releases it when it ends.
- A stream that lands on another replica finds nothing in that replica's pool and connects as
  usual; the unclaimed entry here expires by its TTL (until then the call counts twice against
  the cap).
- ``claim`` of an entry still opening waits for it (it is further along than a fresh connect),
  at most ``wait_s``; if it fails, the caller connects as usual.

``PrewarmBook`` is the pure bookkeeping (entries, states, deadlines; raising on invalid events);
``PrewarmPool`` is the asyncio adapter doing the I/O. Memory: one entry (a socket, a dialect and a
small record) per waiting call, at most ``CALLBRIDGE_PREWARM``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from service import metrics
from service.call.machine import Machine
from service.realtime import sessions as model_sessions
from service.realtime.events import (
    RealtimeDialect,
    RealtimeError,
    RealtimeProtocolError,
    RealtimeTransport,
    SessionConfig,
    SessionCreated,
    SessionUpdated,
)
from service.redaction import cap_text
from service.state.model_leases import model_leases_for

log = structlog.get_logger(__name__)

#: Server events read while configuring before giving up (``session.created``, ``conversation.created``,
#: ``session.updated`` and a few unrelated ones): a server cannot keep an entry busy forever.
MAX_SETUP_EVENTS = 16


def warm_lease_id(call_id: str) -> str:
    """The model-session lease a pre-warmed session holds: not the call's own id, so closing an
    expired entry can never release the lease of a stream that connected for the same call; a
    claimed session keeps this lease for the whole call (``WarmSession.lease_id``)."""
    return f"{call_id}#warm"


class WarmState(enum.Enum):
    OPENING = "opening"
    READY = "ready"
    CLAIMED = "claimed"
    EXPIRED = "expired"
    FAILED = "failed"
    CLOSED = "closed"


WARM_EVENTS = ("opened", "claim", "expire", "fail", "close")
_ENDED = (WarmState.CLAIMED, WarmState.EXPIRED, WarmState.FAILED, WarmState.CLOSED)
WARM_TRANSITIONS: dict[tuple[WarmState, str], WarmState] = {
    (WarmState.OPENING, "opened"): WarmState.READY,
    (WarmState.OPENING, "fail"): WarmState.FAILED,
    (WarmState.OPENING, "expire"): WarmState.EXPIRED,
    (WarmState.OPENING, "close"): WarmState.CLOSED,
    (WarmState.READY, "claim"): WarmState.CLAIMED,
    (WarmState.READY, "expire"): WarmState.EXPIRED,
    (WarmState.READY, "fail"): WarmState.FAILED,
    (WarmState.READY, "close"): WarmState.CLOSED,
}


@dataclass(slots=True)
class WarmEntry:
    call_id: str
    deadline: float
    machine: Machine[WarmState] = field(default_factory=lambda: Machine("prewarm", WarmState.OPENING, WARM_TRANSITIONS))

    @property
    def state(self) -> WarmState:
        return self.machine.state


class PrewarmBook:
    """The pool's bookkeeping, pure: ``reserve`` a bounded slot per call, move entries through their
    states, and say which are past their deadline. Ended entries are removed at once."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size, self.ttl_s = size, ttl_s
        self.entries: dict[str, WarmEntry] = {}

    def reserve(self, call_id: str, now: float) -> WarmEntry | str:
        """A new entry, or why not: ``off``, ``duplicate`` (a webhook retry) or ``full``."""
        if self.size <= 0:
            return "off"
        if call_id in self.entries:
            return "duplicate"
        if len(self.entries) >= self.size:
            return "full"
        entry = WarmEntry(call_id, now + self.ttl_s)
        self.entries[call_id] = entry
        return entry

    def fire(self, call_id: str, event: str) -> WarmEntry:
        """Apply ``event`` to the call's entry (``KeyError`` if there is none; ``InvalidTransition``
        if the state refuses it); an entry that ended leaves the book."""
        entry = self.entries[call_id]
        entry.machine.fire(event)
        if entry.state in _ENDED:
            del self.entries[call_id]
        return entry

    def overdue(self, now: float) -> list[str]:
        return [call_id for call_id, entry in self.entries.items() if entry.deadline <= now]


@dataclass(frozen=True, slots=True)
class WarmSession:
    """A claimed, configured session: the open transport, the dialect instance that configured it
    (its event ids continue), and the configuration that was sent."""

    transport: RealtimeTransport
    dialect: RealtimeDialect
    config: SessionConfig
    opened_s: float  # how long opening and configuring took
    lease_id: str  # the model-session lease it holds; the call releases it when it ends


class ModelSlots(Protocol):
    async def acquire(self, call_id: str) -> bool: ...

    async def release(self, call_id: str) -> None: ...


class PrewarmFailed(Exception):
    """Setting up a pre-warmed session failed (the message says how; never contains the key)."""


class PrewarmPool:
    """One replica's pre-warmed sessions (see the module docstring).

    ``open_session()`` returns a connected transport; ``model()`` a fresh (dialect, configuration)
    for a call; ``slots`` is the fleet-wide cap (None: no cap); ``timeout_s`` bounds opening plus
    configuring."""

    def __init__(self, *, size: int, ttl_s: float, timeout_s: float,
                 open_session: Callable[[], Awaitable[RealtimeTransport]],
                 model: Callable[[], tuple[RealtimeDialect, SessionConfig]],
                 slots: ModelSlots | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.book = PrewarmBook(size, ttl_s)
        self._timeout_s = timeout_s
        self._open_session, self._model, self._slots, self._clock = open_session, model, slots, clock
        self._tasks: dict[str, asyncio.Task[WarmSession | None]] = {}
        self._ready: dict[str, WarmSession] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.book.entries)

    def warm(self, call_id: str) -> str:
        """Start pre-warming ``call_id`` in the background (never waits). Returns ``started``, or why
        not (``off``, ``duplicate``, ``full``)."""
        reserved = self.book.reserve(call_id, self._clock())
        if isinstance(reserved, str):
            if reserved == "full":
                metrics.PREWARM.labels("full").inc()
                log.info("prewarm.skipped", call_id=call_id, reason="full", size=self.book.size)
            return reserved
        loop = asyncio.get_running_loop()
        self._tasks[call_id] = loop.create_task(self._warm(call_id), name=f"prewarm-{call_id[-8:]}")
        self._timers[call_id] = loop.call_later(self.book.ttl_s, self._expire, call_id)
        return "started"

    async def claim(self, call_id: str, wait_s: float) -> WarmSession | None:
        """The call's ready session (it is the caller's from now on), or None: none was warmed here,
        it failed or expired, or it is not ready within ``wait_s``."""
        if call_id not in self.book.entries:
            metrics.PREWARM.labels("missed").inc()
            return None
        task = self._tasks.get(call_id)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=wait_s)  # never raises for the task; the claimer may be cancelled
        entry = self.book.entries.get(call_id)
        session = self._ready.pop(call_id, None)
        if entry is None or session is None or entry.state is not WarmState.READY:
            if entry is not None and session is None:
                self._end(call_id, "close", "closed", "not ready when claimed")  # give up on it
            return None
        self.book.fire(call_id, "claim")
        self._forget(call_id)
        metrics.PREWARM.labels("claimed").inc()
        log.info("prewarm.claimed", call_id=call_id, opened_ms=round(session.opened_s * 1000))
        return session

    async def close(self) -> None:
        """Close every entry (shutdown): no socket and no lease outlives the pool."""
        for call_id in list(self.book.entries):
            self._end(call_id, "close", "closed", "shutdown")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- internals ---------------------------------------------------------------------------------

    async def _warm(self, call_id: str) -> WarmSession | None:
        started = self._clock()
        transport: RealtimeTransport | None = None
        try:
            if self._slots is not None and not await self._slots.acquire(warm_lease_id(call_id)):
                raise PrewarmFailed("cap")
            dialect, config = self._model()
            transport = await asyncio.wait_for(self._setup(dialect, config), self._timeout_s)
        except asyncio.CancelledError:
            raise  # expired or closed while opening: _end cleans up
        except Exception as error:
            reason = "cap" if isinstance(error, PrewarmFailed) and str(error) == "cap" else "failed"
            log.warning("prewarm.failed", call_id=call_id, reason=reason, error=cap_text(repr(error), 200))
            if call_id in self.book.entries:
                self._end(call_id, "fail", reason)
            return None
        session = WarmSession(transport, dialect, config, self._clock() - started, warm_lease_id(call_id))
        if call_id not in self.book.entries:  # ended while the last await ran
            self._spawn_close(transport, call_id)
            return None
        self._ready[call_id] = session
        self.book.fire(call_id, "opened")
        log.info("prewarm.ready", call_id=call_id, opened_ms=round(session.opened_s * 1000))
        return session

    async def _setup(self, dialect: RealtimeDialect, config: SessionConfig) -> RealtimeTransport:
        transport = await self._open_session()
        try:
            if dialect.client_speaks_first:
                await transport.send(dialect.session_update(config))
            created = dialect.client_speaks_first
            for _ in range(MAX_SETUP_EVENTS):
                try:
                    event = dialect.parse(await transport.recv())
                except RealtimeProtocolError as error:
                    raise PrewarmFailed(f"malformed event: {error}") from None
                if isinstance(event, RealtimeError):
                    raise PrewarmFailed(f"model error: {event.code or event.type}")
                if isinstance(event, SessionCreated) and not created:
                    created = True
                    await transport.send(dialect.session_update(config))
                elif isinstance(event, SessionUpdated) and created:
                    return transport
            raise PrewarmFailed("no session.updated")
        except BaseException:
            with contextlib.suppress(Exception):
                await transport.close()
            raise

    def _expire(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        if call_id in self.book.entries:
            self._end(call_id, "expire", "expired", f"not claimed within {self.book.ttl_s:g} s")

    def _end(self, call_id: str, event: str, outcome: str, reason: str = "") -> None:
        """End an unclaimed entry (``outcome``: expired, failed, cap, closed): stop its opening, then
        close its socket and release its lease in the background."""
        self.book.fire(call_id, event)
        task = self._tasks.get(call_id)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # (a failing opening ends its own entry: it is finishing, not cancelled)
        session = self._ready.pop(call_id, None)
        self._forget(call_id)
        metrics.PREWARM.labels(outcome).inc()
        if event != "fail":  # a failure was logged with its error already
            log.info("prewarm.closed", call_id=call_id, reason=reason or outcome)
        self._spawn_close(session.transport if session else None, call_id, task)

    def _forget(self, call_id: str) -> None:
        self._tasks.pop(call_id, None)
        timer = self._timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()

    def _spawn_close(self, transport: RealtimeTransport | None, call_id: str,
                     task: asyncio.Task[WarmSession | None] | None = None) -> None:
        closer = asyncio.get_running_loop().create_task(self._close_one(transport, call_id, task))
        self._closing.add(closer)
        closer.add_done_callback(self._closing.discard)

    async def _close_one(self, transport: RealtimeTransport | None, call_id: str,
                         task: asyncio.Task[WarmSession | None] | None) -> None:
        if task is not None:
            with contextlib.suppress(BaseException):
                await task  # its own cleanup closes a socket it had opened
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), 2.0)
        if self._slots is not None:
            await self._slots.release(warm_lease_id(call_id))


def prewarm_pool_for(gateway: Any) -> PrewarmPool:
    """The gateway's pool, created on first use from its settings (``CALLBRIDGE_PREWARM``,
    ``CALLBRIDGE_PREWARM_TTL_S``), sharing the gateway's model-session leases when a cap is set."""
    pool = getattr(gateway, "prewarm_pool", None)
    if pool is None:
        settings = gateway.settings

        def model() -> tuple[RealtimeDialect, SessionConfig]:
            side = model_sessions.model_side(settings)  # the same dialect and configuration a call builds
            return side.dialect, side.config

        pool = PrewarmPool(
            size=settings.prewarm, ttl_s=settings.prewarm_ttl_s, timeout_s=settings.realtime_connect_timeout_s,
            open_session=lambda: model_sessions.open_realtime(settings), model=model,
            slots=model_leases_for(gateway) if settings.max_model_sessions else None,
        )
        gateway.prewarm_pool = pool
    return pool


def prewarm_call(gateway: Any, call_id: str) -> None:
    """Called by a provider's voice webhook once it has answered with the stream markup: start
    pre-warming when it is on. Never waits and never raises (a failure only costs the head start)."""
    if gateway.settings.prewarm <= 0 or gateway.draining:
        return
    try:
        prewarm_pool_for(gateway).warm(call_id)
    except Exception as error:  # a bug here must not fail the webhook
        log.error("prewarm.failed", call_id=call_id, reason="internal", error=cap_text(repr(error), 200))
