"""A TCP load balancer stand-in on 127.0.0.1: every new connection goes to the first backend that
accepts it (fail-over in order; with ``rotate`` the order starts one backend further for each new
connection), bytes are relayed both ways until either side closes. What a
deployment's load balancer does for the gateway's public URL, enough for multi-replica tests."""

from __future__ import annotations

import asyncio
import contextlib


class Balancer:
    def __init__(self, backends: list[int], port: int = 0, rotate: bool = False) -> None:
        self.backends = backends  # ports, tried in order (starting one further per connection if rotate)
        self.port = port
        self.rotate = rotate
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        start = self._next % len(self.backends) if self.rotate else 0
        self._next += 1
        for port in self.backends[start:] + self.backends[:start]:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            client_writer.close()
            return
        pumps = [asyncio.create_task(self._pump(client_reader, writer)),
                 asyncio.create_task(self._pump(reader, client_writer))]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, client_writer):
            with contextlib.suppress(Exception):
                w.transport.abort()  # either side gone: the other sees the connection drop too

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
