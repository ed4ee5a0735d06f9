"""Telnyx's media-stream client as a stand-in (docs/providers/telnyx.md, "Wire format"): snake_case keys,
top-level ``stream_id`` (a UUID), ``call_control_id`` ``v3:...``, decimal-string counters, the RTP payload
of the configured codec in 20 ms frames; our outbound messages carry no stream id. Whether Telnyx echoes
pending marks on ``clear`` is unconfirmed; the profile assumes it does not (the stricter case)."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from service.providers.telnyx.dialect import TelnyxCodec
from tests.standins.json_stream_caller import CarrierFrames, StreamResult, WireProfile, run_stream

__all__ = ["CarrierFrames", "StreamResult", "new_call_control_id", "profile", "run_stream", "voice_webhook"]

USER_ID = "3e6f995f-85f7-4705-9741-53b116d28237"
_ENCODING_SPELLING = {"PCMU": "PCMU", "PCMA": "PCMA", "L16": "L16"}
_SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5", "L16": b"\x00"}


def profile(codec: TelnyxCodec = "PCMU", *, mime_spelling: bool = False) -> WireProfile:
    """The wire of one Telnyx stream in ``codec``; ``mime_spelling`` uses the older ``audio/x-mulaw``
    spelling of ``media_format.encoding`` that some accounts still get."""
    rate = 16000 if codec == "L16" else 8000
    width = 2 if codec == "L16" else 1
    encoding = {"PCMU": "audio/x-mulaw", "PCMA": "audio/x-alaw", "L16": "audio/L16"}[codec] if mime_spelling \
        else _ENCODING_SPELLING[codec]

    def start_body(stream_id: str, call_id: str, parameters: Mapping[str, str]) -> dict[str, Any]:
        return {
            "start": {
                "user_id": USER_ID,
                "call_control_id": call_id,
                "call_session_id": "ff55a038-3bd3-11ee-9c83-02420a0d7e68",
                "client_state": base64.b64encode(b"callbridge").decode(),
                "from": "+13122010094",
                "to": "+13122123456",
                "custom_parameters": dict(parameters),
                "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
            }
        }

    return WireProfile(
        carrier="telnyx",
        id_key="stream_id",
        sequence_key="sequence_number",
        outbound_id=False,
        bytes_per_second=rate * width,
        media_interval_ms=20,
        silence_byte=_SILENCE[codec],
        start_body=start_body,
        connected={"event": "connected", "version": "1.0.0"},
        multiple_of=width,
        max_bytes=rate * width * 30,
        echo_marks_on_clear=False,
        new_call_id=new_call_control_id,
    )


def new_call_control_id() -> str:
    return "v3:" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")


def voice_webhook(signer: Any, call_id: str, now: float, *, caller: str = "+13122010094",
                  callee: str = "+13122123456") -> tuple[bytes, dict[str, str]]:
    """The TeXML voice webhook Telnyx POSTs (raw form body, headers), signed with ``signer`` (a PyNaCl
    ``SigningKey`` standing in for Telnyx's key) over ``"<timestamp>|<body>"``. Twilio-style field names
    (as TeXML uses; the exact set is not needed by the gateway beyond ``CallSid``)."""
    from urllib.parse import urlencode

    timestamp = str(int(now))
    body = urlencode({"CallSid": call_id, "AccountSid": USER_ID, "From": caller, "To": callee,
                      "CallStatus": "ringing", "Direction": "inbound"}).encode()
    signature = base64.b64encode(signer.sign(timestamp.encode() + b"|" + body).signature).decode()
    return body, {"telnyx-signature-ed25519": signature, "telnyx-timestamp": timestamp,
                  "Content-Type": "application/x-www-form-urlencoded"}
