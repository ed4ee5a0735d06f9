"""Provider identifier formats, checked before an id reaches a Redis key or a log line.

Twilio's ids are two letters and 32 lowercase hex digits (docs/providers/twilio.md, "Identifiers"):
CallSid ``CA...``, StreamSid ``MZ...``, AccountSid ``AC...``. Anything else is refused by the
dialect with a ``ProtocolError``, so a crafted id (``CA...:transcript``, a megabyte string) can
never collide with another call's keys or flood the log. Pure, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["TWILIO_ACCOUNT_SID", "TWILIO_CALL_SID", "TWILIO_STREAM_SID", "is_twilio_sid"]

TWILIO_CALL_SID = "CA"
TWILIO_STREAM_SID = "MZ"
TWILIO_ACCOUNT_SID = "AC"

_SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}")


def is_twilio_sid(value: object, prefix: str) -> bool:
    """True iff ``value`` is a str of exactly ``prefix`` + 32 lowercase hex digits (34 characters)."""
    return type(value) is str and len(value) == 34 and value.startswith(prefix) and _SID.fullmatch(value) is not None
