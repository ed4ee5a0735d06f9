"""The model side is bounded (docs/security.md, "Model side"), over real sockets on 127.0.0.1:
the Realtime client refuses a message over ``CALLBRIDGE_MODEL_MAX_MESSAGE_BYTES`` (directly and
through an HTTP CONNECT proxy, the ``WebSocketTransport`` path), and ``callbridge local-realtime``
takes an optional key and the same size limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from service.cli import build_parser
from service.config import Settings
from service.realtime.client import LeanTransport, WebSocketTransport, connect_realtime
from service.realtime.events import RealtimeClosed
from service.realtime.local.models import load_models_async
from service.realtime.local.server import running_local_realtime

TIMEOUT = 10.0
LIMIT = 1 << 20


class ConnectProxy:
    """A minimal HTTP CONNECT proxy (RFC 9110 section 9.3.6) that records the targets it tunnelled to."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        assert method == b"CONNECT"
        self.targets.append(target.decode())
        host, port = target.decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@contextlib.asynccontextmanager
async def oversized_model(size: int) -> AsyncIterator[tuple[str, list[int | None]]]:
    """A server that sends ``session.created`` then one text message of ``size`` bytes."""
    close_codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "response.output_audio.delta", "delta": "A" * size}))
            await ws.wait_closed()
        close_codes.append(ws.close_code)

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime", close_codes


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "http-proxy"])
async def test_realtime_client_refuses_a_message_over_the_limit(via_proxy: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "ws_proxy", "WS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    proxy = ConnectProxy()
    async with oversized_model(8 * LIMIT) as (url, close_codes), proxy as proxy_url:
        if via_proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy_url)
        settings = Settings(realtime_provider="openai", realtime_api_key="sk-test", realtime_url=url,
                            model_max_message_bytes=LIMIT)
        transport = await connect_realtime(settings)
        assert isinstance(transport, WebSocketTransport if via_proxy else LeanTransport)
        assert json.loads(await asyncio.wait_for(transport.recv(), TIMEOUT))["type"] == "session.created"
        with pytest.raises(RealtimeClosed):  # main: the 8 MiB message is delivered
            await asyncio.wait_for(transport.recv(), TIMEOUT)
        await transport.close()
        async with asyncio.timeout(TIMEOUT):
            while not close_codes:
                await asyncio.sleep(0.01)  # bounded poll: the server handler records its close
        assert close_codes == [1009]
    assert proxy.targets == ([url.split("/")[2]] if via_proxy else [])


def test_local_realtime_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["local-realtime"])
    assert args.host == "127.0.0.1"


@pytest.fixture
async def local_url() -> AsyncIterator[str]:
    await load_models_async(None)
    settings = Settings(local_realtime_key="local-key-123", model_max_message_bytes=64 * 1024)
    async with running_local_realtime(settings=settings) as url:
        yield url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"api-key": "nope"}],
                         ids=["none", "wrong-bearer", "wrong-api-key"])
async def test_local_realtime_refuses_an_upgrade_without_its_key(local_url: str, headers: dict[str, str]) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(local_url, additional_headers=headers, open_timeout=TIMEOUT):
            pass
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer local-key-123"}, {"api-key": "local-key-123"}],
                         ids=["bearer", "api-key"])
async def test_local_realtime_accepts_its_key_and_bounds_message_size(local_url: str,
                                                                      headers: dict[str, str]) -> None:
    async with websockets.connect(local_url, additional_headers=headers, open_timeout=TIMEOUT, max_size=None) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert created["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (128 * 1024)}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
