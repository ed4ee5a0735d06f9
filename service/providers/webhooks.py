"""What the carriers that answer a voice webhook with markup share (SignalWire, Telnyx, Plivo; Twilio
keeps its own for its REST transfer): mounting the routes, and the after-stream decision (transfer an
escalated call, resume a dropped stream, or end the call)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response, WebSocket

from service import metrics
from service.providers.media import AsgiMessageSocket, claim_resumption
from service.providers.provider import MediaHandler

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)

WebhookHandler = Callable[["Gateway", Request], Awaitable[Response]]


def install_routes(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler], *, voice_path: str,
                   after_stream_path: str, media_path: str, voice: WebhookHandler, after_stream: WebhookHandler,
                   media: MediaHandler) -> None:
    """The two signed webhooks as POST routes, and the media stream for ``service.wsio`` and as an
    ASGI WebSocket route (for servers other than ``callbridge serve``)."""

    async def voice_route(request: Request) -> Response:
        return await voice(gateway, request)

    async def after_stream_route(request: Request) -> Response:
        return await after_stream(gateway, request)

    async def media_route(websocket: WebSocket) -> None:
        await websocket.accept()
        await media(AsgiMessageSocket(websocket))

    app.add_api_route(voice_path, voice_route, methods=["POST"])
    app.add_api_route(after_stream_path, after_stream_route, methods=["POST"])
    app.add_api_websocket_route(media_path, media_route)
    media_routes[media_path] = media


async def after_stream_response(gateway: Gateway, provider: str, call_id: str, *, resume: Callable[[], Response],
                                end: Callable[[bool], Response]) -> Response:
    """After the stream ended with the call still up: ``end(True)`` (the transfer) for an escalated
    call, ``resume()`` (a fresh stream) for a dropped one (docs/resume.md), else ``end(False)``."""
    escalated = bool(call_id) and await gateway.is_escalated(call_id)
    if call_id and not escalated and await claim_resumption(gateway, call_id):
        metrics.CALLS_RESUMED.inc()
        log.info("provider.after_stream", provider=provider, call_id=call_id, escalated=False, resumed=True)
        return resume()
    log.info("provider.after_stream", provider=provider, call_id=call_id, escalated=escalated, resumed=False)
    return end(escalated)
