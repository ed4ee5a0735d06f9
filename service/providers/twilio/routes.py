"""Twilio's HTTP and WebSocket entry points (thin: validate, then hand over).

- ``POST /twilio/voice``: X-Twilio-Signature checked against CALLBRIDGE_PUBLIC_URL + path (403 and
  one log line on failure); answers ``<Connect><Stream>`` with a short-lived stream token bound to
  the CallSid (docs/providers/twilio.md#call-setup, #signatures, #stream-tokens). While draining, the call is redirected.
- ``WS /twilio/media``: the stream must present a valid token for its CallSid in ``start`` within
  ``CALLBRIDGE_STREAM_START_TIMEOUT_S`` or it is closed with 1008 and no Realtime session is opened.
- ``POST /twilio/after-stream``: runs when the stream socket closes (docs/providers/twilio.md#after-stream): the transfer TwiML for
  escalated calls, ``<Hangup/>`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service import metrics
from service.call.recorder import build_observer
from service.call.session import CallSession
from service.logging import bind_call_context, clear_call_context
from service.providers.base import ProtocolError, StreamConnected, StreamStarted
from service.providers.ids import TWILIO_CALL_SID, is_twilio_sid
from service.providers.provider import MediaHandler, Provider
from service.providers.streamguard import stream_guard_for
from service.providers.tokens import StreamTokenError, mint_stream_token, verify_stream_token
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
from service.providers.webform import FormRefused, read_webhook_form
from service.realtime import sessions as model_sessions
from service.redaction import cap_text, mask_number
from service.state.model_leases import model_leases_for
from service.state.resume import ResumeSeed, claim_resume, take_resume_seed
from service.wsio import MessageSocket, WebSocketClosed

if TYPE_CHECKING:
    from service.gateway import Gateway

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
    token = mint_stream_token(settings.effective_stream_token_secret(), call_sid, settings.stream_token_ttl_s)
    twiml = connect_stream_twiml(
        settings.public_url,
        token,
        {"from": params.get("From", ""), "to": params.get("To", "")},
        AFTER_STREAM_PATH,
    )
    log.info(
        "twilio.voice_answered", call_id=call_sid, caller=mask_number(params.get("From")),
        callee=mask_number(params.get("To")),
    )
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
    if not escalated and call_sid and await _resumable(gateway, call_sid):
        # The stream dropped with the call still up: a fresh stream (new single-use token) that any
        # replica can take; it re-seeds the conversation from Redis (docs/resume.md).
        token = mint_stream_token(settings.effective_stream_token_secret(), call_sid, settings.stream_token_ttl_s)
        twiml = connect_stream_twiml(settings.public_url, token,
                                     {"from": params.get("From", ""), "to": params.get("To", "")}, AFTER_STREAM_PATH)
        metrics.CALLS_RESUMED.inc()
        log.info("twilio.after_stream", call_id=call_sid, escalated=False, resumed=True)
        return Response(twiml, media_type=_XML)
    log.info("twilio.after_stream", call_id=call_sid, escalated=escalated, resumed=False)
    return Response(
        after_stream_twiml(escalated, settings.transfer_queue, settings.transfer_number), media_type=_XML
    )


async def _resumable(gateway: Gateway, call_sid: str) -> bool:
    """Claim the resumption of a dropped stream in Redis (atomic; see ``service.state.resume``)."""
    store = gateway.state_store
    if not gateway.settings.resume_calls or store is None or gateway.draining:
        return False
    try:
        verdict = await asyncio.wait_for(
            claim_resume(store.redis, store.keys, call_sid, gateway.settings.max_resumes), timeout=3.0)
    except Exception as error:  # Redis down: no resumption (the call is hung up as before)
        log.warning("call.resume_check_failed", call_id=call_sid, error=cap_text(repr(error), 200))
        return False
    if verdict == "too_many":
        log.warning("call.resume_refused", call_id=call_sid, reason="too many resumptions")
    return verdict == "resume"


class AsgiMessageSocket:
    """``MessageSocket`` over an accepted ASGI (Starlette) WebSocket: the route for any ASGI server.

    ``callbridge serve`` does not use it: there uvicorn hands ``/twilio/media`` to
    ``service.wsio.ServerWebSocket`` (see ``service.app.uvicorn_config``).
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def recv(self) -> bytes | str:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketClosed(int(message.get("code") or 1006), message.get("reason") or "")
        return message.get("text") or message.get("bytes") or b""

    async def send(self, text: str) -> None:
        try:
            await self._websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:  # RuntimeError: WebSocketDisconnected
            raise WebSocketClosed(getattr(error, "code", 1006)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await self._websocket.close(code=code, reason=reason)


#: Before a valid ``start`` the peer is unauthenticated: at most this many messages (``connected``,
#: ``start``, a malformed one or two), each at most this long (our own ``start`` with its token is
#: about 1 KB). docs/security.md, "Unauthenticated connections"; docs/providers/twilio.md, "Stream start".
PRE_START_MAX_MESSAGES = 4
PRE_START_MAX_BYTES = 4096


async def _await_start(
    websocket: MessageSocket, dialect: TwilioDialect, timeout_s: float, max_malformed: int
) -> StreamStarted | str:
    """Read until ``start`` (one ``connected`` may precede it). Returns the reason instead on
    timeout, close, a malformed flood, more than ``PRE_START_MAX_MESSAGES`` messages, a message over
    ``PRE_START_MAX_BYTES`` or a second ``connected``: the peer's work before ``start`` is bounded."""
    deadline = time.monotonic() + timeout_s
    malformed = 0
    messages = 0
    connected = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "no valid start in time"
        try:
            data = await asyncio.wait_for(websocket.recv(), timeout=remaining)
        except (TimeoutError, WebSocketClosed):
            return "no valid start in time"
        messages += 1
        if messages > PRE_START_MAX_MESSAGES:
            return "too many messages before start"
        if len(data) > PRE_START_MAX_BYTES:
            return "message before start too large"
        try:
            event = dialect.parse(data)
        except ProtocolError as error:
            malformed += 1
            metrics.MALFORMED_FRAMES.labels(dialect.name).inc()
            log.warning("provider.malformed_frame", error=str(error), phase="before_start")
            if malformed >= max_malformed:
                return "too many malformed frames"
            continue
        if isinstance(event, StreamStarted):
            return event
        if isinstance(event, StreamConnected):
            if connected:
                return "connected repeated"
            connected = True


async def handle_media_stream(gateway: Gateway, websocket: MessageSocket) -> None:
    """One Twilio media stream, from ``connected`` to the end of the call (the socket is open)."""
    settings = gateway.settings
    if not settings.streams_enabled:  # no key: refuse before parsing anything (docs/security.md, "Stream tokens")
        metrics.STREAM_REJECTED.labels("no_secret").inc()
        log.warning("twilio.stream_rejected", reason="no stream-token secret configured")
        await websocket.close(1008, "streams disabled")
        return
    dialect = TwilioDialect()
    started = await _await_start(websocket, dialect, settings.stream_start_timeout_s, settings.max_malformed_frames)
    if isinstance(started, str):
        metrics.STREAM_REJECTED.labels("no_start").inc()
        log.warning("twilio.stream_rejected", reason=started)
        await websocket.close(1008, "start required")
        return
    try:
        verified = verify_stream_token(
            settings.effective_stream_token_secret(),
            started.custom_parameters.get(STREAM_TOKEN_PARAMETER),
            started.call_id,
        )
    except StreamTokenError as error:
        metrics.STREAM_REJECTED.labels("token").inc()
        log.warning("twilio.stream_rejected", reason=error.reason, call_id=started.call_id)
        await websocket.close(1008, "invalid stream token")
        return
    guard = stream_guard_for(gateway)
    admission = await guard.admit(verified.token_id, verified.expires_at, started.call_id, started.stream_id)
    if admission != "ok":  # a replayed token, or a parallel stream for a live call (docs/security.md)
        metrics.STREAM_REJECTED.labels(admission).inc()
        log.warning("twilio.stream_rejected", reason=admission, call_id=started.call_id)
        await websocket.close(1008, "stream refused")
        return
    try:
        await _bridge_stream(gateway, websocket, dialect, started)
    finally:
        await guard.release(started.call_id, started.stream_id)


async def _bridge_stream(gateway: Gateway, websocket: MessageSocket, dialect: TwilioDialect,
                         started: StreamStarted) -> None:
    """Run one admitted stream's call to its end."""
    settings = gateway.settings

    bind_call_context(call_id=started.call_id, stream_id=started.stream_id, provider="twilio")
    metrics.CALLS_STARTED.labels("twilio").inc()
    log.info(
        "call.started",
        caller=mask_number(started.custom_parameters.get("from")),
        callee=mask_number(started.custom_parameters.get("to")),
        realtime_provider=settings.provider,
    )

    seed = await _resume_seed(gateway, started.call_id)
    observer = build_observer(gateway, started, "twilio", seed.started_at if seed else "")
    rest_transfer = None
    if settings.transfer_via_rest and settings.twilio_account_sid:
        account_sid, call_sid = settings.twilio_account_sid, started.call_id

        async def rest_transfer() -> bool:
            return await update_call_twiml(
                api_base=settings.twilio_api_base, account_sid=account_sid,
                auth_token=settings.twilio_auth_token.get_secret_value(), call_sid=call_sid,
                twiml=after_stream_twiml(True, settings.transfer_queue, settings.transfer_number),
            )

    model = model_sessions.model_side(settings)
    session = CallSession(
        settings=settings,
        dialect=model.dialect,
        session_config=model.config,
        open_session=model.open,
        codec=(started.encoding, started.sample_rate),
        call_id=started.call_id,
        stream_id=started.stream_id,
        provider=dialect,
        socket=websocket,
        observer=observer,
        rest_transfer=rest_transfer,
        resume=(seed.turns, settings.resume_line) if seed else None,
        model_slots=model_leases_for(gateway) if settings.max_model_sessions else None,
    )
    if seed is not None:
        session.bridge.stats.resumed = seed.resumes
        log.info("call.resumed", resumes=seed.resumes, turns=len(seed.turns))
    observer.attach(session.bridge)
    gateway.register(started.call_id, session)
    try:
        summary = await session.run()
        metrics.CALLS_ENDED.labels(summary["outcome"]).inc()
    finally:
        gateway.unregister(started.call_id)
        clear_call_context()


async def _resume_seed(gateway: Gateway, call_id: str) -> ResumeSeed | None:
    """The conversation so far if this stream resumes a dropped one (marked by after-stream)."""
    if gateway.state_store is None:
        return None
    try:
        return await asyncio.wait_for(take_resume_seed(gateway.state_store, call_id), timeout=2.0)
    except Exception as error:  # Redis down: the call goes on as a new conversation
        log.warning("call.resume_seed_failed", error=cap_text(repr(error), 200))
        return None


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Twilio's routes: the two signed webhooks and the media stream (also as an ASGI route)."""

    @app.post(VOICE_PATH)
    async def twilio_voice(request: Request) -> Response:
        return await handle_voice_webhook(gateway, request)

    @app.post(AFTER_STREAM_PATH)
    async def twilio_after_stream(request: Request) -> Response:
        return await handle_after_stream(gateway, request)

    async def twilio_media_stream(socket: MessageSocket) -> None:
        await handle_media_stream(gateway, socket)

    media_routes[MEDIA_PATH] = twilio_media_stream

    @app.websocket(MEDIA_PATH)
    async def twilio_media(websocket: WebSocket) -> None:
        await websocket.accept()
        await twilio_media_stream(AsgiMessageSocket(websocket))


PROVIDER = Provider("twilio", install)
