"""The hand-off to a human: from the escalation decision to the transfer.

    NONE --escalate--> PENDING --speak--> SPEAKING --line_done--> SPOKEN --transfer--> TRANSFERRING
    PENDING | SPEAKING --transfer--> TRANSFERRING      (no model to speak, or the guard timer fired)
    SPEAKING --session_replaced--> PENDING             (the line is asked of the replacement session)
    PENDING | SPOKEN | NONE | TRANSFERRING --session_replaced--> same

PENDING waits for the active response to finish; SPEAKING means the ``response.create`` for the line
went out (``line_response`` is its id once created); SPOKEN means that response is done and the
transfer starts once the caller has heard it (playback drained). One escalation per call.
"""

from __future__ import annotations

import enum

from service.call.machine import Machine
from service.call.observer import EscalationRequest


class HandoffState(enum.Enum):
    NONE = "none"
    PENDING = "pending"
    SPEAKING = "speaking"
    SPOKEN = "spoken"
    TRANSFERRING = "transferring"


HANDOFF_EVENTS = ("escalate", "speak", "line_done", "transfer", "session_replaced")
HANDOFF_TRANSITIONS: dict[tuple[HandoffState, str], HandoffState] = {
    (HandoffState.NONE, "escalate"): HandoffState.PENDING,
    (HandoffState.PENDING, "speak"): HandoffState.SPEAKING,
    (HandoffState.SPEAKING, "line_done"): HandoffState.SPOKEN,
    **{(state, "transfer"): HandoffState.TRANSFERRING
       for state in (HandoffState.PENDING, HandoffState.SPEAKING, HandoffState.SPOKEN)},
    (HandoffState.SPEAKING, "session_replaced"): HandoffState.PENDING,
    **{(state, "session_replaced"): state for state in HandoffState if state is not HandoffState.SPEAKING},
}


class Handoff:
    """See the module docstring. Pure; the bridge performs the sends and the transfer."""

    def __init__(self) -> None:
        self.machine: Machine[HandoffState] = Machine("handoff", HandoffState.NONE, HANDOFF_TRANSITIONS)
        self.request: EscalationRequest | None = None
        self.line_response: str | None = None

    @property
    def state(self) -> HandoffState:
        return self.machine.state

    def escalate(self, request: EscalationRequest) -> None:
        self.machine.fire("escalate")
        self.request = request

    def speak(self) -> None:
        self.machine.fire("speak")
        self.line_response = None

    def response_created(self, response_id: str) -> None:
        """The first response created after ``speak`` is the one saying the line."""
        if self.state is HandoffState.SPEAKING and self.line_response is None:
            self.line_response = response_id

    def response_done(self, response_id: str) -> bool:
        """True if this ``response.done`` finished the line (now SPOKEN)."""
        if self.state is HandoffState.SPEAKING and response_id == self.line_response:
            self.machine.fire("line_done")
            return True
        return False

    def session_replaced(self) -> None:
        self.machine.fire("session_replaced")
        self.line_response = None

    def transfer(self) -> bool:
        """Start the transfer; False if it has already started (idempotent for the caller)."""
        if self.state is HandoffState.TRANSFERRING:
            return False
        self.machine.fire("transfer")
        return True
