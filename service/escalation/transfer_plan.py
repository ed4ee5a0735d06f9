"""The transfer plan: where an escalated call goes, in which order, and what each dial outcome means.

Pure and provider-neutral (docs/transfer.md, "Modes" and "Fallbacks"). A carrier adapter maps each
``TransferStep`` onto its own markup (Twilio: ``service.providers.twilio.transfer``) and feeds the
outcome of a dialled step back through ``TransferPlan.after``; the plan itself never does I/O.

    step 0 (the agent: number, or the queue when no number is set)
      --connected--> done
      --no_answer | busy | failed | machine | canceled--> next step (the configured fallbacks) ...
      --...--> no step left: the call ends with an apology (``hangup``)

Steps are addressed by index so that a stateless webhook (carried in a signed callback URL) can
say which step just ended. A plan has at most four steps, so every traffic loop through it is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TransferMode = Literal["cold", "warm"]
StepKind = Literal["dial", "queue", "bot", "hangup"]
DialOutcome = Literal["connected", "no_answer", "busy", "failed", "machine", "canceled"]

DIAL_OUTCOMES: tuple[DialOutcome, ...] = ("connected", "no_answer", "busy", "failed", "machine", "canceled")
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})
"""Answering-machine detection results that mean "not a person" (Twilio's ``AnsweredBy`` values)."""


class TransferPlanError(ValueError):
    """A step index or outcome the plan does not know (a forged or stale callback)."""


@dataclass(frozen=True)
class TransferStep:
    """One way to reach a person: ``dial`` a ``target`` (number or SIP URI; ``warm`` = briefing and
    machine detection first), the ``queue``, ``bot`` (back to the assistant), or ``hangup``."""

    kind: StepKind
    target: str = ""
    warm: bool = False


@dataclass(frozen=True)
class TransferPlan:
    """The ordered steps for escalated calls (the same for every call of one configuration)."""

    mode: TransferMode
    steps: tuple[TransferStep, ...]

    def step(self, index: int) -> TransferStep:
        if not 0 <= index < len(self.steps):
            raise TransferPlanError(f"no transfer step {index} (plan has {len(self.steps)})")
        return self.steps[index]

    def after(self, index: int, outcome: str) -> int | None:
        """The step to run after step ``index`` ended with ``outcome``; None when the call is connected
        (nothing more to do). Raises ``TransferPlanError`` for an unknown step, a non-dial step or an
        unknown outcome."""
        step = self.step(index)
        if step.kind != "dial":
            raise TransferPlanError(f"step {index} ({step.kind}) has no dial outcome")
        if outcome not in DIAL_OUTCOMES:
            raise TransferPlanError(f"unknown dial outcome {outcome!r}")
        if outcome == "connected":
            return None
        return index + 1 if index + 1 < len(self.steps) else None

    def final_after(self, index: int) -> bool:
        """True when step ``index`` is the last one (a failure there ends the call)."""
        return index + 1 >= len(self.steps)


def build_plan(*, mode: TransferMode, number: str, queue: str, fallbacks: str = "",
               fallback_number: str = "", bot_available: bool = True) -> TransferPlan:
    """The plan from configuration. Step 0 dials ``number`` when set, else enqueues; the fallbacks
    (``number``, ``queue``, ``bot``, comma-separated, in order) follow a dial step only, since a queue
    has no outcome to fall back from. ``bot`` is left out when ``bot_available`` is False (no Redis to
    resume the conversation from). A plan whose last step is a dial ends with ``hangup``."""
    warm = mode == "warm"
    steps: list[TransferStep] = []
    if number.strip():
        steps.append(TransferStep("dial", number.strip(), warm))
    elif queue.strip():
        return TransferPlan(mode, (TransferStep("queue", queue.strip()),))
    else:
        raise TransferPlanError("a transfer needs a queue or a number")
    for name in (part.strip() for part in fallbacks.split(",")):
        if name == "number" and fallback_number.strip():
            steps.append(TransferStep("dial", fallback_number.strip(), warm))
        elif name == "queue" and queue.strip():
            steps.append(TransferStep("queue", queue.strip()))
            break  # a queue has no dial outcome: nothing after it can run
        elif name == "bot" and bot_available:
            steps.append(TransferStep("bot"))
            break  # the call is back with the assistant
    if steps[-1].kind == "dial":
        steps.append(TransferStep("hangup"))
    return TransferPlan(mode, tuple(steps))


def dial_outcome(dial_status: str, *, machine: bool = False) -> DialOutcome:
    """A carrier's dial result mapped onto the plan's outcomes. ``machine`` = the agent leg was
    answered by voicemail (answering-machine detection), which ends the leg as ``completed``."""
    if machine:
        return "machine"
    status = dial_status.strip().lower()
    if status in ("completed", "answered"):
        return "connected"
    if status == "busy":
        return "busy"
    if status == "no-answer":
        return "no_answer"
    if status == "canceled":
        return "canceled"
    return "failed"
