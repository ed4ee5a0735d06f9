"""The one shape every call-core state object shares: a named state, a transition table, and a
``fire`` that raises ``InvalidTransition`` on an event the current state does not accept.

Like h11's ``ConnectionState``: the table is the whole truth (tests walk every state x event), and
an event that is not in it is a bug or a peer's protocol violation, never silently ignored. The
dispatcher (``service.call.bridge``) decides what to do with a raised transition (peer-caused:
log and skip the event; our own: a bug that fails the call).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.Enum)


class InvalidTransition(RuntimeError):
    """``event`` is not valid in ``state`` of ``machine``."""

    def __init__(self, machine: str, state: enum.Enum, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is invalid in state {state.value!r}")
        self.machine = machine
        self.state = state
        self.event = event


class Machine(Generic[S]):
    """A state plus its transition table. ``on_change(new, old)`` runs after every change of state
    (not on self-loops). Not thread-safe: one call's event loop owns it."""

    __slots__ = ("_on_change", "_table", "name", "state")

    def __init__(
        self,
        name: str,
        initial: S,
        table: Mapping[tuple[S, str], S],
        on_change: Callable[[S, S], None] | None = None,
    ) -> None:
        self.name = name
        self.state = initial
        self._table = table
        self._on_change = on_change

    def fire(self, event: str) -> S:
        """Apply ``event``; return the new state. Raises ``InvalidTransition`` (state unchanged)."""
        target = self._table.get((self.state, event))
        if target is None:
            raise InvalidTransition(self.name, self.state, event)
        previous, self.state = self.state, target
        if target is not previous and self._on_change is not None:
            self._on_change(target, previous)
        return target

    def accepts(self, event: str) -> bool:
        return (self.state, event) in self._table
