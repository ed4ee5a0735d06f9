"""Protocol-exact stand-in for a carrier's media-stream client when the carrier speaks Twilio-shaped JSON
text frames (SignalWire, Telnyx, Exotel): what the carrier's platform sends and expects on the socket.

Two layers, like the Twilio caller (``service/simcaller/twilio_caller.py``):

- pure: ``WireProfile`` (one carrier's key names, ids, audio format and outbound framing rules),
  ``CarrierFrames`` (the carrier's inbound messages with its own sequence numbering, chunk and timestamp
  rules) and ``validate_gateway_frame`` (checks one gateway->carrier frame against the carrier's rules);
- async: ``run_stream`` opens the WebSocket on 127.0.0.1, sends ``connected`` and ``start``, then one
  media frame per ``profile.media_interval_ms`` on absolute loop-clock deadlines (never a sleep as
  synchronisation of the peer), plays the bot's audio with the Twilio caller's ``PlaybackBuffer`` at the
  stream's byte rate, echoes marks when playback reaches them, flushes on ``clear`` (echoing pending marks
  only if ``profile.echo_marks_on_clear``), can inject DTMF, and ends with ``stop`` (or waits for the
  gateway to close).

Memory per stream: the caller audio script (what the test queued), the bot audio received (bytes per
second of the stream's format) and one small record per gateway frame; the run is bounded by
``max_duration_s``.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.simcaller.twilio_caller import MarkRecord, PlaybackBuffer

__all__ = [
    "CarrierFrames",
    "StreamMarkup",
    "StreamResult",
    "WireProfile",
    "parse_stream_markup",
    "run_stream",
    "validate_gateway_frame",
]


@dataclass(frozen=True)
class WireProfile:
    """One carrier's JSON media-stream wire: the facts a stand-in needs (see each docs/providers page)."""

    carrier: str
    id_key: str
    sequence_key: str
    outbound_id: bool
    """Whether the carrier expects its stream id on our outbound messages."""
    bytes_per_second: int
    media_interval_ms: int
    silence_byte: bytes
    start_body: Callable[[str, str, Mapping[str, str]], dict[str, Any]]
    """(stream id, call id, custom parameters) -> the whole ``start`` message minus envelope fields."""
    connected: dict[str, Any] = field(default_factory=lambda: {"event": "connected"})
    multiple_of: int = 1
    max_bytes: int = 0
    min_bytes: int = 0
    """Chunks shorter than this play badly (Exotel: 3.2 KB); counted in ``StreamResult.short_chunks``,
    not a violation, since a reply's last chunk may be shorter."""
    echo_marks_on_clear: bool = True
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())
    new_call_id: Callable[[], str] | None = None
    """Call ids, when they differ in shape from stream ids (Telnyx ``v3:...``)."""

    @property
    def frame_bytes(self) -> int:
        return self.bytes_per_second * self.media_interval_ms // 1000


class CarrierFrames:
    """Builds the carrier's inbound messages for one stream: sequence numbers count every message from
    ``start`` = "1", ``chunk`` counts media frames from "1", ``timestamp`` is the ms offset of the frame's
    first sample. Numbers are decimal strings, as these carriers send them."""

    def __init__(self, profile: WireProfile, stream_id: str | None = None, call_id: str | None = None) -> None:
        self.profile = profile
        self.stream_id = stream_id or profile.new_id()
        self.call_id = call_id or (profile.new_call_id or profile.new_id)()
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0

    def _envelope(self, event: str) -> dict[str, Any]:
        self._seq += 1
        return {"event": event, self.profile.sequence_key: str(self._seq), self.profile.id_key: self.stream_id}

    def connected(self) -> str:
        return json.dumps(self.profile.connected)

    def start(self, parameters: Mapping[str, str] | None = None) -> str:
        msg = self._envelope("start")
        msg.update(self.profile.start_body(self.stream_id, self.call_id, dict(parameters or {})))
        return json.dumps(msg)

    def media(self, audio: bytes) -> str:
        self._chunk += 1
        msg = self._envelope("media")
        msg["media"] = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(self._audio_ms),
            "payload": binascii.b2a_base64(audio, newline=False).decode("ascii"),
        }
        self._audio_ms += len(audio) * 1000 // self.profile.bytes_per_second
        if self.profile.carrier == "exotel":
            del msg["media"]["track"]  # Exotel's media carries no track
        return json.dumps(msg)

    def dtmf(self, digit: str) -> str:
        msg = self._envelope("dtmf")
        msg["dtmf"] = {"digit": digit}
        return json.dumps(msg)

    def mark(self, name: str) -> str:
        msg = self._envelope("mark")
        msg["mark"] = {"name": name}
        return json.dumps(msg)

    def stop(self, reason: str = "") -> str:
        msg = self._envelope("stop")
        body: dict[str, Any] = {}
        if self.profile.carrier == "exotel":
            body = {"call_sid": self.call_id, "reason": reason or "callended"}
        elif self.profile.carrier == "telnyx":
            body = {"call_control_id": self.call_id}
        else:
            body = {"callSid": self.call_id}
        msg["stop"] = body
        return json.dumps(msg)


def validate_gateway_frame(
    profile: WireProfile, frame: str | bytes, stream_id: str | None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Check one gateway->carrier frame against the carrier's rules: (decoded object or None, problems)."""
    if not isinstance(frame, str):
        return None, [f"binary frame ({profile.carrier} expects JSON text frames)"]
    try:
        msg = json.loads(frame)
    except ValueError:
        return None, ["frame is not JSON"]
    if not isinstance(msg, dict):
        return None, ["frame is not a JSON object"]
    problems: list[str] = []
    event = msg.get("event")
    if event not in ("media", "mark", "clear"):
        problems.append(f"unexpected event {event!r}")
    if stream_id is None:
        problems.append(f"{event!r} sent before start")
    elif profile.outbound_id and msg.get(profile.id_key) != stream_id:
        problems.append(f"{event!r} {profile.id_key} {msg.get(profile.id_key)!r} != {stream_id!r}")
    if event == "media":
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str) or not payload:
            problems.append("media.payload missing or empty")
        else:
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError):
                problems.append("media.payload is not valid base64")
            else:
                if not audio:
                    problems.append("media.payload decodes to nothing")
                elif audio[:4] == b"RIFF":
                    problems.append("media.payload carries a WAV header (must be raw audio)")
                elif len(audio) % profile.multiple_of:
                    problems.append(f"media chunk of {len(audio)} B is not a multiple of {profile.multiple_of}")
                elif profile.max_bytes and len(audio) > profile.max_bytes:
                    problems.append(f"media chunk of {len(audio)} B exceeds {profile.max_bytes}")
    elif event == "mark":
        mark = msg.get("mark")
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
            problems.append("mark.name missing or not a string")
    return msg, problems


@dataclass
class StreamResult:
    """What one stand-in stream saw. Times are loop times; ``origin`` is when ``start`` was sent."""

    frames: CarrierFrames
    origin: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    echoed_marks: list[MarkRecord] = field(default_factory=list)
    clears: int = 0
    close_code: int | None = None
    playback: PlaybackBuffer | None = None
    short_chunks: int = 0
    """Media chunks under ``profile.min_bytes``."""


async def run_stream(
    profile: WireProfile,
    ws_url: str,
    caller_audio: bytes = b"",
    *,
    parameters: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    dtmf: Sequence[tuple[float, str]] = (),
    duration_s: float = 1.0,
    send_stop: bool = True,
    max_duration_s: float = 30.0,
    frames: CarrierFrames | None = None,
) -> StreamResult:
    """Play one stream against ``ws_url`` like the carrier would, for ``duration_s`` of media (silence
    after ``caller_audio`` runs out), DTMF at the given offsets, then ``stop`` (if ``send_stop``) and close.
    Returns early when the gateway closes. Bounded by ``max_duration_s`` whatever the gateway does."""
    loop = asyncio.get_running_loop()
    frames = frames or CarrierFrames(profile)
    result = StreamResult(frames=frames)
    step = profile.frame_bytes
    total_frames = max(1, round(duration_s * 1000 / profile.media_interval_ms))
    pending_dtmf = sorted(dtmf)
    async with asyncio.timeout(max_duration_s), connect(
        ws_url, additional_headers=dict(headers or {}), open_timeout=5
    ) as ws:
        try:
            await ws.send(frames.connected())
            await ws.send(frames.start(parameters))
        except ConnectionClosed:  # refused before the stream began (e.g. Exotel's credentials)
            result.close_code = ws.close_code
            return result
        result.origin = loop.time()
        playback = PlaybackBuffer(result.origin, profile.bytes_per_second)
        result.playback = playback
        send_lock = asyncio.Lock()

        async def echo(marks: list[MarkRecord]) -> None:
            for mark in marks:
                async with send_lock:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frames.mark(mark.name))
                mark.echoed_at = loop.time()
                result.echoed_marks.append(mark)

        async def reader() -> None:
            try:
                async for message in ws:
                    now = loop.time()
                    msg, problems = validate_gateway_frame(profile, message, frames.stream_id)
                    result.violations.extend(problems)
                    if msg is None:
                        continue
                    result.received.append(msg)
                    event = msg.get("event")
                    if event == "media" and not problems:
                        audio = binascii.a2b_base64(msg["media"]["payload"])
                        result.short_chunks += len(audio) < profile.min_bytes
                        await echo(playback.add_media(now, audio))
                    elif event == "mark" and not problems:
                        await echo(playback.add_mark(now, msg["mark"]["name"]))
                    elif event == "clear":
                        result.clears += 1
                        flushed = playback.clear(now)
                        await echo(flushed if profile.echo_marks_on_clear else [m for m in flushed if not m.cleared])
            except ConnectionClosed:
                pass
            result.close_code = ws.close_code

        reading = asyncio.create_task(reader())
        try:
            for k in range(total_frames):
                deadline = result.origin + (k + 1) * profile.media_interval_ms / 1000
                while pending_dtmf and pending_dtmf[0][0] <= deadline - result.origin:
                    async with send_lock:
                        await ws.send(frames.dtmf(pending_dtmf.pop(0)[1]))
                # Wake at the frame deadline, or earlier when a mark falls due.
                while (now := loop.time()) < deadline and not reading.done():
                    due = playback.next_mark_due()
                    wake = deadline if due is None or due <= now else min(deadline, due)
                    await asyncio.wait({reading}, timeout=max(0.0, wake - now))
                    await echo(playback.advance(loop.time()))
                if reading.done():
                    break
                chunk = caller_audio[k * step:(k + 1) * step]
                chunk += profile.silence_byte * (step - len(chunk))
                async with send_lock:
                    await ws.send(frames.media(chunk))
            if send_stop and not reading.done():
                async with send_lock:
                    await ws.send(frames.stop())
                await ws.close()
        except ConnectionClosed:
            pass
        await reading
    return result


@dataclass(frozen=True)
class StreamMarkup:
    """What a carrier reads from our ``<Connect><Stream>`` answer (cXML / TeXML)."""

    url: str
    attributes: dict[str, str]
    parameters: dict[str, str]
    after: str | None
    """The ``<Redirect>`` URL run when the stream ends, if any."""


def parse_stream_markup(xml_text: str) -> StreamMarkup:
    """Read ``<Response><Connect><Stream url ...><Parameter/>...</Stream></Connect><Redirect>`` like the
    carrier does; ``ValueError`` when there is no ``<Connect><Stream>`` (the carrier would not stream)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml_text)
    if root.tag != "Response":
        raise ValueError(f"root element is {root.tag!r}, not Response")
    stream = root.find("Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError("no <Connect><Stream url=...>")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    redirect = root.find("Redirect")
    return StreamMarkup(
        url=stream.get("url", ""),
        attributes=dict(stream.attrib),
        parameters=params,
        after=(redirect.text or "").strip() if redirect is not None else None,
    )
