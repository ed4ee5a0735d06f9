"""The provider descriptor: what a carrier package contributes to the app (see
``service.providers.registry``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.gateway import Gateway
    from service.wsio import MessageSocket

MediaHandler = Callable[["MessageSocket"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Provider:
    """One carrier: ``install(app, gateway, media_routes)`` adds its HTTP routes to ``app`` and its
    media WebSocket handlers to ``media_routes`` (path -> handler; served by ``service.wsio`` under
    ``callbridge serve`` and as ASGI routes elsewhere)."""

    name: str
    install: Callable[[FastAPI, Gateway, dict[str, MediaHandler]], None]
