"""Provider frames into the bridge in arrival order, with the inbound audio hot path inside the
socket's receive callback (and mark echoes, which only update the playback ledger).

Why: a call's caller leg is 50 frames a second. Waking a reader task for each one costs more than
the audio work (load_tests/load_calls.py). With a push socket (``service.wsio.ServerWebSocket``),
``ProviderPump.on_message`` runs straight from ``data_received``: a media frame with nothing
queued ahead of it is decoded, resampled and written to the Realtime socket right there
(``CallBridge.forward_media_now``), when the model leg can take it without waiting.

Guarantees:

* Order: frames are handled in arrival order. Anything that needs awaiting (DTMF, stop,
  malformed frames, and media while the session is not configured or the model socket is
  back-pressured, the echo that ends the hand-off line) is queued and handled by ``run`` one at a
  time; while anything is queued or being handled, later frames queue behind it.
* Bounded: at ``limit`` queued frames (default 64, ~1.3 s of audio; ~300 bytes each, ~20 KB per
  call) the socket stops reading, so the provider is pushed back through TCP; reading resumes at a
  quarter of it. Frames of a socket read already in memory when reading pauses are still queued,
  so the hard bound is ``limit`` plus one socket read (uvloop reads at most 256 KiB).
* A failure in the hot path is raised from ``run`` (the session logs it and ends the call cleanly).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from service.providers.base import MarkEchoed, MediaReceived, ProtocolError, TelephonyEvent

if TYPE_CHECKING:
    from service.call.bridge import CallBridge

__all__ = ["ProviderPump", "PushSocket"]


@runtime_checkable
class PushSocket(Protocol):
    """A socket that can hand messages to a synchronous consumer (``ServerWebSocket``)."""

    def set_message_handler(self, on_message: Callable[[bytes | memoryview], None], on_end: Callable[[], None]) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class ProviderPump:
    """One call's provider frames -> ``CallBridge`` (see the module docstring)."""

    def __init__(self, bridge: CallBridge, socket: PushSocket, limit: int = 64) -> None:
        self._bridge = bridge
        self._socket = socket
        self._queue: deque[tuple[TelephonyEvent | ProtocolError, float]] = deque()
        self._limit = limit
        self._resume_at = max(1, limit // 4)
        self._paused = False
        self._ended = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def on_message(self, message: bytes | memoryview) -> None:
        """Called by the socket for every message, in order, without awaiting anything."""
        if self._ended:
            return
        received = time.perf_counter()
        try:
            bridge = self._bridge
            event = bridge.provider.parse(message)
            queue = self._queue
            if not queue:
                if isinstance(event, MediaReceived):
                    if bridge.provider.forward_media_now(event.payload, received):
                        return
                elif isinstance(event, MarkEchoed) and bridge.provider.mark_echoed_now(event.name):
                    return
            queue.append((event, received))
            if len(queue) >= self._limit and not self._paused:
                self._paused = True
                self._socket.pause_reading()
        except Exception as error:  # raised from run(): the session ends the call cleanly
            self._failure = error
            self._ended = True
        self._wake()

    def on_end(self) -> None:
        """Nothing more will arrive."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        """Handle queued frames in order; returns once the stream has ended and all are handled."""
        self._socket.set_message_handler(self.on_message, self.on_end)
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is not None:
                raise self._failure
            if not queue:
                if self._ended:
                    return
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                continue
            event, received = queue[0]  # stays queued while handled, so later media waits behind it
            try:
                await self._bridge.provider.on_event(event, received)
            finally:
                queue.popleft()
            if self._paused and len(queue) <= self._resume_at:
                self._paused = False
                self._socket.resume_reading()
