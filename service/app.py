"""FastAPI application factory: HTTP routes, the Twilio media WebSocket, and the process lifespan.

The ``Gateway`` object owns everything that lives as long as the process (settings, the Redis state
store, the escalation outbox and its delivery worker, the registry of active calls, the draining
flag). Routes are thin: they validate, then hand over to ``service.call`` or ``service.providers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.config import Settings
from service.http_guard import guarded_http_protocol
from service.wsio import MessageSocket, uvicorn_websocket_protocol

if TYPE_CHECKING:
    from service.call.session import CallSession

log = structlog.get_logger(__name__)


@dataclass
class Gateway:
    """Process-wide state shared by every call on this replica."""

    settings: Settings
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    calls: dict[str, CallSession] = field(default_factory=dict)
    state_store: Any = None  # service.state.store.StateStore, when Redis is configured
    outbox: Any = None  # service.escalation.outbox.Outbox
    delivery_worker: Any = None
    stream_guard: Any = None  # service.providers.streamguard.StreamGuard, created on the first stream
    _background: list[asyncio.Task[Any]] = field(default_factory=list)
    calls_changed: asyncio.Event = field(default_factory=asyncio.Event)

    escalated_recently: dict[str, float] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)  # callables (kind, fields) -> None: demo/tools

    def emit(self, kind: str, **fields: Any) -> None:
        """Tell in-process listeners (the demo's live transcript) about a call event. Never raises."""
        for listener in self.listeners:
            try:
                listener(kind, fields)
            except Exception as error:
                log.warning("gateway.listener_failed", kind=kind, error=repr(error))

    def mark_escalated(self, call_id: str) -> None:
        """Remember locally (bounded: 10k calls) that a call escalated, for after-stream TwiML."""
        self.escalated_recently[call_id] = time.time()
        if len(self.escalated_recently) > 10_000:
            oldest = sorted(self.escalated_recently, key=self.escalated_recently.__getitem__)[:1000]
            for key in oldest:
                self.escalated_recently.pop(key, None)

    async def is_escalated(self, call_id: str) -> bool:
        """Did this call escalate? Local memory first, then Redis (another replica may have served it)."""
        if call_id in self.escalated_recently:
            return True
        if self.state_store is None or not call_id:
            return False
        try:
            snapshot = await asyncio.wait_for(self.state_store.load_call(call_id), timeout=2.0)
            status = snapshot.fields.get("escalation_status", "none") if snapshot is not None else "none"
            return status not in ("", "none")
        except Exception as error:
            log.warning("state.escalation_lookup_failed", call_id=call_id, error=repr(error))
            return False

    def prices_for(self, model: str) -> dict[str, float]:
        """USD per 1M tokens for ``model``: the longest matching prefix in the price table."""
        table = self.settings.price_table
        best = max((key for key in table if key != "default" and model.startswith(key)), key=len, default="default")
        return table.get(best, table["default"])

    async def redis_ok(self) -> bool:
        if self.state_store is None:
            return True
        try:
            return bool(await asyncio.wait_for(self.state_store.ping(), timeout=1.0))
        except Exception:
            return False

    def register(self, call_id: str, session: CallSession) -> None:
        self.calls[call_id] = session
        metrics.ACTIVE_CALLS.set(len(self.calls))
        self.calls_changed.set()

    def unregister(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        metrics.ACTIVE_CALLS.set(len(self.calls))
        self.calls_changed.set()

    async def start(self) -> None:
        """Connect Redis and start background workers. Never fails start-up on a Redis outage:
        calls go on without state and ``/readyz`` reports the outage."""
        from service.lifecycle import start_gateway_services

        await start_gateway_services(self)

    async def stop(self) -> None:
        from service.lifecycle import stop_gateway_services

        await stop_gateway_services(self)


def create_app(settings: Settings, *, start_services: bool = True) -> FastAPI:
    """Build the ASGI app. ``start_services=False`` skips Redis/workers (pure HTTP tests)."""
    gateway = Gateway(settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if start_services:
            await gateway.start()
        log.info("gateway.started", replica=settings.replica_id, provider=settings.provider,
                 public_url=settings.public_url)
        try:
            yield
        finally:
            if start_services:
                await gateway.stop()
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

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        from service.providers.twilio.routes import handle_voice_webhook

        return await handle_voice_webhook(gateway, request)

    @app.post("/twilio/after-stream")
    async def twilio_after_stream(request: Request) -> Response:
        from service.providers.twilio.routes import handle_after_stream

        return await handle_after_stream(gateway, request)

    async def twilio_media_stream(socket: MessageSocket) -> None:
        from service.providers.twilio.routes import handle_media_stream

        await handle_media_stream(gateway, socket)

    # Served by ``service.wsio.ServerWebSocket`` under ``callbridge serve`` (see ``uvicorn_config``);
    # the ASGI route below serves the same handler under any other ASGI server.
    app.state.websocket_routes = {"/twilio/media": twilio_media_stream}

    @app.websocket("/twilio/media")
    async def twilio_media(websocket: WebSocket) -> None:
        from service.providers.twilio.routes import AsgiMessageSocket

        await websocket.accept()
        await twilio_media_stream(AsgiMessageSocket(websocket))

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
