"""The asyncio WebSocket adapter for Realtime sessions (OpenAI or Azure OpenAI).

``connect_realtime(settings)`` opens the socket with the URL and headers from
``protocol.connection_params`` (docs/models/realtime.md, "Connecting"), without permessage-deflate,
and returns a ``RealtimeTransport`` that carries the JSON text frames. Unlike the SDK, a message
larger than ``CALLBRIDGE_MODEL_MAX_MESSAGE_BYTES`` (default 16 MiB; the largest real events, audio
deltas, are ~100 KB) fails the connection with 1009 as soon as its frame header announces it, so a
misbehaving or hostile server cannot make us buffer it (docs/security.md, "Model side").
The API key only ever travels in the handshake headers: it is never logged and never part of an
exception message (logged URLs have their query string removed as well).

Two adapters, one contract (``RealtimeTransport``): ``LeanTransport`` over ``service.wsio`` (the
``websockets`` sans-I/O protocol driven straight from the socket callbacks: the hot path, measured
in load_tests/load_calls.py) for direct connections, and ``WebSocketTransport`` over the
``websockets`` asyncio client when the environment configures an HTTP/SOCKS proxy for the Realtime
host (``HTTPS_PROXY``/``ALL_PROXY``, ``NO_PROXY`` honoured), since only the library speaks proxies.

Memory: at most 16 received messages (each at most the size limit) wait (then reading pauses:
backpressure to the server), and
``send`` waits while the write buffer is above its high-water mark (64 KiB lean, 32 KiB library),
so the bridge's send path is bounded too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from service.config import Settings
from service.realtime.events import RealtimeClosed, RealtimeTransport
from service.realtime.protocol import connection_params
from service.wsio import ClientWebSocket, WebSocketClosed, connect_websocket

__all__ = ["LeanTransport", "RealtimeConnectError", "WebSocketTransport", "connect_realtime", "redact_url"]

log = structlog.get_logger(__name__)

# Handshake statuses worth retrying with backoff (docs/models/realtime.md, "Errors"); any other HTTP status is
# final (401/403 bad key, 404 wrong path/deployment/api-version, 400 not a realtime deployment).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CLOSE_TIMEOUT_S = 2.0


def redact_url(url: str) -> str:
    """``scheme://host/path`` without query or userinfo (a query may hold ``api-key=...``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class RealtimeConnectError(Exception):
    """The Realtime WebSocket could not be opened.

    ``status`` is the HTTP status when the server rejected the handshake (e.g. 401), else None
    (DNS, TCP, TLS, timeout). ``retryable`` says whether a backoff-and-retry can help.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES


class LeanTransport(RealtimeTransport):
    """A connected Realtime session over ``service.wsio`` (see ``WebSocketTransport`` for the contract)."""

    def __init__(self, ws: ClientWebSocket) -> None:
        self._ws = ws

    @property
    def close_code(self) -> int | None:
        """The close code once the connection has closed (1006 for an abrupt end), else None."""
        return self._ws.close_code

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except WebSocketClosed as closed:
            raise RealtimeClosed(closed.code, closed.reason) from None

    def can_send_now(self) -> bool:
        return self._ws.can_send_now()

    def send_now(self, text: str) -> None:
        """``ImmediateSend``: the inbound audio hot path."""
        try:
            self._ws.send_nowait(text)
        except WebSocketClosed as closed:
            raise RealtimeClosed(closed.code, closed.reason) from None

    async def recv(self) -> str:
        try:
            message = await self._ws.recv()
        except WebSocketClosed as closed:
            raise RealtimeClosed(closed.code, closed.reason) from None
        return bytes(message).decode("utf-8", errors="replace")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


class WebSocketTransport(RealtimeTransport):
    """A connected Realtime session over the ``websockets`` asyncio client (used through proxies).

    ``send`` is ordered (frames leave in call order) and waits for write-buffer space;
    ``recv`` returns the next text frame (binary frames, which the API never sends, are decoded as
    UTF-8) and raises ``RealtimeClosed(code, reason)`` once the connection has ended, also for any
    later call. ``close`` is idempotent and cancel-safe (a cancelled close aborts the TCP connection).
    """

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._closing = False

    @property
    def close_code(self) -> int | None:
        """The close code once the connection has closed (1006 for an abrupt end), else None."""
        return self._ws.close_code

    def _closed_error(self, error: ConnectionClosed | None = None) -> RealtimeClosed:
        frame = error.rcvd if error is not None else self._ws.protocol.close_rcvd
        if frame is not None:
            return RealtimeClosed(frame.code, frame.reason)
        code = self._ws.close_code
        return RealtimeClosed(code if code is not None else 1006, self._ws.close_reason or "")

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as error:
            raise self._closed_error(error) from None

    async def recv(self) -> str:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as error:
            raise self._closed_error(error) from None
        if isinstance(message, bytes):
            return bytes(message).decode("utf-8", errors="replace")
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        try:
            await self._ws.close(code, reason)
        except BaseException:
            self._ws.transport.abort()
            raise


async def connect_realtime(settings: Settings) -> RealtimeTransport:
    """Open the Realtime WebSocket for ``settings`` (provider ``openai`` or ``azure``).

    Bounded by ``settings.realtime_connect_timeout_s`` (TCP + TLS + HTTP upgrade). Raises
    ``RealtimeConnectError`` (with ``status`` for a rejected handshake) on failure and ValueError
    for configurations that have no socket (provider ``local``) or no key.
    """
    url, headers = connection_params(settings)
    where = redact_url(url)
    timeout = settings.realtime_connect_timeout_s
    max_size = settings.model_max_message_bytes
    transport: RealtimeTransport
    try:
        proxy = get_proxy(parse_uri(url))
        if proxy is None:
            lean = await connect_websocket(
                url, list(headers.items()), open_timeout=timeout, max_size=max_size, close_timeout=CLOSE_TIMEOUT_S
            )
            transport = LeanTransport(lean)
        else:
            ws = await connect(
                url,
                additional_headers=headers,
                max_size=max_size,
                compression=None,
                open_timeout=timeout,
                close_timeout=CLOSE_TIMEOUT_S,
            )
            transport = WebSocketTransport(ws)
    except InvalidStatus as error:
        status = error.response.status_code
        log.warning("realtime.connect_rejected", url=where, status=status)
        raise RealtimeConnectError(f"realtime handshake to {where} rejected with HTTP {status}", status=status) from None
    except InvalidURI:
        raise RealtimeConnectError(f"invalid realtime URL {where}") from None
    except TimeoutError:
        log.warning("realtime.connect_timeout", url=where, timeout_s=timeout)
        raise RealtimeConnectError(f"realtime connect to {where} timed out after {timeout} s") from None
    except (OSError, InvalidHandshake) as error:
        log.warning("realtime.connect_failed", url=where, error=type(error).__name__)
        raise RealtimeConnectError(f"realtime connect to {where} failed: {type(error).__name__}: {error}") from None
    log.info(
        "realtime.connected", url=where, provider=settings.provider, dialect=settings.realtime_dialect,
        via_proxy=proxy is not None,
    )
    return transport
