"""Graceful drain with a real gateway process and live calls (SIGTERM).

Expected: /readyz turns 503 at once, new webhooks are redirected, a call that ends during the drain
ends normally, a call still active at CALLBRIDGE_DRAIN_TIMEOUT is handed to the human queue (DRAIN_MODE=handoff; its
escalation is delivered, never dropped), state is flushed, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from tests.conftest import RedisServer, free_port
from tests.integration.test_call_bridge import API_KEY
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.twilio_caller import TwilioCallerStandIn
from tests.standins.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
AUTH = "test-auth-" + secrets.token_hex(16)  # random per process (issue 12.1)
SECRET = "whsec-drain"


async def start_gateway_process(port: int, env_extra: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, **env_extra}
    executable = Path(sys.executable).parent / "callbridge"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
    process = await asyncio.create_subprocess_exec(
        *command, "serve", "--host", "127.0.0.1", "--port", str(port), cwd=ROOT, env=env,
        stdout=open(log_path, "wb"), stderr=asyncio.subprocess.STDOUT,
    )
    async with httpx.AsyncClient() as client, asyncio.timeout(30):
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return process
            except httpx.HTTPError:
                pass
            assert process.returncode is None, log_path.read_text()
            await asyncio.sleep(0.05)  # waiting for a child process to bind its port


async def test_sigterm_drains_live_calls_and_hands_off_the_rest(redis_server: RedisServer, tmp_path: Path) -> None:
    receiver = WebhookReceiver(SECRET)
    await receiver.up()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with RealtimeStandIn(ScriptedBehaviour(reply_ms=400, transcripts=["hello"], cycle_transcripts=True)) as rt:
        log_path = tmp_path / "gateway.log"
        process = await start_gateway_process(port, {
            "CALLBRIDGE_REALTIME_PROVIDER": "openai", "CALLBRIDGE_REALTIME_API_KEY": API_KEY,
            "CALLBRIDGE_REALTIME_URL": rt.url, "CALLBRIDGE_REDIS_URL": redis_server.url,
            "CALLBRIDGE_TWILIO_AUTH_TOKEN": AUTH, "CALLBRIDGE_PUBLIC_URL": base,
            "CALLBRIDGE_ESCALATION_WEBHOOK_URL": receiver.url, "CALLBRIDGE_ESCALATION_WEBHOOK_SECRET": SECRET,
            "CALLBRIDGE_DRAIN_TIMEOUT": "3", "CALLBRIDGE_DRAIN_MODE": "handoff", "CALLBRIDGE_GREETING": "false", "CALLBRIDGE_LOG_FORMAT": "json",
            "CALLBRIDGE_VAD_SILENCE_DURATION_MS": "300",
        }, log_path)
        try:
            async with TwilioCallerStandIn(base, AUTH) as caller, httpx.AsyncClient() as http:
                ending = await caller.place_call()
                staying = await caller.place_call()
                await rt.wait_for_session(1)
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(5):
                    while (await http.get(base + "/readyz")).status_code != 503:
                        await asyncio.sleep(0.02)  # the signal is handled asynchronously by the child
                redirected = await caller.post_signed(base + "/twilio/voice", caller.call_form("CA" + "9" * 32,
                                                                                              "+15550001111", "+15550002222"))
                root = ET.fromstring(redirected.text)
                assert root.find("./Connect") is None and root.find("./Redirect") is not None
                # Live calls keep flowing during the drain.
                await staying.send_audio(synthesize("I am still here"), silence(400))
                session = rt.sessions[1]
                await session.wait_until(lambda: session.responses_done >= 1, timeout_s=10)
                await ending.hang_up()
                await staying.wait_for(lambda: staying.playback.buffered_bytes == 0, timeout_s=10)
                played_before_handoff = staying.playback.played_total
                # The call still active at the drain timeout is handed to the human queue.
                assert await staying.wait_closed(timeout_s=20) == 1000
                assert await receiver.wait_for(lambda r: len(r.accepted) == 1, 20)
                record = next(iter(receiver.accepted.values())).payload
                assert record["trigger"] == "drain" and record["call_id"] == staying.call_sid
                # the hand-off line (a 400 ms reply from the stand-in) played before the transfer
                assert staying.playback.played_total >= played_before_handoff + 2400
            async with asyncio.timeout(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await receiver.down()
    log = log_path.read_text()
    assert '"event": "drain.started"' in log and '"event": "drain.finished"' in log
    assert '"handed_off": 1' in log
