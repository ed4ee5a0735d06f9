"""Twilio Media Streams (bidirectional ``<Connect><Stream>``): wire dialect, TwiML and webhook signatures.

Pure code, no I/O. The wire facts are in ``docs/providers/twilio.md`` (cited below by its anchors):

- ``TwilioDialect``: one stream's JSON text frames <-> the typed events of ``providers.base`` (#inbound-messages, #outbound-messages).
  ``parse`` raises only ``ProtocolError``; the ``media`` path (every 20 ms per call) is one
  ``orjson.loads``, direct dict access and one ``binascii.a2b_base64``.
- TwiML builders (#call-setup, #after-stream, #rest-transfer) on the ``twilio`` package's ``VoiceResponse``.
- ``validate_twilio_request`` / ``compute_twilio_signature``: ``X-Twilio-Signature`` (#signatures) through the
  ``twilio`` package's ``RequestValidator``, against the configured public URL (never the Host header).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlunsplit

import orjson
from twilio import request_validator as _rv
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from service.providers.base import (
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyEvent,
)
from service.providers.ids import TWILIO_ACCOUNT_SID, TWILIO_CALL_SID, TWILIO_STREAM_SID, is_twilio_sid
from service.providers.markup import after_stream_markup
from service.providers.urls import media_stream_url
from service.providers.urls import public_parts as _public_parts

__all__ = [
    "AFTER_STREAM_PATH",
    "MEDIA_PATH",
    "SIGNATURE_HEADER",
    "SIGNATURE_SETTINGS_HEADER",
    "STREAM_TOKEN_PARAMETER",
    "VOICE_PATH",
    "TwilioDialect",
    "after_stream_twiml",
    "compute_twilio_signature",
    "connect_stream_twiml",
    "redirect_twiml",
    "reject_twiml",
    "stream_url",
    "validate_twilio_request",
]

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
AFTER_STREAM_PATH = "/twilio/after-stream"
STREAM_TOKEN_PARAMETER = "stream_token"
"""Name of the ``<Parameter>`` (and ``start.customParameters`` key) that carries the stream token."""
SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

_DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
_KNOWN_EVENTS = ("connected", "start", "media", "mark", "dtmf", "stop")


def _as_int(value: object, what: str) -> int:
    """Twilio sends counters as decimal strings ("4"); also accept a JSON integer (not a bool)."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    elif kind is int:
        number: int = value  # type: ignore[assignment]
        if number >= 0:
            return number
    raise ProtocolError(f"{what} must be a non-negative decimal string, got {_describe(value)}")


def _describe(value: object) -> str:
    """A short, log-safe description of an unexpected value (type and a bounded preview)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _object(value: object, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ProtocolError(f"{what} must be an object, got {_describe(value)}")
    return value


def _string(container: dict[str, Any], key: str, what: str, *, required: bool = True) -> str:
    value = container.get(key)
    if value is None and not required:
        return ""
    if type(value) is not str:
        if value is None:
            raise ProtocolError(f"{what}.{key} is missing")
        raise ProtocolError(f"{what}.{key} must be a string, got {_describe(value)}")
    return value


class TwilioDialect:
    """Twilio's Media Streams dialect for ONE bidirectional stream (``TelephonyDialect``).

    State: the stream is "started" once a valid ``start`` was parsed; ``media``/``mark``/``dtmf``/
    ``stop`` before that, a second ``start``, anything after ``stop``, or a ``streamSid`` other than
    the started one raise ``ProtocolError``. A failed ``parse`` never changes state, so a caller may
    count malformed frames and go on. Not thread-safe (one stream, one task).
    """

    name = "twilio"

    __slots__ = ("_sid_json", "account_sid", "call_sid", "last_sequence_number", "stopped", "stream_sid")

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.stopped = False
        self.last_sequence_number = 0
        """``sequenceNumber`` of the last accepted message (0 before any); gaps are not errors."""
        self._sid_json = ""

    @property
    def started(self) -> bool:
        return self.stream_sid is not None

    # --- inbound ---------------------------------------------------------------------------------

    def parse(self, message: str | bytes | memoryview) -> TelephonyEvent:
        """Turn one text frame into a typed event; raise ``ProtocolError`` for anything malformed."""
        if not isinstance(message, (str, bytes)):
            raise ProtocolError(f"frame must be text, got {type(message).__name__}")
        try:
            msg = orjson.loads(message)  # ~3x json.loads on a media frame; strict RFC 8259, UTF-8 checked
        except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            raise ProtocolError("frame is not valid JSON") from None
        if type(msg) is not dict:
            raise ProtocolError(f"frame must be a JSON object, got {type(msg).__name__}")
        event = msg.get("event")
        if event == "media":  # hot path: keep it flat
            return self._media(msg)
        if event == "mark":
            return MarkEchoed(self._mark(msg))
        if event == "dtmf":
            return self._dtmf(msg)
        if event == "start":
            return self._start(msg)
        if event == "stop":
            return self._stop(msg)
        if event == "connected":
            return self._connected(msg)
        if type(event) is not str:
            raise ProtocolError("frame has no string 'event'")
        raise ProtocolError(f"unknown event {event[:40]!r} (expected one of {', '.join(_KNOWN_EVENTS)})")

    def _check_stream(self, msg: dict[str, Any], event: str) -> int:
        """Common checks for every message after ``start``; returns the parsed ``sequenceNumber``."""
        if self.stream_sid is None:
            raise ProtocolError(f"'{event}' before 'start'")
        if self.stopped:
            raise ProtocolError(f"'{event}' after 'stop'")
        sid = msg.get("streamSid")
        if sid != self.stream_sid:
            if sid is None:
                raise ProtocolError(f"'{event}' without streamSid")
            raise ProtocolError(f"'{event}' for another streamSid ({_describe(sid)})")
        seq = msg.get("sequenceNumber")
        return 0 if seq is None else _as_int(seq, "sequenceNumber")

    def _media(self, msg: dict[str, Any]) -> MediaReceived:
        # Hot path (50 per second per call): the common well-formed message is checked inline; anything
        # else goes through the general checks, which raise the precise error.
        if self.stream_sid is None or self.stopped or msg.get("streamSid") != self.stream_sid:
            self._check_stream(msg, "media")
        media = msg.get("media")
        if type(media) is not dict:
            raise ProtocolError("media must be an object" if media is not None else "media.media is missing")
        payload = media.get("payload")
        if type(payload) is not str:
            raise ProtocolError("media.payload is missing" if payload is None else "media.payload must be a string")
        if not payload:
            raise ProtocolError("media.payload is empty")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media.payload is not valid base64") from None
        track = media.get("track")
        if track is not None and track != "inbound":
            raise ProtocolError(f"media.track must be 'inbound', got {_describe(track)}")
        seq, chunk, timestamp = msg.get("sequenceNumber"), media.get("chunk"), media.get("timestamp")
        if (
            type(seq) is str and type(chunk) is str and type(timestamp) is str
            and 0 < len(seq) <= 18 and 0 < len(chunk) <= 18 and 0 < len(timestamp) <= 18
            and (digits := seq + chunk + timestamp).isascii() and digits.isdigit()
        ):
            number = int(seq)
            event = MediaReceived(audio, int(timestamp), int(chunk))
        else:  # JSON numbers, a missing sequenceNumber, or something malformed: the general checks
            number = 0 if seq is None else _as_int(seq, "sequenceNumber")
            chunk_number = _as_int(chunk, "media.chunk")
            event = MediaReceived(audio, _as_int(timestamp, "media.timestamp"), chunk_number)
        if number:
            self.last_sequence_number = number
        return event

    def _mark(self, msg: dict[str, Any]) -> str:
        seq = self._check_stream(msg, "mark")
        name = _string(_object(msg.get("mark"), "mark"), "name", "mark")
        if seq:
            self.last_sequence_number = seq
        return name

    def _dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        seq = self._check_stream(msg, "dtmf")
        body = _object(msg.get("dtmf"), "dtmf")
        digit = _string(body, "digit", "dtmf")
        if len(digit) != 1 or digit not in _DTMF_DIGITS:
            raise ProtocolError(f"dtmf.digit must be one of 0-9 * # A-D, got {_describe(digit)}")
        if seq:
            self.last_sequence_number = seq
        return DtmfReceived(digit=digit.upper())

    def _stop(self, msg: dict[str, Any]) -> StreamStopped:
        seq = self._check_stream(msg, "stop")
        body = msg.get("stop")
        if body is not None:
            _string(_object(body, "stop"), "callSid", "stop", required=False)  # shape check only
        if seq:
            self.last_sequence_number = seq
        self.stopped = True
        # The started (validated) CallSid, never the unverified one in the stop body.
        return StreamStopped(call_id=self.call_sid or "")

    def _connected(self, msg: dict[str, Any]) -> StreamConnected:
        if self.stream_sid is not None:
            raise ProtocolError("'connected' after 'start'")
        return StreamConnected(
            protocol=_string(msg, "protocol", "connected", required=False),
            version=_string(msg, "version", "connected", required=False),
        )

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_sid is not None:
            raise ProtocolError("second 'start' on one stream")
        sid = _string(msg, "streamSid", "start message")
        if not sid:
            raise ProtocolError("streamSid is empty")
        if not is_twilio_sid(sid, TWILIO_STREAM_SID):  # before it reaches any key or log line
            raise ProtocolError(f"streamSid is not MZ + 32 hex digits, got {_describe(sid)}")
        seq = msg.get("sequenceNumber")
        seq_number = 0 if seq is None else _as_int(seq, "sequenceNumber")
        start = _object(msg.get("start"), "start")
        inner_sid = start.get("streamSid")
        if inner_sid is not None and inner_sid != sid:
            raise ProtocolError("start.streamSid differs from the message's streamSid")
        call_sid = _string(start, "callSid", "start")
        account_sid = _string(start, "accountSid", "start")
        if not call_sid:
            raise ProtocolError("start.callSid is empty")
        if not is_twilio_sid(call_sid, TWILIO_CALL_SID):
            raise ProtocolError(f"start.callSid is not CA + 32 hex digits, got {_describe(call_sid)}")
        if not is_twilio_sid(account_sid, TWILIO_ACCOUNT_SID):
            raise ProtocolError(f"start.accountSid is not AC + 32 hex digits, got {_describe(account_sid)}")
        tracks = start.get("tracks")
        if tracks is not None and (type(tracks) is not list or "inbound" not in tracks):
            raise ProtocolError(f"start.tracks must be a list containing 'inbound', got {_describe(tracks)}")
        fmt = _object(start.get("mediaFormat"), "start.mediaFormat")
        encoding = fmt.get("encoding")
        rate = fmt.get("sampleRate")
        channels = fmt.get("channels")
        if encoding != "audio/x-mulaw":
            raise ProtocolError(f"unsupported media encoding {_describe(encoding)} (need audio/x-mulaw)")
        if _as_int(rate, "start.mediaFormat.sampleRate") != 8000:
            raise ProtocolError(f"unsupported sample rate {_describe(rate)} (need 8000)")
        if _as_int(channels, "start.mediaFormat.channels") != 1:
            raise ProtocolError(f"unsupported channel count {_describe(channels)} (need 1)")
        raw_params = start.get("customParameters")
        params: dict[str, str] = {}
        if raw_params is not None:
            for key, value in _object(raw_params, "start.customParameters").items():
                if type(value) is not str:
                    raise ProtocolError(f"start.customParameters[{key[:40]!r}] must be a string")
                params[key] = value
        # Commit state only once everything validated.
        self.stream_sid = sid
        self._sid_json = json.dumps(sid)
        self.call_sid = call_sid
        self.account_sid = account_sid
        if seq_number:
            self.last_sequence_number = seq_number
        return StreamStarted(
            stream_id=sid,
            call_id=call_sid,
            account_id=account_sid,
            custom_parameters=params,
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
        )

    # --- outbound --------------------------------------------------------------------------------

    def _sid(self) -> str:
        if not self._sid_json:
            raise ProtocolError("no stream has started: outbound messages need the streamSid")
        return self._sid_json

    def build_media(self, mulaw: bytes) -> str:
        """``{"event":"media","streamSid":...,"media":{"payload":<base64 mu-law>}}`` (docs/providers/twilio.md#outbound-messages); any length > 0."""
        sid = self._sid()
        if not mulaw:
            raise ProtocolError("refusing to build an empty media message")
        payload = binascii.b2a_base64(mulaw, newline=False).decode("ascii")
        return '{"event":"media","streamSid":' + sid + ',"media":{"payload":"' + payload + '"}}'

    def build_mark(self, name: str) -> str:
        """``{"event":"mark","streamSid":...,"mark":{"name":...}}``; echoed when playback reaches it (docs/providers/twilio.md#marks-and-clear)."""
        sid = self._sid()
        if type(name) is not str:
            raise ProtocolError("mark name must be a string")
        return '{"event":"mark","streamSid":' + sid + ',"mark":{"name":' + json.dumps(name) + "}}"

    def build_clear(self) -> str:
        """``{"event":"clear","streamSid":...}``: Twilio drops its buffer and echoes pending marks (docs/providers/twilio.md#marks-and-clear)."""
        return '{"event":"clear","streamSid":' + self._sid() + "}"


# --- TwiML ---------------------------------------------------------------------------------------


def stream_url(public_url: str, media_path: str = MEDIA_PATH) -> str:
    """The ``<Stream url>``: http->ws, https->wss on the public host, keeping port and path prefix (docs/providers/twilio.md#call-setup)."""
    return media_stream_url(public_url, media_path)


def connect_stream_twiml(
    public_url: str,
    token: str,
    parameters: Mapping[str, str] | None = None,
    after_stream_path: str = AFTER_STREAM_PATH,
    *,
    media_path: str = MEDIA_PATH,
    status_callback_path: str | None = None,
) -> str:
    """The voice-webhook answer: ``<Connect><Stream>`` (token + ``parameters`` as ``<Parameter>``s), then
    ``<Redirect method="POST">`` to ``public_url + after_stream_path``, which Twilio runs once the socket
    closes (docs/providers/twilio.md#after-stream). Raises ``ValueError`` if ``parameters`` tries to override the token parameter."""
    scheme, netloc, prefix = _public_parts(public_url)
    base = urlunsplit((scheme, netloc, prefix, "", ""))
    if parameters and STREAM_TOKEN_PARAMETER in parameters:
        raise ValueError(f"parameter name {STREAM_TOKEN_PARAMETER!r} is reserved for the stream token")
    response = VoiceResponse()
    connect = Connect()
    attrs: dict[str, str] = {}
    if status_callback_path:
        attrs["status_callback"] = base + status_callback_path
    stream = connect.stream(url=stream_url(public_url, media_path), **attrs)
    stream.parameter(name=STREAM_TOKEN_PARAMETER, value=token)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.redirect(base + after_stream_path, method="POST")
    return str(response)


after_stream_twiml = after_stream_markup  # Twilio's TwiML; SignalWire's cXML is the same markup



def reject_twiml(message: str = "") -> str:
    """``<Say>message</Say><Hangup/>`` (no ``<Say>`` when ``message`` is empty): the fallback when no
    replica can take the call."""
    response = VoiceResponse()
    if message:
        response.say(message)
    response.hangup()
    return str(response)


def redirect_twiml(url: str) -> str:
    """``<Redirect method="POST">url</Redirect>``: send the call's webhook to another replica/URL."""
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)


# --- X-Twilio-Signature ---------------------------------------------------------------------------


class _MultiParams(dict[str, list[str]]):
    """Repeated form keys in the shape ``RequestValidator.get_values`` understands (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _normalise_params(params: Mapping[str, Any] | str | None) -> Any:
    if params is None or isinstance(params, str):
        return params  # a str is a JSON body (bodySHA256 in the query)
    multi = _MultiParams()
    items_fn = getattr(params, "multi_items", None)  # starlette FormData / MultiDict
    if callable(items_fn):
        for key, value in items_fn():
            multi.setdefault(str(key), []).append(str(value))
        return multi
    getlist = getattr(params, "getlist", None)
    for key in params:
        if callable(getlist):
            multi[str(key)] = [str(v) for v in getlist(key)]
        else:
            value = params[key]
            multi[str(key)] = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return multi


def _algorithm(signature_settings: str | None) -> str | None:
    """Algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` (None = legacy HMAC-SHA1)."""
    if not signature_settings:
        return None
    getter = getattr(_rv, "get_signature_algorithm", None)
    if getter is None:  # an SDK without shared-key support: only the legacy form can be checked
        return "UNSUPPORTED"
    return str(getter(signature_settings))


def _full_url(public_url: str, path: str, query: str) -> str:
    url = public_url.rstrip("/") + path
    return url + "?" + query if query else url


def validate_twilio_request(
    auth_token: str,
    public_url: str,
    path: str,
    params: Mapping[str, Any] | str | None,
    signature: str | None,
    query: str = "",
    signature_settings: str | None = None,
) -> bool:
    """True iff ``signature`` (the ``X-Twilio-Signature`` header) signs ``public_url + path (+ ?query)``
    with ``params`` (docs/providers/twilio.md#signatures). ``params`` may be a dict, a dict of lists, or a multi-dict (repeated keys).
    ``signature_settings`` is the ``X-Twilio-Webhooks-Signature-Settings`` header: with
    ``algorithm=HMAC_SHA256`` the check uses SHA-256 (``auth_token`` must then be the shared key).
    An empty token, a missing signature or an unsupported algorithm gives False; never raises."""
    if not auth_token or not signature:
        return False
    algorithm = _algorithm(signature_settings)
    if algorithm == "UNSUPPORTED":
        return False
    try:
        validator = RequestValidator(auth_token)
        url = _full_url(public_url, path, query)
        normalised = _normalise_params(params)
        if algorithm is None:
            return bool(validator.validate(url, normalised, signature))
        return bool(validator.validate(url, normalised, signature, algorithm=algorithm))
    except (ValueError, TypeError):
        return False


def compute_twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, Any] | None = None,
    algorithm: str | None = None,
) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a form POST of ``params`` to the full ``url``."""
    validator = RequestValidator(auth_token)
    normalised = _normalise_params(params) or {}
    if algorithm is None:
        return str(validator.compute_signature(url, normalised))
    return str(validator.compute_signature(url, normalised, algorithm=algorithm))
