"""A real HTTP/1.1 escalation-webhook receiver on 127.0.0.1 for tests and the soak (asyncio streams only).

It verifies ``Callbridge-Signature``, dedupes by ``Idempotency-Key`` (a repeat of an accepted key is
answered 200 and counted as a duplicate, as a real receiver would), and is scriptable: a ``policy``
callable picks each reply (status, headers, delay before answering), and ``down()``/``up()`` close and
re-open the listening socket on the same port. Keep-alive is supported, as httpx pools connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.escalation.webhook import verify_signature


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    delay_s: float = 0.0  # > client timeout simulates a timeout
    hold: bool = False  # answer only after release() (a receiver stuck mid-request)


@dataclass
class Request:
    idempotency_key: str
    signature: str
    body: bytes
    signature_ok: bool
    at: float
    attempt: int  # 1-based count of requests seen for this key

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


Policy = Callable[[Request], Reply]


class WebhookReceiver:
    """Scriptable receiver. ``accepted[key]`` is the first request answered 2xx for each key."""

    def __init__(self, secret: str, policy: Policy | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.policy: Policy = policy or (lambda _req: Reply())
        self.host = host
        self.port = port
        self.requests: list[Request] = []
        self.accepted: dict[str, Request] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        self._attempts: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/escalation"

    async def up(self) -> None:
        """Start listening (same port as before after a ``down()``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def release(self) -> None:
        """Let every request held by a ``Reply(hold=True)`` be answered."""
        self._released.set()

    async def down(self) -> None:
        """Stop listening and drop every open connection (clients see connection errors)."""
        self.release()
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def wait_for(self, predicate: Callable[[WebhookReceiver], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every request); False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)
                return True
            except TimeoutError:
                return False

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                key = headers.get("idempotency-key", "")
                self._attempts[key] = self._attempts.get(key, 0) + 1
                signature = headers.get("callbridge-signature", "")
                request = Request(key, signature, body, verify_signature(self.secret, signature, body), time.time(),
                                  self._attempts[key])
                self.requests.append(request)
                await self._notify()
                if not request.signature_ok:
                    self.bad_signatures += 1
                    reply = Reply(401, body=b"bad signature")
                elif key in self.accepted:
                    self.duplicates += 1
                    reply = Reply(200, body=b'{"duplicate":true}')
                else:
                    reply = self.policy(request)
                if reply.hold:
                    await self._released.wait()
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)  # simulated slow receiver, not test synchronisation
                if 200 <= reply.status < 300 and key not in self.accepted and request.signature_ok:
                    self.accepted[key] = request
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(reply.body)}\r\n"
                    f"Content-Type: application/json\r\n{extra}\r\n".encode() + reply.body
                )
                await writer.drain()
                await self._notify()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # down(): a leaf handler task; swallowing keeps Python 3.11's stream callback quiet
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()
