"""The gateway bounds what an unauthenticated peer can make it hold (docs/security.md,
"Unauthenticated connections"), on a real gateway on 127.0.0.1: idle and slow-header connections
are closed after ``CALLBRIDGE_HANDSHAKE_TIMEOUT_S``, at most ``CALLBRIDGE_MAX_CONNECTIONS`` are open
(HTTP 503 beyond), and a media stream gets at most a few small messages before its ``start``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.app import create_app, uvicorn_config
from service.config import load_settings
from tests.conftest import free_port
from tests.integration.conftest import AUTH_TOKEN, run_gateway, wait_started

TIMEOUT = 5.0


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset), within TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
    return True


async def test_idle_connection_is_closed_after_the_handshake_timeout() -> None:
    async with run_gateway(handshake_timeout_s=0.5) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(reader)  # main: never closed (TimeoutError)
        writer.close()


async def test_slow_header_connection_is_closed_while_it_drips() -> None:
    async with run_gateway(handshake_timeout_s=0.5) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = asyncio.create_task(_closed_by_server(reader))
        for n in range(100):  # 10 s of drip at most; the server must cut it well before
            if closed.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Drip-%d: y\r\n" % n)
            await asyncio.wait({closed}, timeout=0.1)  # the drip's pace, and the close if it comes
        assert closed.done() and closed.result()
        writer.close()


async def test_a_complete_request_is_served_with_the_header_timeout_on() -> None:
    async with run_gateway(handshake_timeout_s=0.5) as gw, httpx.AsyncClient() as client:
        for _ in range(3):  # keep-alive: the timer re-arms per request and never cuts a served one
            response = await client.get(gw.base_url + "/healthz")
            assert response.status_code == 200


async def test_connections_beyond_the_limit_are_refused_with_503() -> None:
    async with run_gateway(max_connections=3, stream_start_timeout_s=30) as gw:
        url = gw.base_url.replace("http", "ws") + "/twilio/media"
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(connect(url, open_timeout=TIMEOUT))
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, open_timeout=TIMEOUT):
                    pass
            assert refused.value.response.status_code == 503
            async with httpx.AsyncClient() as client:
                assert (await client.get(gw.base_url + "/healthz")).status_code == 503
        async with httpx.AsyncClient() as client:  # the slots come back once those close
            for _ in range(50):
                if (await client.get(gw.base_url + "/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)  # bounded poll: the server sees the closes asynchronously
            else:
                pytest.fail("connection slots never came back")


def _connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


@pytest.mark.parametrize(
    "messages",
    [
        [_connected(), _connected()],  # connected repeated
        ["{}"] * 5,  # more than 4 messages (malformed ones) before start
        [json.dumps({"event": "connected", "pad": "x" * 8192})],  # one message over 4 KiB
    ],
    ids=["connected-repeated", "five-messages", "large-message"],
)
async def test_pre_start_budget_closes_the_stream_with_1008(messages: list[str]) -> None:
    async with run_gateway(stream_start_timeout_s=30) as gw:
        url = gw.base_url.replace("http", "ws") + "/twilio/media"
        async with connect(url, open_timeout=TIMEOUT) as ws:
            for message in messages:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(TIMEOUT):  # main: open until the 30 s start timeout
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@contextlib.asynccontextmanager
async def asgi_media_gateway() -> AsyncIterator[str]:
    """The gateway with ``/twilio/media`` served by its ASGI route (uvicorn's ``websockets-sansio``),
    as under any ASGI server other than ``callbridge serve``; yields the ws:// media URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(public_url=base, twilio_auth_token=AUTH_TOKEN, greeting=False, stream_start_timeout_s=30)
    app = create_app(settings, start_services=False)
    app.state.websocket_routes = None  # leave the upgrade to uvicorn and the ASGI route
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, ws="websockets-sansio"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_started(server, task)
        yield base.replace("http", "ws") + "/twilio/media"
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


async def test_asgi_media_route_applies_the_same_pre_start_budget() -> None:
    async with asgi_media_gateway() as url, connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(_connected())
        await ws.send(_connected())
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(TIMEOUT):
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
