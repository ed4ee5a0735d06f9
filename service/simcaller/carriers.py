"""How each carrier sets up a call with the gateway, as pure functions for the simulated caller: the
signed voice webhook it POSTs, how it reads our answer (stream URL, the per-call values it echoes on the
stream, the URL it runs when the stream ends), and the wire it then speaks (``service.simcaller.wires``).

Pure code, no I/O. Facts per carrier: ``docs/providers/<carrier>.md`` ("Call set-up", "Authentication").
``CARRIERS`` maps the ``--provider`` names of ``callbridge call`` and the load generator to these
profiles; adding a carrier is one ``CarrierProfile`` here and one wire.

Keys: what the caller signs webhooks with is the carrier's secret as the gateway knows it (Twilio's auth
token, SignalWire's signing key, Plivo's auth token), except Telnyx, which signs with a private Ed25519
key the gateway only has the public half of: the caller takes the base64 32-byte seed, and
``telnyx_public_key(seed)`` gives the value for ``CALLBRIDGE_TELNYX_PUBLIC_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from service.providers.twilio.dialect import compute_twilio_signature
from service.simcaller.wires import (
    CallerWire,
    ExotelWire,
    PlivoWire,
    SignalWireWire,
    TelnyxWire,
    TwilioWire,
    VonageWire,
)

__all__ = [
    "CARRIERS",
    "CarrierProfile",
    "SignedRequest",
    "StreamPlan",
    "parse_answer",
    "parse_ncco",
    "telnyx_public_key",
]


@dataclass(frozen=True)
class SignedRequest:
    """One webhook as the carrier sends it: raw body and headers (form-encoded)."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class StreamPlan:
    """What the carrier reads from our set-up answer."""

    url: str
    """The media socket URL (``ws://`` or ``wss://``, on the public host)."""
    parameters: dict[str, str]
    """The per-call values it echoes on the stream (``<Parameter>``s; Plivo's ``extraHeaders`` pairs)."""
    after: str | None
    """The ``<Redirect>`` URL run when the stream ends, if any."""
    attributes: dict[str, str] = field(default_factory=dict)
    """The stream element's attributes (codec choices, ``bidirectional``...)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers the carrier puts on the socket upgrade (HTTP Basic for Exotel, a JWT for Vonage)."""


def parse_answer(text: str) -> StreamPlan:
    """Read a voice-webhook answer the way the carriers do: ``<Response><Connect><Stream url>`` with
    ``<Parameter>``s (Twilio, SignalWire, Telnyx) or ``<Response><Stream>url</Stream>`` with
    ``extraHeaders`` (Plivo), and the ``<Redirect>`` after it. ``ValueError`` when it opens no stream."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise ValueError(f"answer is not XML: {error}") from None
    if root.tag != "Response":
        raise ValueError(f"root element is <{root.tag}>, not <Response>")
    redirect = root.find("Redirect")
    after = (redirect.text or "").strip() if redirect is not None else None
    stream = root.find("Connect/Stream")
    if stream is not None and stream.get("url"):
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return StreamPlan(stream.get("url", ""), params, after, dict(stream.attrib))
    stream = root.find("Stream")
    if stream is not None and (stream.text or "").strip():
        pairs = [item.split("=", 1) for item in stream.get("extraHeaders", "").split(",") if "=" in item]
        return StreamPlan((stream.text or "").strip(), {k: v for k, v in pairs}, after, dict(stream.attrib))
    raise ValueError("the answer opens no media stream")


def _form(fields: Mapping[str, str]) -> bytes:
    return urlencode(dict(fields)).encode()


def _twilio_signed(header: str) -> Callable[[str, str, Mapping[str, str]], SignedRequest]:
    def sign(key: str, url: str, form: Mapping[str, str]) -> SignedRequest:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if key:
            headers[header] = compute_twilio_signature(key, url, dict(form))
        return SignedRequest(_form(form), headers)
    return sign


def _telnyx_signed(key: str, url: str, form: Mapping[str, str]) -> SignedRequest:
    from nacl.signing import SigningKey

    body = _form(form)
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "telnyx-timestamp": timestamp}
    if key:
        signer = SigningKey(base64.b64decode(key))
        headers["telnyx-signature-ed25519"] = base64.b64encode(
            signer.sign(timestamp.encode() + b"|" + body).signature).decode()
    return SignedRequest(body, headers)


def _plivo_signed(key: str, url: str, form: Mapping[str, str]) -> SignedRequest:
    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if key:
        nonce = secrets.token_hex(10)
        base = construct_post_url(url, dict(form)).decode()
        headers["X-Plivo-Signature-V3"] = get_signature_v3(key.encode(), base, nonce.encode()).decode()
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
    return SignedRequest(_form(form), headers)


def telnyx_public_key(seed_b64: str) -> str:
    """The base64 public key (``CALLBRIDGE_TELNYX_PUBLIC_KEY``) of a base64 Ed25519 seed."""
    from nacl.signing import SigningKey

    return base64.b64encode(bytes(SigningKey(base64.b64decode(seed_b64)).verify_key)).decode()


def _twilio_form(call_id: str, from_: str, to: str, status: str) -> dict[str, str]:
    return {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "CallSid": call_id, "CallStatus": status,
            "Called": to, "Caller": from_, "Direction": "inbound", "From": from_, "To": to}


def _plivo_form(call_id: str, from_: str, to: str, status: str) -> dict[str, str]:
    return {"CallUUID": call_id, "From": from_.lstrip("+"), "To": to.lstrip("+"), "CallStatus": status,
            "Direction": "inbound"}


def _telnyx_call_id() -> str:
    return "v3:" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


@dataclass(frozen=True)
class CarrierProfile:
    """One carrier's call set-up as the simulated caller performs it."""

    name: str
    voice_path: str
    token_parameter: str
    """Where the stream token sits in ``StreamPlan.parameters``."""
    new_call_id: Callable[[], str]
    call_form: Callable[[str, str, str, str], dict[str, str]]
    """(call id, from, to, call status) -> the webhook's form fields."""
    sign: Callable[[str, str, Mapping[str, str]], SignedRequest]
    """(key, public URL the carrier requests, form) -> the request; an empty key sends no signature."""
    new_wire: Callable[[str, StreamPlan], CallerWire]
    """(call id, plan) -> the wire of the stream the plan describes."""
    encode_token: Callable[[str], str] = lambda token: token
    """A raw stream token as the carrier would carry it (Plivo: hex, letters and digits only)."""
    needs_wss: bool = False
    """The carrier refuses ``ws://`` stream URLs (SignalWire): the gateway needs an https public URL."""
    key_setting: str = ""
    """The gateway setting that checks this carrier's signatures."""
    parse_answer: Callable[[str], StreamPlan] = parse_answer
    """How the carrier reads our answer (XML here; a carrier answered with JSON, Vonage's NCCO, brings
    its own reader)."""
    fixed_plan: Callable[[str, str], StreamPlan] | None = None
    """For carriers whose stream is configured, not set up per call (Exotel's Voicebot applet): (public
    URL, key) -> the plan; ``voice_path`` is then unused and ``answer`` is never called."""


def _plivo_token(token: str) -> str:
    from service.providers.plivo.auth import token_to_header

    return token_to_header(token)


CARRIERS: dict[str, CarrierProfile] = {
    "twilio": CarrierProfile(
        "twilio", "/twilio/voice", "stream_token", lambda: "CA" + secrets.token_hex(16), _twilio_form,
        _twilio_signed("X-Twilio-Signature"), lambda call_id, _plan: TwilioWire(call_id),
        key_setting="CALLBRIDGE_TWILIO_AUTH_TOKEN"),
    "signalwire": CarrierProfile(
        "signalwire", "/signalwire/voice", "stream_token", lambda: str(uuid.uuid4()), _twilio_form,
        _twilio_signed("X-SignalWire-Signature"), lambda call_id, _plan: SignalWireWire(call_id),
        needs_wss=True, key_setting="CALLBRIDGE_SIGNALWIRE_SIGNING_KEY"),
    "telnyx": CarrierProfile(
        "telnyx", "/telnyx/voice", "stream_token", _telnyx_call_id, _twilio_form, _telnyx_signed,
        lambda call_id, plan: TelnyxWire(call_id, plan.attributes.get("bidirectionalCodec", "PCMU")),
        key_setting="CALLBRIDGE_TELNYX_PUBLIC_KEY"),
    "plivo": CarrierProfile(
        "plivo", "/plivo/voice", "callbridgeToken", lambda: str(uuid.uuid4()), _plivo_form, _plivo_signed,
        lambda call_id, plan: PlivoWire(call_id, plan.attributes.get("contentType", "audio/x-mulaw;rate=8000")),
        encode_token=_plivo_token, key_setting="CALLBRIDGE_PLIVO_AUTH_TOKEN"),
}
"""Every carrier the simulated caller speaks, by ``--provider`` name."""


def parse_ncco(text: str) -> StreamPlan:
    """Read a Vonage answer NCCO like Vonage does: the first ``connect`` action's ``websocket`` endpoint
    (``uri``, ``headers`` echoed on ``websocket:connected``, ``content-type``) and its ``eventUrl``, asked
    for the next NCCO when the socket closes. ``ValueError`` when it opens no websocket."""
    try:
        ncco = json.loads(text)
    except ValueError:
        raise ValueError("answer is not JSON") from None
    for action in ncco if isinstance(ncco, list) else []:
        if not isinstance(action, dict) or action.get("action") != "connect":
            continue
        for endpoint in action.get("endpoint") or []:
            if isinstance(endpoint, dict) and endpoint.get("type") == "websocket" and endpoint.get("uri"):
                events = action.get("eventUrl") or []
                headers = endpoint.get("headers") or {}
                return StreamPlan(str(endpoint["uri"]), {str(k): str(v) for k, v in headers.items()},
                                  str(events[0]) if events else None,
                                  {"content-type": str(endpoint.get("content-type", "audio/l16;rate=16000"))})
    raise ValueError("the NCCO opens no websocket")


def _vonage_signed(key: str, url: str, form: Mapping[str, str]) -> SignedRequest:
    import jwt

    body = json.dumps(dict(form)).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        claims = {"iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage",
                  "payload_hash": hashlib.sha256(body).hexdigest()}
        headers["Authorization"] = "Bearer " + jwt.encode(claims, key, algorithm="HS256")
    return SignedRequest(body, headers)


def _vonage_form(call_id: str, from_: str, to: str, status: str) -> dict[str, str]:
    """The answer webhook, or (``status`` in-progress) the event Vonage sends when our socket closed."""
    return {"uuid": call_id, "conversation_uuid": "CON-" + call_id, "from": from_.lstrip("+"), "to": to.lstrip("+"),
            "status": "disconnected" if status == "in-progress" else "ringing"}


def _vonage_rate(plan: StreamPlan) -> int:
    return int(plan.attributes.get("content-type", "audio/l16;rate=16000").rpartition("=")[2] or 16000)


def _exotel_plan(public_url: str, key: str) -> StreamPlan:
    """The Voicebot applet's configured URL (``wss://host/exotel/media?sample-rate=8000``) and the Basic
    credentials Exotel derives from ``user:password@`` in it (``key`` = ``user:password``)."""
    scheme, netloc = urlsplit(public_url)[:2]
    url = urlunsplit(("wss" if scheme == "https" else "ws", netloc, "/exotel/media", "sample-rate=8000", ""))
    headers = {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()} if key else {}
    return StreamPlan(url, {}, None, headers=headers)


def _exotel_rate(plan: StreamPlan) -> int:
    return int(parse_qs(urlsplit(plan.url).query).get("sample-rate", ["8000"])[0])


CARRIERS.update({
    "vonage": CarrierProfile(
        "vonage", "/vonage/answer", "stream_token", lambda: str(uuid.uuid4()), _vonage_form, _vonage_signed,
        lambda call_id, plan: VonageWire(call_id, _vonage_rate(plan)), parse_answer=parse_ncco,
        key_setting="CALLBRIDGE_VONAGE_SIGNATURE_SECRET"),
    "exotel": CarrierProfile(
        "exotel", "", "", lambda: secrets.token_hex(16), _twilio_form, _twilio_signed("X-Unused"),
        lambda call_id, plan: ExotelWire(call_id, _exotel_rate(plan)), fixed_plan=_exotel_plan,
        key_setting="CALLBRIDGE_EXOTEL_STREAM_USER"),
})
# Vonage and Exotel are defined after their helpers above. Vonage's webhooks are JSON bodies signed with an
# HS256 JWT; its event webhook reports the websocket leg ``disconnected`` (docs/providers/vonage.md).
# Exotel has no set-up webhook: its stream is the applet's configured URL with HTTP Basic (``fixed_plan``).
