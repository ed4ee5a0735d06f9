"""Telnyx webhook signatures (Ed25519) and TeXML markup. Pure functions, no I/O.

Signatures (docs/providers/telnyx.md, "Authentication"): Telnyx signs ``f"{timestamp}|{raw body}"`` with
the account's Ed25519 key and sends the base64 signature in ``telnyx-signature-ed25519`` and the Unix
time in ``telnyx-timestamp``; we verify with the account's public key (base64, 32 bytes) through PyNaCl
(libsodium), and refuse timestamps more than ``tolerance_s`` away from now (replays).

TeXML is Twilio-compatible XML; we build it with ``xml.etree.ElementTree`` (escaping is the library's).
The stream MUST be bidirectional in RTP mode: without ``bidirectionalMode="rtp"`` Telnyx silently
discards every frame we send back, so the builder always sets it, with the codec and rate of
``CODECS``.
"""

from __future__ import annotations

import base64
import binascii
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import urlunsplit

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from service.providers.telnyx.dialect import (
    AFTER_STREAM_PATH,
    CODECS,
    MEDIA_PATH,
    STREAM_TOKEN_PARAMETER,
    TelnyxCodec,
)
from service.providers.urls import media_stream_url
from service.providers.urls import public_parts as _public_parts

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "after_stream_texml",
    "connect_stream_texml",
    "stream_url",
    "verify_telnyx_webhook",
]

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
_MAX_SIGNATURE_B64 = 128


def verify_telnyx_webhook(
    public_key_b64: str,
    raw_body: bytes,
    signature_b64: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    tolerance_s: int = 300,
) -> bool:
    """True iff ``signature_b64`` is a valid Ed25519 signature of ``timestamp|raw_body`` under the public
    key and ``timestamp`` is within ``tolerance_s`` of ``now`` (default: wall clock). Never raises:
    an empty key, a missing or malformed header, or a bad signature gives False."""
    if not public_key_b64 or not signature_b64 or not timestamp:
        return False
    if len(signature_b64) > _MAX_SIGNATURE_B64 or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    try:
        key = VerifyKey(base64.b64decode(public_key_b64, validate=True))
        signature = base64.b64decode(signature_b64, validate=True)
        if len(signature) != 64:
            return False
        key.verify(timestamp.encode("ascii") + b"|" + bytes(raw_body), signature)
        return True
    except (BadSignatureError, CryptoError, binascii.Error, ValueError, TypeError):
        return False


def stream_url(public_url: str, media_path: str = MEDIA_PATH) -> str:
    """The ``<Stream url>``: http->ws, https->wss on the public host, keeping port and path prefix."""
    return media_stream_url(public_url, media_path)


def _xml(root: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def connect_stream_texml(
    public_url: str,
    token: str,
    codec: TelnyxCodec = "PCMU",
    parameters: Mapping[str, str] | None = None,
    *,
    media_path: str = MEDIA_PATH,
    after_stream_path: str = AFTER_STREAM_PATH,
) -> str:
    """The voice-webhook answer: ``<Connect><Stream bidirectionalMode="rtp">`` in ``codec`` (inbound track,
    our audio back in the same codec and rate) carrying the stream token as a ``<Parameter>``, then
    ``<Redirect method="POST">`` to ``after_stream_path``, which runs when the stream stops.
    ``ValueError`` for a reserved parameter name, an empty token or an unknown codec."""
    if codec not in CODECS:
        raise ValueError(f"unsupported Telnyx codec {codec!r}")
    if not token:
        raise ValueError("a stream token is required")
    if parameters and STREAM_TOKEN_PARAMETER in parameters:
        raise ValueError(f"parameter name {STREAM_TOKEN_PARAMETER!r} is reserved for the stream token")
    scheme, netloc, prefix = _public_parts(public_url)
    _, rate = CODECS[codec]
    root = ET.Element("Response")
    connect = ET.SubElement(root, "Connect")
    attrs = {
        "url": stream_url(public_url, media_path),
        "track": "inbound_track",
        "bidirectionalMode": "rtp",
        "bidirectionalCodec": codec,
        "bidirectionalSamplingRate": str(rate),
    }
    if codec != "L16":
        attrs["codec"] = codec  # TeXML transcodes the inbound track between PCMU and PCMA only
    stream = ET.SubElement(connect, "Stream", attrs)
    ET.SubElement(stream, "Parameter", {"name": STREAM_TOKEN_PARAMETER, "value": token})
    for name, value in (parameters or {}).items():
        ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    redirect = ET.SubElement(root, "Redirect", {"method": "POST"})
    redirect.text = urlunsplit((scheme, netloc, prefix + after_stream_path, "", ""))
    return _xml(root)


def after_stream_texml(escalated: bool, queue: str, dial_target: str = "") -> str:
    """What runs after the stream: when ``escalated``, ``<Dial>`` ``dial_target`` (``<Sip>`` for ``sip:``/
    ``sips:`` URIs, else ``<Number>``) if given, else ``<Enqueue>`` to ``queue``; otherwise ``<Hangup/>``.
    ``ValueError`` when escalated with neither a queue nor a target."""
    root = ET.Element("Response")
    if not escalated:
        ET.SubElement(root, "Hangup")
        return _xml(root)
    target = dial_target.strip()
    if target:
        dial = ET.SubElement(root, "Dial")
        child = ET.SubElement(dial, "Sip" if target.lower().startswith(("sip:", "sips:")) else "Number")
        child.text = target
    elif queue.strip():
        ET.SubElement(root, "Enqueue").text = queue.strip()
    else:
        raise ValueError("escalation needs a transfer queue or a dial target")
    return _xml(root)
