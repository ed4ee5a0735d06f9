"""The call's phase as operators see it (the ``state`` field in Redis, logs and the console).

    CONNECTING --session_ready--> LISTENING --bot_audio--> BOT_SPEAKING --playback_done--> LISTENING
    BOT_SPEAKING --barge_in--> INTERRUPTED --bot_audio--> BOT_SPEAKING
    INTERRUPTED --playback_done--> LISTENING
    CONNECTING | LISTENING | BOT_SPEAKING | INTERRUPTED --escalate--> ESCALATING
    any live state or ESCALATING --hang_up--> ENDING --closed--> ENDED

Self-loops that carry no change are listed explicitly (more bot audio while speaking, bot audio of
the hand-off line while escalating, ...), so every other (state, event) pair raises.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from service.call.machine import Machine


class CallState(enum.StrEnum):
    CONNECTING = "connecting"
    LISTENING = "listening"
    BOT_SPEAKING = "bot_speaking"
    INTERRUPTED = "interrupted"
    ESCALATING = "escalating"
    ENDING = "ending"
    ENDED = "ended"


LIVE = (CallState.LISTENING, CallState.BOT_SPEAKING, CallState.INTERRUPTED)
PHASE_EVENTS = ("session_ready", "bot_audio", "playback_done", "barge_in", "escalate", "hang_up", "closed")

TRANSITIONS: dict[tuple[CallState, str], CallState] = {
    (CallState.CONNECTING, "session_ready"): CallState.LISTENING,
    (CallState.LISTENING, "bot_audio"): CallState.BOT_SPEAKING,
    (CallState.BOT_SPEAKING, "bot_audio"): CallState.BOT_SPEAKING,
    (CallState.INTERRUPTED, "bot_audio"): CallState.BOT_SPEAKING,
    (CallState.ESCALATING, "bot_audio"): CallState.ESCALATING,  # the hand-off line
    (CallState.BOT_SPEAKING, "playback_done"): CallState.LISTENING,
    (CallState.INTERRUPTED, "playback_done"): CallState.LISTENING,
    (CallState.ESCALATING, "playback_done"): CallState.ESCALATING,
    (CallState.BOT_SPEAKING, "barge_in"): CallState.INTERRUPTED,
    (CallState.ESCALATING, "barge_in"): CallState.ESCALATING,  # the caller talks over the hand-off line
    **{(state, "escalate"): CallState.ESCALATING for state in (CallState.CONNECTING, *LIVE)},
    **{(state, "hang_up"): CallState.ENDING for state in (CallState.CONNECTING, *LIVE, CallState.ESCALATING)},
    (CallState.ENDING, "closed"): CallState.ENDED,
}


def call_phase(on_change: Callable[[CallState, CallState], None] | None = None) -> Machine[CallState]:
    """A fresh phase machine in CONNECTING; ``on_change(new, old)`` as for ``Machine``."""
    return Machine("call", CallState.CONNECTING, TRANSITIONS, on_change)
