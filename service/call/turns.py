"""Reply tracker for turn-based model dialects (Realtime): which response is active, whether a
``response.create`` is in flight or waiting, which responses were cancelled (their late deltas are
dropped), and the tool calls each response carries.

    IDLE --request--> REQUESTED --created--> ACTIVE --done--> IDLE
    IDLE --created--> ACTIVE          (the server's own response after the caller's turn)
    ACTIVE --created--> ACTIVE        (a newer response replaces the one we thought active)
    REQUESTED --refused--> IDLE       (``conversation_already_has_active_response``: asked again later)
    any --stale_done--> same          (``response.done`` of a response that is not the active one)
    any --reset--> IDLE               (the session was replaced: its responses are gone)

At most one ``response.create`` is outstanding; a request made while busy waits (``pending``, the
last one wins) until ``done``. Memory is bounded whatever the server sends: 16 dropped response ids,
16 responses with tool calls x 16 calls each, 16 tool names in flight (oldest evicted first; the
argument strings themselves are capped by the bridge at 64 KiB each).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import structlog

from service.call.machine import Machine

log = structlog.get_logger(__name__)

MAX_TOOL_STATE = 16


class ReplyState(enum.Enum):
    IDLE = "idle"
    REQUESTED = "requested"
    ACTIVE = "active"


REPLY_EVENTS = ("request", "created", "done", "stale_done", "refused", "reset")
REPLY_TRANSITIONS: dict[tuple[ReplyState, str], ReplyState] = {
    (ReplyState.IDLE, "request"): ReplyState.REQUESTED,
    (ReplyState.IDLE, "created"): ReplyState.ACTIVE,
    (ReplyState.REQUESTED, "created"): ReplyState.ACTIVE,
    (ReplyState.ACTIVE, "created"): ReplyState.ACTIVE,
    (ReplyState.ACTIVE, "done"): ReplyState.IDLE,
    (ReplyState.REQUESTED, "refused"): ReplyState.IDLE,
    **{(state, "stale_done"): state for state in ReplyState},
    **{(state, "reset"): ReplyState.IDLE for state in ReplyState},
}


class ReplyTracker:
    """See the module docstring. Pure: no I/O; the bridge sends what the methods tell it to."""

    def __init__(self) -> None:
        self.machine: Machine[ReplyState] = Machine("replies", ReplyState.IDLE, REPLY_TRANSITIONS)
        self.active: str | None = None
        self.pending: str | None = None  # instructions of a waiting request ("" = none)
        self._dropped: deque[str] = deque(maxlen=MAX_TOOL_STATE)
        self._tool_names: dict[str, str] = {}
        self._tool_calls: dict[str, list[tuple[str, str, str]]] = {}

    @property
    def state(self) -> ReplyState:
        return self.machine.state

    @property
    def busy(self) -> bool:
        return self.state is not ReplyState.IDLE

    def request(self, instructions: str | None) -> bool:
        """True: send ``response.create`` now. False: it waits in ``pending`` until ``done``."""
        if self.busy:
            self.pending = instructions or ""
            return False
        self.machine.fire("request")
        return True

    def created(self, response_id: str) -> None:
        self.machine.fire("created")
        self.active = response_id

    def done(self, response_id: str) -> bool:
        """``response.done``; True if it ended the active response."""
        if self.state is ReplyState.ACTIVE and response_id == self.active:
            self.machine.fire("done")
            self.active = None
            return True
        self.machine.fire("stale_done")
        return False

    def refused(self) -> None:
        """The server refused our create (a response was active after all): ask again after done."""
        self.machine.fire("refused")
        self.pending = self.pending or ""

    def take_pending(self) -> str | None:
        pending, self.pending = self.pending, None
        return pending

    def drop_active(self) -> str | None:
        """The active response is being cancelled: its late deltas will be dropped. Returns its id."""
        if self.active is not None:
            self._dropped.append(self.active)
        return self.active

    def is_dropped(self, response_id: str) -> bool:
        return response_id in self._dropped

    def reset(self) -> None:
        self.machine.fire("reset")
        self.active = self.pending = None
        self._tool_names.clear()
        self._tool_calls.clear()

    # --- tool calls ----------------------------------------------------------------------------------
    def tool_call_started(self, call_id: str, name: str) -> None:
        _bounded_put(self._tool_names, call_id, name)

    def tool_call_done(self, response_id: str, call_id: str, name: str, arguments: str) -> bool:
        """Remember a finished call until its response is done; False if the response has too many."""
        name = name or self._tool_names.get(call_id, "")
        self._tool_names.pop(call_id, None)
        calls = self._tool_calls.get(response_id)
        if calls is None:
            calls = []
            _bounded_put(self._tool_calls, response_id, calls)
        if len(calls) >= MAX_TOOL_STATE:
            return False
        calls.append((call_id, name, arguments))
        return True

    def pop_tool_calls(self, response_id: str) -> list[tuple[str, str, str]]:
        return self._tool_calls.pop(response_id, [])


def _bounded_put(table: dict[str, Any], key: str, value: Any, limit: int = MAX_TOOL_STATE) -> None:
    """Insert, evicting the oldest entry first when ``limit`` entries are already there."""
    if key not in table and len(table) >= limit:
        del table[next(iter(table))]
        log.warning("realtime.tool_state_evicted", limit=limit)
    table[key] = value
