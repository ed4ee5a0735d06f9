"""The local engine as a standalone Realtime (GA) WebSocket server at ``/v1/realtime``, and as a
GPT-Live server at ``/v1/live/sessions`` (the same engine behind ``live_front.LiveFront``).

Any OpenAI-Realtime GA client can use it: ``ws://host:port/v1/realtime?model=...``; GPT-Live clients
use ``ws://host:port/v1/live/sessions``; other paths get HTTP 404. One WebSocket = one ``LocalSession``. Text frames only, as the cloud
(docs/models/realtime.md, "Events"); a binary frame is answered with an ``error`` event. English only.

Bounded for a peer it does not trust (docs/security.md, "Model side"): ``callbridge local-realtime``
binds 127.0.0.1 unless told otherwise; when ``CALLBRIDGE_LOCAL_REALTIME_KEY`` is set, the upgrade
must carry it (``Authorization: Bearer <key>`` or ``api-key: <key>``, compared in constant time),
else HTTP 401; a message over ``CALLBRIDGE_MODEL_MAX_MESSAGE_BYTES`` closes the connection with
1009 before it is buffered. No compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from service.realtime.events import RealtimeClosed

from .live_front import LiveFront
from .models import LocalModels, load_models_async
from .transport import LocalTransport, open_local_session

log = structlog.get_logger(__name__)

PATH = "/v1/realtime"
LIVE_PATH = "/v1/live/sessions"


DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _presented_key(request: Request) -> str:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("api-key", "")


def _request_check(key: str) -> Any:
    """``process_request`` for ``serve``: 404 off ``PATH``, 401 without the key (when one is set)."""
    expected = key.encode()

    def check(connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.rstrip("/") not in (PATH, LIVE_PATH):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if expected and not hmac.compare_digest(_presented_key(request).encode(), expected):
            log.warning("local.server.unauthorized", client=str(connection.remote_address)[:64])
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    return check


def _settings_key(settings: Any) -> str:
    secret = getattr(settings, "local_realtime_key", None)
    return secret.get_secret_value() if secret is not None else ""


def _handler(settings: Any, models: LocalModels) -> Any:
    async def handle(ws: ServerConnection) -> None:
        if ws.request is not None and urlsplit(ws.request.path).path.rstrip("/") == LIVE_PATH:
            await _handle_live(ws)
            return
        transport = await open_local_session(settings, models=models)
        log.info("local.server.session_opened", session=transport.session.id)

        async def downstream() -> None:
            while True:
                try:
                    text = await transport.recv()
                except RealtimeClosed:
                    return
                await ws.send(text)

        pump = asyncio.create_task(downstream())
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await transport.send("<binary frame>")  # becomes an invalid_json error event
                else:
                    await transport.send(message)
        except ConnectionClosed:
            pass
        finally:
            await transport.close()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pump
            log.info("local.server.session_closed", session=transport.session.id)

    async def _handle_live(ws: ServerConnection) -> None:
        """One GPT-Live session: client frames through the front to the engine; engine events back
        through it; output deltas paced by the client's own audio (``LiveFront``)."""
        transport = await open_local_session(settings, models=models)
        front = LiveFront()
        log.info("local.server.session_opened", session=transport.session.id)

        async def downstream() -> None:
            while True:
                try:
                    text = await transport.recv()
                except RealtimeClosed:
                    return
                for each in front.from_engine(text):
                    await ws.send(each)

        pump = asyncio.create_task(downstream())
        try:
            async for message in ws:
                to_engine, to_client = front.from_client(message if isinstance(message, str) else "<binary frame>")
                for each in to_engine:
                    await transport.send(each)
                for each in to_client:
                    await ws.send(each)
                if front.closed:
                    await ws.close(1000)
                    break
        except ConnectionClosed:
            pass
        finally:
            await transport.close()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pump
            log.info("local.server.session_closed", session=transport.session.id)

    return handle


async def start_local_realtime(host: str, port: int, settings: Any = None) -> Server:
    """Load the models (in a worker thread) and start listening; returns the running server
    (``server.sockets[0].getsockname()[1]`` is the port when ``port`` is 0)."""
    models = await load_models_async(getattr(settings, "local_script", None))
    max_size = int(getattr(settings, "model_max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES))
    return await serve(_handler(settings, models), host, port, process_request=_request_check(_settings_key(settings)),
                       max_size=max_size, compression=None)


async def serve_local_realtime(host: str, port: int, settings: Any = None) -> None:
    """Serve the local engine until cancelled (``callbridge local-realtime --port P``)."""
    server = await start_local_realtime(host, port, settings)
    log.info("local.server.listening", host=host, port=server.sockets[0].getsockname()[1] if server.sockets else port,
             path=PATH, key_required=bool(_settings_key(settings)))
    try:
        await server.serve_forever()
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running_local_realtime(host: str = "127.0.0.1", port: int = 0,
                                 settings: Any = None) -> AsyncIterator[str]:
    """Test helper: a running server; yields its ``ws://host:port/v1/realtime`` URL."""
    server = await start_local_realtime(host, port, settings)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    try:
        yield f"ws://{host}:{bound}{PATH}"
    finally:
        server.close()
        await server.wait_closed()


__all__ = ["LIVE_PATH", "PATH", "LocalTransport", "running_local_realtime", "serve_local_realtime", "start_local_realtime"]
