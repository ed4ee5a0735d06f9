"""The local engine as a standalone Realtime (GA) WebSocket server at ``/v1/realtime``.

Any OpenAI-Realtime GA client can use it: ``wss?://host:port/v1/realtime?model=...`` with any (or no)
``Authorization: Bearer`` key; other paths get HTTP 404. One WebSocket = one ``LocalSession``. Text
frames only, as the cloud (realtime-api.md section 1); a binary frame is answered with an ``error``
event. No frame size limit and no compression, like the SDK. English only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from service.realtime.events import RealtimeClosed

from .models import LocalModels, load_models_async
from .transport import LocalTransport, open_local_session

log = structlog.get_logger(__name__)

PATH = "/v1/realtime"


def _check_path(connection: ServerConnection, request: Request) -> Response | None:
    if urlsplit(request.path).path.rstrip("/") != PATH:
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


def _handler(settings: Any, models: LocalModels) -> Any:
    async def handle(ws: ServerConnection) -> None:
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

    return handle


async def start_local_realtime(host: str, port: int, settings: Any = None) -> Server:
    """Load the models (in a worker thread) and start listening; returns the running server
    (``server.sockets[0].getsockname()[1]`` is the port when ``port`` is 0)."""
    models = await load_models_async(getattr(settings, "local_script", None))
    return await serve(_handler(settings, models), host, port, process_request=_check_path,
                       max_size=None, compression=None)


async def serve_local_realtime(host: str, port: int, settings: Any = None) -> None:
    """Serve the local engine until cancelled (``callbridge local-realtime --port P``)."""
    server = await start_local_realtime(host, port, settings)
    log.info("local.server.listening", host=host, port=server.sockets[0].getsockname()[1] if server.sockets else port,
             path=PATH)
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


__all__ = ["PATH", "LocalTransport", "running_local_realtime", "serve_local_realtime", "start_local_realtime"]
