"""SignalWire's media-stream client as a stand-in (docs/providers/signalwire.md, "Wire format"): Twilio's
message set with UUID ids, mu-law 8 kHz in 20 ms frames of 160 bytes; marks echoed when played, pending
marks echoed on ``clear`` (Twilio's rule; not independently verified for SignalWire)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from tests.standins.json_stream_caller import CarrierFrames, StreamResult, WireProfile, run_stream

__all__ = ["PROFILE", "CarrierFrames", "StreamResult", "run_stream", "start_body", "voice_webhook"]

PROJECT_ID = str(uuid.UUID(int=0x5157_0000_0000_4000_8000_0000_0000_0001))


def start_body(stream_id: str, call_id: str, parameters: Mapping[str, str]) -> dict[str, Any]:
    return {
        "start": {
            "streamSid": stream_id,
            "accountSid": PROJECT_ID,
            "callSid": call_id,
            "tracks": ["inbound"],
            "customParameters": dict(parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
    }


PROFILE = WireProfile(
    carrier="signalwire",
    id_key="streamSid",
    sequence_key="sequenceNumber",
    outbound_id=True,
    bytes_per_second=8000,
    media_interval_ms=20,
    silence_byte=b"\xff",
    start_body=start_body,
    connected={"event": "connected", "protocol": "Call", "version": "1.0.0"},
)


def voice_webhook(signing_key: str, public_url: str, call_id: str, *, path: str = "/signalwire/voice",
                  caller: str = "+15550001111", callee: str = "+15550002222") -> tuple[dict[str, str], dict[str, str]]:
    """The incoming-call webhook SignalWire POSTs (form fields, headers): Twilio's field names, signed
    with the space's Signing Key in ``X-SignalWire-Signature`` and, for compatibility, ``X-Twilio-Signature``
    (URL + sorted key/value pairs, HMAC-SHA1, base64, computed here from the definition)."""
    import base64
    import hashlib
    import hmac

    form = {"CallSid": call_id, "AccountSid": PROJECT_ID, "From": caller, "To": callee,
            "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    data = public_url.rstrip("/") + path + "".join(k + form[k] for k in sorted(form))
    signature = base64.b64encode(hmac.new(signing_key.encode(), data.encode(), hashlib.sha1).digest()).decode()
    return form, {"X-SignalWire-Signature": signature, "X-Twilio-Signature": signature}
