"""What each carrier's platform sends on a media stream and accepts back, as pure per-call objects for the
simulated caller (``service.simcaller.carrier_call``): the conformance suite, ``callbridge call
--provider`` and the load generator all speak a carrier through one of these.

Pure code: frames in, frames out, no sockets. One ``CallerWire`` per stream; it numbers the carrier's
messages the way the carrier does (so it is stateful, and not thread-safe). The wire facts are in
``docs/providers/<carrier>.md`` ("Wire format"); where a fact is unconfirmed (whether pending marks are
echoed on a flush) the wire takes the stricter assumption the docs name.

Adding a carrier here = one ``CallerWire`` subclass and one entry in ``service.simcaller.carriers``.
"""

from __future__ import annotations

import binascii
import json
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from service.audio.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

__all__ = [
    "CallerWire",
    "ExotelWire",
    "JsonStreamWire",
    "Outbound",
    "PlivoWire",
    "SignalWireWire",
    "TelnyxWire",
    "TwilioWire",
    "VonageWire",
    "WireAudio",
]

Frame = str | bytes


@dataclass(frozen=True)
class WireAudio:
    """One stream's audio format: codec (``mulaw``, ``alaw``, ``l16le``, ``l16be``) and sample rate."""

    codec: str
    rate: int

    @property
    def width(self) -> int:
        return 2 if self.codec.startswith("l16") else 1

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.width

    @property
    def silence(self) -> bytes:
        """One sample of silence in this codec."""
        return {"mulaw": b"\xff", "alaw": b"\xd5"}.get(self.codec, b"\x00\x00")

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """int16 PCM at ``rate`` -> wire bytes."""
        samples = np.asarray(pcm, dtype=np.int16)
        if self.codec == "mulaw":
            return pcm16_to_ulaw(samples)
        if self.codec == "alaw":
            return pcm16_to_alaw(samples)
        return samples.astype("<i2" if self.codec == "l16le" else ">i2").tobytes()

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        """Wire bytes -> int16 PCM at ``rate`` (a trailing odd byte of L16 is dropped)."""
        if self.codec == "mulaw":
            return ulaw_to_pcm16(data)
        if self.codec == "alaw":
            return alaw_to_pcm16(data)
        usable = len(data) - len(data) % 2
        return np.frombuffer(data[:usable], dtype="<i2" if self.codec == "l16le" else ">i2").astype(np.int16)


@dataclass
class Outbound:
    """One gateway->carrier frame as the carrier reads it: ``kind`` is ``media`` (``audio`` set),
    ``mark`` (``name`` set: a playback marker), ``clear`` (flush), or ``invalid``. ``problems`` lists the
    carrier's rules the frame breaks; ``replies`` are frames the carrier answers with at once (Plivo's
    ``clearedAudio``)."""

    kind: str
    audio: bytes = b""
    name: str = ""
    problems: list[str] = field(default_factory=list)
    replies: list[Frame] = field(default_factory=list)


class CallerWire(ABC):
    """The carrier side of one media stream."""

    carrier: str
    audio: WireAudio
    frame_ms: int = 20
    """How often the carrier sends a media frame."""
    echo_marks_on_clear: bool = False
    """Whether markers still pending when we flush are acknowledged anyway (Twilio's rule)."""
    call_id: str
    stream_id: str

    @property
    def frame_bytes(self) -> int:
        return self.audio.bytes_per_second * self.frame_ms // 1000

    @abstractmethod
    def opening(self, parameters: Mapping[str, str]) -> list[Frame]:
        """The frames that open the stream (``connected``, ``start``); ``parameters`` are what the carrier
        echoes from our set-up answer (``<Parameter>``s, or Plivo's ``extraHeaders`` as one string)."""

    @abstractmethod
    def media(self, chunk: bytes) -> Frame:
        """One frame of caller audio (``frame_bytes`` of wire audio)."""

    @abstractmethod
    def dtmf(self, digit: str) -> Frame:
        """One key press."""

    @abstractmethod
    def ack(self, name: str) -> Frame:
        """The acknowledgement of the playback marker ``name`` (played, or flushed where echoed)."""

    @abstractmethod
    def stop(self) -> Frame | None:
        """The carrier's end-of-stream message before it closes, or None when it just closes."""

    @abstractmethod
    def read(self, frame: Frame) -> Outbound:
        """One gateway frame, checked against the carrier's rules."""


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _payload(value: object, problems: list[str], what: str) -> bytes:
    """A strict-base64 audio payload, or b"" with a problem recorded."""
    if not isinstance(value, str) or not value:
        problems.append(f"{what} missing or empty")
        return b""
    try:
        audio = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        problems.append(f"{what} is not valid base64")
        return b""
    if not audio:
        problems.append(f"{what} decodes to nothing")
    elif audio[:4] == b"RIFF":
        problems.append(f"{what} carries a WAV header (must be raw audio)")
    return audio


def _json_object(frame: Frame, carrier: str) -> tuple[dict[str, Any] | None, list[str]]:
    if not isinstance(frame, str):
        return None, [f"binary frame ({carrier} expects JSON text frames)"]
    try:
        msg = json.loads(frame)
    except ValueError:
        return None, ["frame is not JSON"]
    if not isinstance(msg, dict):
        return None, ["frame is not a JSON object"]
    return msg, []


class JsonStreamWire(CallerWire):
    """Twilio-shaped JSON text streams (Twilio, SignalWire, Telnyx): ``connected``, ``start``, ``media``,
    ``dtmf``, ``mark``, ``stop`` in; ``media``, ``mark``, ``clear`` out. Counters are decimal strings;
    the sequence number counts every message from ``start`` = "1"."""

    id_key = "streamSid"
    sequence_key = "sequenceNumber"
    outbound_id = True
    """Whether our outbound messages must carry the stream id."""
    connected_message: ClassVar[dict[str, Any]] = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    dtmf_track: str | None = "inbound_track"
    max_payload_s = 0
    """Largest outbound media chunk the carrier takes, in seconds (0: no limit)."""

    def __init__(self, audio: WireAudio, call_id: str, stream_id: str) -> None:
        self.audio = audio
        self.call_id = call_id
        self.stream_id = stream_id
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0

    def _envelope(self, event: str) -> dict[str, Any]:
        self._seq += 1
        return {"event": event, self.sequence_key: str(self._seq), self.id_key: self.stream_id}

    @abstractmethod
    def start_body(self, parameters: Mapping[str, str]) -> dict[str, Any]:
        """The ``start`` object."""

    def stop_body(self) -> dict[str, Any]:
        return {"callSid": self.call_id}

    def opening(self, parameters: Mapping[str, str]) -> list[Frame]:
        start = self._envelope("start")
        start["start"] = self.start_body(parameters)
        return [json.dumps(self.connected_message), json.dumps(start)]

    def media(self, chunk: bytes) -> Frame:
        self._chunk += 1
        msg = self._envelope("media")
        msg["media"] = {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(self._audio_ms),
                        "payload": _b64(chunk)}
        self._audio_ms += len(chunk) * 1000 // self.audio.bytes_per_second
        return json.dumps(msg)

    def dtmf(self, digit: str) -> Frame:
        msg = self._envelope("dtmf")
        msg["dtmf"] = {"digit": digit} if self.dtmf_track is None else {"track": self.dtmf_track, "digit": digit}
        return json.dumps(msg)

    def ack(self, name: str) -> Frame:
        msg = self._envelope("mark")
        msg["mark"] = {"name": name}
        return json.dumps(msg)

    def stop(self) -> Frame | None:
        msg = self._envelope("stop")
        msg["stop"] = self.stop_body()
        return json.dumps(msg)

    def read(self, frame: Frame) -> Outbound:
        msg, problems = _json_object(frame, self.carrier)
        if msg is None:
            return Outbound("invalid", problems=problems)
        event = msg.get("event")
        if self.outbound_id and msg.get(self.id_key) != self.stream_id:
            problems.append(f"{event!r} {self.id_key} {msg.get(self.id_key)!r} != {self.stream_id!r}")
        if event == "media":
            media = msg.get("media")
            audio = _payload(media.get("payload") if isinstance(media, dict) else None, problems, "media.payload")
            if audio and len(audio) % self.audio.width:
                problems.append(f"media chunk of {len(audio)} B is not whole samples")
            if audio and self.max_payload_s and len(audio) > self.max_payload_s * self.audio.bytes_per_second:
                problems.append(f"media chunk of {len(audio)} B exceeds {self.max_payload_s} s")
            return Outbound("media", audio=audio, problems=problems)
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                problems.append("mark.name missing or not a string")
                return Outbound("invalid", problems=problems)
            return Outbound("mark", name=name, problems=problems)
        if event == "clear":
            return Outbound("clear", problems=problems)
        return Outbound("invalid", problems=[*problems, f"unexpected event {event!r}"])


class TwilioWire(JsonStreamWire):
    """Twilio Media Streams (docs/providers/twilio.md): ``CA``/``MZ``/``AC`` + 32 hex ids, mu-law 8 kHz,
    every pending mark echoed on ``clear``."""

    carrier = "twilio"
    echo_marks_on_clear = True

    def __init__(self, call_id: str, account_id: str | None = None) -> None:
        super().__init__(WireAudio("mulaw", 8000), call_id, "MZ" + secrets.token_hex(16))
        self.account_id = account_id or "AC" + secrets.token_hex(16)

    def start_body(self, parameters: Mapping[str, str]) -> dict[str, Any]:
        return {"accountSid": self.account_id, "streamSid": self.stream_id, "callSid": self.call_id,
                "tracks": ["inbound"], "customParameters": dict(parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}

    def stop_body(self) -> dict[str, Any]:
        return {"accountSid": self.account_id, "callSid": self.call_id}


class SignalWireWire(TwilioWire):
    """SignalWire cXML streams (docs/providers/signalwire.md): Twilio's messages with UUID ids; pending
    marks echoed on ``clear`` like Twilio (not independently confirmed)."""

    carrier = "signalwire"

    def __init__(self, call_id: str, account_id: str | None = None) -> None:
        super().__init__(call_id, account_id or str(uuid.uuid4()))
        self.stream_id = str(uuid.uuid4())


class TelnyxWire(JsonStreamWire):
    """Telnyx TeXML streams in RTP mode (docs/providers/telnyx.md): snake_case keys, top-level
    ``stream_id``, no stream id on our messages, the configured codec (PCMU, PCMA, or L16 16 kHz as
    network-order RTP payload), media chunks of at most 30 s; pending marks assumed not echoed."""

    carrier = "telnyx"
    id_key = "stream_id"
    sequence_key = "sequence_number"
    outbound_id = False
    connected_message: ClassVar[dict[str, Any]] = {"event": "connected", "version": "1.0.0"}
    dtmf_track = None
    max_payload_s = 30
    CODEC_AUDIO: ClassVar[dict[str, WireAudio]] = {"PCMU": WireAudio("mulaw", 8000), "PCMA": WireAudio("alaw", 8000), "L16": WireAudio("l16be", 16000)}

    def __init__(self, call_id: str, codec: str = "PCMU") -> None:
        super().__init__(self.CODEC_AUDIO[codec], call_id, str(uuid.uuid4()))
        self.codec = codec

    def start_body(self, parameters: Mapping[str, str]) -> dict[str, Any]:
        return {"user_id": "3e6f995f-85f7-4705-9741-53b116d28237", "call_control_id": self.call_id,
                "call_session_id": str(uuid.uuid4()), "from": "+13122010094", "to": "+13122123456",
                "custom_parameters": dict(parameters),
                "media_format": {"encoding": self.codec, "sample_rate": self.audio.rate, "channels": 1}}

    def stop_body(self) -> dict[str, Any]:
        return {"call_control_id": self.call_id}


class PlivoWire(CallerWire):
    """Plivo Audio Streams (docs/providers/plivo.md): numeric ``sequenceNumber``/``chunk``, epoch-ms
    ``timestamp``, the ``extraHeaders`` string echoed as ``extra_headers`` on ``start`` and ``media``;
    ``playAudio`` in the stream's content type, ``checkpoint`` answered by ``playedStream``,
    ``clearAudio`` answered by ``clearedAudio`` (pending checkpoints assumed not answered). The stream
    ends by socket close (``stop`` returns None)."""

    carrier = "plivo"
    CONTENT_AUDIO: ClassVar[dict[str, tuple[str, WireAudio]]] = {
        "audio/x-mulaw;rate=8000": ("audio/x-mulaw", WireAudio("mulaw", 8000)),
        "audio/x-l16;rate=8000": ("audio/x-l16", WireAudio("l16le", 8000)),
        "audio/x-l16;rate=16000": ("audio/x-l16", WireAudio("l16le", 16000)),
    }
    ACCOUNT_ID = "MAODZKMDFJMJU3MTEYNG"

    def __init__(self, call_id: str, content_type: str = "audio/x-mulaw;rate=8000") -> None:
        self.encoding, self.audio = self.CONTENT_AUDIO[content_type]
        self.call_id = call_id
        self.stream_id = str(uuid.uuid4())
        self.extra_headers = ""
        self._seq = 0
        self._chunk = 0
        self._epoch_ms = int(time.time() * 1000)

    def _next(self, event: str, with_id: bool = True) -> dict[str, Any]:
        self._seq += 1
        msg: dict[str, Any] = {"event": event, "sequenceNumber": self._seq}
        if with_id:
            msg["streamId"] = self.stream_id
        return msg

    def opening(self, parameters: Mapping[str, str]) -> list[Frame]:
        self.extra_headers = ",".join(f"{k}={v}" for k, v in parameters.items())
        msg = self._next("start", with_id=False)
        msg["start"] = {"callId": self.call_id, "streamId": self.stream_id, "accountId": self.ACCOUNT_ID,
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": self.encoding, "sampleRate": self.audio.rate}}
        msg["extra_headers"] = self.extra_headers
        return [json.dumps(msg)]

    def media(self, chunk: bytes) -> Frame:
        self._chunk += 1
        msg = self._next("media")
        msg["media"] = {"track": "inbound", "timestamp": str(self._epoch_ms + self.frame_ms * (self._chunk - 1)),
                        "chunk": self._chunk, "payload": _b64(chunk)}
        msg["extra_headers"] = self.extra_headers
        return json.dumps(msg)

    def dtmf(self, digit: str) -> Frame:
        msg = self._next("dtmf")
        msg["dtmf"] = {"digit": digit}
        return json.dumps(msg)

    def ack(self, name: str) -> Frame:
        msg = self._next("playedStream")
        msg["name"] = name
        return json.dumps(msg)

    def stop(self) -> Frame | None:
        return None

    def read(self, frame: Frame) -> Outbound:
        msg, problems = _json_object(frame, self.carrier)
        if msg is None:
            return Outbound("invalid", problems=problems)
        event = msg.get("event")
        if event == "playAudio":
            media = msg.get("media")
            if not isinstance(media, dict):
                return Outbound("invalid", problems=["playAudio.media missing"])
            if media.get("contentType") != self.encoding:
                problems.append(f"contentType {media.get('contentType')!r} != {self.encoding!r}")
            if media.get("sampleRate") != self.audio.rate:
                problems.append(f"sampleRate {media.get('sampleRate')!r} != {self.audio.rate}")
            audio = _payload(media.get("payload"), problems, "playAudio.media.payload")
            if audio and len(audio) % self.audio.width:
                problems.append(f"payload of {len(audio)} B is not whole samples")
            return Outbound("media", audio=audio, problems=problems)
        if event == "checkpoint":
            name = msg.get("name")
            if msg.get("streamId") != self.stream_id:
                problems.append("checkpoint must name the stream")
            if not isinstance(name, str) or not name:
                return Outbound("invalid", problems=[*problems, "checkpoint needs a name"])
            return Outbound("mark", name=name, problems=problems)
        if event == "clearAudio":
            if msg.get("streamId") != self.stream_id:
                problems.append("clearAudio must name the stream")
            return Outbound("clear", problems=problems, replies=[json.dumps(self._next("clearedAudio"))])
        return Outbound("invalid", problems=[f"Plivo does not accept event {event!r}"])


class ExotelWire(JsonStreamWire):
    """Exotel's Voicebot stream (docs/providers/exotel.md): snake_case keys, decimal strings, raw PCM16
    little-endian at the applet's rate, caller audio every 100 ms; our media chunks must be a multiple
    of 320 bytes, at most 100 KB (3.2 KB at least, except a reply's last chunk); pending marks assumed
    not echoed on ``clear``."""

    carrier = "exotel"
    id_key = "stream_sid"
    sequence_key = "sequence_number"
    connected_message: ClassVar[dict[str, Any]] = {"event": "connected"}
    dtmf_track = None
    frame_ms = 100
    CHUNK_MULTIPLE = 320
    MAX_CHUNK = 100_000

    def __init__(self, call_id: str, sample_rate: int = 8000) -> None:
        super().__init__(WireAudio("l16le", sample_rate), call_id, secrets.token_hex(16))
        self.account_id = "callbridgetest1"

    def start_body(self, parameters: Mapping[str, str]) -> dict[str, Any]:
        return {"stream_sid": self.stream_id, "call_sid": self.call_id, "account_sid": self.account_id,
                "from": "+919876543210", "to": "+918047491899", "custom_parameters": dict(parameters),
                "media_format": {"encoding": "audio/x-raw", "sample_rate": str(self.audio.rate), "bit_rate": "16"}}

    def stop_body(self) -> dict[str, Any]:
        return {"call_sid": self.call_id, "account_sid": self.account_id, "reason": "callended"}

    def media(self, chunk: bytes) -> Frame:
        frame = json.loads(super().media(chunk))
        del frame["media"]["track"]  # Exotel's media carries no track
        return json.dumps(frame)

    def read(self, frame: Frame) -> Outbound:
        out = super().read(frame)
        if out.kind == "media" and out.audio:
            if len(out.audio) % self.CHUNK_MULTIPLE:
                out.problems.append(f"media chunk of {len(out.audio)} B is not a multiple of {self.CHUNK_MULTIPLE}")
            if len(out.audio) > self.MAX_CHUNK:
                out.problems.append(f"media chunk of {len(out.audio)} B exceeds {self.MAX_CHUNK}")
        return out


class VonageWire(CallerWire):
    """Vonage's Voice API websocket (docs/providers/vonage.md): the NCCO ``headers`` flattened onto
    ``websocket:connected``, then BINARY 20 ms frames of L16 little-endian both ways (each of ours exactly
    one frame), ``notify`` echoed as ``websocket:notify``, ``clear`` answered by ``websocket:cleared``
    (pending notifies assumed not echoed). No stop message: the socket closes (``stop`` returns None)."""

    carrier = "vonage"

    def __init__(self, call_id: str, sample_rate: int = 16000) -> None:
        self.audio = WireAudio("l16le", sample_rate)
        self.call_id = call_id
        self.stream_id = call_id
        self._payloads: dict[str, dict[str, Any]] = {}

    def opening(self, parameters: Mapping[str, str]) -> list[Frame]:
        return [json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={self.audio.rate}",
                            **parameters})]

    def media(self, chunk: bytes) -> Frame:
        return bytes(chunk)

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def ack(self, name: str) -> Frame:
        return json.dumps({"event": "websocket:notify", "payload": self._payloads.pop(name, {"name": name})})

    def stop(self) -> Frame | None:
        return None

    def read(self, frame: Frame) -> Outbound:
        if isinstance(frame, bytes):
            size = self.frame_bytes
            problems = [] if len(frame) == size else [f"binary frame of {len(frame)} B, need exactly {size}"]
            return Outbound("media", audio=frame, problems=problems)
        msg, problems = _json_object(frame, self.carrier)
        if msg is None:
            return Outbound("invalid", problems=problems)
        action = msg.get("action")
        if action == "notify":
            payload = msg.get("payload")
            if not isinstance(payload, dict):
                return Outbound("invalid", problems=["notify needs a payload object"])
            name = json.dumps(payload, sort_keys=True)  # the payload itself is the marker's identity
            self._payloads[name] = payload
            return Outbound("mark", name=name)
        if action == "clear":
            return Outbound("clear", replies=[json.dumps({"event": "websocket:cleared"})])
        return Outbound("invalid", problems=[f"Vonage does not accept {str(msg)[:60]!r}"])
