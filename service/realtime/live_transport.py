"""The asyncio side of a GPT-Live session: a ``RealtimeTransport`` wrapper around the WebSocket
transport that does what the Live service needs and the call core knows nothing of
(docs/models/live.md, "Connecting" and "Long calls"):

- nothing may follow ``session.start`` before ``session.started`` arrives: later frames wait in a
  bounded queue (``HOLD_FRAMES`` frames: 2 s of caller audio, at most ~260 KB of PCM16 24 kHz
  base64) and go out in order right after it; if the queue is full, the oldest frame is dropped;
- a session that ends with ``session.closed`` for ``expired`` or ``connection_lost`` (or a socket
  that drops) is reported as a retryable close (1001), so the call session replaces it and re-seeds
  the conversation; ``close_requested``/``content`` end the call (1000);
- a session is recycled ``recycle_margin_s`` before its ``expires_at`` (the replacement is opened
  while the caller stays on the line).

``recv`` peeks only at small frames (``session.started``/``session.closed`` are a few KB); audio
deltas pass through untouched. Ordered, cancel-safe like the wrapped transport.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import orjson
import structlog

from service.realtime.events import ImmediateSend, RealtimeClosed, RealtimeTransport

log = structlog.get_logger(__name__)

HOLD_FRAMES = 100
_PEEK_LIMIT = 65536
_REPLACE_REASONS = frozenset({"expired", "connection_lost"})


class LiveTransport(RealtimeTransport):
    """See the module docstring. ``clock`` is wall-clock seconds (``expires_at`` is Unix time)."""

    def __init__(self, inner: RealtimeTransport, *, recycle_margin_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._inner = inner
        self._immediate = inner if isinstance(inner, ImmediateSend) else None
        self._held: deque[str] = deque(maxlen=HOLD_FRAMES)
        self._started = False
        self._start_sent = False
        self._closed_reason = ""
        self._expires_at: float | None = None
        self._margin = recycle_margin_s
        self._clock = clock
        self.dropped_while_starting = 0

    @property
    def started(self) -> bool:
        return self._started

    async def send(self, text: str) -> None:
        if not self._start_sent:  # the first frame is session.start
            self._start_sent = True
            await self._inner.send(text)
            return
        if not self._started:
            if len(self._held) == self._held.maxlen:
                self.dropped_while_starting += 1
            self._held.append(text)
            return
        await self._inner.send(text)

    def can_send_now(self) -> bool:
        return self._started and self._immediate is not None and self._immediate.can_send_now()

    def send_now(self, text: str) -> None:
        assert self._immediate is not None and self._started
        self._immediate.send_now(text)

    async def recv(self) -> str:
        if self._expires_at is not None and self._clock() >= self._expires_at - self._margin:
            self._expires_at = None
            log.info("live.session_recycled", margin_s=self._margin)
            await self._inner.close()
            raise RealtimeClosed(1001, "recycled before the session limit")
        try:
            message = await self._inner.recv()
        except RealtimeClosed as closed:
            if self._closed_reason and self._closed_reason not in _REPLACE_REASONS:
                raise RealtimeClosed(1000, f"session closed: {self._closed_reason}") from None
            if closed.code == 1000:  # a clean close without a final reason still loses the session
                raise RealtimeClosed(1001, self._closed_reason or closed.reason or "session ended") from None
            raise
        if len(message) < _PEEK_LIMIT and ('"session.started"' in message or '"session.closed"' in message):
            await self._peek(message)
        return message

    async def _peek(self, message: str) -> None:
        try:
            event = orjson.loads(message)
        except ValueError:
            return  # the dialect reports it
        if not isinstance(event, dict):
            return
        if event.get("type") == "session.started" and not self._started:
            self._started = True
            session = event.get("session")
            expires = session.get("expires_at") if isinstance(session, dict) else None
            if isinstance(expires, int | float) and not isinstance(expires, bool):
                self._expires_at = float(expires)
            while self._held:
                await self._inner.send(self._held.popleft())
        elif event.get("type") == "session.closed":
            reason = event.get("reason")
            self._closed_reason = reason if isinstance(reason, str) and reason else "unknown"

    async def close(self) -> None:
        await self._inner.close()
