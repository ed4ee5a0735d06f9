"""Lean asyncio WebSocket adapters for the media hot path, over ``websockets``' sans-I/O protocol.

Why: a 20 ms audio frame crosses two WebSockets in the gateway (provider -> gateway -> Realtime).
Through uvicorn's ASGI WebSocket (a queue of ASGI event dicts per message) and the ``websockets``
asyncio client (an async context manager and lock per send), the framework layers cost more than
the audio work itself (docs/performance.md, "WebSocket layer"). Every byte is parsed and framed
by ``websockets.protocol.Protocol`` (RFC 6455: framing, masking, UTF-8/close-code checks,
handshake validation; the same code the library's own servers use); this module only moves bytes
between it and an ``asyncio.Transport``, in ``data_received``, with no task switch per frame.

What of ``websockets`` it relies on (version-ranged in pyproject.toml, covered by
tests/unit/test_wsio_framing.py ``test_websockets_sansio_surface``): the sans-I/O API of
``websockets.protocol.Protocol`` (``receive_data``, ``receive_eof``, ``events_received``,
``data_to_send``, ``send_text``, ``send_binary``, ``send_ping``, ``send_close``, ``fail``, ``close_expected``,
``state``, ``close_rcvd``, ``handshake_exc``), ``ServerProtocol.accept/reject/send_response``,
``ClientProtocol.connect/send_request``, ``websockets.frames.Frame/Opcode`` and
``websockets.uri.parse_uri``. No private attribute is touched.

Guarantees of every ``SansIOWebSocket``:

* ``recv`` returns messages in arrival order: text as ``bytes`` (UTF-8; ``json.loads`` takes bytes, and
  nothing is decoded on the hot path), binary as a ``memoryview`` of the payload, so a dialect with
  binary media (Vonage) tells the two apart and every JSON dialect refuses binary frames; fragmented
  messages are reassembled (total size bounded by ``max_size``).
  Once the peer's close frame or the end of the TCP connection has been seen and the inbox is
  empty, ``recv`` raises ``WebSocketClosed(code, reason)`` (1006 when there was no close frame),
  also on every later call.
* Inbox bounded: reading from the socket pauses while ``inbox_limit`` messages wait (resumes at a
  quarter of it), so a stalled consumer pushes back on the peer through TCP. Messages of a read
  already in memory are still delivered, so the hard bound is the limit plus one socket read. Memory: at most
  ``inbox_limit`` messages (64 x ~0.4 KB for provider media frames; 16 x up to ``max_size`` for
  Realtime deltas) plus the transport's read buffer.
* Outbound bounded, control frames included (server side, where the peer is not yet
  authenticated): reading also pauses while the transport's write buffer is above its high-water
  mark (asyncio/uvloop default 64 KiB) and resumes below the low-water mark. The library answers
  every ping with a pong (and a close with a close) as it parses, so a peer that sends pings and
  never reads can add at most one socket read of pongs above the high-water mark
  (docs/security.md, "Unauthenticated connections"). The client side (the Realtime socket) does
  not do this: a model server that, like ours, stops reading while its own writes are blocked
  would deadlock with it; its peer is authenticated and its messages are size-bounded.
* ``send`` is ordered (messages leave in call order, also across tasks) and waits only while the
  write buffer is above its high-water mark: bounded. It raises ``WebSocketClosed`` once the
  connection is closing or closed.
* ``close`` is idempotent and cancel-safe: it sends the close frame, waits at most ``close_timeout``
  for the closing handshake and the TCP close (RFC 6455 section 7.1.1), then aborts.
* Keepalive (optional): a ping every ``ping_interval`` s; no pong within ``ping_timeout`` s fails the
  connection with 1011 (as ``websockets`` and uvicorn do).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from typing import Protocol as TypingProtocol

import structlog
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

__all__ = [
    "ClientWebSocket",
    "Handler",
    "InvalidHandshake",
    "InvalidStatus",
    "Message",
    "MessageSocket",
    "SansIOWebSocket",
    "ServerWebSocket",
    "UpgradeRequest",
    "WebSocketClosed",
    "connect_websocket",
    "upgrade_request",
    "uvicorn_websocket_protocol",
]

log = structlog.get_logger(__name__)

_OPEN: Final = State.OPEN
_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY
_CONT: Final = Opcode.CONT
_PONG: Final = Opcode.PONG
_CLOSE: Final = Opcode.CLOSE
# Why reading is paused (a bit set; the socket is read only when none is set).
_PAUSE_INBOX: Final = 1  # ``inbox_limit`` messages wait for ``recv``
_PAUSE_CONSUMER: Final = 2  # the push-mode consumer asked (``pause_reading``)
_PAUSE_WRITES: Final = 4  # the write buffer is above its high-water mark


class WebSocketClosed(Exception):
    """The connection is closed (or closing): ``code``/``reason`` of the peer's close frame, or 1006."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


Message = bytes | str | memoryview
"""One received WebSocket message: text as ``str`` or UTF-8 ``bytes``, binary as ``memoryview``."""


class MessageSocket(TypingProtocol):
    """What a media-stream handler needs from its WebSocket (``ServerWebSocket`` or an ASGI adapter)."""

    async def recv(self) -> Message:
        """The next message (text as ``str`` or UTF-8 ``bytes``, binary as ``memoryview``); raises
        ``WebSocketClosed`` once the connection has ended."""
        ...

    async def send(self, data: str | bytes) -> None:
        """One message: ``str`` as a text frame, ``bytes`` as a binary frame (Vonage's audio)."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """The HTTP upgrade request of a server connection, for handlers that authenticate on it (HTTP Basic
    on Exotel's socket) or read its query (Exotel's ``?sample-rate=``). Header names are lower-case.
    Bounded by the HTTP parser's limits on the request head (``websockets``: 8 KiB a line, 128 headers)."""

    path: str = ""
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


NO_UPGRADE = UpgradeRequest()


def upgrade_request(socket: object) -> UpgradeRequest:
    """The socket's ``upgrade`` request (``ServerWebSocket``, the ASGI adapter), else an empty one."""
    upgrade = getattr(socket, "upgrade", None)
    return upgrade if isinstance(upgrade, UpgradeRequest) else NO_UPGRADE


class SansIOWebSocket(asyncio.Protocol):
    """One WebSocket connection: ``websockets`` sans-I/O protocol <-> asyncio transport.

    Not thread-safe; used from its event loop only. See the module docstring for the guarantees.
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        inbox_limit: int = 64,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        close_timeout: float = 2.0,
        bound_writes_by_reads: bool = False,
    ) -> None:
        self._ws = protocol
        self._bound_writes = bound_writes_by_reads
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._inbox: deque[bytes | memoryview] = deque()
        self._inbox_limit = inbox_limit
        self._inbox_resume = max(1, inbox_limit // 4)
        self._recv_waiter: asyncio.Future[None] | None = None
        self._paused = 0  # _PAUSE_* bits
        self._fragments: list[bytes] = []
        self._fragmented_binary = False
        self._write_paused = False
        self._write_resumed: asyncio.Future[None] | None = None
        self._slow_senders = 0
        self._send_lock = asyncio.Lock()
        self._lost = self._loop.create_future()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._on_message: Callable[[bytes | memoryview], None] | None = None
        self._on_end: Callable[[], None] | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        """Every byte through the ``websockets`` parser: handshake, data and control frames."""
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                opcode = event.opcode
                data = cast(bytes, event.data)  # the parser always yields bytes
                if opcode is _TEXT:
                    if event.fin:
                        self._deliver(data)
                    else:
                        self._fragments, self._fragmented_binary = [data], False
                elif opcode is _BINARY:
                    if event.fin:
                        self._deliver(memoryview(data))
                    else:
                        self._fragments, self._fragmented_binary = [data], True
                elif opcode is _CONT:
                    self._fragments.append(data)
                    if event.fin:
                        whole = b"".join(self._fragments)
                        self._deliver(memoryview(whole) if self._fragmented_binary else whole)
                        self._fragments = []
                elif opcode is _PONG:
                    self._on_pong(data)
                elif opcode is _CLOSE:
                    self._wake_receiver()
            else:
                self._on_handshake(event)
        self._flush()
        if ws.state is not _OPEN:
            self._after_close_step()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        self._wake_receiver()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_keepalive()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._ws.state is not State.CLOSED:
            self._ws.receive_eof()  # the protocol moves to CLOSED (code 1006 without a close frame)
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake_receiver()
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._bound_writes:
            self._set_paused(_PAUSE_WRITES, True)  # bounds pongs and close frames too (module docstring)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._set_paused(_PAUSE_WRITES, False)
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_result(None)

    # --- public API --------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self._ws.state is _OPEN

    @property
    def closed(self) -> bool:
        return self._lost.done()

    @property
    def close_code(self) -> int | None:
        """The peer's close code once the connection has ended (1006 without a close frame), else None."""
        if not self._lost.done() and self._ws.state is not State.CLOSED:
            return None
        return self.closed_error().code

    def closed_error(self) -> WebSocketClosed:
        received = self._ws.close_rcvd
        if received is not None:
            return WebSocketClosed(received.code, received.reason)
        return WebSocketClosed(1006, "")

    async def recv(self) -> bytes | memoryview:
        """The next message (ordered; text as ``bytes``, binary as ``memoryview``). Raises ``WebSocketClosed`` once nothing more can arrive."""
        inbox = self._inbox
        while not inbox:
            if self._ws.close_rcvd is not None or self._lost.done() or self._ws.state is State.CLOSED:
                raise self.closed_error()
            waiter = self._loop.create_future()
            self._recv_waiter = waiter
            try:
                await waiter
            finally:
                self._recv_waiter = None
        message = inbox.popleft()
        if self._paused & _PAUSE_INBOX and len(inbox) <= self._inbox_resume:
            self._set_paused(_PAUSE_INBOX, False)
        return message

    def set_message_handler(self, on_message: Callable[[bytes | memoryview], None],
                            on_end: Callable[[], None]) -> None:
        """Push mode, for consumers that can handle a message synchronously: every message (those
        already in the inbox first, in order) goes to ``on_message`` straight from ``data_received``
        (no task switch); ``on_end`` runs once when nothing more can arrive. ``recv`` is not used
        afterwards. The consumer applies backpressure with ``pause_reading``/``resume_reading``.
        An exception from ``on_message`` is logged and fails the connection with 1011."""
        self._on_message = on_message
        self._on_end = on_end
        # Before the hand-over (the transport delivers nothing until the loop runs again): a consumer
        # that pauses while it takes the inbox stays paused.
        self._set_paused(_PAUSE_INBOX | _PAUSE_CONSUMER, False)
        while self._inbox and self._on_message is not None:
            self._deliver(self._inbox.popleft())
        self._flush()
        if self._ws.state is not _OPEN:  # a consumer failure failed the connection: bound the close
            self._after_close_step()
        self._wake_receiver()

    def pause_reading(self) -> None:
        """Stop reading the socket (TCP backpressure to the peer) until ``resume_reading``."""
        self._set_paused(_PAUSE_CONSUMER, True)

    def resume_reading(self) -> None:
        """Undo ``pause_reading``; the socket is read again unless another bound still holds it."""
        self._set_paused(_PAUSE_CONSUMER, False)

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel (what a peer that does not read costs us)."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def reading_paused(self) -> bool:
        """True while the socket is not read (inbox full, consumer paused or write buffer full)."""
        return bool(self._paused)

    def _set_paused(self, reason: int, on: bool) -> None:
        before = self._paused
        after = before | reason if on else before & ~reason
        self._paused = after
        transport = self._transport
        if bool(before) is bool(after) or transport is None or self._lost.done():
            return
        if after:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def can_send_now(self) -> bool:
        """True if ``send`` would write at once: open, write buffer below its high-water mark, and
        no sender waiting ahead (so ``send_nowait`` now keeps the order)."""
        return (
            not self._write_paused
            and not self._slow_senders
            and self._ws.state is _OPEN
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def send_nowait(self, data: str | bytes) -> None:
        """Write one message now, regardless of the write buffer (callers that own ordering).

        Framed (and masked, on the client side) by ``Protocol.send_text`` (``str``) or
        ``Protocol.send_binary`` (``bytes``): one unfragmented frame; the bytes are written before this
        returns."""
        transport = self._transport
        if self._ws.state is not _OPEN or transport is None or transport.is_closing():
            raise self.closed_error()
        ws = self._ws
        if isinstance(data, str):
            ws.send_text(data.encode())
        else:
            ws.send_binary(data)
        for chunk in ws.data_to_send():
            transport.write(chunk)

    async def send(self, data: str | bytes) -> None:
        """Send one message (``str``: text, ``bytes``: binary); waits while the write buffer is full.
        Ordered across callers."""
        if not self._write_paused and not self._slow_senders:
            self.send_nowait(data)
            return
        self._slow_senders += 1
        try:
            async with self._send_lock:  # FIFO: later callers queue behind earlier ones
                while self._write_paused and not self._lost.done():
                    if self._write_resumed is None or self._write_resumed.done():
                        self._write_resumed = self._loop.create_future()
                    await asyncio.shield(self._write_resumed)
                self.send_nowait(data)
        finally:
            self._slow_senders -= 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closing handshake (RFC 6455 section 7.1.2), bounded by ``close_timeout``; then abort."""
        transport = self._transport
        if transport is None or self._lost.done():
            return
        try:
            if self._ws.state is _OPEN:
                self._ws.send_close(code, reason)
                self._flush()
                self._after_close_step()
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            transport.abort()
        except BaseException:
            transport.abort()
            raise

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- internals ---------------------------------------------------------------------------------
    def _on_handshake(self, event: Request | Response) -> None:
        raise NotImplementedError

    def _deliver(self, data: bytes | memoryview) -> None:
        on_message = self._on_message
        if on_message is not None:
            try:
                on_message(data)
            except Exception:  # a consumer bug fails this connection, never the server
                log.exception("websocket.consumer_failed")
                self._on_message = None
                self._ws.fail(1011, "internal error")
            return
        inbox = self._inbox
        inbox.append(data)
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= self._inbox_limit and not self._paused & _PAUSE_INBOX:
            self._set_paused(_PAUSE_INBOX, True)

    def _wake_receiver(self) -> None:
        """Nothing more may arrive (close frame, EOF, connection lost) or a message did."""
        on_end = self._on_end
        if on_end is not None and (self._ws.close_rcvd is not None or self._lost.done()
                                   or self._ws.state is State.CLOSED):
            self._on_end = None
            on_end()
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._ws.data_to_send()
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():  # SEND_EOF: half-close (RFC 6455 section 7.1.1)
                transport.write_eof()
            else:  # TLS cannot half-close
                transport.close()

    def _after_close_step(self) -> None:
        """After a close frame was sent or received: bound the wait for the TCP close."""
        self._stop_keepalive()
        if self._ws.state is State.CLOSED and self._transport is not None:
            self._transport.close()
            return
        if self._ws.close_expected() and self._close_timer is None and self._transport is not None:
            self._close_timer = self._loop.call_later(self._close_timeout, self._transport.abort)

    # keepalive ---------------------------------------------------------------------------------------
    def _start_keepalive(self) -> None:
        if self._ping_interval:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._send_ping)

    def _stop_keepalive(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self._ws.state is not _OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._ws.send_ping(self._ping_payload)
        self._flush()
        if self._ping_timeout:
            self._pong_timer = self._loop.call_later(self._ping_timeout, self._keepalive_failed)
        else:
            self._start_keepalive()

    def _on_pong(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return  # unsolicited or stale
        self._ping_payload = None
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._start_keepalive()

    def _keepalive_failed(self) -> None:
        self._pong_timer = None
        if self._ws.state is not _OPEN:
            return
        log.warning("websocket.keepalive_timeout", timeout_s=self._ping_timeout)
        self._ws.fail(1011, "keepalive ping timeout")
        self._flush()
        if self._transport is not None:
            self._transport.close()


# --- server side -----------------------------------------------------------------------------------

#: A WebSocket route handler: runs for the life of one connection; returning ends it.
Handler = Callable[["ServerWebSocket"], Awaitable[None]]


class ServerWebSocket(SansIOWebSocket):
    """A server connection handed over by uvicorn after the HTTP upgrade request.

    The handshake is validated by ``websockets.server.ServerProtocol.accept`` (RFC 6455 section 4.2);
    a path without a route gets 404, a bad upgrade 400/426, and the connection is closed.
    Unauthenticated peers are bounded (docs/security.md, "Unauthenticated connections"): a request
    head not complete within ``handshake_timeout`` s closes the connection, and an upgrade that
    would make more than ``max_connections`` connections (``connections``, HTTP ones included
    under uvicorn) is refused with HTTP 503. ``path`` and ``client`` describe the request for logs;
    ``upgrade`` is the whole upgrade request (query and headers) for handlers that authenticate on it.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        connections: set[Any] | None = None,
        tasks: set[asyncio.Task[None]] | None = None,
        max_size: int | None = 1 << 20,
        inbox_limit: int = 64,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        handshake_timeout: float | None = 10.0,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(
            ServerProtocol(max_size=max_size),
            bound_writes_by_reads=True,
            inbox_limit=inbox_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._routes = routes
        self._connections = connections if connections is not None else set()
        self._tasks = tasks if tasks is not None else set()
        self.path = ""
        self.client = ""
        self.upgrade = NO_UPGRADE
        self._handshake_timeout = handshake_timeout
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = f"{peer[0]}:{peer[1]}"
        if self._handshake_timeout is not None:
            self._handshake_timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._ws.state is State.CONNECTING and self._transport is not None:
            log.warning("websocket.handshake_timeout", client=self.client, timeout_s=self._handshake_timeout)
            self._transport.abort()

    def _on_handshake(self, event: Request | Response) -> None:
        assert isinstance(self._ws, ServerProtocol) and isinstance(event, Request)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.path, _, query = event.path.partition("?")
        self.upgrade = UpgradeRequest(self.path, query, tuple((k.lower(), v) for k, v in event.headers.raw_items()))
        handler = self._routes.get(self.path)
        if handler is None:
            response = self._ws.reject(404, "Not Found\n")
        elif self._max_connections is not None and len(self._connections) > self._max_connections:
            handler = None
            response = self._ws.reject(503, "Too many connections\n")
        else:
            response = self._ws.accept(event)
        self._ws.send_response(response)
        if response.status_code != 101 or handler is None:
            log.info("websocket.rejected", path=self.path[:100], status=response.status_code,
                     connections=len(self._connections))
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        self._start_keepalive()
        task = self._loop.create_task(self._run(handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler) -> None:
        try:
            await handler(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # a handler bug ends its connection, never the server
            log.exception("websocket.handler_failed", path=self.path)
            await self.close(1011, "internal error")
        else:
            await self.close(1000, "")

    def shutdown(self) -> None:
        """Called by uvicorn on exit (after callbridge's drain): close with 1012 (service restart)."""
        if self._ws.state is _OPEN:
            self._ws.send_close(1012, "service restart")
            self._flush()
            self._after_close_step()
        elif self._transport is not None and self._ws.state is State.CONNECTING:
            self._transport.close()


def uvicorn_websocket_protocol(
    routes: Mapping[str, Handler], *, max_connections: int | None = None
) -> type[asyncio.Protocol]:
    """A class for ``uvicorn.Config(ws=...)`` that serves ``routes`` with ``ServerWebSocket``.

    uvicorn builds it with ``(config, server_state, app_state)`` after an HTTP upgrade request and
    feeds it the transport and the request bytes. Connections and handler tasks are registered in
    uvicorn's server state, so its shutdown closes them and waits for them, and
    ``max_connections`` counts uvicorn's HTTP connections too. The request head was already read
    by uvicorn's HTTP protocol (its header timeout is ``service.http_guard``).
    """

    class UvicornServerWebSocket(ServerWebSocket):
        def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
            super().__init__(
                routes,
                connections=server_state.connections,
                tasks=server_state.tasks,
                max_size=config.ws_max_size,
                ping_interval=config.ws_ping_interval,
                ping_timeout=config.ws_ping_timeout,
                handshake_timeout=None,
                max_connections=max_connections,
            )

    return UvicornServerWebSocket


# --- client side -----------------------------------------------------------------------------------


class ClientWebSocket(SansIOWebSocket):
    """A client connection; see ``connect_websocket``."""

    def __init__(self, protocol: ClientProtocol, headers: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self._headers = headers
        self.handshake: asyncio.Future[Response] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(self._ws, ClientProtocol)
        request = self._ws.connect()
        for name, value in self._headers:
            if name in request.headers:  # Headers is a multi-dict: replace, do not add a second one
                del request.headers[name]
            request.headers[name] = value
        self._ws.send_request(request)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("connection closed during the WebSocket handshake"))

    def _on_handshake(self, event: Request | Response) -> None:
        assert isinstance(event, Response)
        if self.handshake.done():
            return
        error = self._ws.handshake_exc
        if error is not None:
            self.handshake.set_exception(error)
        else:
            self.handshake.set_result(event)
            self._start_keepalive()


async def connect_websocket(
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    open_timeout: float = 10.0,
    max_size: int | None = None,
    inbox_limit: int = 16,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientWebSocket:
    """Open a client WebSocket to ``url`` (ws:// or wss://) with extra request ``headers``.

    Bounded by ``open_timeout`` (TCP + TLS + HTTP upgrade; raises ``TimeoutError``). A rejected
    handshake raises ``websockets.exceptions.InvalidStatus`` (``.response.status_code``), another
    handshake failure ``InvalidHandshake``, network failures ``OSError``. No permessage-deflate.
    """
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    context = None
    if uri.secure:
        context = ssl_context or ssl.create_default_context()

    def factory() -> ClientWebSocket:
        return ClientWebSocket(
            ClientProtocol(uri, max_size=max_size),
            headers,
            inbox_limit=inbox_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )

    connection: ClientWebSocket | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _, connection = await loop.create_connection(
                factory, uri.host, uri.port, ssl=context, server_hostname=uri.host if context else None
            )
            await connection.handshake
    except BaseException:
        if connection is not None:
            connection.abort()
        raise
    return connection
