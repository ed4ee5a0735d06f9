"""``service.wsio`` over real sockets on 127.0.0.1, against the ``websockets`` library as the peer.

Server side: ``ServerWebSocket`` behind a real uvicorn server (``uvicorn_websocket_protocol``), driven
by the library's asyncio client (echo, fragments, large and many messages, 404/400/426, handler
outcomes, close codes both ways, keepalive answered and timed out, shutdown, push mode).
Client side: ``connect_websocket`` against the library's asyncio server (headers, rejected and
timed-out handshakes, close codes, abrupt drops, keepalive, ordered sends under write backpressure,
inbox backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any

import pytest
import uvicorn
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from service.wsio import (
    ClientWebSocket,
    Handler,
    ServerWebSocket,
    WebSocketClosed,
    connect_websocket,
    upgrade_request,
    uvicorn_websocket_protocol,
)
from tests.conftest import free_port
from tests.integration.conftest import wait_started
from tests.poll import wait_until

TIMEOUT = 5.0



# ---------------------------------------------------------------------------------------------------
# A real uvicorn server whose WebSocket upgrades go to ServerWebSocket


async def http_404(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app for plain HTTP (never reached by WebSocket upgrades)."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not found"})


class UvicornWs:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self.server = server
        self.task = task
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        async with asyncio.timeout(10):
            await self.task


@contextlib.asynccontextmanager
async def uvicorn_ws(routes: Mapping[str, Handler], **overrides: Any) -> AsyncIterator[UvicornWs]:
    port = free_port()
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
        "ws_max_size": 1 << 20,
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
        "timeout_graceful_shutdown": 3,  # a handler stuck after a failed assertion is cancelled
        "ws": uvicorn_websocket_protocol(routes),
    }
    options.update(overrides)
    server = uvicorn.Server(uvicorn.Config(http_404, **options))
    task = asyncio.create_task(server.serve())
    running = UvicornWs(server, task, port)
    try:
        await wait_started(server, task)
        yield running
    finally:
        if not task.done():
            await running.stop()


async def echo_hex(ws: ServerWebSocket, seen: list[Any] | None = None) -> None:
    """Echo every message back as the hex of the bytes ``recv`` returned (text and binary alike)."""
    while True:
        try:
            message = await ws.recv()
        except WebSocketClosed:
            return
        if seen is not None:
            seen.append(message)
        await ws.send(message.hex())


async def raw_request(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            return await reader.read()
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------------
# Server side: ServerWebSocket under uvicorn, library client


async def test_server_echoes_text_and_binary_and_recv_tells_them_apart() -> None:
    seen: list[Any] = []

    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws, seen)

    async with uvicorn_ws({"/echo": echo}) as srv, connect(srv.url + "/echo?x=1") as client:
        await client.send("héllo")
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == "héllo".encode()
        await client.send(b"\x00\x01\xfe\xff")
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == b"\x00\x01\xfe\xff"
        await client.send("")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == ""
    assert seen == ["héllo".encode(), b"\x00\x01\xfe\xff", b""]
    assert [type(message) for message in seen] == [bytes, memoryview, bytes]  # text as bytes, binary as a view


async def test_server_sends_binary_frames_and_exposes_the_upgrade_request() -> None:
    """``send(bytes)`` is one binary frame (Vonage's audio); the handler sees the upgrade's query and
    headers (Exotel's ``?sample-rate=`` and HTTP Basic)."""
    seen: list[Any] = []

    async def handler(ws: ServerWebSocket) -> None:
        upgrade = upgrade_request(ws)
        seen.append((upgrade.path, upgrade.query, upgrade.header("AUTHORIZATION"), upgrade.header("x-absent")))
        await ws.send(b"\x00\x01" * 320)
        await ws.send("text")

    async with uvicorn_ws({"/bin": handler}) as srv, connect(
        srv.url + "/bin?sample-rate=16000", additional_headers={"Authorization": "Basic dXNlcjpwdw=="}
    ) as client:
        first = await asyncio.wait_for(client.recv(), TIMEOUT)
        second = await asyncio.wait_for(client.recv(), TIMEOUT)
    assert first == b"\x00\x01" * 320 and second == "text"
    assert seen == [("/bin", "sample-rate=16000", "Basic dXNlcjpwdw==", None)]
    assert upgrade_request(object()).headers == ()


async def test_server_reassembles_fragmented_messages() -> None:
    seen: list[Any] = []

    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws, seen)

    async with uvicorn_ws({"/echo": echo}) as srv, connect(srv.url + "/echo") as client:
        await client.send(["frag-one|", "frag-two|", "frag-three"])  # text: one frame per item
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == b"frag-one|frag-two|frag-three"

        async def binary_parts() -> AsyncIterator[bytes]:
            for i in range(5):
                yield bytes([i]) * 1000

        await client.send(binary_parts())
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == b"".join(
            bytes([i]) * 1000 for i in range(5)
        )
        await client.send("after")  # the next message is whole again
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == b"after"
    assert seen == [b"frag-one|frag-two|frag-three", b"".join(bytes([i]) * 1000 for i in range(5)), b"after"]


async def test_server_large_messages_and_order_of_1000() -> None:
    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)

    big = bytes(range(256)) * 800  # 200 KiB, several TCP reads on the server
    async with uvicorn_ws({"/echo": echo}) as srv, connect(srv.url + "/echo") as client:
        await client.send(big)
        assert bytes.fromhex(await asyncio.wait_for(client.recv(), TIMEOUT)) == big
        async with asyncio.timeout(TIMEOUT):
            for i in range(1000):  # bounded: all sent before any reply is read
                await client.send(f"message {i:04d}")
            replies = [bytes.fromhex(await client.recv()) for _ in range(1000)]
        assert replies == [f"message {i:04d}".encode() for i in range(1000)]


@pytest.mark.parametrize("fragmented", [False, True])
async def test_server_message_over_max_size_fails_with_1009(fragmented: bool) -> None:
    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)

    async with uvicorn_ws({"/echo": echo}, ws_max_size=64 * 1024) as srv, connect(srv.url + "/echo") as client:
        await client.send(b"ok")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"ok".hex()
        if fragmented:  # every fragment is small; the message is not
            await client.send([b"x" * (30 * 1024)] * 3)
        else:
            await client.send(b"x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009


async def test_server_unknown_path_gets_404() -> None:
    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)

    async with uvicorn_ws({"/echo": echo}) as srv:
        with pytest.raises(InvalidStatus) as caught:
            async with asyncio.timeout(TIMEOUT), connect(srv.url + "/nope"):
                pass
        assert caught.value.response.status_code == 404
        # the server is still serving the known route
        async with connect(srv.url + "/echo") as client:
            await client.send("ok")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"ok".hex()


async def test_server_bad_upgrade_requests_get_400() -> None:
    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)

    async with uvicorn_ws({"/echo": echo}) as srv:
        host = f"127.0.0.1:{srv.port}".encode()
        no_key = (b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        response = await raw_request(srv.port, no_key)
        assert response.startswith(b"HTTP/1.1 400 "), response[:80]
        old_version = (b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        response = await raw_request(srv.port, old_version)
        assert response.startswith(b"HTTP/1.1 400 "), response[:80]
        assert b"invalid Sec-WebSocket-Version header: 8" in response
        # the server is still serving
        async with connect(srv.url + "/echo") as client:
            await client.send("ok")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"ok".hex()


async def test_server_handler_exception_closes_1011_and_is_logged() -> None:
    async def failing(ws: ServerWebSocket) -> None:
        await ws.recv()
        raise RuntimeError("handler bug")

    with capture_logs() as logs:
        async with uvicorn_ws({"/fail": failing}) as srv, connect(srv.url + "/fail") as client:
            await client.send("go")
            with pytest.raises(ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert caught.value.rcvd is not None
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1011, "internal error")
    failures = [entry for entry in logs if entry["event"] == "websocket.handler_failed"]
    assert len(failures) == 1 and failures[0]["path"] == "/fail"


async def test_server_handler_return_closes_1000() -> None:
    async def brief(ws: ServerWebSocket) -> None:
        await ws.send("bye soon")

    async with uvicorn_ws({"/brief": brief}) as srv, connect(srv.url + "/brief") as client:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "bye soon"
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1000


async def test_server_close_code_and_reason_reach_the_client() -> None:
    server_side: asyncio.Future[tuple[int | None, bool]] = asyncio.get_running_loop().create_future()

    async def closer(ws: ServerWebSocket) -> None:
        await ws.send("last words")
        await ws.close(4000, "bye")  # returns after the closing handshake and the TCP close
        await ws.close(4000, "bye")  # idempotent
        with pytest.raises(WebSocketClosed):
            await ws.send("too late")
        server_side.set_result((ws.close_code, ws.closed))

    async with uvicorn_ws({"/close": closer}) as srv, connect(srv.url + "/close") as client:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "last words"
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4000, "bye")
        assert await asyncio.wait_for(server_side, TIMEOUT) == (4000, True)  # the client echoed 4000


async def test_client_close_code_reaches_server_recv() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[bytes] = loop.create_future()
    outcome: asyncio.Future[tuple[int, str, int, str]] = loop.create_future()

    async def reader(ws: ServerWebSocket) -> None:
        first.set_result(await ws.recv())
        try:
            await ws.recv()
        except WebSocketClosed as closed:
            try:
                await ws.recv()  # raises again on every later call
            except WebSocketClosed as again:
                outcome.set_result((closed.code, closed.reason, again.code, again.reason))

    async with uvicorn_ws({"/read": reader}) as srv, connect(srv.url + "/read") as client:
        await client.send("hello")
        assert await asyncio.wait_for(first, TIMEOUT) == b"hello"
        await asyncio.wait_for(client.close(4001, "client bye"), TIMEOUT)
        assert await asyncio.wait_for(outcome, TIMEOUT) == (4001, "client bye", 4001, "client bye")


async def test_server_keepalive_pings_are_answered_by_the_library_client() -> None:
    class PingCounter(ClientConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pings = 0
            self.four_pings = asyncio.Event()

        def process_event(self, event: Any) -> None:
            if isinstance(event, Frame) and event.opcode is Opcode.PING:
                self.pings += 1
                if self.pings >= 4:
                    self.four_pings.set()
            super().process_event(event)

    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)

    async with uvicorn_ws({"/echo": echo}, ws_ping_interval=0.05, ws_ping_timeout=0.5) as srv:
        async with connect(srv.url + "/echo", create_connection=PingCounter, ping_interval=None) as client:
            assert isinstance(client, PingCounter)
            # The server schedules its next ping only once the pong for the previous one matched, so a
            # fourth ping proves three pongs were accepted (and the connection survived them).
            await asyncio.wait_for(client.four_pings.wait(), TIMEOUT)
            await client.send("still open")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"still open".hex()


async def raw_client_handshake(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                               ClientProtocol, list[Frame]]:
    """Open a WebSocket by hand (sans-I/O client protocol), writing nothing after the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    frames: list[Frame] = []
    async with asyncio.timeout(TIMEOUT):
        while protocol.handshake_exc is None and not frames and protocol.state.name == "CONNECTING":
            chunk = await reader.read(65536)
            assert chunk, "connection closed during the handshake"
            protocol.receive_data(chunk)
            frames += [event for event in protocol.events_received() if isinstance(event, Frame)]
    assert protocol.handshake_exc is None
    return reader, writer, protocol, frames


async def test_server_keepalive_timeout_fails_the_connection_with_1011() -> None:
    server_saw: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def idle(ws: ServerWebSocket) -> None:
        try:
            await ws.recv()
        except WebSocketClosed as closed:
            server_saw.set_result(closed.code)

    with capture_logs() as logs:
        async with uvicorn_ws({"/idle": idle}, ws_ping_interval=0.05, ws_ping_timeout=0.2) as srv:
            reader, writer, protocol, frames = await raw_client_handshake(srv.port, "/idle")
            started = time.monotonic()
            try:
                async with asyncio.timeout(TIMEOUT):  # never answers the ping: reads until the server closes
                    while True:
                        chunk = await reader.read(65536)
                        if not chunk:
                            protocol.receive_eof()
                            break
                        protocol.receive_data(chunk)
                        frames += [event for event in protocol.events_received() if isinstance(event, Frame)]
            finally:
                writer.close()
            elapsed = time.monotonic() - started
            assert await asyncio.wait_for(server_saw, TIMEOUT) == 1006  # no close frame from the peer
    assert [frame.opcode for frame in frames] == [Opcode.PING, Opcode.CLOSE]
    assert protocol.close_rcvd is not None
    assert (protocol.close_rcvd.code, protocol.close_rcvd.reason) == (1011, "keepalive ping timeout")
    assert 0.2 <= elapsed < 2.0
    assert any(entry["event"] == "websocket.keepalive_timeout" for entry in logs)


async def test_server_shutdown_closes_open_connections_with_1012() -> None:
    handler_ended = asyncio.Event()

    async def echo(ws: ServerWebSocket) -> None:
        await echo_hex(ws)
        handler_ended.set()

    async with uvicorn_ws({"/echo": echo}) as srv, connect(srv.url + "/echo") as client:
        await client.send("up")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"up".hex()
        stopping = asyncio.create_task(srv.stop())
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1012, "service restart")
        await asyncio.wait_for(stopping, 10)
        assert handler_ended.is_set()


# ---------------------------------------------------------------------------------------------------
# Push mode (ServerWebSocket.set_message_handler)


async def test_push_mode_drains_the_inbox_first_then_delivers_in_order_and_ends_once() -> None:
    loop = asyncio.get_running_loop()
    drained: asyncio.Future[list[bytes]] = loop.create_future()
    all_pushed = asyncio.Event()
    ended = asyncio.Event()
    pushed: list[bytes] = []
    ends: list[int] = []
    result: asyncio.Future[tuple[bytes, list[bytes], list[int]]] = loop.create_future()

    async def consumer(ws: ServerWebSocket) -> None:
        first = await ws.recv()
        await wait_until(lambda: len(ws._inbox) == 4)  # m1..m4 wait in the inbox before push mode starts

        def on_message(message: bytes) -> None:
            pushed.append(message)
            if len(pushed) == 9:
                all_pushed.set()

        def on_end() -> None:
            ends.append(len(pushed))
            ended.set()

        ws.set_message_handler(on_message, on_end)
        drained.set_result(list(pushed))  # delivered synchronously inside set_message_handler
        await ended.wait()
        await ws.close()  # waits for the TCP close: nothing may call on_end again after this
        result.set_result((first, list(pushed), list(ends)))

    async with uvicorn_ws({"/push": consumer}) as srv, connect(srv.url + "/push") as client:
        for i in range(5):
            await client.send(f"m{i}")
        assert await asyncio.wait_for(drained, TIMEOUT) == [b"m1", b"m2", b"m3", b"m4"]
        for i in range(5, 10):
            await client.send(f"m{i}".encode())
        await asyncio.wait_for(all_pushed.wait(), TIMEOUT)
        assert ends == []
        await asyncio.wait_for(client.close(), TIMEOUT)
        first, messages, end_calls = await asyncio.wait_for(result, TIMEOUT)
    assert first == b"m0"
    assert messages == [f"m{i}".encode() for i in range(1, 10)]
    assert end_calls == [9]  # exactly once, after every message


async def test_push_mode_consumer_pause_during_the_inbox_drain_is_kept() -> None:
    """A consumer that reaches its own limit while the inbox is handed over pauses the socket; the
    hand-over must not resume it behind the consumer's back (ProviderPump's queue bound relies on it)."""
    loop = asyncio.get_running_loop()
    after_handover: asyncio.Future[tuple[list[bytes], bool, bool]] = loop.create_future()
    resume = asyncio.Event()
    all_pushed = asyncio.Event()
    pushed: list[bytes] = []

    async def consumer(ws: ServerWebSocket) -> None:
        await ws.recv()
        await wait_until(lambda: len(ws._inbox) == 4)
        transport = ws._transport
        assert transport is not None

        def on_message(message: bytes) -> None:
            pushed.append(message)
            if message == b"m2":
                ws.pause_reading()  # the consumer is full
            if len(pushed) == 5:
                all_pushed.set()

        ws.set_message_handler(on_message, lambda: None)
        after_handover.set_result((list(pushed), ws.reading_paused, transport.is_reading()))
        await resume.wait()
        ws.resume_reading()
        await all_pushed.wait()
        await ws.close()

    async with uvicorn_ws({"/push": consumer}) as srv, connect(srv.url + "/push") as client:
        for i in range(5):
            await client.send(f"m{i}")
        messages, paused, reading = await asyncio.wait_for(after_handover, TIMEOUT)
        assert messages == [b"m1", b"m2", b"m3", b"m4"]  # already read: delivered anyway
        assert paused and not reading
        await client.send("m5")
        resume.set()
        await asyncio.wait_for(all_pushed.wait(), TIMEOUT)
        assert pushed[-1] == b"m5"


async def test_push_mode_consumer_exception_fails_the_connection_with_1011() -> None:
    loop = asyncio.get_running_loop()
    handler_set: asyncio.Future[None] = loop.create_future()
    ended = asyncio.Event()
    pushed: list[bytes] = []
    ends: list[str] = []

    async def consumer(ws: ServerWebSocket) -> None:
        def on_message(message: bytes) -> None:
            if message == b"boom":
                raise ValueError("consumer bug")
            pushed.append(message)

        def on_end() -> None:
            ends.append("end")
            ended.set()

        ws.set_message_handler(on_message, on_end)
        handler_set.set_result(None)
        await ended.wait()

    with capture_logs() as logs:
        async with uvicorn_ws({"/push": consumer}) as srv, connect(srv.url + "/push") as client:
            await asyncio.wait_for(handler_set, TIMEOUT)
            await client.send("ok")
            await client.send("boom")
            await client.send("ignored")
            with pytest.raises(ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
            assert caught.value.rcvd is not None
            assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1011, "internal error")
            await asyncio.wait_for(ended.wait(), TIMEOUT)
    assert pushed == [b"ok"]
    assert ends == ["end"]
    assert [entry["event"] for entry in logs].count("websocket.consumer_failed") == 1


async def test_push_mode_consumer_exception_during_the_inbox_drain_still_bounds_the_close() -> None:
    """The consumer fails on a message that was already in the inbox when push mode started: the
    connection fails with 1011 and, even if the peer never closes its side, ends within close_timeout."""
    ended = asyncio.Event()

    async def consumer(ws: ServerWebSocket) -> None:
        await ws.recv()
        await wait_until(lambda: len(ws._inbox) == 1)  # "boom" waits in the inbox

        def on_message(message: bytes) -> None:
            raise ValueError(f"consumer bug on {message!r}")

        ws.set_message_handler(on_message, ended.set)
        await ended.wait()

    with capture_logs() as logs:
        async with uvicorn_ws({"/push": consumer}) as srv:
            reader, writer, protocol, frames = await raw_client_handshake(srv.port, "/push")
            try:
                protocol.send_text(b"m0")
                protocol.send_text(b"boom")
                writer.write(b"".join(protocol.data_to_send()))
                async with asyncio.timeout(TIMEOUT):  # read the close frame; never answer it, never close
                    while protocol.close_rcvd is None:
                        chunk = await reader.read(65536)
                        assert chunk, "the server closed before sending its close frame"
                        protocol.receive_data(chunk)
                        frames += [event for event in protocol.events_received() if isinstance(event, Frame)]
                assert (protocol.close_rcvd.code, protocol.close_rcvd.reason) == (1011, "internal error")
                started = time.monotonic()
                await asyncio.wait_for(ended.wait(), TIMEOUT)  # the server gave up on the peer: on_end
                assert time.monotonic() - started < 3.0  # close_timeout is 2 s
            finally:
                writer.close()
    assert [entry["event"] for entry in logs].count("websocket.consumer_failed") == 1


# ---------------------------------------------------------------------------------------------------
# Client side: connect_websocket against the library server


def small_buffer_listener() -> socket.socket:
    """A listening socket whose accepted connections have small kernel buffers (inherited on Linux),
    so a peer that stops reading pushes back after little data."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


def url_of(server: Any, path: str = "/") -> str:
    port = server.sockets[0].getsockname()[1]
    return f"ws://127.0.0.1:{port}{path}"


async def test_client_sends_headers_and_echoes() -> None:
    requests: list[Request] = []

    def record(connection: ServerConnection, request: Request) -> None:
        requests.append(request)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, process_request=record) as server:
        client = await connect_websocket(url_of(server, "/v1/realtime?model=m"),
                                         [("Authorization", "Bearer secret-123"), ("X-Call-Id", "CA42")],
                                         open_timeout=TIMEOUT)
        try:
            assert isinstance(client, ClientWebSocket) and client.open and client.close_code is None
            await client.send("ping me")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"ping me"
        finally:
            await client.close()
    assert len(requests) == 1
    assert requests[0].path == "/v1/realtime?model=m"
    assert requests[0].headers["Authorization"] == "Bearer secret-123"
    assert requests[0].headers["X-Call-Id"] == "CA42"
    assert "Sec-WebSocket-Extensions" not in requests[0].headers  # no permessage-deflate


async def test_client_rejected_handshake_raises_invalid_status_401() -> None:
    def deny(connection: ServerConnection, request: Request) -> Any:
        return connection.respond(HTTPStatus.UNAUTHORIZED, "who are you?\n")

    async def never(ws: ServerConnection) -> None:
        raise AssertionError("the handshake was rejected")

    async with serve(never, "127.0.0.1", 0, process_request=deny) as server:
        with pytest.raises(InvalidStatus) as caught:
            await connect_websocket(url_of(server), open_timeout=TIMEOUT)
    assert caught.value.response.status_code == 401


async def test_client_open_timeout_against_a_silent_server() -> None:
    release = asyncio.Event()
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await release.wait()  # accepts, never answers the upgrade request
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await connect_websocket(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        elapsed = time.monotonic() - started
        assert accepted.is_set()
        assert 0.25 <= elapsed < 2.0
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_client_surfaces_server_close_code_and_reason() -> None:
    async def closer(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send(b"two")
        await ws.close(4002, "server bye")

    async with serve(closer, "127.0.0.1", 0) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT)
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"one"  # messages first, then the close
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"two"
        for _ in range(2):  # and on every later call
            with pytest.raises(WebSocketClosed) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
            assert (caught.value.code, caught.value.reason) == (4002, "server bye")
        await asyncio.wait_for(client.close(), TIMEOUT)  # after the peer's close: no-op or completes
        assert client.close_code == 4002
        assert not client.open
        with pytest.raises(WebSocketClosed):
            await client.send("late")


async def test_client_close_handshake_reaches_the_server() -> None:
    seen: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def waiter(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            seen.set_result((closed.rcvd.code, closed.rcvd.reason))

    async with serve(waiter, "127.0.0.1", 0) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT, close_timeout=TIMEOUT)
        started = time.monotonic()
        await asyncio.wait_for(client.close(4003, "client done"), TIMEOUT)
        assert time.monotonic() - started < 1.0  # the handshake completed, no wait for close_timeout
        assert client.closed and client.close_code == 4003  # the server echoed the code
        await asyncio.wait_for(client.close(), TIMEOUT)  # idempotent
        assert await asyncio.wait_for(seen, TIMEOUT) == (4003, "client done")


async def test_client_abrupt_tcp_drop_is_1006() -> None:
    async def dropper(ws: ServerConnection) -> None:
        await ws.send("before the drop")
        ws.transport.abort()

    async with serve(dropper, "127.0.0.1", 0) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT)
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"before the drop"
        with pytest.raises(WebSocketClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert (caught.value.code, caught.value.reason) == (1006, "")
        assert client.close_code == 1006 and client.closed
        with pytest.raises(WebSocketClosed):
            await client.send("nobody listens")


async def test_client_answers_server_pings() -> None:
    class PongCounter(ServerConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pongs = 0
            self.three_pongs = asyncio.Event()

        def process_event(self, event: Any) -> None:
            if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                self.pongs += 1
                if self.pongs >= 3:
                    self.three_pongs.set()
            super().process_event(event)

    connections: list[PongCounter] = []

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, PongCounter)
        connections.append(ws)
        await ws.three_pongs.wait()
        await ws.send("three pongs")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.5,
                     create_connection=PongCounter) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT, ping_interval=None)
        try:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"three pongs"
            assert client.open and connections[0].latency > 0
        finally:
            await client.close()
    assert connections[0].pongs >= 3


async def test_client_keepalive_timeout_fails_the_connection() -> None:
    """The server completes the handshake by hand, then never reads: the client's ping is never answered."""
    frames: list[Frame] = []
    done = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        request: Request | None = None
        while request is None:
            chunk = await reader.read(65536)
            if not chunk:
                return
            protocol.receive_data(chunk)
            events = protocol.events_received()
            if events:
                assert isinstance(events[0], Request)
                request = events[0]
        protocol.send_response(protocol.accept(request))
        writer.write(b"".join(protocol.data_to_send()))
        # no pong is ever written; read what the client sends until it closes the TCP connection
        while chunk := await reader.read(65536):
            protocol.receive_data(chunk)
            frames.extend(event for event in protocol.events_received() if isinstance(event, Frame))
        writer.close()
        done.set()

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await connect_websocket(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT,
                                         ping_interval=0.05, ping_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(WebSocketClosed) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        elapsed = time.monotonic() - started
        assert caught.value.code == 1006  # the server never sent a close frame
        assert 0.2 <= elapsed < 2.0
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()
    assert [frame.opcode for frame in frames] == [Opcode.PING, Opcode.CLOSE]
    assert frames[1].data[:2] == (1011).to_bytes(2, "big")


async def test_client_sends_stay_ordered_across_tasks_under_write_backpressure() -> None:
    tasks_n, per_task, size = 4, 50, 64 * 1024  # 12.8 MB: far more than the kernel buffers hold
    release = asyncio.Event()
    received: list[str] = []
    all_received = asyncio.Event()

    async def slow_reader(ws: ServerConnection) -> None:
        await release.wait()  # not reading: TCP pushes back on the client
        for _ in range(tasks_n * per_task):  # bounded
            message = await ws.recv()
            assert isinstance(message, str) and len(message) == size
            received.append(message.split("|", 1)[0])
        all_received.set()
        await ws.wait_closed()

    listener = small_buffer_listener()
    async with serve(slow_reader, sock=listener, max_queue=4, max_size=None) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT)
        assert client._transport is not None
        # a small kernel send buffer (no autotuning up to tcp_wmem's max), so every task has to wait
        client._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        call_order: list[str] = []
        completed: list[str] = []

        async def sender(task: int) -> None:
            for i in range(per_task):
                tag = f"{task}:{i}"
                call_order.append(tag)  # send() starts synchronously right after this
                await client.send((tag + "|").ljust(size, "x"))
                completed.append(tag)

        senders = [asyncio.create_task(sender(t)) for t in range(tasks_n)]
        try:
            # No event is exposed for "a sender is waiting on the write buffer": bounded poll.
            await wait_until(lambda: client._slow_senders == tasks_n)  # every task is waiting in send()
            assert client._write_paused and not client.can_send_now()
            assert len(completed) < tasks_n * per_task
            assert not any(task.done() for task in senders)
            release.set()
            async with asyncio.timeout(20):
                await asyncio.gather(*senders)
                await all_received.wait()
        finally:
            release.set()  # never leave the server handler waiting
            for task in senders:
                task.cancel()
            await client.close()
    assert len(call_order) == tasks_n * per_task
    assert received == call_order  # the exact call order, across tasks
    for t in range(tasks_n):
        assert [tag for tag in received if tag.startswith(f"{t}:")] == [f"{t}:{i}" for i in range(per_task)]
    assert client.can_send_now() is False  # closed


async def test_client_inbox_backpressure_pauses_reading_then_delivers_everything_in_order() -> None:
    count, size = 100, 32 * 1024  # 3.2 MB: more than the kernel buffers between the two ends
    sent: list[int] = []
    done = asyncio.Event()

    async def firehose(ws: ServerConnection) -> None:
        await ws.recv()  # "go"
        for i in range(count):  # bounded
            await ws.send(f"{i:03d}|".ljust(size, "y"))
            sent.append(i)
        done.set()
        await ws.wait_closed()

    listener = small_buffer_listener()
    async with serve(firehose, sock=listener) as server:
        client = await connect_websocket(url_of(server), open_timeout=TIMEOUT, inbox_limit=4)
        try:
            transport = client._transport
            assert transport is not None
            await client.send("go")
            # No event is exposed for "the transport stopped reading": bounded poll on its state.
            await wait_until(lambda: not transport.is_reading())
            assert client.reading_paused
            inbox = len(client._inbox)
            assert 4 <= inbox < count  # bounded: the limit plus what one read had already brought
            assert len(sent) < count and not done.is_set()  # the server's sends are held back
            messages: list[bytes] = []
            async with asyncio.timeout(TIMEOUT):
                for _ in range(count):  # bounded
                    messages.append(await client.recv())
                await done.wait()
            assert transport.is_reading() and not client.reading_paused
        finally:
            await client.close()
    assert [int(message[:3]) for message in messages] == list(range(count))
    assert all(len(message) == size for message in messages)


# ---------------------------------------------------------------------------------------------------
# Unauthenticated peers are bounded (docs/security.md, "Unauthenticated connections")


async def _raw_upgrade(port: int, path: str, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader,
                                                                              asyncio.StreamWriter]:
    """A raw TCP client that did the WebSocket handshake (and then speaks frames by hand)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return reader, writer


async def test_ping_flood_from_a_peer_that_never_reads_is_bounded_by_the_write_buffer() -> None:
    """Pongs are written whether or not the peer reads them. A peer that sends pings and never
    reads must meet TCP backpressure (we stop reading) instead of growing our write buffer."""
    connected: asyncio.Future[ServerWebSocket] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerWebSocket) -> None:
        connected.set_result(ws)
        await asyncio.Event().wait()

    async with uvicorn_ws({"/m": handler}) as server:
        reader, writer = await _raw_upgrade(server.port, "/m", rcvbuf=4096)
        ours = await asyncio.wait_for(connected, TIMEOUT)
        burst = Frame(Opcode.PING, b"x" * 125).serialize(mask=True) * 512  # 67 KB of pings
        sent, peak = 0, 0
        while sent < 32 << 20:  # bounded: 32 MiB of pings at most
            writer.write(burst)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                break  # the server stopped reading: what the fix does
            sent += len(burst)
            peak = max(peak, ours.write_buffer_size)
        peak = max(peak, ours.write_buffer_size)
        assert ours.reading_paused
        print(f"ping flood: {sent} bytes of pings sent, peak {peak} bytes of pongs buffered")  # shown with -s
        assert peak < 1 << 20, f"{peak} bytes of pongs buffered after {sent} bytes of pings"
        writer.transport.abort()
        del reader


async def test_server_websocket_closes_a_connection_without_handshake() -> None:
    async def handler(_ws: ServerWebSocket) -> None:
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ServerWebSocket({"/m": handler}, ping_interval=None,
                                                              handshake_timeout=0.3), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /m HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
        assert time.monotonic() - started < TIMEOUT
        writer.close()
