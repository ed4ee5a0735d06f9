"""uvicorn's HTTP protocol with the bounds it lacks for unauthenticated peers.

uvicorn closes an idle keep-alive connection after a response (``timeout_keep_alive``) but never a
connection that opened and sent nothing, nor one that drips its request head a byte at a time, and
its ``limit_concurrency`` 503 does not apply to WebSocket upgrades. ``guarded_http_protocol``
returns a subclass of its httptools protocol (uvicorn's default with ``uvicorn[standard]``) that:

* closes the connection when a request head is not complete ``header_timeout`` s after the
  connection opened or the request began (slow-header and idle connections);
* answers HTTP 503 and closes at once when accepting the connection would make more than
  ``max_connections`` open connections (HTTP and WebSocket alike: uvicorn's ``server_state``);
* aborts a connection whose peer has stopped reading: when the transport's write buffer stays above
  its high-water mark for ``WRITE_STALL_TIMEOUT_S`` (a console event-stream client that never reads),
  the socket is dropped at once instead of ``close()`` waiting forever to flush it, so a stalled peer
  holds at most one write buffer (~64 KiB) and only for that long.

What of uvicorn it relies on (version-ranged in pyproject.toml, covered by
tests/integration/test_connection_limits.py): ``HttpToolsProtocol`` with ``connection_made``, ``connections``,
``transport``, ``loop``, ``pause_writing``/``resume_writing`` and the parser callbacks
``on_message_begin``/``on_headers_complete``.
See docs/security.md, "Unauthenticated connections".
"""

from __future__ import annotations

import asyncio

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded_http_protocol"]

log = structlog.get_logger(__name__)

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nToo many connections\n"
)


WRITE_STALL_TIMEOUT_S = 30.0
"""How long a peer may leave our writes unread (write buffer above its high-water mark) before the
connection is aborted (read when writing pauses)."""


def guarded_http_protocol(header_timeout: float, max_connections: int | None) -> type[asyncio.Protocol]:
    """A class for ``uvicorn.Config(http=...)``; see the module docstring for what it guarantees."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _stall_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if max_connections is not None and len(self.connections) > max_connections:
                log.warning("http.connection_refused", reason="max_connections", limit=max_connections)
                self.connections.discard(self)
                transport.write(_REFUSED)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._unstall()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall_timer is None:
                self._stall_timer = self.loop.call_later(WRITE_STALL_TIMEOUT_S, self._stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._unstall()

        def _unstall(self) -> None:
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

        def _stalled(self) -> None:
            self._stall_timer = None
            log.warning("http.write_stalled", timeout_s=WRITE_STALL_TIMEOUT_S)
            self.transport.abort()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                log.warning("http.header_timeout", timeout_s=header_timeout)
                self.transport.close()

    return GuardedHttpToolsProtocol


