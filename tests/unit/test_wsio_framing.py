"""``service.wsio`` against the ``websockets`` library's own framing, and the library surface it uses.

Random message sequences (text and binary, empty to > 64 KiB, some fragmented, pings in between)
are framed by the library's sans-I/O peer, cut into random chunks and fed to our adapter; it must
deliver exactly the same messages in the same order, answer every ping, and leave nothing behind.
Both sides: masked client->server frames into ``ServerWebSocket``, unmasked server->client frames
into ``ClientWebSocket``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from service.wsio import ClientWebSocket, ServerWebSocket, WebSocketClosed


class Wire:
    """The far side's view of our transport: bytes we wrote, reading paused or not."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.written += chunk

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


message = st.tuples(
    st.sampled_from(["text", "binary"]),
    st.one_of(st.binary(max_size=300), st.integers(min_value=125, max_value=70_000).map(lambda n: b"x" * n)),
    st.integers(min_value=1, max_value=3),  # fragments
    st.booleans(),  # a ping before it
)


def _frames(peer: ServerProtocol | ClientProtocol, messages: list[tuple[str, bytes, int, bool]]) -> tuple[bytes, int]:
    pings = 0
    for kind, body, fragments, ping in messages:
        if ping:
            peer.send_ping(b"p%d" % pings)
            pings += 1
        if kind == "text":
            body = body.hex().encode()[: len(body)] if body else b""  # valid UTF-8
        cut = [len(body) * i // fragments for i in range(fragments + 1)]
        parts = [body[cut[i] : cut[i + 1]] for i in range(fragments)]
        send = peer.send_text if kind == "text" else peer.send_binary
        if fragments == 1:
            send(parts[0])
        else:
            send(parts[0], fin=False)
            for index, part in enumerate(parts[1:], start=1):
                peer.send_continuation(part, fin=index == fragments - 1)
    return b"".join(peer.data_to_send()), pings


def _expected(messages: list[tuple[str, bytes, int, bool]]) -> list[bytes]:
    return [(body.hex().encode()[: len(body)] if body else b"") if kind == "text" else body
            for kind, body, _, _ in messages]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _pongs(peer: ServerProtocol | ClientProtocol, wire: Wire) -> int:
    peer.receive_data(wire.take())
    return sum(1 for event in peer.events_received() if isinstance(event, Frame) and event.opcode is Opcode.PONG)


async def _server_side(messages: list[tuple[str, bytes, int, bool]], cuts: list[int]) -> None:
    async def handler(_socket: ServerWebSocket) -> None:
        await asyncio.Event().wait()

    ours = ServerWebSocket({"/m": handler}, max_size=None, ping_interval=None)
    wire = Wire()
    ours.connection_made(wire)  # type: ignore[arg-type]
    peer = ClientProtocol(parse_uri("ws://test/m"))
    peer.send_request(peer.connect())
    ours.data_received(b"".join(peer.data_to_send()))
    peer.receive_data(wire.take())
    peer.events_received()
    assert ours.open
    received: list[bytes] = []
    ours.set_message_handler(received.append, lambda: None)
    data, pings = _frames(peer, messages)
    for chunk in _chunks(data, cuts):
        ours.data_received(chunk)
    assert received == _expected(messages)
    assert _pongs(peer, wire) == pings
    assert ours.open
    for task in list(asyncio.all_tasks()):
        if task is not asyncio.current_task():
            task.cancel()


async def _client_side(messages: list[tuple[str, bytes, int, bool]], cuts: list[int]) -> None:
    ours = ClientWebSocket(ClientProtocol(parse_uri("ws://test/m")), [], inbox_limit=10_000, ping_interval=None)
    wire = Wire()
    ours.connection_made(wire)  # type: ignore[arg-type]
    peer = ServerProtocol(max_size=None)
    peer.receive_data(wire.take())
    request = peer.events_received()[0]
    peer.send_response(peer.accept(request))
    handshake = b"".join(peer.data_to_send())
    data, pings = _frames(peer, messages)
    # the 101 response and the first frames may arrive in one segment (as session.created does)
    for chunk in _chunks(handshake + data, [len(handshake) + c for c in cuts] + cuts[:1]):
        ours.data_received(chunk)
    await ours.handshake
    received = [await ours.recv() for _ in messages]
    assert received == _expected(messages)
    assert _pongs(peer, wire) == pings
    assert ours.open


@settings(max_examples=60, deadline=None)
@given(st.lists(message, max_size=12), st.lists(st.integers(min_value=0, max_value=400_000), max_size=8))
def test_server_delivers_what_the_library_framed(messages: list[Any], cuts: list[int]) -> None:
    asyncio.run(_server_side(messages, cuts))


@settings(max_examples=60, deadline=None)
@given(st.lists(message, max_size=12), st.lists(st.integers(min_value=0, max_value=400_000), max_size=8))
def test_client_delivers_what_the_library_framed(messages: list[Any], cuts: list[int]) -> None:
    asyncio.run(_client_side(messages, cuts))


def test_unmasked_client_frame_is_a_protocol_error_1002() -> None:
    async def scenario() -> None:
        async def handler(_socket: ServerWebSocket) -> None:
            await asyncio.Event().wait()

        ours = ServerWebSocket({"/m": handler}, ping_interval=None)
        wire = Wire()
        ours.connection_made(wire)  # type: ignore[arg-type]
        peer = ClientProtocol(parse_uri("ws://test/m"))
        peer.send_request(peer.connect())
        ours.data_received(b"".join(peer.data_to_send()))
        wire.take()
        ours.data_received(Frame(Opcode.TEXT, b"hello").serialize(mask=False))  # servers require masks
        assert not ours.open
        assert b"\x88" in wire.take()  # a close frame went out
        assert ours._ws.close_sent is not None and ours._ws.close_sent.code == 1002
        assert ours._close_timer is not None  # the TCP close is awaited for close_timeout at most
        ours.connection_lost(None)  # what the transport reports once it has closed
        with pytest.raises(WebSocketClosed) as closed:
            await ours.recv()
        assert closed.value.code == 1006  # the peer never sent a close frame
        for task in list(asyncio.all_tasks()):
            if task is not asyncio.current_task():
                task.cancel()

    asyncio.run(scenario())


def test_websockets_sansio_surface() -> None:
    """Every part of ``websockets`` that ``service.wsio`` names in its docstring exists and behaves
    as wsio relies on (a major version that renames or changes one fails here, not in production)."""
    import inspect

    import websockets
    from websockets.protocol import Protocol, State

    from service import wsio

    for name in ("receive_data", "receive_eof", "events_received", "data_to_send", "send_text", "send_binary", "send_ping",
                 "send_close", "fail", "close_expected"):
        assert callable(getattr(Protocol, name)), name
    assert callable(ServerProtocol.accept) and callable(ServerProtocol.reject)
    assert callable(ServerProtocol.send_response)
    assert callable(ClientProtocol.connect) and callable(ClientProtocol.send_request)
    named = inspect.getdoc(wsio) or ""
    for name in ("receive_data", "data_to_send", "send_text", "send_binary", "close_rcvd", "handshake_exc", "parse_uri"):
        assert name in named, name
    assert int(websockets.version.version.split(".")[0]) >= 13

    def pair(max_size: int | None) -> tuple[ServerProtocol, ClientProtocol]:
        server = ServerProtocol(max_size=max_size)
        client = ClientProtocol(parse_uri("ws://test/m"), max_size=None)
        client.send_request(client.connect())
        server.receive_data(b"".join(client.data_to_send()))
        request = server.events_received()[0]
        server.send_response(server.accept(request))
        client.receive_data(b"".join(server.data_to_send()))
        client.events_received()
        return server, client

    # behaviour: a server frames an unmasked text message, a client masks one; both parse
    server, client = pair(10)
    assert server.state is State.OPEN and client.state is State.OPEN and client.handshake_exc is None
    server.send_text(b"hi")
    client.receive_data(b"".join(server.data_to_send()))
    (frame,) = client.events_received()
    assert frame.opcode is Opcode.TEXT and frame.data == b"hi"
    client.send_text(b"x" * 11)  # over the server's max_size: it fails the connection with 1009
    server.receive_data(b"".join(client.data_to_send()))
    assert server.state is not State.OPEN and server.close_sent is not None and server.close_sent.code == 1009
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    assert client.close_rcvd is not None and client.close_rcvd.code == 1009
    # a ping is answered by the parser itself (the pong that wsio bounds by pausing reads)
    server, client = pair(None)
    client.send_ping(b"p")
    server.receive_data(b"".join(client.data_to_send()))
    assert b"".join(server.data_to_send()) == Frame(Opcode.PONG, b"p").serialize(mask=False)


def test_reading_pauses_while_the_write_buffer_is_full() -> None:
    """Pongs go out whether or not the peer reads: above the high-water mark, reading stops."""

    async def scenario() -> None:
        async def handler(_socket: ServerWebSocket) -> None:
            await asyncio.Event().wait()

        ours = ServerWebSocket({"/m": handler}, ping_interval=None)
        wire = Wire()
        ours.connection_made(wire)  # type: ignore[arg-type]
        peer = ClientProtocol(parse_uri("ws://test/m"))
        peer.send_request(peer.connect())
        ours.data_received(b"".join(peer.data_to_send()))
        wire.take()
        ours.pause_writing()  # what the transport says above its high-water mark
        assert not wire.reading and ours.reading_paused
        ours.pause_reading()
        ours.resume_writing()
        assert not wire.reading  # the consumer's own pause still holds
        ours.resume_reading()
        assert wire.reading and not ours.reading_paused
        for task in list(asyncio.all_tasks()):
            if task is not asyncio.current_task():
                task.cancel()

    asyncio.run(scenario())
