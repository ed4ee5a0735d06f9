"""The call's side of the model session: attaching a socket, configuring it, replacing a lost one,
and sending client events (docs/models/realtime.md, "Reconnecting").

Guarantees: the configuration goes out before any caller audio, then the audio held while the
session was not configured, in arrival order, then live audio (``CallerLeg``); a client event sent
while there is no session is dropped and logged, never raised; a replacement session gets the same
configuration plus the conversation so far in its instructions (seeding it as items risks
text-only replies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from service.call.history import ConversationHistory
from service.call.legs import CallerLeg
from service.call.link import LinkState, ModelLink, SendText
from service.realtime import events as rt

log = structlog.get_logger(__name__)


class ModelSide:
    """``caller`` is bound after construction (the caller leg needs ``lost`` first)."""

    def __init__(self, link: ModelLink, dialect: rt.RealtimeDialect, config: rt.SessionConfig,
                 history: ConversationHistory, *, resumed: bool,
                 on_replaced: Callable[[], None]) -> None:
        self.link = link
        self._rt, self._config, self._history = dialect, config, history
        self._resumed = resumed
        self._on_replaced = on_replaced
        self.caller: CallerLeg | None = None

    async def attach(self, to_model: SendText, immediate: rt.ImmediateSend | None = None) -> None:
        """The model session is connected. ``immediate``: the transport's synchronous send, if any."""
        self.link.attach(to_model, immediate)
        if self._rt.client_speaks_first:
            await self.configure()

    async def attach_configured(self, to_model: SendText, immediate: rt.ImmediateSend | None = None) -> None:
        """A session already configured (pre-warmed with this same configuration): the held caller
        audio goes out at once, then live audio; the caller treats it as ``session.updated``."""
        self.link.attach(to_model, immediate)
        self.link.configure()
        if self.caller is not None:
            await self.caller.send_held(self.send)

    async def reattach(self, to_model: SendText, immediate: rt.ImmediateSend | None = None) -> None:
        """A replacement session after the old one dropped (there is no resume). Caller audio is held
        until it is configured; ``on_replaced`` resets the per-session state of the reply tracker and
        the hand-off (an unspoken hand-off line is asked of the new session)."""
        self.lost()  # the old session, if nobody said so yet
        self.link.attach(to_model, immediate)
        self._on_replaced()
        if self._rt.client_speaks_first:
            await self.configure()

    def lost(self) -> None:
        """The model session is gone: hold caller audio, drop other client events until reattached.
        A no-op before the first attach and after the call closed the link."""
        if self.link.machine.accepts("lost"):
            self.link.lost()

    async def session_created(self) -> None:
        """The server spoke first (Realtime): configure now."""
        if self.link.state is LinkState.AWAITING_SESSION:
            await self.configure()

    async def configure(self) -> None:
        """Send the configuration, then the held caller audio in order, then let audio flow live."""
        await self.send(self._rt.session_update(self.session_config()))
        self.link.configure()
        if self.caller is not None:
            await self.caller.send_held(self.send)

    def session_config(self) -> rt.SessionConfig:
        """The configuration, with the conversation so far for a replacement or resumed session."""
        note = self._history.seed_note() if self.link.replaced or self._resumed else ""
        return replace(self._config, instructions=self._config.instructions + note) if note else self._config

    async def send(self, text: str) -> None:
        """Send a client event; dropped (logged) while there is no session."""
        if self.link.send is None:
            log.info("realtime.event_dropped", reason="no session", event_type=text[9:60])
            return
        try:
            await self.link.send(text)
        except rt.RealtimeClosed:
            self.lost()
            log.info("realtime.event_dropped", reason="session closed", event_type=text[9:60])
