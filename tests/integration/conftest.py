"""A real gateway for integration tests: the FastAPI app under uvicorn on 127.0.0.1, in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from service.app import create_app, uvicorn_config
from service.config import Settings, load_settings
from tests.conftest import free_port

AUTH_TOKEN = "test-auth-" + secrets.token_hex(16)  # random per process (issue 12.1)


@dataclass
class RunningGateway:
    base_url: str
    app: FastAPI
    settings: Settings

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None], timeout_s: float = 10) -> None:
    """Until uvicorn listens (re-raising its start-up error)."""
    async with asyncio.timeout(timeout_s):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # uvicorn exposes no started event; bounded poll


@contextlib.asynccontextmanager
async def run_gateway(start_services: bool = False, asgi_media: bool = False, **overrides: Any) -> AsyncIterator[RunningGateway]:
    """``asgi_media``: serve the media sockets through their ASGI routes (uvicorn's ``websockets-sansio``,
    ``AsgiMessageSocket``), as under any ASGI server other than ``callbridge serve``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(**{"public_url": base, "twilio_auth_token": AUTH_TOKEN, "greeting": False, **overrides})
    app = create_app(settings, start_services=start_services)
    if asgi_media:
        app.state.websocket_routes = None
    config = uvicorn_config(app, "127.0.0.1", port, **({"ws": "websockets-sansio"} if asgi_media else {}))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_started(server, task, timeout_s=20)
        yield RunningGateway(base_url=base, app=app, settings=settings)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await task


@pytest.fixture
def gateway_factory() -> Callable[..., contextlib.AbstractAsyncContextManager[RunningGateway]]:
    return run_gateway
