"""Real-browser test of the console: headless Debian Chromium driven over the W3C WebDriver HTTP
protocol (chromedriver), against the real app on a 127.0.0.1 socket and a real redis-server.
Screenshots at 1280x800 and at phone size go to tests/browser/results/ (git-ignored)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.config import Settings
from service.console import auth
from service.state.store import StateStore
from tests.conftest import free_port

TOKEN = "browser-test-token"
RESULTS = Path(__file__).parent / "results"
pytestmark = pytest.mark.skipif(not shutil.which("chromedriver"), reason="chromedriver not installed (.ci/bootstrap)")


class Driver:
    """The few WebDriver commands the test needs (W3C protocol, JSON over HTTP)."""

    def __init__(self, port: int) -> None:
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.session = ""

    async def start(self) -> None:
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"]}}}}
        for _ in range(100):  # bounded wait for chromedriver to listen
            try:
                response = await self.http.post("/session", json=caps)
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        self.session = response.json()["value"]["sessionId"]

    async def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.http.request(method, f"/session/{self.session}{path}", json=body)
        return response.json()["value"]

    async def text_of(self, css: str) -> str:
        element = await self.cmd("POST", "/element", {"using": "css selector", "value": css})
        ref = next(iter(element.values()))
        return str(await self.cmd("GET", f"/element/{ref}/text"))

    async def wait_text(self, css: str, needle: str, timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:  # bounded poll of the rendered page
            text = await self.text_of(css)
            if needle in text:
                return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"{needle!r} not shown in {css}: {text!r}")

    async def shots(self, name: str) -> None:
        for label, (w, h) in (("desktop", (1280, 800)), ("phone", (390, 844))):
            await self.cmd("POST", "/window/rect", {"width": w, "height": h})
            png = base64.b64decode(await self.cmd("GET", "/screenshot"))
            (RESULTS / f"{name}-{label}.png").write_bytes(png)
        await self.cmd("POST", "/window/rect", {"width": 1280, "height": 800})


def test_login_live_calls_transcript_and_agent_link(redis_server) -> None:  # type: ignore[no-untyped-def]
    RESULTS.mkdir(exist_ok=True)

    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        app.state.gateway.state_store = store
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
        task = asyncio.create_task(server.serve())
        driver = Driver(dport)
        base = f"http://127.0.0.1:{port}"
        try:
            await driver.start()
            await driver.cmd("POST", "/url", {"url": f"{base}/console"})
            assert "/console/login" in await driver.cmd("GET", "/url")
            await driver.shots("login")
            field = await driver.cmd("POST", "/element", {"using": "css selector", "value": "input[name=token]"})
            ref = next(iter(field.values()))
            await driver.cmd("POST", f"/element/{ref}/value", {"text": TOKEN})
            button = await driver.cmd("POST", "/element", {"using": "css selector", "value": "button[type=submit]"})
            await driver.cmd("POST", f"/element/{next(iter(button.values()))}/click", {})
            call = store.call("CA-browser-1")
            call.started({"from": "+14155550123", "provider": "twilio"})
            call.transcript("caller", "my bill is wrong")
            assert await store.flush(5.0)
            listing = await driver.wait_text("#calls", "CA-browser-1")
            assert "4155550123" not in listing
            await driver.shots("calls")
            await driver.cmd("POST", "/url", {"url": f"{base}/console/calls/CA-browser-1"})
            await driver.wait_text("#turns", "my bill is wrong")
            call.transcript("bot", "let me check that for you")
            assert await store.flush(5.0)
            await driver.wait_text("#turns", "let me check that for you")
            await driver.shots("call")
            link = auth.agent_link(base, auth.agent_link_key(TOKEN, ""), "ESC-1", time.time(), 60)
            await driver.cmd("POST", "/url", {"url": link})
            await driver.wait_text("h1", "ESC-1")
            await driver.shots("agent")
        finally:
            if driver.session:
                await driver.cmd("DELETE", "")
            await driver.http.aclose()
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            await store.close()

    dport = free_port()
    chromedriver = subprocess.Popen(["chromedriver", f"--port={dport}"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    try:
        asyncio.run(scenario())
    finally:
        chromedriver.terminate()
        chromedriver.wait(10)
