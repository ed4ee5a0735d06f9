"""Exotel media-socket authentication (HTTP Basic on the upgrade), the Voicebot applet URL, and the
hand-off answer for the flow after the applet. Pure functions, no I/O.

Exotel's Voicebot applet is configured in the call flow with our socket URL (docs/providers/exotel.md,
"Set-up"); there is no per-call webhook from which to answer markup, so the socket is authenticated by
the credentials written into that URL (``wss://USER:PASSWORD@host/exotel/media``), which Exotel sends as
``Authorization: Basic base64(USER:PASSWORD)`` on the upgrade, optionally together with an IP allow-list.
Both halves are compared in constant time, and the comparison runs in full even when the user is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from service.providers.exotel.dialect import (
    MAX_CUSTOM_PARAMETERS,
    MAX_CUSTOM_TOTAL,
    MEDIA_PATH,
    SAMPLE_RATES,
)

__all__ = ["PASSTHRU_AGENT", "PASSTHRU_END", "passthru_status", "verify_basic_auth", "voicebot_url"]

_MAX_HEADER = 1024
PASSTHRU_AGENT = 200
"""Passthru answer that takes the flow's first branch (wire it to the Connect applet for agents)."""
PASSTHRU_END = 302
"""Passthru answer that takes the other branch (wire it to Hangup)."""


def verify_basic_auth(authorization: str | None, user: str, password: str) -> bool:
    """True iff ``authorization`` is ``Basic base64(user:password)`` for the configured pair. An empty
    configured user or password refuses everything. Never raises; never logs."""
    if not user or not password or not authorization or len(authorization) > _MAX_HEADER:
        return False
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    given_user, sep, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return bool(sep) and user_ok and password_ok


def voicebot_url(
    public_url: str,
    sample_rate: int = 8000,
    *,
    user: str = "",
    password: str = "",
    custom: Mapping[str, str] | None = None,
) -> str:
    """The URL to paste into the Voicebot applet: ``wss://[user:password@]host/exotel/media?sample-rate=N``
    plus up to 3 custom key/values (256 characters in all) that Exotel returns in
    ``start.custom_parameters``. ``ValueError`` for a non-https public URL, a bad rate or too much custom
    data. The result contains the password: show it to the operator, never log it."""
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("the Voicebot applet URL must be wss://: CALLBRIDGE_PUBLIC_URL must be https")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError("sample_rate must be 8000, 16000 or 24000")
    extra = dict(custom or {})
    if len(extra) > MAX_CUSTOM_PARAMETERS or sum(len(k) + len(v) for k, v in extra.items()) > MAX_CUSTOM_TOTAL:
        raise ValueError(f"at most {MAX_CUSTOM_PARAMETERS} custom parameters, {MAX_CUSTOM_TOTAL} characters in all")
    if "sample-rate" in extra:
        raise ValueError("'sample-rate' is set by the sample_rate argument")
    host = parts.netloc.rpartition("@")[2]
    if user or password:
        if not (user and password):
            raise ValueError("give both user and password, or neither")
        host = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    query = urlencode({"sample-rate": str(sample_rate), **extra})
    return urlunsplit(("wss", host, parts.path.rstrip("/") + MEDIA_PATH, query, ""))


def passthru_status(escalated: bool) -> int:
    """The HTTP status our Passthru endpoint answers after the Voicebot applet: ``PASSTHRU_AGENT`` for a
    call the bot escalated, ``PASSTHRU_END`` otherwise (the flow branches on it)."""
    return PASSTHRU_AGENT if escalated else PASSTHRU_END
