"""Plivo webhook signatures (V3), the stream-token encoding for ``extraHeaders`` and Plivo XML. Pure
functions, no I/O.

Signatures (docs/providers/plivo.md, "Authentication"): Plivo signs every webhook with HMAC-SHA256 of the
account auth token over the URL, the parameters and the ``X-Plivo-Signature-V3-Nonce`` header, and
sends one or more comma-separated base64 signatures in ``X-Plivo-Signature-V3``. The base string has
several subtle rules (sorted parameters, a ``.`` between query and body on POST), so we verify with
the ``plivo`` package's own ``validate_v3_signature`` rather than re-implementing it.

XML is built with the ``plivo`` package's ``plivoxml`` elements (escaping is the library's). The
stream token goes into ``extraHeaders``, which Plivo echoes as ``extra_headers`` in ``start`` but
which allows only [A-Za-z0-9]: ``token_to_header`` hex-encodes the token (reversibly, by
``token_from_header``).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from plivo import plivoxml
from plivo.utils import validate_v3_signature

from service.providers.plivo.dialect import (
    CONTENT_TYPES,
    MAX_EXTRA_HEADERS,
    MEDIA_PATH,
    PlivoContentType,
    parse_extra_headers,
)
from service.providers.urls import media_stream_url
from service.providers.urls import public_parts as _public_parts

__all__ = [
    "AFTER_STREAM_PATH",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "STREAM_TOKEN_HEADER",
    "VOICE_PATH",
    "stream_url",
    "stream_xml",
    "token_from_header",
    "token_to_header",
    "transfer_request",
    "transfer_xml",
    "verify_plivo_webhook",
]

VOICE_PATH = "/plivo/voice"
AFTER_STREAM_PATH = "/plivo/after-stream"
SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
STREAM_TOKEN_HEADER = "callbridgeToken"
"""``extraHeaders`` key of the hex-encoded stream token (letters and digits only, as Plivo requires)."""
_MAX_SIGNATURE_HEADER = 1024
_MAX_NONCE = 128
_MAX_TOKEN = 128


def verify_plivo_webhook(
    auth_token: str,
    method: str,
    url: str,
    params: Mapping[str, str | list[str]] | None,
    signature: str | None,
    nonce: str | None,
) -> bool:
    """True iff one of the comma-separated signatures in ``signature`` is Plivo's V3 signature of this
    request (``url`` as Plivo called it, including its query; ``params`` = the form body on POST, the
    extra callback params on GET). Never raises: an empty token, a missing, oversized or malformed
    header gives False."""
    if not auth_token or not signature or not nonce or method.upper() not in ("GET", "POST"):
        return False
    if len(signature) > _MAX_SIGNATURE_HEADER or len(nonce) > _MAX_NONCE or not nonce.isascii():
        return False
    try:
        return bool(validate_v3_signature(method.upper(), url, nonce, auth_token, signature, dict(params or {})))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        return False


def token_to_header(token: str) -> str:
    """The stream token as lowercase hex of its ASCII bytes: [0-9a-f] only, fits ``extraHeaders``."""
    if not token or len(token) > _MAX_TOKEN or not token.isascii():
        raise ValueError("stream token must be 1-128 ASCII characters")
    return token.encode("ascii").hex()


def token_from_header(value: str | None) -> str | None:
    """The token ``token_to_header`` encoded, or None if ``value`` is absent or not such an encoding."""
    if not value or len(value) > 2 * _MAX_TOKEN or len(value) % 2:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw.decode("ascii") if raw.isascii() and raw.decode("ascii").isprintable() else None


def stream_url(public_url: str, media_path: str = MEDIA_PATH) -> str:
    """The ``<Stream>`` text: http->ws, https->wss on the public host, keeping port and path prefix."""
    return media_stream_url(public_url, media_path)


def _http_url(public_url: str, path: str) -> str:
    scheme, netloc, prefix = _public_parts(public_url)
    return urlunsplit((scheme, netloc, prefix + path, "", ""))


def stream_xml(
    public_url: str,
    token: str,
    content_type: PlivoContentType = "audio/x-mulaw;rate=8000",
    headers: Mapping[str, str] | None = None,
    *,
    media_path: str = MEDIA_PATH,
    after_stream_path: str = AFTER_STREAM_PATH,
) -> str:
    """The answer-webhook XML: ``<Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound">``
    in ``content_type`` with the hex-encoded token in ``extraHeaders``, then ``<Redirect>`` to
    ``after_stream_path`` (runs once the stream disconnects, because of ``keepCallAlive``).
    ``ValueError`` for an unknown content type, a reserved or non-alphanumeric header, or headers over
    Plivo's 512-byte limit."""
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unsupported Plivo contentType {content_type!r}")
    extra = {STREAM_TOKEN_HEADER: token_to_header(token)}
    for key, value in (headers or {}).items():
        if key == STREAM_TOKEN_HEADER:
            raise ValueError(f"header name {STREAM_TOKEN_HEADER!r} is reserved for the stream token")
        extra[key] = value
    text = ",".join(f"{k}={v}" for k, v in extra.items())
    if len(text) > MAX_EXTRA_HEADERS:
        raise ValueError(f"extraHeaders would be {len(text)} bytes (Plivo allows {MAX_EXTRA_HEADERS})")
    try:
        parse_extra_headers(text)  # the same rule the dialect applies to the echo
    except ValueError as exc:
        raise ValueError(f"extraHeaders: {exc}") from None
    response = plivoxml.ResponseElement()
    response.add(
        plivoxml.StreamElement(
            stream_url(public_url, media_path),
            bidirectional=True,
            audioTrack="inbound",
            keepCallAlive=True,
            contentType=content_type,
            extraHeaders=text,
        )
    )
    response.add(plivoxml.RedirectElement(_http_url(public_url, after_stream_path), method="POST"))
    return str(response.to_string(pretty=False))


def transfer_xml(
    *,
    number: str | None = None,
    sip_uri: str | None = None,
    conference: str | None = None,
    caller_id: str | None = None,
    timeout_s: int = 30,
) -> str:
    """The hand-off XML for after the stream: exactly one of ``number`` (E.164, ``<Dial><Number>``),
    ``sip_uri`` (``sip:...``, ``<Dial><User>``) or ``conference`` (a named room where agents pick the
    caller up: Plivo's analogue of a queue, ``<Conference>``). ``ValueError`` otherwise."""
    chosen = [v for v in (number, sip_uri, conference) if v]
    if len(chosen) != 1:
        raise ValueError("give exactly one of number, sip_uri, conference")
    response = plivoxml.ResponseElement()
    if conference:
        if not conference.replace("-", "").replace("_", "").isalnum() or len(conference) > 64:
            raise ValueError("conference name must be 1-64 letters, digits, '-' or '_'")
        response.add(plivoxml.ConferenceElement(conference))
        return str(response.to_string(pretty=False))
    if not 1 <= timeout_s <= 600:
        raise ValueError("timeout_s must be 1..600")
    dial = plivoxml.DialElement(caller_id=caller_id, timeout=timeout_s)
    if number:
        digits = number[1:] if number.startswith("+") else number
        if not digits.isdigit() or not 6 <= len(digits) <= 15:
            raise ValueError("number must be E.164 (+ and 6-15 digits)")
        dial.add(plivoxml.NumberElement(number))
    else:
        assert sip_uri is not None
        if not sip_uri.startswith("sip:") or len(sip_uri) > 256 or any(c in sip_uri for c in " <>\"'"):
            raise ValueError("sip_uri must be a sip: URI without spaces, quotes or angle brackets")
        dial.add(plivoxml.UserElement(sip_uri))
    response.add(dial)
    return str(response.to_string(pretty=False))


def transfer_request(after_stream_url: str) -> dict[str, str]:
    """Form body of ``POST /v1/Account/{auth_id}/Call/{call_uuid}/`` (HTTP Basic ``auth_id:auth_token``)
    that moves the caller's leg of a live call to ``after_stream_url``, which answers ``transfer_xml``:
    the REST alternative to waiting for the stream to end."""
    parts = urlsplit(after_stream_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise ValueError("after_stream_url must be an absolute http(s) URL")
    return {"legs": "aleg", "aleg_url": after_stream_url, "aleg_method": "POST"}
