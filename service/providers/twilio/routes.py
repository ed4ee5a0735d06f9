"""Twilio's HTTP and WebSocket entry points (thin: validate, then hand over).

- ``POST /twilio/voice``: X-Twilio-Signature checked against CALLBRIDGE_PUBLIC_URL + path (403 and
  one log line on failure); answers ``<Connect><Stream>`` with a short-lived stream token bound to
  the CallSid (docs/providers/twilio.md#call-setup, #signatures, #stream-tokens). While draining, the call is redirected.
- ``WS /twilio/media``: the stream must present a valid token for its CallSid in ``start`` within
  ``CALLBRIDGE_STREAM_START_TIMEOUT_S`` or it is closed with 1008 and no Realtime session is opened.
- ``POST /twilio/after-stream``: runs when the stream socket closes (docs/providers/twilio.md#after-stream): the first
  transfer step for escalated calls (``transfer_routes``: warm/cold, fallbacks, TaskRouter), ``<Hangup/>`` otherwise.
- ``/twilio/transfer/*``: the warm transfer's whisper and dial callbacks and the hold clip (``transfer_routes``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response, WebSocket

from service import metrics
from service.providers.base import StreamStarted
from service.providers.ids import TWILIO_CALL_SID, is_twilio_sid
from service.providers.media import AsgiMessageSocket, RestTransfer, claim_resumption, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.providers.twilio import transfer_routes
from service.providers.twilio.dialect import (
    AFTER_STREAM_PATH,
    MEDIA_PATH,
    SIGNATURE_HEADER,
    STREAM_TOKEN_PARAMETER,
    VOICE_PATH,
    TwilioDialect,
    after_stream_twiml,
    connect_stream_twiml,
    redirect_twiml,
    reject_twiml,
    validate_twilio_request,
)
from service.providers.twilio.rest import update_call_twiml
from service.providers.twilio.transfer_routes import first_step_twiml
from service.providers.webform import FormRefused, read_webhook_form
from service.realtime.prewarm import prewarm_call
from service.redaction import mask_number
from service.wsio import MessageSocket

if TYPE_CHECKING:
    from service.gateway import Gateway

from service.providers.webhooks import call_stream_token, caller_parameters

log = structlog.get_logger(__name__)
_XML = "application/xml"


async def _validated_form(gateway: Gateway, request: Request, path: str) -> dict[str, str] | Response:
    """The signed form, or the refusal to send (403 bad/missing signature, 413 too big, 415 not a form)."""
    try:
        form = await read_webhook_form(request, SIGNATURE_HEADER)
    except FormRefused as refused:
        metrics.WEBHOOK_REJECTED.labels(refused.reason).inc()
        log.warning("twilio.webhook_refused", path=path, status=refused.status, reason=refused.reason,
                    client=request.client.host if request.client else "")
        return Response(str(refused), status_code=refused.status, media_type="text/plain")
    settings = gateway.settings
    ok = validate_twilio_request(
        settings.twilio_auth_token.get_secret_value(),
        settings.public_url,
        path,
        form,
        request.headers.get("X-Twilio-Signature"),
        query=request.url.query,
        signature_settings=request.headers.get("X-Twilio-Webhooks-Signature-Settings"),
    )
    if not ok:
        metrics.WEBHOOK_REJECTED.labels("bad_signature").inc()
        log.warning(
            "twilio.signature_invalid",
            path=path,
            has_signature=request.headers.get("X-Twilio-Signature") is not None,
            client=request.client.host if request.client else "",
        )
        return Response("invalid signature", status_code=403, media_type="text/plain")
    return {key: str(value) for key, value in form.items()}


async def handle_voice_webhook(gateway: Gateway, request: Request) -> Response:
    params = await _validated_form(gateway, request, VOICE_PATH)
    if isinstance(params, Response):
        return params
    settings = gateway.settings
    call_sid = params.get("CallSid", "")
    if not is_twilio_sid(call_sid, TWILIO_CALL_SID):
        log.warning("twilio.voice_missing_callsid", present=bool(call_sid))
        return Response("missing or malformed CallSid", status_code=400, media_type="text/plain")
    if gateway.draining:
        metrics.WEBHOOK_REJECTED.labels("draining").inc()
        log.info("twilio.voice_redirected_draining", call_id=call_sid)
        return Response(redirect_twiml(settings.public_url + VOICE_PATH), media_type=_XML)
    if not settings.streams_enabled:  # unreachable today (no auth token = no valid signature); kept explicit
        log.error("twilio.voice_refused", reason="no stream-token secret configured", call_id=call_sid)
        return Response("streams disabled", status_code=503, media_type="text/plain")
    token = call_stream_token(settings, call_sid)
    twiml = connect_stream_twiml(
        settings.public_url,
        token,
        caller_parameters(params),
        AFTER_STREAM_PATH,
    )
    log.info(
        "twilio.voice_answered", call_id=call_sid, caller=mask_number(params.get("From")),
        callee=mask_number(params.get("To")),
    )
    prewarm_call(gateway, call_sid)  # open the model session while the stream is set up
    return Response(twiml, media_type=_XML)


async def handle_after_stream(gateway: Gateway, request: Request) -> Response:
    params = await _validated_form(gateway, request, AFTER_STREAM_PATH)
    if isinstance(params, Response):
        return params
    call_sid = params.get("CallSid", "")
    if not is_twilio_sid(call_sid, TWILIO_CALL_SID):
        call_sid = ""  # never a Redis key or a log value; an unknown call is not escalated
    escalated = await gateway.is_escalated(call_sid)
    settings = gateway.settings
    if not escalated and call_sid and await gateway.is_overflowed(call_sid):
        log.info("twilio.after_stream", call_id=call_sid, escalated=False, resumed=False, overflow=True)
        return Response(reject_twiml(settings.overflow_message), media_type=_XML)
    if not escalated and call_sid and await claim_resumption(gateway, call_sid):
        # The stream dropped with the call still up: a fresh stream (new single-use token) that any
        # replica can take; it re-seeds the conversation from Redis (docs/resume.md).
        token = call_stream_token(settings, call_sid)
        twiml = connect_stream_twiml(settings.public_url, token,
                                     caller_parameters(params), AFTER_STREAM_PATH)
        metrics.CALLS_RESUMED.inc()
        log.info("twilio.after_stream", call_id=call_sid, escalated=False, resumed=True)
        return Response(twiml, media_type=_XML)
    log.info("twilio.after_stream", call_id=call_sid, escalated=escalated, resumed=False)
    if escalated:
        return Response(await first_step_twiml(gateway, call_sid, params), media_type=_XML)
    return Response(after_stream_twiml(False, settings.transfer_queue, settings.transfer_number), media_type=_XML)


def _rest_transfer(gateway: Gateway, started: StreamStarted) -> RestTransfer | None:
    """Transfer by updating the live call over Twilio's REST API, when configured."""
    settings = gateway.settings
    if not (settings.transfer_via_rest and settings.twilio_account_sid):
        return None
    account_sid, call_sid = settings.twilio_account_sid, started.call_id

    async def transfer() -> bool:
        return await update_call_twiml(
            api_base=settings.twilio_api_base, account_sid=account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(), call_sid=call_sid,
            twiml=await first_step_twiml(gateway, call_sid, {"To": started.custom_parameters.get("to", "")}),
        )

    return transfer


def handle_media_stream(gateway: Gateway, websocket: MessageSocket) -> Awaitable[None]:
    """One Twilio media stream (``service.providers.media.run_media_stream`` with Twilio's dialect)."""
    return run_media_stream(gateway, websocket, TwilioDialect(), token_parameter=STREAM_TOKEN_PARAMETER,
                            rest_transfer=lambda started: _rest_transfer(gateway, started))


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Twilio's routes: the two signed webhooks and the media stream (also as an ASGI route)."""

    @app.post(VOICE_PATH)
    async def twilio_voice(request: Request) -> Response:
        return await handle_voice_webhook(gateway, request)

    @app.post(AFTER_STREAM_PATH)
    async def twilio_after_stream(request: Request) -> Response:
        return await handle_after_stream(gateway, request)

    transfer_routes.install(app, gateway, _validated_form)

    async def twilio_media_stream(socket: MessageSocket) -> None:
        await handle_media_stream(gateway, socket)

    media_routes[MEDIA_PATH] = twilio_media_stream

    @app.websocket(MEDIA_PATH)
    async def twilio_media(websocket: WebSocket) -> None:
        await websocket.accept()
        await twilio_media_stream(AsgiMessageSocket(websocket))


PROVIDER = Provider("twilio", install)
