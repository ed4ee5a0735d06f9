"""The link to the call's model session: which socket, whether caller audio may flow, and what is
held while it may not.

    IDLE --attach--> AWAITING_SESSION --configure--> CONFIGURING --ready--> READY (--ready--> READY)
    AWAITING_SESSION | CONFIGURING | READY | LOST --lost--> LOST --attach--> AWAITING_SESSION
    any but CLOSED --close--> CLOSED

``configure`` is the moment the session configuration is sent: on the server's ``session.created``
for dialects where the server speaks first (Realtime), right after ``attach`` for dialects where the
client speaks first (GPT-Live). Caller audio flows once the held frames are sent after
``configure`` (``open_audio``); before that (and while LOST)
frames are held in a pre-buffer bounded at ``PREBUFFER_FRAMES`` (50 x 20 ms = 1 s; at most 50 x 640 B
= 32 KB for L16 16 kHz), oldest dropped first.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from service.call.machine import Machine
from service.realtime.events import ImmediateSend

SendText = Callable[[str], Awaitable[None]]
PREBUFFER_FRAMES = 50


class LinkState(enum.Enum):
    IDLE = "idle"
    AWAITING_SESSION = "awaiting_session"
    CONFIGURING = "configuring"
    READY = "ready"
    LOST = "lost"
    CLOSED = "closed"


LINK_EVENTS = ("attach", "configure", "ready", "lost", "close")
_CONNECTED = (LinkState.AWAITING_SESSION, LinkState.CONFIGURING, LinkState.READY)
LINK_TRANSITIONS: dict[tuple[LinkState, str], LinkState] = {
    (LinkState.IDLE, "attach"): LinkState.AWAITING_SESSION,
    (LinkState.LOST, "attach"): LinkState.AWAITING_SESSION,
    (LinkState.AWAITING_SESSION, "configure"): LinkState.CONFIGURING,
    (LinkState.CONFIGURING, "ready"): LinkState.READY,
    (LinkState.READY, "ready"): LinkState.READY,
    **{(state, "lost"): LinkState.LOST for state in (*_CONNECTED, LinkState.LOST)},
    **{(state, "close"): LinkState.CLOSED for state in LinkState if state is not LinkState.CLOSED},
}


class ModelLink:
    """One call's model-session link (see the module docstring). ``send`` is the socket's ordered
    send while connected; ``audio_send``/``audio_now`` are set only while caller audio may flow."""

    def __init__(self) -> None:
        self.machine: Machine[LinkState] = Machine("model_link", LinkState.IDLE, LINK_TRANSITIONS)
        self.send: SendText | None = None
        self.audio_send: SendText | None = None
        self.audio_now: ImmediateSend | None = None
        self._immediate: ImmediateSend | None = None
        self.prebuffer: deque[bytes] = deque(maxlen=PREBUFFER_FRAMES)
        # perf_counter time since when caller audio flows live (frames held earlier are not "live")
        self.live_since = math.inf
        self.sessions = 0  # sessions attached so far; > 1 means this one replaced a lost one

    @property
    def state(self) -> LinkState:
        return self.machine.state

    @property
    def replaced(self) -> bool:
        return self.sessions > 1

    def attach(self, send: SendText, immediate: ImmediateSend | None) -> None:
        self.machine.fire("attach")
        self.send, self._immediate = send, immediate
        self.sessions += 1

    def configure(self) -> None:
        """The configuration went out. Held frames are still held: the caller sends them (popping
        ``prebuffer`` in order) and then calls ``open_audio``, so no live frame overtakes them."""
        self.machine.fire("configure")

    def open_audio(self) -> None:
        """Caller audio flows live from now on (unless the session was lost meanwhile)."""
        if self.send is not None:
            self.audio_send, self.audio_now = self.send, self._immediate
            self.live_since = time.perf_counter()

    def ready(self) -> bool:
        """The server confirmed the configuration; True the first time for this session."""
        first = self.state is LinkState.CONFIGURING
        self.machine.fire("ready")
        return first

    def lost(self) -> None:
        """The session is gone: hold caller audio and drop other client events until ``attach``."""
        self.machine.fire("lost")
        self._detach()

    def close(self) -> None:
        if self.state is not LinkState.CLOSED:
            self.machine.fire("close")
            self._detach()

    def _detach(self) -> None:
        self.send = self.audio_send = None
        self.audio_now = self._immediate = None
        self.live_since = math.inf
