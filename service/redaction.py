"""Caps and PII redaction for text that leaves the process (logs; with ``all``, Redis and webhooks).

- ``cap_text``: bounds any unverified string (a peer's field, the model's free text) before it is
  logged; the log pipeline (``service.logging``) applies it to every string field, so no single
  line can carry more than ``LOG_FIELD_MAX_CHARS`` characters of one field.
- ``redact_pii``: replaces card numbers (13-19 digits, spaces/dashes allowed, Luhn-checked), Japan's
  12-digit My Number (check digit verified), US SSNs (``123-45-6789``), e-mail addresses and phone
  numbers with a bracketed tag. Text is NFKC-normalised first, so full-width digits and the
  ideographic space in Japanese text are caught too (the result is the normalised text).
  Guarantees: pure, no I/O, linear-time patterns (no nested quantifiers), never raises on a str.

The policy (``CALLBRIDGE_PII_REDACTION``) is described in docs/security.md, "Personal data".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

__all__ = [
    "FREE_TEXT_MAX_CHARS",
    "LOG_FIELD_MAX_CHARS",
    "RedactionPolicy",
    "bounded_free_text",
    "cap_text",
    "is_luhn_valid",
    "is_my_number",
    "redact_pii",
]

RedactionPolicy = Literal["logs", "all"]

LOG_FIELD_MAX_CHARS = 512
"""Longest string field a log line carries (longer values are cut and marked)."""

# Digit runs only count when not glued to ASCII letters or digits (ids like ULIDs or hex SIDs hold
# digit runs too); Japanese text around a number does not prevent a match.
_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_ALNUM_AFTER = r"(?![A-Za-z0-9])"
_CARD = re.compile(_ALNUM_BEFORE + r"\d(?:[ -]?\d){12,18}" + _ALNUM_AFTER)
# Not part of a longer group of digits ("4111 1111 1111 1112" is not a My Number followed by 1112).
_MY_NUMBER = re.compile(_ALNUM_BEFORE + r"(?<![\d][ -])\d{4}[ -]?\d{4}[ -]?\d{4}(?![ -]?[\d])" + _ALNUM_AFTER)
_SSN = re.compile(_ALNUM_BEFORE + r"(?<![\d][ -])\d{3}[- ]\d{2}[- ]\d{4}(?![ -]?[\d])" + _ALNUM_AFTER)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}", re.ASCII)
_PHONE = re.compile(_ALNUM_BEFORE + r"\+?\d[\d\- ().]{6,24}\d" + _ALNUM_AFTER)


def cap_text(value: str, limit: int = LOG_FIELD_MAX_CHARS) -> str:
    """``value`` cut to ``limit`` characters, with the number of characters left out appended."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...(+{len(value) - limit} chars)"


FREE_TEXT_MAX_CHARS = 500
"""Longest free text a peer (the model's tool arguments) may put into a record or a log line."""


def bounded_free_text(value: object, limit: int = FREE_TEXT_MAX_CHARS) -> str:
    """A peer-supplied value as a string of at most ``limit`` characters ("" for None/empty)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)[: limit * 2]
    return text.strip()[:limit]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def is_luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_my_number(digits: str) -> bool:
    """True iff ``digits`` is 12 digits whose last is the My Number check digit (weights 2-7, 2-6 mod 11)."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    body = digits[:11]
    total = 0
    for n in range(1, 12):
        p = ord(body[11 - n]) - 48
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    remainder = total % 11
    check = 0 if remainder <= 1 else 11 - remainder
    return check == ord(digits[11]) - 48


def _card(match: re.Match[str]) -> str:
    digits = _digits(match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and is_luhn_valid(digits) else match.group(0)


def _my_number(match: re.Match[str]) -> str:
    return "[national-id]" if is_my_number(_digits(match.group(0))) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = _digits(text)
    if len(digits) >= 10 or (text.startswith("+") and len(digits) >= 8):
        return "[phone]"
    return text


def redact_pii(text: str, *, phones: bool = True) -> str:
    """``text`` (NFKC-normalised) with card numbers, national ids, e-mails and (if ``phones``) phone
    numbers replaced by ``[card]``, ``[national-id]``, ``[email]``, ``[phone]``. Order matters: cards
    first (a 16-digit card is also phone-shaped), then ids, then the rest."""
    if not text:
        return text
    normalised = unicodedata.normalize("NFKC", text)
    if not any(ch.isdigit() for ch in normalised) and "@" not in normalised:
        return normalised
    out = _CARD.sub(_card, normalised)
    out = _MY_NUMBER.sub(_my_number, out)
    out = _SSN.sub("[national-id]", out)
    out = _EMAIL.sub("[email]", out)
    if phones:
        out = _PHONE.sub(_phone, out)
    return out


# --- phone numbers: the one masker ---------------------------------------------------------------
_FORMATTING = str.maketrans("", "", "+-(). ")


def mask_number(value: str | None) -> str:
    """Mask a phone number or SIP address for logs: ``"+15551234567" -> "*******4567"``.

    Phone numbers (>= 7 digits) keep only their last 4 digits, one ``*`` per other digit; shorter
    digit strings are masked whole; ``sip:user@host`` keeps the host (``"sip:***@host"``); anything
    else (``"anonymous"``, ``client:name``) becomes ``"***"``. Empty/None gives ``""``."""
    if not value:
        return ""
    lowered = value.lower()
    if lowered.startswith(("sip:", "sips:")):
        scheme, _, rest = value.partition(":")
        _, at, host = rest.rpartition("@")
        return f"{scheme}:***@{host.split(';')[0]}" if at else f"{scheme}:***"
    digits = value.translate(_FORMATTING)
    if not (digits.isascii() and digits.isdigit()):
        return "***"
    if len(digits) < 7:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_phone_number(text: str) -> str:
    """Mask every phone-number-like run in free ``text`` as ``mask_number`` masks a field (keeping
    the last 4 digits, ``+`` kept): E.164 with ``+`` has >= 8 digits, bare national numbers >= 10
    (so dates such as 2026-11-27 stay)."""

    def _mask(match: re.Match[str]) -> str:
        found = match.group(0)
        digits = _digits(found)
        if len(digits) < (8 if found.startswith("+") else 10):
            return found
        return ("+" if found.startswith("+") else "") + mask_number(digits)

    return _PHONE.sub(_mask, text)
