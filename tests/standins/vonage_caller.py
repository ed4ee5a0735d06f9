"""Vonage's WebSocket endpoint client as a stand-in (docs/providers/vonage.md, "Wire format"): what the
Voice API sends on an NCCO ``connect`` to a ``websocket`` endpoint and what it accepts back.

Pure layer: ``VonageFrames`` builds Vonage's text messages (``websocket:connected`` with the NCCO
headers flattened onto it, ``websocket:dtmf``, ``websocket:notify``, ``websocket:cleared``) and cuts
caller audio into 20 ms binary L16 little-endian frames; ``validate_gateway_frame`` checks one
gateway->Vonage frame (binary = exactly one 20 ms frame; text = ``notify`` or ``clear``). Async layer:
``run_stream`` connects to 127.0.0.1, sends ``websocket:connected`` and paced binary frames on absolute
loop-clock deadlines, models playback with the Twilio caller's ``PlaybackBuffer`` (notifies echoed when
playback reaches them, pending ones dropped on clear), answers ``clear`` with ``websocket:cleared`` and
ends by closing the socket (Vonage's only end). Memory: the audio script, the bot audio received and one
record per gateway frame; bounded by ``max_duration_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.simcaller.twilio_caller import PlaybackBuffer

__all__ = ["VonageFrames", "VonageResult", "run_stream", "validate_gateway_frame"]


class VonageFrames:
    """Vonage's messages for one socket at ``sample_rate`` (8, 16 or 24 kHz)."""

    def __init__(self, sample_rate: int = 16000, headers: Mapping[str, str] | None = None) -> None:
        assert sample_rate in (8000, 16000, 24000)
        self.sample_rate = sample_rate
        self.headers = dict(headers or {})
        self.frame_bytes = sample_rate * 2 // 50

    def connected(self) -> str:
        return json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={self.sample_rate}",
                           **self.headers})

    def audio_frames(self, pcm: bytes) -> list[bytes]:
        """``pcm`` in 20 ms frames, the last padded with silence."""
        if len(pcm) % self.frame_bytes:
            pcm += b"\x00" * (self.frame_bytes - len(pcm) % self.frame_bytes)
        return [pcm[i:i + self.frame_bytes] for i in range(0, len(pcm), self.frame_bytes)]

    @staticmethod
    def dtmf(digit: str, duration_ms: int = 260) -> str:
        return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": duration_ms})

    @staticmethod
    def notify(payload: Mapping[str, Any]) -> str:
        return json.dumps({"event": "websocket:notify", "payload": dict(payload)})

    @staticmethod
    def cleared() -> str:
        return json.dumps({"event": "websocket:cleared"})


def validate_gateway_frame(frame: str | bytes, frames: VonageFrames) -> dict[str, Any]:
    """One gateway->Vonage frame, decoded (binary as ``{"audio": bytes}``), or ``AssertionError``."""
    if isinstance(frame, bytes):
        assert len(frame) == frames.frame_bytes, f"binary frame of {len(frame)} bytes, need exactly {frames.frame_bytes}"
        return {"audio": frame}
    msg = json.loads(frame)
    assert isinstance(msg, dict), "control frame must be a JSON object"
    action = msg.get("action")
    if action == "notify":
        assert isinstance(msg.get("payload"), dict), "notify needs a payload object"
    elif action != "clear":
        raise AssertionError(f"Vonage does not accept {msg!r:.60}")
    return msg


@dataclass
class VonageResult:
    bot_audio: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, Any]] = field(default_factory=list)
    echoed: list[dict[str, Any]] = field(default_factory=list)
    clears: int = 0
    playback: PlaybackBuffer | None = None
    """Vonage's playback queue as the stand-in modelled it (clear times and positions, bytes played)."""
    close_code: int | None = None
    """The gateway's close code when the gateway closed the socket first, else None."""


async def run_stream(
    url: str,
    frames: VonageFrames,
    caller_pcm: bytes,
    *,
    dtmf: Sequence[tuple[int, str]] = (),
    max_duration_s: float = 20.0,
    headers: Mapping[str, str] | None = None,
) -> VonageResult:
    """Run one socket against ``url``: ``websocket:connected``, then ``caller_pcm`` as paced 20 ms binary
    frames, DTMF after the given frame indices, then close (Vonage's end of stream)."""
    result = VonageResult()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_duration_s
    payloads: dict[str, dict[str, Any]] = {}
    async with connect(url, additional_headers=dict(headers or {}), open_timeout=5) as ws:
        buffer = PlaybackBuffer(loop.time(), frames.sample_rate * 2)
        result.playback = buffer

        async def echo(reached: list[Any]) -> None:
            for mark in reached:
                payload = payloads.pop(mark.name)
                result.echoed.append(payload)
                await ws.send(frames.notify(payload))

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    msg = validate_gateway_frame(raw, frames)
                    now = loop.time()
                    if "audio" in msg:
                        result.bot_audio += msg["audio"]
                        await echo(buffer.add_media(now, msg["audio"]))
                        continue
                    result.controls.append(msg)
                    if msg["action"] == "notify":
                        key = f"n{len(result.controls)}"
                        payloads[key] = msg["payload"]
                        await echo(buffer.add_mark(now, key))
                    else:
                        await echo(buffer.advance(now))
                        for dropped in buffer.pending_marks:
                            payloads.pop(dropped, None)
                        buffer.clear(now)
                        result.clears += 1
                        await ws.send(frames.cleared())

        task = asyncio.create_task(reader())
        try:
            await ws.send(frames.connected())
            start = loop.time()
            dtmf_at = dict(dtmf)
            for index, chunk in enumerate(frames.audio_frames(caller_pcm)):
                if loop.time() > deadline or task.done():
                    break
                await asyncio.sleep(max(0.0, start + 0.02 * index - loop.time()))  # pacing, not sync
                try:
                    await ws.send(chunk)
                    await echo(buffer.advance(loop.time()))
                    if index in dtmf_at:
                        await ws.send(frames.dtmf(dtmf_at[index]))
                except ConnectionClosed:
                    break
            if task.done() or ws.close_code is not None:
                result.close_code = ws.close_code
        finally:
            await ws.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return result
