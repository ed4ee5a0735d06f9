"""The softphone's media route: the same admission and call bridge as a carrier's stream
(``service.providers.media.run_media_stream``). Instead of a carrier's signed webhook, the console
(operator login) issues the call id and its single-use stream token (``issue_call``); the page
sends both in its ``start`` frame. Not a carrier, so not in ``service.providers.registry``: the console
installs it (``service.console.routes.mount``), only when it is on (``CALLBRIDGE_CONSOLE_TOKEN``).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from fastapi import FastAPI, WebSocket

from service.providers.browser.dialect import CALL_ID_PREFIX, MEDIA_PATH, BrowserDialect
from service.providers.media import AsgiMessageSocket, run_media_stream
from service.providers.provider import MediaHandler, Provider
from service.providers.webhooks import call_stream_token

if TYPE_CHECKING:
    from service.config import Settings
    from service.gateway import Gateway
    from service.wsio import MessageSocket


def issue_call(settings: Settings) -> dict[str, str]:
    """A fresh softphone call id and its stream token (valid ``CALLBRIDGE_STREAM_TOKEN_TTL_S``, single
    use), for a console-authenticated page. Raises ``ValueError`` when no stream-token key exists."""
    call_id = f"{CALL_ID_PREFIX}-{secrets.token_hex(8)}"
    token = call_stream_token(settings, call_id)
    return {"call_id": call_id, "token": token, "media_path": MEDIA_PATH}


async def _media_stream(gateway: Gateway, socket: MessageSocket) -> None:
    await run_media_stream(gateway, socket, BrowserDialect(), token_parameter="token")


def install(app: FastAPI, gateway: Gateway, media_routes: dict[str, MediaHandler]) -> None:
    """The softphone's media socket (for ``service.wsio`` and as an ASGI route), only with the console on."""
    if not gateway.settings.console_token.get_secret_value():
        return

    async def handler(socket: MessageSocket) -> None:
        await _media_stream(gateway, socket)

    async def asgi_route(websocket: WebSocket) -> None:
        await websocket.accept()
        await handler(AsgiMessageSocket(websocket))

    app.add_api_websocket_route(MEDIA_PATH, asgi_route)
    media_routes[MEDIA_PATH] = handler


PROVIDER = Provider("browser", install)
