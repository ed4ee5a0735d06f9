"""Vonage signed webhooks (HS256 JWT) and NCCO builders. Pure functions, no I/O.

Signatures (docs/providers/vonage.md, "Authentication"): with signed webhooks enabled, Vonage sends
``Authorization: Bearer <JWT>``, signed HS256 with the account's signature secret; the JWT's
``payload_hash`` claim is the SHA-256 hex digest of the request body. We verify the signature with
Vonage's own ``vonage-jwt`` package, then (through PyJWT, which it uses) compare ``payload_hash`` with
the body we received, in constant time, so a replayed token cannot carry another body.

NCCOs are plain JSON-able lists; the stream token and the call's UUID ride in the websocket endpoint's
``headers``, which Vonage flattens onto the first text message (``websocket:connected``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlunsplit

import jwt
from vonage_jwt import verify_signature
from vonage_jwt.errors import VonageVerifyJwtError

from service.providers.jsonwire import UUID_RE
from service.providers.urls import media_stream_url
from service.providers.urls import public_parts as _public_parts
from service.providers.vonage.dialect import CALL_UUID_HEADER, MEDIA_PATH, STREAM_TOKEN_HEADER, content_type

__all__ = [
    "ANSWER_PATH",
    "EVENT_PATH",
    "connect_ncco",
    "stream_url",
    "transfer_ncco",
    "transfer_request",
    "verify_vonage_webhook",
]

ANSWER_PATH = "/vonage/answer"
EVENT_PATH = "/vonage/event"
MAX_HEADER_BYTES = 512
_MAX_AUTHORIZATION = 4096


def verify_vonage_webhook(signature_secret: str, authorization: str | None, raw_body: bytes) -> bool:
    """True iff ``authorization`` is ``Bearer <JWT>`` signed HS256 with ``signature_secret``, not
    expired, and (when it has one) its ``payload_hash`` matches ``raw_body``. Never raises: an empty
    secret, a missing, oversized or malformed header, or a bad signature gives False."""
    if not signature_secret or not authorization or len(authorization) > _MAX_AUTHORIZATION:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    try:
        if not verify_signature(token.strip(), signature_secret):
            return False
        claims = jwt.decode(token.strip(), signature_secret, algorithms=["HS256"])
    except (VonageVerifyJwtError, jwt.PyJWTError, ValueError, TypeError):
        return False
    expected = claims.get("payload_hash")
    if expected is None:
        return True
    if type(expected) is not str:
        return False
    return hmac.compare_digest(expected.lower(), hashlib.sha256(bytes(raw_body)).hexdigest())


def stream_url(public_url: str, media_path: str = MEDIA_PATH) -> str:
    """The websocket endpoint ``uri``: http->ws, https->wss on the public host, keeping port and prefix."""
    return media_stream_url(public_url, media_path)


def connect_ncco(
    public_url: str,
    token: str,
    call_uuid: str,
    sample_rate: int = 16000,
    headers: Mapping[str, str] | None = None,
    *,
    media_path: str = MEDIA_PATH,
    event_path: str = EVENT_PATH,
) -> list[dict[str, Any]]:
    """The answer-webhook NCCO: one ``connect`` to our websocket in L16 at ``sample_rate`` with the stream
    token and the call's UUID in ``headers``, and a synchronous ``eventUrl`` so that when the socket
    closes Vonage asks ``event_path`` for the next NCCO (the hand-off). ``ValueError`` for an empty
    token, a call UUID that is not a UUID, a reserved header, or headers over Vonage's 512 bytes."""
    if not token:
        raise ValueError("a stream token is required")
    if not UUID_RE.fullmatch(call_uuid):
        raise ValueError("call_uuid must be Vonage's call UUID")
    extra = dict(headers or {})
    for reserved in (STREAM_TOKEN_HEADER, CALL_UUID_HEADER, "event", "content-type"):
        if reserved in extra:
            raise ValueError(f"header name {reserved!r} is reserved")
    sent = {STREAM_TOKEN_HEADER: token, CALL_UUID_HEADER: call_uuid, **extra}
    if sum(len(k) + len(v) for k, v in sent.items()) > MAX_HEADER_BYTES:
        raise ValueError(f"headers exceed Vonage's {MAX_HEADER_BYTES} bytes")
    scheme, netloc, prefix = _public_parts(public_url)
    return [
        {
            "action": "connect",
            "eventType": "synchronous",
            "eventUrl": [urlunsplit((scheme, netloc, prefix + event_path, "", ""))],
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": stream_url(public_url, media_path),
                    "content-type": content_type(sample_rate),
                    "headers": sent,
                }
            ],
        }
    ]


def transfer_ncco(
    *,
    number: str | None = None,
    sip_uri: str | None = None,
    conversation: str | None = None,
    caller_id: str | None = None,
    timeout_s: int = 30,
) -> list[dict[str, Any]]:
    """The hand-off NCCO: exactly one of ``number`` (E.164; Vonage wants it without ``+``), ``sip_uri``
    (``sip:...``) or ``conversation`` (a named conversation agents join: Vonage's analogue of a queue).
    ``ValueError`` otherwise."""
    chosen = [v for v in (number, sip_uri, conversation) if v]
    if len(chosen) != 1:
        raise ValueError("give exactly one of number, sip_uri, conversation")
    if conversation:
        if not conversation.replace("-", "").replace("_", "").isalnum() or len(conversation) > 64:
            raise ValueError("conversation name must be 1-64 letters, digits, '-' or '_'")
        return [{"action": "conversation", "name": conversation}]
    if not 3 <= timeout_s <= 7200:
        raise ValueError("timeout_s must be 3..7200")
    action: dict[str, Any] = {"action": "connect", "timeout": timeout_s}
    if number:
        digits = number.removeprefix("+")
        if not digits.isdigit() or not 6 <= len(digits) <= 15:
            raise ValueError("number must be E.164 (+ and 6-15 digits)")
        action["endpoint"] = [{"type": "phone", "number": digits}]
    else:
        assert sip_uri is not None
        if not sip_uri.startswith("sip:") or len(sip_uri) > 256 or any(c in sip_uri for c in " <>\"'"):
            raise ValueError("sip_uri must be a sip: URI without spaces, quotes or angle brackets")
        action["endpoint"] = [{"type": "sip", "uri": sip_uri}]
    if caller_id:
        digits = caller_id.removeprefix("+")
        if not digits.isdigit() or not 6 <= len(digits) <= 15:
            raise ValueError("caller_id must be E.164")
        action["from"] = digits
    return [action]


def transfer_request(ncco: list[dict[str, Any]]) -> dict[str, Any]:
    """Body of ``PUT /v1/calls/{uuid}`` that moves a live call onto ``ncco`` (e.g. ``transfer_ncco``)."""
    if not ncco:
        raise ValueError("empty NCCO")
    return {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
