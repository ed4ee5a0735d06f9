"""SignalWire's bidirectional media stream (cXML ``<Connect><Stream>``): one stream's JSON frames <->
the typed events of ``providers.base``. Pure, no I/O.

The message set and field names are Twilio's (docs/providers/signalwire.md, "Wire format"): ``connected``,
``start``, ``media``, ``mark``, ``dtmf``, ``stop`` in; ``media``, ``mark``, ``clear`` out, every message
after ``start`` naming ``streamSid``. What differs is checked here: SignalWire's ids are UUIDs, and are
validated as such before they can reach a log line or a Redis key. Caller audio is mu-law 8 kHz mono.
"""

from __future__ import annotations

from typing import Any, ClassVar

from service.providers.base import (
    ENCODING_MULAW,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
)
from service.providers.jsonwire import (
    UUID_RE,
    JsonStreamDialect,
    as_count,
    check_id,
    describe,
    object_field,
    parameters,
    string_field,
)

__all__ = ["MEDIA_PATH", "STREAM_TOKEN_PARAMETER", "VOICE_PATH", "SignalWireDialect"]

VOICE_PATH = "/signalwire/voice"
MEDIA_PATH = "/signalwire/media"
AFTER_STREAM_PATH = "/signalwire/after-stream"
STREAM_TOKEN_PARAMETER = "stream_token"
"""The ``<Parameter>`` (echoed in ``start.customParameters``) carrying the single-use stream token."""


class SignalWireDialect(JsonStreamDialect):
    """SignalWire's dialect for ONE stream (``TelephonyDialect``); see ``JsonStreamDialect`` for the
    state machine. Only mu-law 8 kHz mono is accepted (the only format cXML streams carry)."""

    name = "signalwire"
    id_key: ClassVar[str] = "streamSid"
    sequence_key: ClassVar[str] = "sequenceNumber"
    id_pattern = UUID_RE

    def _parse_start(self, msg: dict[str, Any], stream_id: str) -> StreamStarted:
        start = object_field(msg.get("start"), "start")
        inner = start.get("streamSid")
        if inner is not None and inner != stream_id:
            raise ProtocolError("start.streamSid differs from the message's streamSid")
        call_id = check_id(string_field(start, "callSid", "start"), "start.callSid", UUID_RE)
        account = string_field(start, "accountSid", "start", required=False)
        if account:
            check_id(account, "start.accountSid", UUID_RE)
        tracks = start.get("tracks")
        if tracks is not None and (type(tracks) is not list or "inbound" not in tracks or len(tracks) > 2):
            raise ProtocolError(f"start.tracks must be a list containing 'inbound', got {describe(tracks)}")
        fmt = object_field(start.get("mediaFormat"), "start.mediaFormat")
        encoding = fmt.get("encoding")
        if encoding != ENCODING_MULAW:
            raise ProtocolError(f"unsupported media encoding {describe(encoding)} (need audio/x-mulaw)")
        if as_count(fmt.get("sampleRate"), "start.mediaFormat.sampleRate") != 8000:
            raise ProtocolError("unsupported sample rate (need 8000)")
        channels = fmt.get("channels")
        if channels is not None and as_count(channels, "start.mediaFormat.channels") != 1:
            raise ProtocolError("unsupported channel count (need 1)")
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=account,
            custom_parameters=parameters(start.get("customParameters"), "start.customParameters"),
            encoding=ENCODING_MULAW,
            sample_rate=8000,
            channels=1,
        )

    def _parse_stop(self, msg: dict[str, Any]) -> StreamStopped:
        body = msg.get("stop")
        call_id = ""
        if body is not None:
            call_id = string_field(object_field(body, "stop"), "callSid", "stop", required=False)
            if call_id and call_id != self.call_id:
                raise ProtocolError("stop.callSid differs from the started call")
        return StreamStopped(call_id=self.call_id or "")


def _conforms(dialect: SignalWireDialect) -> TelephonyDialect:
    """Never called: makes mypy check ``SignalWireDialect`` against the ``TelephonyDialect`` protocol."""
    return dialect
