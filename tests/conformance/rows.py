"""The carriers the conformance suite runs, one ``Row`` each.

A row names the carrier's simulated caller (``service.simcaller.carriers``: how it sets a call up and
speaks the stream), the gateway settings that route it (its signature key, codec choice), and what its
markup looks like after the stream (hang-up, transfer). Adding a carrier = its caller profile + wire in
``service/simcaller/`` and one ``Row`` here.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from service.simcaller.carriers import CARRIERS, CarrierProfile, telnyx_public_key
from tests.integration.conftest import AUTH_TOKEN

PUBLIC_URL = "https://callbridge.example.test"
"""What every gateway in the suite believes it is reached at (SignalWire only streams to wss://); the
callers sign against it and re-aim its URLs at the test's 127.0.0.1 port."""
TRANSFER_QUEUE = "humans"

_TELNYX_SEED = base64.b64encode(bytes(range(1, 33))).decode()
_SIGNALWIRE_KEY = "PSK_conformance_signalwire_0123456789"
_PLIVO_TOKEN = "MzRiNTQxMjQyYzAxOTdkNjhkMDk3Yz"
_VONAGE_SECRET = "vonage-conformance-signature-secret-0123456789"
_EXOTEL_USER, _EXOTEL_PASSWORD = "exotel-conformance", "exotel-basic-password-0123456789"


def _tags(text: str) -> list[tuple[str, str]]:
    """Top-level (tag, text) pairs of a ``<Response>`` document."""
    return [(child.tag, (child.text or "").strip()) for child in ET.fromstring(text)]


@dataclass(frozen=True)
class Row:
    """One carrier (and codec) under test."""

    id: str
    profile: CarrierProfile
    key: str
    """What the carrier signs webhooks with."""
    settings: dict[str, Any]
    """Gateway settings that route the carrier (its verification key, codec)."""
    transfer: tuple[str, str] = ("Enqueue", TRANSFER_QUEUE)
    """The top-level element (tag, text) of the after-stream markup of an escalated call."""
    hangup: tuple[str, str] = ("Hangup", "")
    acks_playback: bool = True
    """The carrier acknowledges playback markers, so truncation must match what was heard (40 ms)."""
    stream_attributes: dict[str, str] = field(default_factory=dict)
    """Attributes the answer's stream element must carry (what makes the carrier stream both ways)."""
    after_path: str = "after-stream"
    """The webhook the carrier asks when the stream ends (``/<carrier>/<after_path>``)."""
    hangup_status: int = 200
    """HTTP status of the after-stream answer that ends the call (Vonage: 204, no NCCO)."""
    json_answers: bool = False
    """The carrier's answers are NCCO JSON (Vonage), not XML."""
    flow_check: str = ""
    """For carriers whose flow asks after the stream instead (Exotel's Passthru): that path, answered 200
    for an escalated call and 302 otherwise."""

    def __str__(self) -> str:
        return self.id

    def after_stream(self, text: str | None) -> tuple[str, str]:
        """The first element of an after-stream answer: (tag, text) of XML; for an NCCO (action, name);
        ("", "") for an empty answer (no NCCO)."""
        if self.json_answers:
            if not text:
                return ("", "")
            first = json.loads(text)[0]
            return (first["action"], first.get("name", ""))
        assert text, "no after-stream answer"
        return _tags(text)[0]


TWILIO = Row("twilio", CARRIERS["twilio"], AUTH_TOKEN, {"twilio_auth_token": AUTH_TOKEN})
SIGNALWIRE = Row("signalwire", CARRIERS["signalwire"], _SIGNALWIRE_KEY, {"signalwire_signing_key": _SIGNALWIRE_KEY})
TELNYX = Row("telnyx", CARRIERS["telnyx"], _TELNYX_SEED,
             {"telnyx_public_key": telnyx_public_key(_TELNYX_SEED), "telnyx_codec": "PCMU"},
             stream_attributes={"bidirectionalMode": "rtp", "bidirectionalCodec": "PCMU"})
PLIVO = Row("plivo", CARRIERS["plivo"], _PLIVO_TOKEN, {"plivo_auth_token": _PLIVO_TOKEN},
            transfer=("Conference", TRANSFER_QUEUE),
            stream_attributes={"bidirectional": "true", "keepCallAlive": "true", "audioTrack": "inbound",
                               "contentType": "audio/x-mulaw;rate=8000"})

VONAGE = Row("vonage", CARRIERS["vonage"], _VONAGE_SECRET, {"vonage_signature_secret": _VONAGE_SECRET},
             transfer=("conversation", TRANSFER_QUEUE), hangup=("", ""), hangup_status=204, after_path="event",
             json_answers=True, stream_attributes={"content-type": "audio/l16;rate=16000"})
EXOTEL = Row("exotel", CARRIERS["exotel"], f"{_EXOTEL_USER}:{_EXOTEL_PASSWORD}",
             {"exotel_stream_user": _EXOTEL_USER, "exotel_stream_password": _EXOTEL_PASSWORD},
             flow_check="/exotel/passthru")

ROWS = [TWILIO, SIGNALWIRE, TELNYX, PLIVO, VONAGE, EXOTEL]
"""Every routed carrier, at its default codec: every conformance test runs once per row."""

CODEC_ROWS = [
    Row("telnyx-l16", CARRIERS["telnyx"], _TELNYX_SEED,
        {"telnyx_public_key": telnyx_public_key(_TELNYX_SEED), "telnyx_codec": "L16"},
        stream_attributes={"bidirectionalMode": "rtp", "bidirectionalCodec": "L16"}),
    Row("plivo-l16-16k", CARRIERS["plivo"], _PLIVO_TOKEN,
        {"plivo_auth_token": _PLIVO_TOKEN, "plivo_content_type": "l16-16k"}, transfer=("Conference", TRANSFER_QUEUE),
        stream_attributes={"contentType": "audio/x-l16;rate=16000"}),
    Row("vonage-8k", CARRIERS["vonage"], _VONAGE_SECRET, {"vonage_signature_secret": _VONAGE_SECRET, "vonage_rate": 8000},
        transfer=("conversation", TRANSFER_QUEUE), hangup=("", ""), hangup_status=204, after_path="event",
        json_answers=True, stream_attributes={"content-type": "audio/l16;rate=8000"}),
]
"""The non-default codecs, run through a full turn."""
