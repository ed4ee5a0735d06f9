"""Plivo's routes (docs/providers/plivo.md): the answer webhook, signed with ``X-Plivo-Signature-V3``
(checked with the ``plivo`` package), answered with ``<Stream bidirectional="true"
keepCallAlive="true">`` in ``CALLBRIDGE_PLIVO_CONTENT_TYPE`` whose ``extraHeaders`` carry the
single-use stream token (hex: Plivo allows only letters and digits there); the media stream (shared
admission and bridging, ``service.providers.media``); the after-stream webhook (``<Redirect>`` after
``keepCallAlive``): a conference room or a dial for escalated calls, a fresh stream to resume a
dropped one, or hang-up. Without ``CALLBRIDGE_PLIVO_AUTH_TOKEN`` every webhook is refused (403)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response
from plivo import plivoxml

from service.providers.base import StreamStarted
from service.providers.jsonwire import UUID_RE
from service.providers.media import RestTransfer, run_media_stream
from service.providers.plivo.auth import (
    AFTER_STREAM_PATH,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    STREAM_TOKEN_HEADER,
    VOICE_PATH,
    stream_xml,
    token_from_header,
    transfer_xml,
    verify_plivo_webhook,
)
from service.providers.plivo.dialect import MEDIA_PATH, SETTING_CONTENT_TYPES, PlivoDialect
from service.providers.provider import MediaHandler, Provider
from service.providers.resttransfer import plivo_request, send_rest
from service.providers.transfer import transfer_target
from service.providers.webhooks import after_stream_response, call_stream_token, install_routes, signed_form
from service.realtime.prewarm import prewarm_call
from service.redaction import mask_number
from service.wsio import MessageSocket

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)
_XML = "application/xml"


async def _signed_form(gateway: Gateway, request: Request, path: str) -> dict[str, str] | Response:
    settings = gateway.settings
    key = settings.plivo_auth_token.get_secret_value()
    url = settings.public_url.rstrip("/") + path + ("?" + request.url.query if request.url.query else "")
    return await signed_form(
        request, path, provider="plivo", signature_header=SIGNATURE_HEADER, has_key=bool(key),
        verify=lambda _raw, form: verify_plivo_webhook(key, "POST", url, form, request.headers.get(SIGNATURE_HEADER),
                                                       request.headers.get(NONCE_HEADER)))


def _call_id(params: dict[str, str]) -> str:
    call_id = params.get("CallUUID", "")
    return call_id if UUID_RE.fullmatch(call_id) else ""


def _stream_answer(gateway: Gateway, call_id: str) -> Response:
    settings = gateway.settings
    token = call_stream_token(settings, call_id)
    return Response(stream_xml(settings.public_url, token, SETTING_CONTENT_TYPES[settings.plivo_content_type]),
                    media_type=_XML)


async def handle_voice_webhook(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, VOICE_PATH)
    if isinstance(params, Response):
        return params
    call_id = _call_id(params)
    if not call_id:
        return Response("missing or malformed CallUUID", status_code=400, media_type="text/plain")
    if not gateway.settings.streams_enabled:
        log.error("plivo.voice_refused", call_id=call_id, reason="no stream-token secret")
        return Response("streams unavailable", status_code=503, media_type="text/plain")
    log.info("plivo.voice_answered", call_id=call_id, caller=mask_number(params.get("From")))
    answer = _stream_answer(gateway, call_id)
    prewarm_call(gateway, call_id)  # open the model session while the stream is set up
    return answer


async def handle_after_stream(gateway: Gateway, request: Request) -> Response:
    params = await _signed_form(gateway, request, AFTER_STREAM_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_id = _call_id(params)

    def end(escalated: bool) -> Response:
        if not escalated:
            response = plivoxml.ResponseElement()
            response.add(plivoxml.HangupElement())
            return Response(str(response.to_string(pretty=False)), media_type=_XML)
        target = transfer_target(settings.plivo_transfer_to, settings.transfer_number, settings.transfer_queue)
        if target.kind == "sip":
            xml = transfer_xml(sip_uri=target.value)
        elif target.kind == "number":
            xml = transfer_xml(number=target.value)
        else:  # Plivo has no queue: a named conference room where agents pick the caller up
            xml = transfer_xml(conference=target.value)
        return Response(xml, media_type=_XML)

    return await after_stream_response(gateway, "plivo", call_id, resume=lambda: _stream_answer(gateway, call_id),
                                       end=end)


def _token(started: StreamStarted) -> str | None:
    return token_from_header(started.custom_parameters.get(STREAM_TOKEN_HEADER))


def _rest_transfer(gateway: Gateway, started: StreamStarted) -> RestTransfer | None:
    """With CALLBRIDGE_TRANSFER_VIA_REST and an Auth ID: move the caller's leg to the after-stream XML."""
    settings = gateway.settings
    token = settings.plivo_auth_token.get_secret_value()
    if not (settings.transfer_via_rest and settings.plivo_auth_id and token):
        return None
    request = plivo_request(settings.plivo_api_base, settings.plivo_auth_id, token, started.call_id,
                            settings.public_url.rstrip("/") + AFTER_STREAM_PATH)
    return lambda: send_rest(request, provider="plivo", call_id=started.call_id)


async def _media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    dialect = PlivoDialect(SETTING_CONTENT_TYPES[gateway.settings.plivo_content_type])
    await run_media_stream(gateway, socket, dialect, token_parameter=STREAM_TOKEN_HEADER, token_of=_token,
                           rest_transfer=lambda started: _rest_transfer(gateway, started))


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Plivo's routes: the two signed webhooks and the media stream."""
    install_routes(app, gateway, media_routes, voice_path=VOICE_PATH, after_stream_path=AFTER_STREAM_PATH,
                   media_path=MEDIA_PATH, voice=handle_voice_webhook, after_stream=handle_after_stream,
                   media=lambda socket: _media_stream(gateway, socket))


PROVIDER = Provider("plivo", install)
