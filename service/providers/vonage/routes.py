"""Vonage's routes (docs/providers/vonage.md): the answer webhook ``POST /vonage/answer`` and the event
webhook ``POST /vonage/event``, both JSON and signed (HS256 JWT with ``payload_hash``, checked with
``vonage-jwt``); the answer is an NCCO ``connect`` to our websocket in L16 at ``CALLBRIDGE_VONAGE_RATE``
whose ``headers`` carry the single-use stream token and the call's UUID; the media stream (binary L16,
shared admission and bridging in ``service.providers.media``). When the websocket leg ends, Vonage posts
its status to the event webhook and runs the NCCO we answer: the hand-off for an escalated call
(``CALLBRIDGE_VONAGE_TRANSFER_TO``), a fresh ``connect`` to resume a dropped stream, or nothing (204: the
call ends). Without ``CALLBRIDGE_VONAGE_SIGNATURE_SECRET`` every webhook is refused (403)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from fastapi import FastAPI, Request, Response, WebSocket
from vonage_jwt import JwtClient

from service import metrics
from service.providers.base import StreamStarted
from service.providers.jsonwire import UUID_RE
from service.providers.media import AsgiMessageSocket, RestTransfer, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.providers.resttransfer import send_rest, vonage_request
from service.providers.transfer import transfer_target
from service.providers.vonage.auth import (
    ANSWER_PATH,
    EVENT_PATH,
    connect_ncco,
    transfer_ncco,
    verify_vonage_webhook,
)
from service.providers.vonage.dialect import CALL_UUID_HEADER, MEDIA_PATH, STREAM_TOKEN_HEADER, VonageDialect
from service.providers.webform import FormRefused, read_json_webhook_body
from service.providers.webhooks import after_stream_response, call_stream_token
from service.realtime.prewarm import prewarm_call
from service.redaction import mask_number
from service.wsio import MessageSocket

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)
_JSON = "application/json"
_SIGNATURE_HEADER = "authorization"
_LEG_ENDED = frozenset({"disconnected", "failed", "unanswered", "rejected", "timeout"})
"""Websocket-leg statuses after which Vonage runs the NCCO the event webhook answers."""


def _text(status: int, message: str) -> Response:
    return Response(message, status_code=status, media_type="text/plain")


async def _signed_json(gateway: Gateway, request: Request, path: str) -> dict[str, Any] | Response:
    """The webhook's JSON object once its JWT checked out, or the refusal (403/413/415/400)."""
    secret = gateway.settings.vonage_signature_secret.get_secret_value()
    try:
        raw = await read_json_webhook_body(request, _SIGNATURE_HEADER)
    except FormRefused as refused:
        metrics.WEBHOOK_REJECTED.labels(refused.reason).inc()
        log.warning("provider.webhook_refused", provider="vonage", path=path, status=refused.status,
                    reason=refused.reason)
        return _text(refused.status, str(refused))
    if not secret or not verify_vonage_webhook(secret, request.headers.get(_SIGNATURE_HEADER), raw):
        metrics.WEBHOOK_REJECTED.labels("bad_signature").inc()
        log.warning("provider.signature_invalid", provider="vonage", path=path, has_key=bool(secret))
        return _text(403, "invalid signature")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _refused(path, 400, "not_json_object", "body must be a JSON object")
    return body


def _refused(path: str, status: int, reason: str, message: str) -> Response:
    """A signed webhook we cannot act on (malformed body or ids): logged with its reason, answered 400."""
    log.warning("provider.webhook_refused", provider="vonage", path=path, status=status, reason=reason)
    return _text(status, message)


def _uuid(value: object) -> str:
    return value if isinstance(value, str) and UUID_RE.fullmatch(value) else ""


def _ncco(ncco: list[dict[str, Any]]) -> Response:
    return Response(orjson.dumps(ncco), media_type=_JSON)


def _connect(gateway: Gateway, call_id: str) -> Response:
    settings = gateway.settings
    token = call_stream_token(settings, call_id)
    return _ncco(connect_ncco(settings.public_url, token, call_id, settings.vonage_rate))


async def handle_answer(gateway: Gateway, request: Request) -> Response:
    body = await _signed_json(gateway, request, ANSWER_PATH)
    if isinstance(body, Response):
        return body
    call_id = _uuid(body.get("uuid"))
    if not call_id:
        return _refused(ANSWER_PATH, 400, "bad_uuid", "missing or malformed uuid")
    if not gateway.settings.streams_enabled:
        log.error("vonage.answer_refused", call_id=call_id, reason="no stream-token secret")
        return _text(503, "streams unavailable")
    caller = body.get("from")
    log.info("vonage.answered", call_id=call_id, caller=mask_number(caller if isinstance(caller, str) else None))
    answer = _connect(gateway, call_id)
    prewarm_call(gateway, call_id)  # open the model session while Vonage connects the websocket
    return answer


def _leg_call_id(body: dict[str, Any]) -> str:
    """The caller's call UUID for a websocket-leg event: the ``call_uuid`` header our NCCO set (echoed in
    ``headers``), else the event's own ``uuid``."""
    headers = body.get("headers")
    if isinstance(headers, dict):
        call_id = _uuid(headers.get(CALL_UUID_HEADER))
        if call_id:
            return call_id
    return _uuid(body.get("uuid"))


async def handle_event(gateway: Gateway, request: Request) -> Response:
    body = await _signed_json(gateway, request, EVENT_PATH)
    if isinstance(body, Response):
        return body
    status = body.get("status")
    if not isinstance(status, str) or status not in _LEG_ENDED:
        return Response(status_code=204)  # call progress events: nothing to run
    call_id = _leg_call_id(body)

    def end(escalated: bool) -> Response:
        if not escalated:
            return Response(status_code=204)  # no NCCO: the original NCCO has nothing left, the call ends
        return _ncco(_hand_off_ncco(gateway))

    if not call_id:
        return end(False)
    return await after_stream_response(gateway, "vonage", call_id, resume=lambda: _connect(gateway, call_id), end=end)


@functools.lru_cache(maxsize=4)
def _private_key(path: Path) -> str:
    return path.read_text()


def _hand_off_ncco(gateway: Gateway) -> list[dict[str, Any]]:
    settings = gateway.settings
    target = transfer_target(settings.vonage_transfer_to, settings.transfer_number, settings.transfer_queue)
    if target.kind == "number":
        return transfer_ncco(number=target.value)
    if target.kind == "sip":
        return transfer_ncco(sip_uri=target.value)
    return transfer_ncco(conversation=target.value)


def _rest_transfer(gateway: Gateway, started: StreamStarted) -> RestTransfer | None:
    """With CALLBRIDGE_TRANSFER_VIA_REST, an application ID and its private key: move the live call onto the
    hand-off NCCO at once (``PUT /v1/calls/{uuid}``, RS256 application JWT minted at transfer time)."""
    settings = gateway.settings
    key_file = settings.vonage_private_key_file
    if not (settings.transfer_via_rest and settings.vonage_application_id and key_file is not None):
        return None

    async def transfer() -> bool:
        client = JwtClient(settings.vonage_application_id, _private_key(key_file))
        app_jwt = client.generate_application_jwt()
        token = app_jwt.decode() if isinstance(app_jwt, bytes) else str(app_jwt)
        request = vonage_request(settings.vonage_api_base, token, started.call_id, _hand_off_ncco(gateway))
        return await send_rest(request, provider="vonage", call_id=started.call_id)

    return transfer


async def _media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    await run_media_stream(gateway, socket, VonageDialect(gateway.settings.vonage_rate),
                           token_parameter=STREAM_TOKEN_HEADER,
                           rest_transfer=lambda started: _rest_transfer(gateway, started))


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Vonage's routes: the two signed JSON webhooks and the binary media stream."""

    async def answer_route(request: Request) -> Response:
        return await handle_answer(gateway, request)

    async def event_route(request: Request) -> Response:
        return await handle_event(gateway, request)

    async def media_route(websocket: WebSocket) -> None:
        await websocket.accept()
        await _media_stream(gateway, AsgiMessageSocket(websocket))

    app.add_api_route(ANSWER_PATH, answer_route, methods=["POST"])
    app.add_api_route(EVENT_PATH, event_route, methods=["POST"])
    app.add_api_websocket_route(MEDIA_PATH, media_route)
    media_routes[MEDIA_PATH] = lambda socket: _media_stream(gateway, socket)


PROVIDER = Provider("vonage", install)
