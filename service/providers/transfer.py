"""Where an escalated call goes after the hand-off line, per carrier. Pure, no I/O.

Each carrier has one optional override setting (``CALLBRIDGE_<CARRIER>_TRANSFER_TO``) written as
``queue:<name>``, ``sip:<uri>`` / ``sips:<uri>``, or a number (``+`` and digits). Empty means the
gateway-wide ``CALLBRIDGE_TRANSFER_NUMBER`` (a number or SIP URI) if set, else the queue
``CALLBRIDGE_TRANSFER_QUEUE``. What a "queue" is depends on the carrier (Twilio/SignalWire/Telnyx
``<Enqueue>``, a Plivo conference room, a Vonage named conversation); docs/transfer.md has the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["TransferTarget", "check_transfer_to", "markup_target", "transfer_target"]

_NUMBER = re.compile(r"\+?[0-9]{3,15}")
_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIP = re.compile(r"sips?:[^\s<>\"']{1,250}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """``kind`` ``number`` (E.164 with or without ``+``), ``sip`` (a ``sip:``/``sips:`` URI) or ``queue``."""

    kind: Literal["number", "sip", "queue"]
    value: str


def _parse(text: str) -> TransferTarget:
    text = text.strip()
    if text.lower().startswith("queue:"):
        name = text[6:].strip()
        if not _QUEUE.fullmatch(name):
            raise ValueError("queue name must be 1-64 letters, digits, '_' or '-'")
        return TransferTarget("queue", name)
    if text.lower().startswith(("sip:", "sips:")):
        if not _SIP.fullmatch(text):
            raise ValueError("SIP URI must have no spaces, quotes or angle brackets (at most 254 characters)")
        return TransferTarget("sip", text)
    if _NUMBER.fullmatch(text):
        return TransferTarget("number", text)
    raise ValueError("must be queue:<name>, sip:<uri>, sips:<uri> or a number (+ and 3-15 digits)")


def check_transfer_to(value: str) -> str:
    """Validate a ``*_TRANSFER_TO`` setting (empty allowed); returns it stripped. ``ValueError`` otherwise."""
    if value.strip():
        _parse(value)
    return value.strip()


def transfer_target(override: str, number: str, queue: str) -> TransferTarget:
    """The target for one carrier: its ``override`` if set, else ``number`` (a number or SIP URI), else
    the queue ``queue``. ``ValueError`` when none is usable."""
    if override.strip():
        return _parse(override)
    if number.strip():
        return _parse(number)
    return _parse("queue:" + queue)


def markup_target(override: str, number: str, queue: str) -> tuple[str, str]:
    """``(queue, dial_target)`` for the Twilio-shaped after-stream markup builders (TwiML, cXML, TeXML):
    a queue target gives ``(name, "")``, a number or SIP URI ``(queue, target)``."""
    target = transfer_target(override, number, queue)
    return (target.value, "") if target.kind == "queue" else (queue, target.value)
