"""SignalWire webhook signatures and cXML markup. Pure functions, no I/O.

Signatures (docs/providers/signalwire.md, "Authentication"): SignalWire signs every webhook with the
space's Signing Key and sends the result in ``X-SignalWire-Signature`` (and, for compatibility, in
``X-Twilio-Signature``). Two schemes exist:

- form posts (the voice webhook): Twilio's exact scheme, HMAC-SHA1 over URL + sorted form pairs, base64.
  We run the ``twilio`` package's ``RequestValidator``, which implements it.
- raw (JSON) bodies: lower-case hex of HMAC-SHA1(signing key, URL + raw body), the URL tried with and
  without its default port; a JSON body that fails this is retried with the form scheme over its fields.

SignalWire's own Python package (``signalwire`` 2.x) pins ``twilio`` 6.x, which conflicts with our
``twilio`` 9 dependency, so the JSON scheme (a few lines of ``hmac``) is written here against its
documented definition; the form scheme is the maintained Twilio implementation.

cXML is Twilio's TwiML vocabulary, so it is built with the ``twilio`` package's ``VoiceResponse`` (which
SignalWire's package re-exports for the same purpose). SignalWire refuses ``ws://`` stream URLs, so the
builders require an ``https`` public URL.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from service.providers.markup import after_stream_markup
from service.providers.signalwire.dialect import AFTER_STREAM_PATH, MEDIA_PATH, STREAM_TOKEN_PARAMETER
from service.providers.urls import public_parts as _public_parts

__all__ = [
    "SIGNATURE_HEADER",
    "TWILIO_COMPAT_SIGNATURE_HEADER",
    "after_stream_cxml",
    "compute_json_signature",
    "connect_stream_cxml",
    "stream_url",
    "validate_signalwire_request",
]

SIGNATURE_HEADER = "X-SignalWire-Signature"
TWILIO_COMPAT_SIGNATURE_HEADER = "X-Twilio-Signature"
_MAX_SIGNATURE = 128
_DEFAULT_PORTS = {"https": 443, "http": 80}


def stream_url(public_url: str, media_path: str = MEDIA_PATH) -> str:
    """The ``wss://`` stream URL on the public host. Raises ``ValueError`` for an ``http`` public URL:
    SignalWire refuses ``ws://`` stream URLs, and a call answered with one would fail at the carrier."""
    scheme, netloc, prefix = _public_parts(public_url)
    if scheme != "https":
        raise ValueError("SignalWire streams need wss://: CALLBRIDGE_PUBLIC_URL must be https")
    return urlunsplit(("wss", netloc, prefix + media_path, "", ""))


def connect_stream_cxml(
    public_url: str,
    token: str,
    parameters: Mapping[str, str] | None = None,
    *,
    media_path: str = MEDIA_PATH,
    after_stream_path: str = AFTER_STREAM_PATH,
) -> str:
    """The voice-webhook answer: ``<Connect><Stream url="wss://...">`` with the stream token (and
    ``parameters``) as ``<Parameter>``s, then ``<Redirect method="POST">`` to ``after_stream_path``, which
    SignalWire runs when the stream ends (the hand-off point). ``ValueError`` if ``parameters`` tries to
    set the token's name, or for a non-https public URL."""
    if parameters and STREAM_TOKEN_PARAMETER in parameters:
        raise ValueError(f"parameter name {STREAM_TOKEN_PARAMETER!r} is reserved for the stream token")
    if not token:
        raise ValueError("a stream token is required")
    scheme, netloc, prefix = _public_parts(public_url)
    url = stream_url(public_url, media_path)
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url)
    stream.parameter(name=STREAM_TOKEN_PARAMETER, value=token)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.redirect(urlunsplit((scheme, netloc, prefix + after_stream_path, "", "")), method="POST")
    return str(response)


after_stream_cxml = after_stream_markup  # cXML is Twilio-compatible here


def _url_variants(url: str) -> list[str]:
    """``url`` as given, without its default port, and with it (SignalWire may sign either)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    bare = urlunsplit((parts.scheme, prefix + host, parts.path, parts.query, parts.fragment))
    variants = [url, bare]
    if default is not None:
        variants.append(urlunsplit((parts.scheme, f"{prefix}{host}:{default}", parts.path, parts.query, "")))
    return list(dict.fromkeys(variants))


def compute_json_signature(signing_key: str, url: str, raw_body: bytes | str) -> str:
    """Hex HMAC-SHA1 of ``url + raw_body`` under ``signing_key``: the scheme for non-form bodies."""
    body = raw_body.encode("utf-8") if isinstance(raw_body, str) else raw_body
    return hmac.new(signing_key.encode("utf-8"), url.encode("utf-8") + body, hashlib.sha1).hexdigest()


class _MultiParams(dict[str, list[str]]):
    """Repeated form keys in the shape ``RequestValidator.get_values`` reads (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _form_params(params: Mapping[str, Any]) -> _MultiParams:
    multi = _MultiParams()
    items_fn = getattr(params, "multi_items", None)  # starlette FormData
    if callable(items_fn):
        for key, value in items_fn():
            multi.setdefault(str(key), []).append(str(value))
        return multi
    for key, value in params.items():
        multi[str(key)] = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return multi


def validate_signalwire_request(
    signing_key: str,
    public_url: str,
    path: str,
    body: Mapping[str, Any] | bytes | str | None,
    signature: str | None,
    query: str = "",
) -> bool:
    """True iff ``signature`` (``X-SignalWire-Signature``, or ``X-Twilio-Signature``) signs the request to
    ``public_url + path (+ ?query)`` (the configured public URL, never the Host header).

    ``body``: a form mapping (form scheme), or the raw body bytes/str (JSON scheme, then the form scheme
    over the parsed JSON object). An empty key or signature gives False. Never raises; comparisons are
    constant-time (``hmac.compare_digest`` here, Twilio's ``compare`` in its validator)."""
    if not signing_key or not signature or len(signature) > _MAX_SIGNATURE or not signature.isascii():
        return False
    url = public_url.rstrip("/") + path + ("?" + query if query else "")
    try:
        validator = RequestValidator(signing_key)
        if body is None or isinstance(body, Mapping):
            return bool(validator.validate(url, _form_params(body or {}), signature))
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        for variant in _url_variants(url):
            if hmac.compare_digest(compute_json_signature(signing_key, variant, raw), signature.lower()):
                return True
        try:
            parsed = orjson.loads(raw)
        except ValueError:
            return False
        if type(parsed) is not dict:
            return False
        return bool(validator.validate(url, _form_params(parsed), signature))
    except (ValueError, TypeError, UnicodeError):
        return False
