"""What the call's drivers share: the state objects and the two sends.

The bridge owns one ``CallParts`` and hands it to its drivers (``bargein``, ``responses``,
``escalating``), so each driver names exactly what it may touch and none imports the bridge (the
import graph stays acyclic). Not thread-safe: everything runs on the call's event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.call.filler import Filler, NoFiller
from service.call.handoff import Handoff
from service.call.history import ConversationHistory
from service.call.legs import BotLeg
from service.call.link import ModelLink
from service.call.machine import Machine
from service.call.observer import CallObserver
from service.call.phase import CallState
from service.call.stats import CallStats
from service.call.turns import ReplyTracker
from service.realtime import events as rt


@dataclass(eq=False, slots=True)
class CallParts:
    """``send_model`` sends one client event (dropped, logged, while there is no session); ``end``
    ends the call from either side (idempotent). ``outcome`` is what the summary reports.
    ``filler`` covers a wait with the filler clip (``service.call.filler``: ``start``/``stop``)."""

    dialect: rt.RealtimeDialect
    phase: Machine[CallState]
    link: ModelLink
    replies: ReplyTracker
    handoff: Handoff
    bot: BotLeg
    history: ConversationHistory
    stats: CallStats
    observer: CallObserver
    clock: Callable[[], float]
    send_model: Callable[[str], Awaitable[None]]
    end: Callable[[str, int], Awaitable[None]]
    outcome: str = "completed"
    filler: Filler | NoFiller = field(default_factory=NoFiller)  # start()/stop() around waits (filler.py)

    @property
    def closing(self) -> bool:
        return self.phase.state in (CallState.ENDING, CallState.ENDED)
