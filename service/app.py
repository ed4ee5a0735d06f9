"""FastAPI application factory: health, readiness and metrics, every registered provider's routes
(``service.providers.registry``), and the process lifespan.

Process-wide state is the ``service.gateway.Gateway``; start-up and shut-down of its Redis store and
workers are in ``service.lifecycle``. Routes are thin: they validate, then hand over to the
provider packages, which hand calls to ``service.call``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.config import Settings
from service.console.routes import mount as mount_console
from service.gateway import Gateway
from service.http_guard import guarded_http_protocol
from service.lifecycle import start_gateway_services, stop_gateway_services
from service.providers.registry import MediaHandler, registered
from service.wsio import uvicorn_websocket_protocol

log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, start_services: bool = True) -> FastAPI:
    """Build the ASGI app. ``start_services=False`` skips Redis/workers (pure HTTP tests)."""
    gateway = Gateway(settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if start_services:
            await start_gateway_services(gateway)  # never fails on a Redis outage: /readyz says so
        log.info("gateway.started", replica=settings.replica_id, provider=settings.provider,
                 public_url=settings.public_url)
        try:
            yield
        finally:
            if gateway.prewarm_pool is not None:  # first: its entries release their model-session leases
                await gateway.prewarm_pool.close()
            if start_services:
                await stop_gateway_services(gateway)
            if gateway.tool_runner is not None:  # the business tools' HTTP client (docs/tools.md)
                await gateway.tool_runner.aclose()
                gateway.tool_runner = None
            log.info("gateway.stopped", replica=settings.replica_id)

    app = FastAPI(title="callbridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process and its event loop answer."""
        return JSONResponse({"status": "ok", "uptime_s": round(time.time() - gateway.started_at, 1)})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: dependencies reachable and not draining (503 otherwise, with the reason)."""
        redis_ok = await gateway.redis_ok()
        metrics.REDIS_UP.set(1 if redis_ok else 0)
        ready = redis_ok and not gateway.draining
        body = {
            "ready": ready,
            "draining": gateway.draining,
            "redis": "ok" if redis_ok else "unreachable",
            "active_calls": len(gateway.calls),
            "replica": settings.replica_id,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    media_routes: dict[str, MediaHandler] = {}
    for provider in registered():
        provider.install(app, gateway, media_routes)
    # Served by ``service.wsio.ServerWebSocket`` under ``callbridge serve`` (see ``uvicorn_config``);
    # each provider also mounts the same handlers as ASGI routes for any other server.
    app.state.websocket_routes = media_routes

    mount_console(app, gateway)  # no-op unless CALLBRIDGE_CONSOLE_TOKEN is set (docs/console.md)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> PlainTextResponse:
        log.error("http.unhandled_error", path=request.url.path, error=repr(exc))
        return PlainTextResponse("internal error", status_code=500)

    return app


def uvicorn_config(app: FastAPI, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The uvicorn set-up every entry point uses (serve, demo, tests), for the gateway app or any other.

    WebSocket upgrades go to ``service.wsio.ServerWebSocket`` for the app's ``websocket_routes``
    (the media streams: the hot path), not through ASGI; HTTP stays ASGI. Frames up to 1 MiB;
    keepalive ping every 20 s, 20 s to answer. For the gateway, HTTP goes through
    ``service.http_guard`` (request-head timeout ``CALLBRIDGE_HANDSHAKE_TIMEOUT_S``, at most
    ``CALLBRIDGE_MAX_CONNECTIONS`` connections, HTTP 503 beyond; docs/security.md,
    "Unauthenticated connections").
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "ws_max_size": 1 << 20,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
    }
    routes = getattr(app.state, "websocket_routes", None)
    gateway = getattr(app.state, "gateway", None)
    if gateway is not None:  # the gateway; other apps (e.g. the demo's webhook receiver) keep uvicorn's
        settings = gateway.settings
        limit = settings.max_connections or None
        options["http"] = guarded_http_protocol(settings.handshake_timeout_s, limit)
        options["limit_concurrency"] = limit
    else:
        limit = None
    if routes is not None:
        options["ws"] = uvicorn_websocket_protocol(routes, max_connections=limit)
    options.update(overrides)
    return uvicorn.Config(app, **options)
