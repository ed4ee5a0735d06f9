"""The softphone's browser provider end to end without a browser: the console issues a call id and
stream token, a WebSocket client on a real 127.0.0.1 socket speaks the page's wire format (binary
PCM16 16 kHz up, base64 PCM16 down) through the same call bridge to the embedded offline engine, and
the call shows up in the console's API with its transcript. The bot's audio is measured (dB); talking
over the greeting flushes the page (``clear``) and the console's events show what had been heard."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
import websockets

from service.app import create_app, uvicorn_config
from service.config import Settings
from tests.conftest import free_port
from tests.poll import wait_until
from tests.standins.speech import rms_dbfs, silence, synthesize

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
TOKEN = "softphone-test-token"


class Page:
    """What the softphone page does with the gateway's frames: bot audio is "played" back to back in
    real time (a virtual audio clock), each marker is echoed when the audio before it has played, and
    a ``clear`` drops what is unplayed along with the pending markers: the same rules as phone.js."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.audio = bytearray()
        self.clears = 0
        self.audio_at_clear = 0
        self.played_until = 0.0  # loop time at which the scheduled audio runs out
        self.pending: set[asyncio.TimerHandle] = set()
        self.sends: set[asyncio.Future[None]] = set()
        self.task = asyncio.create_task(self._read())

    def _echo(self, name: str) -> None:
        task = asyncio.ensure_future(self.ws.send(json.dumps({"event": "mark", "name": name})))
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.ws:
                msg = json.loads(message)
                now = loop.time()
                if msg["event"] == "media":
                    chunk = base64.b64decode(msg["payload"])
                    self.audio += chunk
                    self.played_until = max(self.played_until, now) + len(chunk) / 32000
                elif msg["event"] == "mark":
                    handle = loop.call_at(max(now, self.played_until), self._echo, msg["name"])
                    self.pending.add(handle)
                elif msg["event"] == "clear":
                    self.clears += 1
                    self.audio_at_clear = len(self.audio)
                    for handle in self.pending:
                        handle.cancel()
                    self.pending.clear()
                    self.played_until = now
        except websockets.ConnectionClosed:
            return

    async def speak(self, pcm16k: np.ndarray) -> None:
        data = pcm16k.astype("<i2").tobytes()
        for start in range(0, len(data), 640):
            await self.ws.send(b"\x01" + data[start:start + 640])
            await asyncio.sleep(0.02)  # real-time pacing of the microphone, not synchronisation


def test_softphone_call_reaches_the_offline_engine_and_the_console(redis_server) -> None:  # type: ignore[no-untyped-def]
    from service.realtime.local import preload

    async def scenario() -> None:
        port = free_port()
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, realtime_provider="local",  # type: ignore[call-arg]
                            stream_token_secret="softphone-stream-secret-0123456789", greeting=True,
                            public_url=f"http://127.0.0.1:{port}", replica_id="r-phone", _env_file=None)
        await preload(settings, None)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
        task = asyncio.create_task(server.serve())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            await wait_until(lambda: server.started, timeout=20, what="gateway listening")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
                assert (await client.post("/console/api/phone/calls", headers={"Authorization": "Bearer x"})).status_code == 401
                issued = (await client.post("/console/api/phone/calls")).json()
                call_id = issued["call_id"]
                uri = f"ws://127.0.0.1:{port}{issued['media_path']}"
                async with websockets.connect(uri) as ws:
                    await ws.send(json.dumps({"event": "start", "call_id": call_id, "token": issued["token"],
                                              "sample_rate": 16000}))
                    page = Page(ws)
                    await wait_until(lambda: len(page.audio) > 16000, timeout=30, what="greeting audio")
                    greeting_started = asyncio.get_running_loop().time()

                    async def listed() -> bool:
                        rows = (await client.get("/console/api/calls")).json()["calls"]
                        return any(r["call_id"] == call_id and r["provider"] == "browser" for r in rows)

                    await wait_until(listed, timeout=10, what="softphone call in the console")
                    greeting = np.frombuffer(bytes(page.audio), dtype="<i2")
                    assert rms_dbfs(greeting) > -35.0  # real speech, not silence
                    # Talk over the greeting while it plays: a barge-in, flushed on the page.
                    await page.speak(np.concatenate([silence(300, 16000), synthesize(
                        "I want to check the status of my order.", 16000), silence(1200, 16000)]))
                    await wait_until(lambda: page.clears >= 1, timeout=10, what="a clear (barge-in) sent to the page")
                    before = page.audio_at_clear

                    async def transcribed() -> bool:
                        detail = (await client.get(f"/console/api/calls/{call_id}")).json()
                        return any(t["role"] == "caller" and "order" in t["text"] for t in detail["transcript"])

                    await wait_until(transcribed, timeout=30, what="caller turn transcribed")
                    detail = (await client.get(f"/console/api/calls/{call_id}")).json()
                    barge = [e for e in detail["events"] if e["kind"] == "barge_in"]
                    elapsed_ms = (asyncio.get_running_loop().time() - greeting_started) * 1000
                    # What the page had played when it was cut: more than the 300 ms of silence before
                    # the caller spoke, less than the greeting and less than the time that had passed.
                    assert barge and 300 < barge[0]["heard_ms"] < min(barge[0]["sent_ms"], elapsed_ms + 500)
                    assert barge[0]["sent_ms"] <= before * 1000 // 32000 + 100  # what reached the page
                    await wait_until(lambda: len(page.audio) > before + 16000, timeout=30, what="bot reply audio")
                    reply = np.frombuffer(bytes(page.audio[before:]), dtype="<i2")
                    assert rms_dbfs(reply) > -35.0
                    await ws.send(json.dumps({"event": "stop"}))
                    await asyncio.wait_for(page.task, 10)  # the gateway closes the socket

                async def ended() -> bool:
                    detail = (await client.get(f"/console/api/calls/{call_id}")).json()
                    return bool(detail["ended"])

                await wait_until(ended, timeout=10, what="call ended in Redis")
                # the token was single use: a second socket with it is refused
                async with websockets.connect(uri) as ws:
                    await ws.send(json.dumps({"event": "start", "call_id": call_id, "token": issued["token"],
                                              "sample_rate": 16000}))
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 20)

    asyncio.run(scenario())
