"""Real-browser tests of the console and the softphone: headless Debian Chromium driven over the W3C
WebDriver HTTP protocol (chromedriver), against the real gateway on a 127.0.0.1 socket, a real
redis-server and the embedded offline engine. Calls are placed by the protocol-exact Twilio stand-in
and by Chromium's fake microphone fed a speech file. Screenshots of every view at 1280x800 and at
phone size go to tests/browser/results/ (git-ignored); docs/console.md lists them."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from service.app import create_app, uvicorn_config
from service.config import Settings
from tests.conftest import free_port
from tests.poll import wait_until
from tests.standins.speech import silence, synthesize
from tests.standins.webhook_receiver import Reply, WebhookReceiver

TOKEN = "browser-test-token"
RESULTS = Path(__file__).parent / "results"
pytestmark = [
    pytest.mark.skipif(not shutil.which("chromedriver"), reason="chromedriver not installed (.ci/bootstrap)"),
    pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng not installed"),
    pytest.mark.slow,
]


class Driver:
    """The few WebDriver commands the tests need (W3C protocol, JSON over HTTP)."""

    def __init__(self, port: int, extra_args: list[str]) -> None:
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self.session = ""
        self.extra_args = extra_args

    async def start(self) -> None:
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                     *self.extra_args]}}}}
        response: httpx.Response | None = None
        for _ in range(100):  # bounded wait for chromedriver to listen
            try:
                response = await self.http.post("/session", json=caps)
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        assert response is not None, "chromedriver did not start"
        self.session = response.json()["value"]["sessionId"]

    async def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.http.request(method, f"/session/{self.session}{path}", json=body)
        return response.json()["value"]

    async def go(self, url: str) -> None:
        await self.cmd("POST", "/url", {"url": url})

    async def element(self, css: str) -> str:
        found = await self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return str(next(iter(found.values())))

    async def text_of(self, css: str) -> str:
        return str(await self.cmd("GET", f"/element/{await self.element(css)}/text"))

    async def click(self, css: str) -> None:
        await self.cmd("POST", f"/element/{await self.element(css)}/click", {})

    async def script(self, source: str) -> Any:
        return await self.cmd("POST", "/execute/sync", {"script": source, "args": []})

    async def wait_text(self, css: str, needle: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:  # bounded poll of the rendered page
            text = await self.text_of(css)
            if needle in text:
                return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"{needle!r} not shown in {css}: {text!r}")

    async def log_in(self, base: str) -> None:
        await self.go(f"{base}/console")
        assert "/console/login" in await self.cmd("GET", "/url")  # no session: the login form
        await self.shots("login")
        field = await self.element("input[name=token]")
        await self.cmd("POST", f"/element/{field}/value", {"text": TOKEN})
        await self.click("button[type=submit]")
        await wait_until(lambda: self.page_is(f"{base}/console"), timeout=10, what="redirect to /console")

    async def page_is(self, url: str) -> bool:
        return str(await self.cmd("GET", "/url")) == url

    async def layout_box(self, css: str) -> tuple[float, float]:
        rect = await self.cmd("GET", f"/element/{await self.element(css)}/rect")
        return float(rect["y"]), float(rect["height"])

    async def shots(self, name: str) -> None:
        RESULTS.mkdir(exist_ok=True)
        for label, (w, h) in (("desktop", (1280, 800)), ("phone", (390, 844))):
            await self.cmd("POST", "/window/rect", {"width": w, "height": h})
            png = base64.b64decode(await self.cmd("GET", "/screenshot"))
            (RESULTS / f"{name}-{label}.png").write_bytes(png)
        await self.cmd("POST", "/window/rect", {"width": 1280, "height": 800})


@pytest.fixture
def chromedriver() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


@asynccontextmanager
async def gateway(redis_url: str, webhook_url: str) -> AsyncIterator[tuple[str, Settings]]:
    """The real gateway (``callbridge serve``'s uvicorn set-up) with the offline engine and the console."""
    from service.realtime.local import preload

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(console_token=TOKEN, redis_url=redis_url, realtime_provider="local",  # type: ignore[call-arg]
                        twilio_auth_token="browser-twilio-auth-token", greeting=True, public_url=base,
                        replica_id="r-browser", escalation_webhook_url=webhook_url,
                        escalation_webhook_secret="browser-webhook-secret", _env_file=None)
    await preload(settings, None)
    # The browser's open event streams must not hold the shutdown: 5 s grace, then they are closed.
    server = uvicorn.Server(uvicorn_config(create_app(settings), "127.0.0.1", port, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=20, what="gateway listening")
        yield base, settings
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def test_console_follows_a_stand_in_call_to_its_escalation(redis_server, chromedriver: int) -> None:  # type: ignore[no-untyped-def]
    """Log in; a Twilio stand-in call appears in the active calls with its masked caller; its page's
    transcript grows (without moving the page's regions) and its events show the escalation; the
    receiver refuses the first delivery (422), so the escalation lands in the escalations list as a
    dead letter with the receiver's answer; the Re-deliver button (pressed from the keyboard) gets it
    delivered; the fleet shows the replica; the agent link from the webhook opens the agent view."""
    from service.simcaller.twilio_caller import TwilioCallerStandIn

    async def scenario() -> None:
        refusal = b'{"error":"agent queue closed"}'
        receiver = WebhookReceiver("browser-webhook-secret",
                                   policy=lambda r: Reply(status=422, body=refusal) if r.attempt == 1 else Reply())
        await receiver.up()
        driver = Driver(chromedriver, [])
        try:
            async with gateway(redis_server.url, f"{receiver.url}/escalations") as (base, settings):
                await driver.start()
                await driver.log_in(base)
                async with TwilioCallerStandIn(base, settings.twilio_auth_token.get_secret_value()) as caller:
                    call = await caller.place_call(from_="+14155550123", to="+14155559876")
                    listing = await driver.wait_text("#calls", call.call_sid)
                    assert "4155550123" not in listing and "0123" in listing and "twilio" in listing
                    y_before = await driver.layout_box("#calls-region")
                    await driver.shots("calls")
                    await driver.go(f"{base}/console/calls/{call.call_sid}")
                    await driver.wait_text("#turns", "bot:")  # the greeting
                    regions = [await driver.layout_box(css) for css in ("#chart", "#turns", "#events")]
                    await call.send_audio(synthesize("I want to check the status of my order.", 8000),
                                          silence(1200), timeout_s=30)
                    await driver.wait_text("#turns", "order", timeout_s=40)
                    await call.send_audio(synthesize("This is ridiculous. I want to speak to a human.", 8000),
                                          silence(1200), timeout_s=30)
                    await driver.wait_text("#events", "escalation", timeout_s=40)
                    await driver.wait_text("#escalation", "dead_letter", timeout_s=30)
                    assert [await driver.layout_box(css) for css in ("#chart", "#turns", "#events")] == regions
                    await driver.shots("call")
                    await driver.go(f"{base}/console/escalations")
                    await driver.wait_text("#escalations", call.call_sid)
                    await driver.wait_text("#dead", "agent queue closed")  # the receiver's answer
                    await driver.wait_text("#escalations", "dead_letter")
                    await driver.shots("escalations")
                    button = await driver.element("#dead button")
                    await driver.script("document.querySelector('#dead button').focus()")
                    await driver.cmd("POST", f"/element/{button}/value", {"text": "\ue007"})  # Enter key
                    await driver.wait_text("#status", "re-delivery queued")
                    await driver.wait_text("#escalations", "delivered", timeout_s=30)
                    assert "agent queue closed" not in await driver.text_of("#dead")
                    await driver.shots("escalations-redelivered")
                    await driver.go(f"{base}/console/fleet")
                    await driver.wait_text("#replicas", "r-browser")
                    await driver.shots("fleet")
                    await driver.go(f"{base}/console")
                    assert await driver.layout_box("#calls-region") == y_before  # fixed-size region
                    assert await receiver.wait_for(lambda r: bool(r.accepted), timeout=20)
                    record = next(iter(receiver.accepted.values())).payload
                    await driver.go(record["agent_url"])
                    await driver.wait_text("h1", record["escalation_id"])
                    summary = await driver.text_of("#summary")
                    assert "Escalated:" in summary and "order" in summary.lower()
                    assert "ridiculous" in (await driver.text_of("#turns")).lower()
                    await driver.shots("agent")
                    await driver.go(record["agent_url"].replace("sig=", "sig=x"))
                    assert "invalid or expired" in await driver.text_of("body")
        finally:
            if driver.session:
                await driver.cmd("DELETE", "")
            await driver.http.aclose()
            await receiver.down()

    asyncio.run(scenario())


def _speech_wav(path: Path) -> None:
    """A fake microphone: a question, a pause for the answer, a request for a person, then silence
    (Chromium loops the file)."""
    pcm = np.concatenate([silence(500, 16000), synthesize("I want to check the status of my order.", 16000),
                          silence(4000, 16000),
                          synthesize("This is ridiculous. I want to speak to a human.", 16000),
                          silence(8000, 16000)])
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm.astype("<i2").tobytes())


def test_softphone_with_a_fake_microphone_completes_a_turn(redis_server, chromedriver: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Chromium's fake capture device speaks into the softphone page: the offline engine transcribes
    it, the page receives and plays the bot's audio (echoing playback markers), the call is in the
    console as provider ``browser``; asking for a person escalates it, which the page shows from the
    call's console feed, and the gateway ends the call after the hand-off line."""
    wav = tmp_path / "caller.wav"
    _speech_wav(wav)

    async def scenario() -> None:
        driver = Driver(chromedriver, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                       f"--use-file-for-fake-audio-capture={wav}",
                                       "--autoplay-policy=no-user-gesture-required"])
        try:
            async with gateway(redis_server.url, "") as (base, _settings):
                await driver.start()
                await driver.log_in(base)
                await driver.go(f"{base}/console/phone")
                await driver.click("#call")
                await driver.wait_text("#phone-status", "in call")
                call_id = await driver.text_of("#call-link")
                assert call_id.startswith("WEB-")

                async def heard_ms() -> int:
                    return int(await driver.text_of("#heard"))

                await wait_until(lambda: _above(heard_ms, 500), timeout=30, what="greeting received")
                async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                    async def caller_turn() -> bool:
                        detail = (await api.get(f"/console/api/calls/{call_id}")).json()
                        return any(t["role"] == "caller" and "order" in t["text"] for t in detail.get("transcript", []))

                    await wait_until(caller_turn, timeout=40, what="the page's speech transcribed")
                    after_turn = await heard_ms()
                    await wait_until(lambda: _above(heard_ms, after_turn + 500), timeout=30, what="bot reply received")
                    rows = (await api.get("/console/api/calls")).json()["calls"]
                    assert [r["provider"] for r in rows if r["call_id"] == call_id] == ["browser"]
                async def marks_echoed() -> bool:  # the page reports what it has played
                    return bool(await driver.script("return window.phoneStats.marksEchoed") > 0)

                await wait_until(marks_echoed, timeout=30, what="a playback marker echoed by the page")
                assert await driver.script("return window.phoneStats.framesSent") > 100
                await driver.wait_text("#turns", "order")  # the page's own view of the call
                await driver.wait_text("#call-escalation", "pending", timeout_s=40)  # no receiver configured
                await driver.shots("phone")
                await driver.wait_text("#phone-status", "call ended", timeout_s=40)
                async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                    detail = (await api.get(f"/console/api/calls/{call_id}")).json()
                    assert detail["ended"] and detail["outcome"] == "escalated"
        finally:
            if driver.session:
                await driver.cmd("DELETE", "")
            await driver.http.aclose()

    asyncio.run(scenario())


async def _above(read: Any, threshold: int) -> bool:
    return bool(await read() > threshold)
