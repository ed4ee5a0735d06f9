"""SignalWire's media-stream client as a stand-in (docs/providers/signalwire.md, "Wire format"): Twilio's
message set with UUID ids, mu-law 8 kHz in 20 ms frames of 160 bytes; marks echoed when played, pending
marks echoed on ``clear`` (Twilio's rule; not independently verified for SignalWire)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from tests.standins.json_stream_caller import CarrierFrames, StreamResult, WireProfile, run_stream

__all__ = ["PROFILE", "CarrierFrames", "StreamResult", "run_stream", "start_body"]

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
