"""Telnyx's routes (docs/providers/telnyx.md): the TeXML voice webhook, signed with Ed25519 over
``timestamp|raw body`` (``telnyx-signature-ed25519``), answered with ``<Connect><Stream
bidirectionalMode="rtp">`` in ``CALLBRIDGE_TELNYX_CODEC`` (the single-use stream token as a
``<Parameter>``, bound to the call id Telnyx sends); the media stream (shared admission and bridging,
``service.providers.media``); the after-stream webhook (transfer, resumption or hang-up). Without
``CALLBRIDGE_TELNYX_PUBLIC_KEY`` every webhook is refused (403)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response

from service.providers.base import StreamStarted
from service.providers.jsonwire import SAFE_ID_RE
from service.providers.media import RestTransfer, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.providers.resttransfer import send_rest, telnyx_request
from service.providers.telnyx.auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    after_stream_texml,
    connect_stream_texml,
    verify_telnyx_webhook,
)
from service.providers.telnyx.dialect import (
    AFTER_STREAM_PATH,
    MEDIA_PATH,
    STREAM_TOKEN_PARAMETER,
    VOICE_PATH,
    TelnyxDialect,
)
from service.providers.transfer import markup_target, transfer_target
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


async def _signed_form(gateway: Gateway, request: Request, path: str) -> dict[str, str] | Response:
    settings = gateway.settings
    key = settings.telnyx_public_key.get_secret_value()
    return await signed_form(
        request, path, provider="telnyx", signature_header=SIGNATURE_HEADER, has_key=bool(key),
        verify=lambda raw, _form: verify_telnyx_webhook(key, raw, request.headers.get(SIGNATURE_HEADER),
                                                        request.headers.get(TIMESTAMP_HEADER),
                                                        tolerance_s=settings.telnyx_signature_tolerance_s))


def _call_id(params: dict[str, str]) -> str:
    call_id = params.get("CallSid", "")
    return call_id if SAFE_ID_RE.fullmatch(call_id) else ""  # the same rule the dialect applies to start


async def handle_voice_webhook(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, VOICE_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_id = _call_id(params)
    if not call_id:
        return Response("missing or malformed CallSid", status_code=400, media_type="text/plain")
    if not settings.streams_enabled:
        log.error("telnyx.voice_refused", call_id=call_id, reason="no stream-token secret")
        return Response("streams unavailable", status_code=503, media_type="text/plain")
    token = call_stream_token(settings, call_id)
    texml = connect_stream_texml(settings.public_url, token, settings.telnyx_codec,
                                 caller_parameters(params))
    log.info("telnyx.voice_answered", call_id=call_id, caller=mask_number(params.get("From")))
    prewarm_call(gateway, call_id)  # open the model session while the stream is set up
    return Response(texml, media_type=_XML)


async def handle_after_stream(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, AFTER_STREAM_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_id = _call_id(params)

    def resume() -> Response:
        token = call_stream_token(settings, call_id)
        caller = caller_parameters(params)
        return Response(connect_stream_texml(settings.public_url, token, settings.telnyx_codec, caller),
                        media_type=_XML)

    def end(escalated: bool) -> Response:
        queue, dial = markup_target(settings.telnyx_transfer_to, settings.transfer_number, settings.transfer_queue)
        return Response(after_stream_texml(escalated, queue, dial), media_type=_XML)

    return await after_stream_response(gateway, "telnyx", call_id, resume=resume, end=end)


def _rest_transfer(gateway: Gateway, started: StreamStarted) -> RestTransfer | None:
    """With CALLBRIDGE_TRANSFER_VIA_REST and an API key: Call Control ``transfer`` (numbers and SIP URIs; a
    queue target is left to the TeXML after-stream)."""
    settings = gateway.settings
    key = settings.telnyx_api_key.get_secret_value()
    if not (settings.transfer_via_rest and key):
        return None
    target = transfer_target(settings.telnyx_transfer_to, settings.transfer_number, settings.transfer_queue)
    request = telnyx_request(settings.telnyx_api_base, key, started.call_id, target)
    if request is None:
        return None
    return lambda: send_rest(request, provider="telnyx", call_id=started.call_id)


async def _media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    await run_media_stream(gateway, socket, TelnyxDialect(gateway.settings.telnyx_codec),
                           token_parameter=STREAM_TOKEN_PARAMETER,
                           rest_transfer=lambda started: _rest_transfer(gateway, started))


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Telnyx's routes: the two signed webhooks and the media stream."""
    install_routes(app, gateway, media_routes, voice_path=VOICE_PATH, after_stream_path=AFTER_STREAM_PATH,
                   media_path=MEDIA_PATH, voice=handle_voice_webhook, after_stream=handle_after_stream,
                   media=lambda socket: _media_stream(gateway, socket))


PROVIDER = Provider("telnyx", install)
