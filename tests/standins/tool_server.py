"""A real HTTP business-tool service on 127.0.0.1 (uvicorn, raw ASGI) for tool tests and benchmarks.

It records every request (headers, raw body, arrival time, whether ``Callbridge-Signature`` verifies
against its secret) and answers by path, so one server plays every behaviour a test needs:

- ``/tools/<name>``: 200 JSON ``{"order_number", "status": "shipped", ...}`` after ``delay_s``;
- ``/slow/<name>``: the same after ``slow_s``;
- ``/fail/<name>``: 500; ``/flaky/<name>``: 503 on the first request, then 200;
- ``/big/<name>``: 200 with a ``big_bytes`` JSON body sent in 16 KB chunks;
- ``/notjson/<name>``: 200 ``text/html``;
- ``/hang/<name>``: answers only after ``hang_s`` (longer than any tool timeout in the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from service.escalation.webhook import SIGNATURE_HEADER, verify_signature
from tests.conftest import free_port
from tests.poll import wait_until


@dataclass
class ToolRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    signature_ok: bool

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class ToolServer:
    def __init__(self, secret: str = "", *, delay_s: float = 0.0, slow_s: float = 1.5, hang_s: float = 30.0,
                 big_bytes: int = 200_000) -> None:
        self.secret = secret
        self.delay_s, self.slow_s, self.hang_s, self.big_bytes = delay_s, slow_s, hang_s, big_bytes
        self.requests: list[ToolRequest] = []
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, kind: str, name: str = "lookup_order") -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{name}"

    async def __aenter__(self) -> ToolServer:
        config = uvicorn.Config(self._app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="off", interface="asgi3")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(20):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)  # uvicorn exposes no started event; bounded poll
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self._task

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[ToolRequest]:
        await wait_until(lambda: len(self.requests) >= count, timeout, what=f"{count} tool requests")
        return self.requests

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        ok = bool(self.secret) and verify_signature(self.secret, signature, bytes(body))
        path = scope["path"]
        self.requests.append(ToolRequest(path, headers, bytes(body), time.monotonic(), ok))
        kind = path.strip("/").split("/")[0]
        attempt = sum(1 for r in self.requests if r.path == path)
        try:
            arguments = json.loads(body).get("arguments") or {}
        except (ValueError, AttributeError):
            arguments = {}
        answer = json.dumps({"order_number": arguments.get("order_number"), "status": "shipped",
                             "delivery": "tomorrow before noon"}).encode()
        if kind == "tools" and self.delay_s:
            await asyncio.sleep(self.delay_s)  # the simulated back-end's work, not synchronisation
        if kind == "slow":
            await asyncio.sleep(self.slow_s)
        if kind == "hang":
            await asyncio.sleep(self.hang_s)
        if kind == "fail" or (kind == "flaky" and attempt == 1):
            await self._reply(send, 500 if kind == "fail" else 503, b'{"error":"boom"}')
        elif kind == "notjson":
            await self._reply(send, 200, b"<html>oops</html>", "text/html")
        elif kind == "big":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            chunk = b" " * 16384
            for _ in range(self.big_bytes // len(chunk)):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        else:
            await self._reply(send, 200, answer)

    @staticmethod
    async def _reply(send: Any, status: int, body: bytes, content_type: str = "application/json") -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
