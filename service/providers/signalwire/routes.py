"""SignalWire's routes (docs/providers/signalwire.md): the signed voice webhook answered with cXML
``<Connect><Stream>`` (wss only; the single-use stream token as a ``<Parameter>``), the media stream
(shared admission and bridging, ``service.providers.media``), and the after-stream webhook (transfer,
resumption, overflow message or hang-up). Without ``CALLBRIDGE_SIGNALWIRE_SIGNING_KEY`` every webhook
is refused (403): the gateway never runs open."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response

from service.providers.base import StreamStarted
from service.providers.media import RestTransfer, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.providers.resttransfer import send_rest, signalwire_request
from service.providers.signalwire.auth import (
    SIGNATURE_HEADER,
    after_stream_cxml,
    connect_stream_cxml,
    validate_signalwire_request,
)
from service.providers.signalwire.dialect import (
    AFTER_STREAM_PATH,
    MEDIA_PATH,
    STREAM_TOKEN_PARAMETER,
    VOICE_PATH,
    SignalWireDialect,
)
from service.providers.transfer import markup_target
from service.providers.webhooks import (
    after_stream_response,
    call_stream_token,
    caller_parameters,
    install_routes,
    signed_form,
)
from service.realtime.prewarm import prewarm_call
from service.redaction import mask_number
from service.wsio import MessageSocket

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)
_XML = "application/xml"
_MAX_CALL_ID = 64


async def _signed_form(gateway: Gateway, request: Request, path: str) -> dict[str, str] | Response:
    settings = gateway.settings
    key = settings.signalwire_signing_key.get_secret_value()
    return await signed_form(
        request, path, provider="signalwire", signature_header=SIGNATURE_HEADER, has_key=bool(key),
        verify=lambda _raw, form: validate_signalwire_request(key, settings.public_url, path, form,
                                                              request.headers.get(SIGNATURE_HEADER),
                                                              query=request.url.query))


def _call_id(params: dict[str, str]) -> str:
    call_id = params.get("CallSid", "")
    return call_id if 0 < len(call_id) <= _MAX_CALL_ID and call_id.replace("-", "").isalnum() else ""


async def handle_voice_webhook(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, VOICE_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_id = _call_id(params)
    if not call_id:
        return Response("missing or malformed CallSid", status_code=400, media_type="text/plain")
    if not settings.streams_enabled or not settings.public_url.startswith("https://"):
        # SignalWire refuses ws:// stream URLs; without a stream-token key nothing may stream
        log.error("signalwire.voice_refused", call_id=call_id,
                  reason="CALLBRIDGE_PUBLIC_URL must be https" if settings.streams_enabled else "no stream-token secret")
        return Response("streams unavailable", status_code=503, media_type="text/plain")
    token = call_stream_token(settings, call_id)
    cxml = connect_stream_cxml(settings.public_url, token, caller_parameters(params))
    log.info("signalwire.voice_answered", call_id=call_id, caller=mask_number(params.get("From")))
    prewarm_call(gateway, call_id)  # open the model session while the stream is set up
    return Response(cxml, media_type=_XML)


async def handle_after_stream(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, AFTER_STREAM_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_id = _call_id(params)

    def resume() -> Response:
        token = call_stream_token(settings, call_id)
        caller = caller_parameters(params)
        return Response(connect_stream_cxml(settings.public_url, token, caller), media_type=_XML)

    def end(escalated: bool) -> Response:
        queue, dial = markup_target(settings.signalwire_transfer_to, settings.transfer_number, settings.transfer_queue)
        return Response(after_stream_cxml(escalated, queue, dial), media_type=_XML)

    return await after_stream_response(gateway, "signalwire", call_id, resume=resume, end=end)


def _rest_transfer(gateway: Gateway, started: StreamStarted) -> RestTransfer | None:
    """With CALLBRIDGE_TRANSFER_VIA_REST and the REST credentials: point the live call at the after-stream."""
    settings = gateway.settings
    token = settings.signalwire_api_token.get_secret_value()
    if not (settings.transfer_via_rest and settings.signalwire_space_url and settings.signalwire_project_id and token):
        return None
    request = signalwire_request(settings.signalwire_space_url, settings.signalwire_project_id, token, started.call_id,
                                 settings.public_url.rstrip("/") + AFTER_STREAM_PATH)
    return lambda: send_rest(request, provider="signalwire", call_id=started.call_id)


async def _media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    await run_media_stream(gateway, socket, SignalWireDialect(), token_parameter=STREAM_TOKEN_PARAMETER,
                           rest_transfer=lambda started: _rest_transfer(gateway, started))


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """SignalWire's routes: the two signed webhooks and the media stream."""
    install_routes(app, gateway, media_routes, voice_path=VOICE_PATH, after_stream_path=AFTER_STREAM_PATH,
                   media_path=MEDIA_PATH, voice=handle_voice_webhook, after_stream=handle_after_stream,
                   media=lambda socket: _media_stream(gateway, socket))


PROVIDER = Provider("signalwire", install)
