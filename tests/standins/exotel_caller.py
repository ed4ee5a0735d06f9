"""Exotel's Voicebot media-stream client as a stand-in (docs/providers/exotel.md, "Wire format"): HTTP
Basic on the upgrade, snake_case keys, decimal-string numbers, raw PCM16 little-endian at the applet's
rate sent every 100 ms; it flags our media chunks that are not a multiple of 320 bytes or exceed 100 KB.
Whether Exotel echoes pending marks on ``clear`` is unconfirmed; the profile assumes it does not."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

from service.providers.exotel.dialect import CHUNK_MULTIPLE, MAX_CHUNK, MIN_CHUNK
from tests.standins.json_stream_caller import CarrierFrames, StreamResult, WireProfile, run_stream

__all__ = ["CarrierFrames", "StreamResult", "basic_auth_header", "profile", "run_stream"]

ACCOUNT_SID = "callbridgetest1"


def _sid() -> str:
    return secrets.token_hex(16)


def profile(sample_rate: int = 8000) -> WireProfile:
    """The wire of one Voicebot stream at ``sample_rate`` (the applet URL's ``?sample-rate=``)."""

    def start_body(stream_id: str, call_id: str, parameters: Mapping[str, str]) -> dict[str, Any]:
        return {
            "start": {
                "stream_sid": stream_id,
                "call_sid": call_id,
                "account_sid": ACCOUNT_SID,
                "from": "+919876543210",
                "to": "+918047491899",
                "custom_parameters": dict(parameters),
                "media_format": {"encoding": "audio/x-raw", "sample_rate": str(sample_rate), "bit_rate": "16"},
            }
        }

    return WireProfile(
        carrier="exotel",
        id_key="stream_sid",
        sequence_key="sequence_number",
        outbound_id=True,
        bytes_per_second=sample_rate * 2,
        media_interval_ms=100,
        silence_byte=b"\x00",
        start_body=start_body,
        connected={"event": "connected"},
        multiple_of=CHUNK_MULTIPLE,
        max_bytes=MAX_CHUNK,
        min_bytes=MIN_CHUNK,
        echo_marks_on_clear=False,
        new_id=_sid,
    )


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """The upgrade header Exotel derives from ``wss://user:password@host/...``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
