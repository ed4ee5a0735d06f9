"""The carriers' call-control REST APIs as one stand-in (docs/transfer.md, "REST transfer per carrier"):
a real HTTP server on 127.0.0.1 that records every request and answers as the carrier does on success
(SignalWire's call resource, Telnyx's ``{"data": {"result": "ok"}}``, Plivo's 202 ``call transferred``,
Vonage's 204), or with ``fail_status`` when set (to test retries and refusals). Memory: one record per
request; tests make a handful."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.integration.conftest import wait_started

__all__ = ["CarrierRest", "RestRecord", "carrier_rest"]


@dataclass(frozen=True)
class RestRecord:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CarrierRest:
    url: str
    requests: list[RestRecord] = field(default_factory=list)
    fail_status: list[int] = field(default_factory=list)
    """Statuses to answer, one per request, before answering success."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def _success(path: str, method: str) -> Response:
    if path.startswith("/api/laml/"):
        return JSONResponse({"sid": path.rsplit("/", 1)[-1].removesuffix(".json"), "status": "in-progress"})
    if path.startswith("/v2/calls/"):
        return JSONResponse({"data": {"result": "ok"}})
    if path.startswith("/v1/Account/"):
        return JSONResponse({"message": "call transferred", "api_id": "00000000-0000-0000-0000-000000000000"},
                            status_code=202)
    if path.startswith("/v1/calls/") and method == "PUT":
        return Response(status_code=204)
    return JSONResponse({"error": "not found"}, status_code=404)


@contextlib.asynccontextmanager
async def carrier_rest() -> AsyncIterator[CarrierRest]:
    port = free_port()
    state = CarrierRest(url=f"http://127.0.0.1:{port}")

    async def handle(request: Request) -> Response:
        body = await request.body()
        state.requests.append(RestRecord(request.method, request.url.path,
                                         {k.lower(): v for k, v in request.headers.items()}, body))
        state.arrived.set()
        if state.fail_status:
            return JSONResponse({"error": "scripted failure"}, status_code=state.fail_status.pop(0))
        return _success(request.url.path, request.method)

    app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_started(server, task)
        yield state
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task
