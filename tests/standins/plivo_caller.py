"""Plivo's Audio Stream client as a stand-in (docs/providers/plivo.md, "Wire format"): what Plivo's
platform sends on a bidirectional ``<Stream>`` and what it accepts back.

Pure layer: ``PlivoFrames`` builds Plivo's inbound messages (``start`` with the id inside ``start``,
numeric ``sequenceNumber`` and ``chunk``, epoch-ms string ``timestamp``, ``extra_headers`` echoed on
``start`` and ``media``, ``playedStream``, ``clearedAudio``, ``dtmf``, ``stop``);
``validate_gateway_frame`` checks one gateway->Plivo frame (``playAudio`` with the stream's
``contentType``/``sampleRate``, ``checkpoint``, ``clearAudio``). Async layer: ``run_stream`` connects to
127.0.0.1, sends ``start`` and 20 ms media frames on absolute loop-clock deadlines, models playback
with the Twilio caller's ``PlaybackBuffer`` (checkpoints answered when playback reaches them; pending
ones NOT answered on clear, the stricter assumption), answers ``clearAudio`` with ``clearedAudio``, and
ends by closing the socket (Plivo's usual end) or with ``stop``. Memory: the audio script, the bot audio
received and one record per gateway frame; the run is bounded by ``max_duration_s``.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.simcaller.twilio_caller import MarkRecord, PlaybackBuffer

__all__ = ["ACCOUNT_ID", "PlivoFrames", "PlivoResult", "run_stream", "validate_gateway_frame"]

ACCOUNT_ID = "MAODZKMDFJMJU3MTEYNG"
_FORMATS = {
    "audio/x-mulaw;rate=8000": ("audio/x-mulaw", 8000, 1, b"\xff"),
    "audio/x-l16;rate=8000": ("audio/x-l16", 8000, 2, b"\x00"),
    "audio/x-l16;rate=16000": ("audio/x-l16", 16000, 2, b"\x00"),
}


class PlivoFrames:
    """Plivo's inbound messages for one stream, numbered as Plivo numbers them (sequence from 1, chunk
    from 1, timestamp = Unix epoch ms as a string). Not thread-safe."""

    def __init__(self, content_type: str = "audio/x-mulaw;rate=8000", extra_headers: str = "",
                 stream_id: str | None = None, call_id: str | None = None) -> None:
        self.encoding, self.sample_rate, self.width, self.silence_byte = _FORMATS[content_type]
        self.stream_id = stream_id or str(uuid.uuid4())
        self.call_id = call_id or str(uuid.uuid4())
        self.extra_headers = extra_headers
        self.sequence = 0
        self.chunk = 0
        self.epoch_ms = int(time.time() * 1000)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one 20 ms frame."""
        return self.sample_rate * self.width // 50

    def _next(self, event: str, with_id: bool = True) -> dict[str, Any]:
        self.sequence += 1
        msg: dict[str, Any] = {"event": event, "sequenceNumber": self.sequence}
        if with_id:
            msg["streamId"] = self.stream_id
        return msg

    def start(self) -> str:
        msg = self._next("start", with_id=False)
        msg["start"] = {"callId": self.call_id, "streamId": self.stream_id, "accountId": ACCOUNT_ID,
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": self.encoding, "sampleRate": self.sample_rate}}
        msg["extra_headers"] = self.extra_headers
        return json.dumps(msg)

    def media(self, audio: bytes) -> str:
        self.chunk += 1
        msg = self._next("media")
        msg["media"] = {"track": "inbound", "timestamp": str(self.epoch_ms + 20 * (self.chunk - 1)),
                        "chunk": self.chunk, "payload": binascii.b2a_base64(audio, newline=False).decode()}
        msg["extra_headers"] = self.extra_headers
        return json.dumps(msg)

    def dtmf(self, digit: str) -> str:
        msg = self._next("dtmf")
        msg["dtmf"] = {"digit": digit}
        return json.dumps(msg)

    def played_stream(self, name: str) -> str:
        msg = self._next("playedStream")
        msg["name"] = name
        return json.dumps(msg)

    def cleared_audio(self) -> str:
        return json.dumps(self._next("clearedAudio"))

    def stop(self) -> str:
        return json.dumps(self._next("stop"))


def validate_gateway_frame(frame: str | bytes, frames: PlivoFrames) -> dict[str, Any]:
    """One gateway->Plivo frame, decoded, or ``AssertionError`` saying which of Plivo's rules it breaks."""
    assert isinstance(frame, str), "Plivo takes JSON text frames only"
    msg = json.loads(frame)
    assert isinstance(msg, dict), "frame must be a JSON object"
    event = msg.get("event")
    if event == "playAudio":
        media = msg["media"]
        assert media["contentType"] == frames.encoding, f"contentType {media['contentType']!r} != {frames.encoding!r}"
        assert media["sampleRate"] == frames.sample_rate, "sampleRate differs from the stream's"
        audio = binascii.a2b_base64(media["payload"], strict_mode=True)
        assert audio and len(audio) % frames.width == 0, f"payload of {len(audio)} bytes is not whole samples"
        msg["audio"] = audio
    elif event == "checkpoint":
        assert msg.get("streamId") == frames.stream_id, "checkpoint must name the stream"
        assert isinstance(msg.get("name"), str) and msg["name"], "checkpoint needs a name"
    elif event == "clearAudio":
        assert msg.get("streamId") == frames.stream_id, "clearAudio must name the stream"
    else:
        raise AssertionError(f"Plivo does not accept event {event!r}")
    return msg


@dataclass
class PlivoResult:
    """What happened on one stream."""

    bot_audio: bytearray = field(default_factory=bytearray)
    gateway_frames: list[dict[str, Any]] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    clears: int = 0
    close_code: int | None = None


async def run_stream(
    url: str,
    frames: PlivoFrames,
    caller_audio: bytes,
    *,
    dtmf: Sequence[tuple[int, str]] = (),
    send_stop: bool = False,
    max_duration_s: float = 20.0,
    headers: Mapping[str, str] | None = None,
) -> PlivoResult:
    """Run one stream against ``url``: ``start``, then ``caller_audio`` in 20 ms frames (the last padded
    with silence) on absolute deadlines, DTMF after the given frame indices, then ``stop`` if
    ``send_stop`` and close. Gateway frames are validated as they arrive."""
    result = PlivoResult()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_duration_s
    size = frames.frame_bytes
    if len(caller_audio) % size:
        caller_audio += frames.silence_byte * (size - len(caller_audio) % size)
    dtmf_at = dict(dtmf)
    async with connect(url, additional_headers=dict(headers or {}), open_timeout=5) as ws:
        buffer = PlaybackBuffer(loop.time(), frames.sample_rate * frames.width)

        async def echo(reached: list[MarkRecord]) -> None:
            for mark in reached:
                result.echoed.append(mark.name)
                await ws.send(frames.played_stream(mark.name))

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    msg = validate_gateway_frame(raw, frames)
                    result.gateway_frames.append(msg)
                    now = loop.time()
                    if msg["event"] == "playAudio":
                        result.bot_audio += msg["audio"]
                        await echo(buffer.add_media(now, msg["audio"]))
                    elif msg["event"] == "checkpoint":
                        await echo(buffer.add_mark(now, msg["name"]))
                    else:
                        await echo(buffer.advance(now))
                        buffer.clear(now)  # pending checkpoints are dropped, not answered
                        result.clears += 1
                        await ws.send(frames.cleared_audio())

        task = asyncio.create_task(reader())
        try:
            await ws.send(frames.start())
            start = loop.time()
            for index in range(len(caller_audio) // size):
                if loop.time() > deadline:
                    break
                await asyncio.sleep(max(0.0, start + 0.02 * index - loop.time()))  # pacing, not sync
                await ws.send(frames.media(caller_audio[index * size:(index + 1) * size]))
                await echo(buffer.advance(loop.time()))
                if index in dtmf_at:
                    await ws.send(frames.dtmf(dtmf_at[index]))
            if send_stop:
                await ws.send(frames.stop())
        finally:
            await ws.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        result.close_code = ws.close_code
    return result
