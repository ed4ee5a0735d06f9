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
from service.providers.tokens import mint_stream_token
from service.providers.webform import FormRefused, read_webhook_body

if TYPE_CHECKING:
    from service.config import Settings
    from service.gateway import Gateway

log = structlog.get_logger(__name__)

WebhookHandler = Callable[["Gateway", Request], Awaitable[Response]]
Verify = Callable[[bytes, dict[str, str]], bool]


def call_stream_token(settings: Settings, call_id: str) -> str:
    """A single-use stream token bound to ``call_id``, with the replicas' shared secret and the
    configured TTL (docs/security.md): what every carrier's set-up answer carries."""
    return mint_stream_token(settings.effective_stream_token_secret(), call_id, settings.stream_token_ttl_s)


def caller_parameters(params: dict[str, str]) -> dict[str, str]:
    """The ``from``/``to`` pair a Twilio-compatible stream echoes back as custom parameters."""
    return {"from": params.get("From", ""), "to": params.get("To", "")}


async def signed_form(request: Request, path: str, *, provider: str, signature_header: str, has_key: bool,
                      verify: Verify) -> dict[str, str] | Response:
    """The webhook's form once ``verify(raw body, form)`` accepted it, or the refusal to send: 403 (no
    key, missing or bad signature), 413 (too big), 415 (not a form). Nothing is parsed before the
    size and type checks (``service.providers.webform``)."""
    try:
        raw, form = await read_webhook_body(request, signature_header)
    except FormRefused as refused:
        metrics.WEBHOOK_REJECTED.labels(refused.reason).inc()
        log.warning("provider.webhook_refused", provider=provider, path=path, status=refused.status,
                    reason=refused.reason)
        return Response(str(refused), status_code=refused.status, media_type="text/plain")
    params = {key: str(value) for key, value in form.items()}
    if not has_key or not verify(raw, params):
        metrics.WEBHOOK_REJECTED.labels("bad_signature").inc()
        log.warning("provider.signature_invalid", provider=provider, path=path, has_key=has_key)
        return Response("invalid signature", status_code=403, media_type="text/plain")
    return params


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
