"""Exotel's routes (docs/providers/exotel.md): the Voicebot applet's media socket ``/exotel/media`` and the
Passthru endpoint ``GET /exotel/passthru`` that the call flow asks after the applet.

Exotel answers no webhook of ours before streaming, so there is no stream token: the socket is
authenticated by HTTP Basic on the upgrade (``CALLBRIDGE_EXOTEL_STREAM_USER`` / ``_PASSWORD``, written into
the applet URL); a missing or wrong credential closes it with 1008 before anything is parsed, and no model
session opens. The audio rate is the one the applet URL asks for (``?sample-rate=``, Exotel's default
8000). The Passthru answer branches the flow: 200 for an escalated call (wire that branch to a Connect
applet: the agents), 302 otherwise (Hangup). The Passthru request carries the same Basic credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import structlog
from fastapi import FastAPI, Request, Response, WebSocket

from service import metrics
from service.providers.exotel.auth import passthru_status, verify_basic_auth
from service.providers.exotel.dialect import MEDIA_PATH, SAMPLE_RATES, ExotelDialect
from service.providers.media import AsgiMessageSocket, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.wsio import MessageSocket, upgrade_request

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)

PASSTHRU_PATH = "/exotel/passthru"
DEFAULT_RATE = 8000
"""Exotel streams at 8 kHz when the applet URL names no ``sample-rate``."""
_MAX_QUERY = 512
_CALL_SID_MAX = 64


def sample_rate_of(query: str) -> int:
    """The ``sample-rate`` of the applet URL's query (``DEFAULT_RATE`` when absent). ``ValueError`` for an
    oversized query, a repeated or non-numeric value, or a rate Exotel does not offer."""
    if len(query) > _MAX_QUERY:
        raise ValueError("query string too long")
    values = parse_qs(query, max_num_fields=8).get("sample-rate")
    if not values:
        return DEFAULT_RATE
    if len(values) != 1 or not values[0].isdigit() or int(values[0]) not in SAMPLE_RATES:
        raise ValueError("sample-rate must be one of 8000, 16000, 24000")
    return int(values[0])


def _credentials_ok(gateway: Gateway, authorization: str | None) -> bool:
    settings = gateway.settings
    return verify_basic_auth(authorization, settings.exotel_stream_user,
                             settings.exotel_stream_password.get_secret_value())


async def media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    """One Voicebot stream: Basic credentials, the rate from the query, then the shared media stream."""
    upgrade = upgrade_request(socket)
    if not _credentials_ok(gateway, upgrade.header("authorization")):
        metrics.STREAM_REJECTED.labels("credentials").inc()
        log.warning("stream.rejected", provider="exotel", reason="missing or wrong HTTP Basic credentials")
        await socket.close(1008, "unauthorized")
        return
    try:
        rate = sample_rate_of(upgrade.query)
    except ValueError as error:
        metrics.STREAM_REJECTED.labels("bad_request").inc()
        log.warning("stream.rejected", provider="exotel", reason=str(error))
        await socket.close(1008, "bad sample-rate")
        return
    await run_media_stream(gateway, socket, ExotelDialect(rate), token_parameter=None)


async def handle_passthru(gateway: Gateway, request: Request) -> Response:
    """The flow's question after the Voicebot applet: 200 = to the agents, 302 = end the call; 403
    without the credentials. Never an error page: a malformed request takes the end branch."""
    if not _credentials_ok(gateway, request.headers.get("authorization")):
        metrics.WEBHOOK_REJECTED.labels("bad_signature").inc()
        log.warning("provider.signature_invalid", provider="exotel", path=PASSTHRU_PATH,
                    has_key=bool(gateway.settings.exotel_stream_user))
        return Response("unauthorized", status_code=403, media_type="text/plain")
    call_id = request.query_params.get("CallSid", "")
    valid = 0 < len(call_id) <= _CALL_SID_MAX and call_id.replace("_", "").replace("-", "").isalnum()
    escalated = valid and await gateway.is_escalated(call_id)
    status = passthru_status(escalated)
    log.info("provider.after_stream", provider="exotel", call_id=call_id if valid else "", escalated=escalated,
             resumed=False)
    return Response("agent" if escalated else "end", status_code=status, media_type="text/plain",
                    headers={} if escalated else {"Location": "/"})


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """Exotel's routes: the Basic-authenticated media socket and the Passthru endpoint."""

    async def passthru_route(request: Request) -> Response:
        return await handle_passthru(gateway, request)

    async def media_route(websocket: WebSocket) -> None:
        await websocket.accept()
        await media_stream(gateway, AsgiMessageSocket(websocket))

    app.add_api_route(PASSTHRU_PATH, passthru_route, methods=["GET"])
    app.add_api_websocket_route(MEDIA_PATH, media_route)
    media_routes[MEDIA_PATH] = lambda socket: media_stream(gateway, socket)


PROVIDER = Provider("exotel", install)
