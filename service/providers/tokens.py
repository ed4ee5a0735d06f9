"""Short-lived stream tokens, and phone-number masking for logs.

A stream token is minted in the voice webhook (whose ``X-Twilio-Signature`` was checked), travels in the
TwiML as a ``<Parameter>``, and comes back in ``start.customParameters`` on the media WebSocket
(docs/providers/twilio.md, "Media Streams"; docs/security.md, "Stream tokens"). It proves the stream belongs to
a call this gateway (or a replica sharing the secret) answered, for that CallSid, recently.

Format (URL-safe, 91 characters)::

    v1.<expiry unix seconds>.<nonce: 16 b64url>.<call tag: 16 b64url>.<mac: 43 b64url>

``call tag`` = first 12 bytes of HMAC-SHA256(secret, "cb-call\\0" + CallSid); ``mac`` = HMAC-SHA256(secret,
everything before the last dot). The CallSid itself is not in the token. Checks run in a fixed order
(shape, signature, call, expiry) and compare in constant time; error messages never contain the token,
the secret or the CallSid. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "StreamTokenError",
    "TokenFailure",
    "VerifiedStreamToken",
    "mint_stream_token",
    "verify_stream_token",
]

TokenFailure = Literal["missing", "malformed", "bad signature", "expired", "wrong call"]

_VERSION = "v1"
_NONCE_BYTES = 12
_TAG_BYTES = 12
_MAX_TOKEN_LEN = 128
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class VerifiedStreamToken:
    """What a valid token proves: its unique id (the random nonce, for single use) and its expiry."""

    token_id: str
    expires_at: int


class StreamTokenError(ValueError):
    """A stream token was rejected; ``reason`` is one of ``TokenFailure``. The message is log-safe."""

    def __init__(self, reason: TokenFailure) -> None:
        super().__init__(f"stream token rejected: {reason}")
        self.reason: TokenFailure = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _call_tag(secret: bytes, call_sid: str) -> str:
    digest = hmac.new(secret, b"cb-call\0" + call_sid.encode("utf-8"), hashlib.sha256).digest()
    return _b64(digest[:_TAG_BYTES])


def _mac(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("stream token secret must be non-empty bytes")


def mint_stream_token(secret: bytes, call_sid: str, ttl_s: int, now: float | None = None) -> str:
    """A token for ``call_sid`` valid for ``ttl_s`` seconds from ``now`` (default: wall clock).

    Raises ``ValueError`` for an empty secret or CallSid or a non-positive ttl (configuration bugs)."""
    _check_secret(secret)
    if not call_sid:
        raise ValueError("call_sid must not be empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = time.time() if now is None else now
    expiry = int(issued) + int(ttl_s)
    signed = f"{_VERSION}.{expiry}.{_b64(secrets.token_bytes(_NONCE_BYTES))}.{_call_tag(secret, call_sid)}"
    return signed + "." + _mac(secret, signed)


def verify_stream_token(
    secret: bytes, token: str | None, call_sid: str, now: float | None = None
) -> VerifiedStreamToken:
    """Return the token's id and expiry if ``token`` is valid for ``call_sid`` at ``now``, else raise
    ``StreamTokenError``. Validity alone does not make it single-use: the caller consumes the id
    (``service.providers.streamguard``). Expired means ``now >= expiry``. Raises ``ValueError`` (not
    ``StreamTokenError``) for an empty secret."""
    _check_secret(secret)
    if not token:
        raise StreamTokenError("missing")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN or not token.isascii():
        raise StreamTokenError("malformed")
    parts = token.split(".")
    if len(parts) != 5:
        raise StreamTokenError("malformed")
    version, expiry_text, nonce, tag, mac = parts
    if (
        version != _VERSION
        or not (expiry_text.isdigit() and 0 < len(expiry_text) <= 12)
        or len(nonce) != 16
        or len(tag) != 16
        or len(mac) != 43
        or not _B64URL.issuperset((nonce + tag + mac).encode("ascii"))
    ):
        raise StreamTokenError("malformed")
    signed = token[: -len(mac) - 1]
    if not hmac.compare_digest(_mac(secret, signed), mac):
        raise StreamTokenError("bad signature")
    if not hmac.compare_digest(_call_tag(secret, call_sid or ""), tag):
        raise StreamTokenError("wrong call")
    current = time.time() if now is None else now
    if current >= int(expiry_text):
        raise StreamTokenError("expired")
    return VerifiedStreamToken(token_id=nonce, expires_at=int(expiry_text))
