"""``callbridge demo``: a complete spoken call on embedded defaults, no cloud account, no network.

What it runs, all on 127.0.0.1:
- Redis: ``CALLBRIDGE_REDIS_URL`` if set, else a private ``redis-server`` child on a temporary unix
  socket (started and stopped here; a clear message says how to install it when missing);
- the embedded offline Realtime engine (models preloaded with a progress display);
- the gateway itself (the same app as ``callbridge serve``) and an escalation webhook receiver that
  verifies the ``Callbridge-Signature`` of what it gets;
- a small order service the bot looks orders up in: one business tool (``lookup_order``, docs/tools.md)
  declared in a temporary tools file, its requests signed and verified;
- a simulated Twilio call (protocol-exact, real-time paced) speaking a short scripted conversation
  with synthesized caller speech: an order enquiry, one barge-in, and an angry turn that escalates.

After the escalation it plays Twilio's part of a warm transfer (``CALLBRIDGE_TRANSFER_MODE=warm``): the
caller's hold audio, the simulated agent answering, and the briefing the agent hears, printed.

It prints the live transcript with timings, then writes ``call-<id>.wav`` (stereo: caller left, bot
right, time-aligned as the caller heard it) and ``call-<id>.json`` (the call summary).

``callbridge demo --console`` instead keeps the gateway running with the console on and prints the
console's URL and token: the softphone page talks to the offline engine from the browser's microphone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CALLER_TURNS: list[tuple[str, str]] = [
    ("say", "I want to check the status of my order."),
    ("say", "It is four five six seven."),
    ("barge", "What are your opening hours?"),  # interrupted ~1.2 s into the bot's answer
    ("say", "I have a question about my bill."),
    ("angry", "This is ridiculous. I want to speak to a human."),
]


DEMO_AGENT = "+15550100"
"""The simulated human agent the demo's warm transfer dials (it answers and hears the briefing)."""


def _print(text: str) -> None:
    print(text, flush=True)


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.2f}s]"


@contextlib.asynccontextmanager
async def _private_redis() -> AsyncIterator[str]:
    """CALLBRIDGE_REDIS_URL, or a private redis-server on a temporary unix socket."""
    configured = os.environ.get("CALLBRIDGE_REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "callbridge demo needs Redis: install it with `apt-get install redis-server` "
            "(the README's first command does this), or set CALLBRIDGE_REDIS_URL to a running Redis."
        )
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-demo-"))
    sock = workdir / "redis.sock"
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("callbridge demo: the private redis-server did not start")
            await asyncio.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def _progress(stage: str, fraction: float) -> None:
    bar = "#" * int(fraction * 30)
    sys.stdout.write(f"\r  loading speech models [{bar:<30}] {fraction * 100:5.1f}%  {stage[:40]:<40}")
    sys.stdout.flush()
    if fraction >= 1.0:
        sys.stdout.write("\n")


async def _serve(app: Any, port: int) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn

    from service.app import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


def _receiver_app(secret: str, clock: _Clock, deliveries: list[dict[str, Any]]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from service.escalation.webhook import verify_signature

    async def escalation(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            verify_signature(secret, request.headers.get("Callbridge-Signature", ""), body)
        except Exception as error:
            _print(f"{clock.stamp()} human queue: REJECTED webhook ({error})")
            return JSONResponse({"error": "bad signature"}, status_code=400)
        record = json.loads(body)
        deliveries.append(record)
        _print(f"{clock.stamp()} human queue: escalation {record['escalation_id']} received "
               f"(trigger={record['trigger']}, signature ok) - summary: {record.get('summary', '')}")
        tools = ", ".join(f"{t['tool']}={t['outcome']}" for t in record.get("tool_calls", []))
        _print(f"{clock.stamp()} human queue: tool calls in the record: {tools or 'none'}")
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/escalations", escalation, methods=["POST"])])


DEMO_ORDERS = {"4567": {"status": "shipped", "delivery": "tomorrow before noon"}}


def _order_service_app(secret: str, clock: _Clock) -> Any:
    """The demo's business back-end: ``POST /tools/lookup_order`` answers from ``DEMO_ORDERS``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from service.escalation.webhook import verify_signature

    async def lookup_order(request: Request) -> JSONResponse:
        body = await request.body()
        if not verify_signature(secret, request.headers.get("Callbridge-Signature", ""), body):
            _print(f"{clock.stamp()} order service: REJECTED request (bad signature)")
            return JSONResponse({"error": "bad signature"}, status_code=401)
        number = str(json.loads(body).get("arguments", {}).get("order_number", ""))
        await asyncio.sleep(0.4)  # a back-end doing its work
        order = DEMO_ORDERS.get(number)
        _print(f"{clock.stamp()} order service: signed look-up of order {number} (signature ok)")
        if order is None:
            return JSONResponse({"order_number": number, "status": "not found", "delivery": "unknown"})
        return JSONResponse({"order_number": number, **order})

    return Starlette(routes=[Route("/tools/lookup_order", lookup_order, methods=["POST"])])


def _tools_file(directory: Path, port: int, secret_env: str) -> Path:
    import yaml

    path = directory / "demo-tools.yaml"
    path.write_text(yaml.safe_dump({"tools": [{
        "name": "lookup_order", "description": "Look up an order's status by its number.",
        "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}},
                       "required": ["order_number"]},
        "url": f"http://127.0.0.1:{port}/tools/lookup_order", "timeout_s": 5, "idempotent": True,
        "secret_env": secret_env, "filler_after_ms": 700}]}))
    return path


async def _wait_bot_reply(call: Any, media_before: int, quiet_s: float, timeout_s: float) -> None:
    """Until the bot has sent new audio (beyond ``media_before`` messages), it has all played, and the
    bot then stayed silent for ``quiet_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and not call.closed:
        media = call.playback.media
        if len(media) > media_before and call.playback.buffered_bytes == 0 and loop.time() - media[-1].at >= quiet_s:
            return
        await asyncio.sleep(0.05)


async def _warm_transfer(caller: Any, call: Any, clock: _Clock) -> str:
    """Play Twilio's part of the warm transfer (the demo agent answers) and print what the agent hears."""
    import textwrap

    from service.simcaller.twilio_transfer import follow_transfer

    trace = await follow_transfer(caller, call, {DEMO_AGENT: "answer"})
    if trace.played:
        _print(f"{clock.stamp()} warm transfer: the caller hears hold audio ({trace.played[0]})")
    briefing = ""
    for agent in trace.agents:
        _print(f"{clock.stamp()} dialling agent {agent.target}: {agent.dial_status}"
               f"{f' (AnsweredBy={agent.answered_by})' if agent.answered_by else ''}")
        if agent.heard:
            briefing = " ".join(agent.heard)
            _print(f"{clock.stamp()} agent briefing (spoken to the agent, <Say language={agent.say_language}>):")
            for line in textwrap.wrap(briefing, 96):
                _print(f"           {line}")
    _print(f"{clock.stamp()} transfer outcome: {trace.outcome}"
           f"{' (agent connected to the caller)' if trace.outcome == 'connected' else ''}")
    return briefing


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _demo(args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.config import load_settings
    from service.logging import configure_logging
    from service.realtime.local import preload, shutdown_models
    from service.simcaller.speech import speak_mulaw
    from service.simcaller.twilio_caller import TwilioCallerStandIn

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "callbridge-demo.log"
    log_file = open(log_path, "w")
    sys_stderr, sys.stderr = sys.stderr, log_file
    configure_logging("json", "info")
    clock = _Clock()
    _print("callbridge demo: a simulated phone call through the gateway, fully offline")
    _print("  realtime engine: local (webrtcvad + pocketsphinx + scripted agent + Piper voice)")
    try:
        async with _private_redis() as redis_url:
            _print(f"  state: Redis at {redis_url}")
            port = args.port or _free_port()
            receiver_port = _free_port()
            auth_token = secrets.token_hex(16)
            webhook_secret = secrets.token_hex(16)
            orders_port = _free_port()
            os.environ["CALLBRIDGE_DEMO_TOOL_SECRET"] = tool_secret = secrets.token_hex(16)
            tools_file = _tools_file(out_dir, orders_port, "CALLBRIDGE_DEMO_TOOL_SECRET")
            settings = load_settings(
                tools_file=str(tools_file),
                realtime_provider="local", redis_url=redis_url, public_url=f"http://127.0.0.1:{port}",
                twilio_auth_token=auth_token, greeting=True,
                escalation_webhook_url=f"http://127.0.0.1:{receiver_port}/escalations",
                escalation_webhook_secret=webhook_secret, replica_id="demo",
                transfer_mode="warm", transfer_number=DEMO_AGENT, transfer_fallbacks="queue",
            )
            await preload(settings, _progress)
            _print("  speech caches warm; synthesizing the caller's lines")
            lines = await asyncio.gather(*(asyncio.to_thread(speak_mulaw, text) for _kind, text in CALLER_TURNS))
            deliveries: list[dict[str, Any]] = []
            receiver, receiver_task = await _serve(_receiver_app(webhook_secret, clock, deliveries), receiver_port)
            orders, orders_task = await _serve(_order_service_app(tool_secret, clock), orders_port)
            app = create_app(settings)
            gateway = app.state.gateway
            summary: dict[str, Any] = {}

            def on_event(kind: str, fields: dict[str, Any]) -> None:
                if kind == "transcript":
                    who = "caller" if fields["role"] == "caller" else "bot   "
                    _print(f"{clock.stamp()} {who}: {fields['text']}")
                elif kind == "barge_in":
                    _print(f"{clock.stamp()} barge-in: bot audio cleared, reply truncated to "
                           f"{fields['heard_ms']} ms of {fields['sent_ms']} ms (what the caller heard)")
                elif kind == "tool_call":
                    shown = fields.get("result") if fields["outcome"] == "ok" else fields.get("error")
                    _print(f"{clock.stamp()} tool   : {fields['tool']}({json.dumps(fields.get('arguments'))}) -> "
                           f"{fields['outcome']} in {fields['latency_ms']:.0f} ms: {json.dumps(shown)}")
                elif kind == "escalation":
                    _print(f"{clock.stamp()} escalation: trigger={fields['trigger']} ({fields['reason']})")
                elif kind == "call_ended":
                    summary.update(fields["summary"])

            gateway.listeners.append(on_event)
            server, server_task = await _serve(app, port)
            _print(f"  gateway on http://127.0.0.1:{port}; placing the call\n")
            clock.start = time.monotonic()
            try:
                async with TwilioCallerStandIn(f"http://127.0.0.1:{port}", auth_token) as caller:
                    call = await caller.place_call(from_="+15551234567", to="+15557654321")
                    _print(f"{clock.stamp()} call {call.call_sid} connected (stream token accepted)")
                    await _wait_bot_reply(call, 0, 0.8, 20)  # the greeting
                    for (kind, _text), audio in zip(CALLER_TURNS, lines, strict=True):
                        if call.closed:
                            break
                        if kind == "barge":
                            await call.send_audio(audio)
                            heard = call.playback.played_total
                            loop = asyncio.get_running_loop()
                            deadline = loop.time() + 15
                            while call.playback.played_total < heard + 9600 and loop.time() < deadline:
                                await asyncio.sleep(0.05)  # ~1.2 s into the bot's answer, talk over it
                            continue
                        media_before = len(call.playback.media)
                        await call.send_audio(audio)
                        if kind == "angry":
                            break
                        await _wait_bot_reply(call, media_before, 1.5, 25)
                    code = await call.wait_closed(timeout_s=30)
                    await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
                    twiml = call.after_stream_twiml or ""
                    verbs = [child.tag for child in ET.fromstring(twiml)] if twiml else []
                    _print(f"{clock.stamp()} stream closed by the gateway ({code}); Twilio continues with "
                           f"<Redirect> -> after-stream TwiML: {' '.join(f'<{v}>' for v in verbs)}")
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 15
                    while not deliveries and loop.time() < deadline:
                        await asyncio.sleep(0.05)
                    briefing = await _warm_transfer(caller, call, clock)
                    wav_path = out_dir / f"call-{call.call_sid}.wav"
                    call.write_wav(wav_path)
            finally:
                server.should_exit = True
                await server_task
                receiver.should_exit = True
                await receiver_task
                orders.should_exit = True
                await orders_task
            summary_path = out_dir / f"call-{call.call_sid}.json"
            summary_path.write_text(json.dumps({**summary, "escalations_delivered": len(deliveries),
                                                "after_stream_twiml": twiml, "agent_briefing": briefing},
                                               indent=2, ensure_ascii=False))
            _print("\ncall summary:")
            for key in ("duration_s", "outcome", "responses", "first_audio_ms_median", "first_audio_ms_max",
                        "barge_ins", "truncates", "frames_in", "frames_out", "bot_audio_ms", "errors", "tool_calls"):
                _print(f"  {key:<22} {summary.get(key)}")
            _print(f"\nrecording (caller left, bot right): {wav_path}")
            _print(f"summary: {summary_path}\nlogs: {log_path}")
            tools_ok = any(t.get("outcome") == "ok" for t in summary.get("tool_calls") or [])
            ok = (summary.get("outcome") == "escalated" and bool(deliveries) and summary.get("barge_ins", 0) >= 1
                  and tools_ok)
            return 0 if ok else 1
    finally:
        shutdown_models()
        sys.stderr = sys_stderr
        log_file.close()


async def _console_demo(args: argparse.Namespace) -> int:
    """``callbridge demo --console``: the gateway with the offline engine and the console on, until
    Ctrl-C (or SIGTERM). Prints the console's URL and a fresh operator token; the softphone page
    (``/console/phone``) talks to the offline engine, and escalations go to a local receiver."""
    import signal

    from service.app import create_app
    from service.config import load_settings
    from service.logging import configure_logging
    from service.realtime.local import preload, shutdown_models

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "callbridge-demo.log"
    log_file = open(log_path, "w")
    sys_stderr, sys.stderr = sys.stderr, log_file
    configure_logging("json", "info")
    clock = _Clock()
    _print("callbridge demo --console: the gateway, its console and the softphone, fully offline")
    try:
        async with _private_redis() as redis_url:
            port = args.port or _free_port()
            receiver_port = _free_port()
            token = os.environ.get("CALLBRIDGE_CONSOLE_TOKEN") or secrets.token_urlsafe(24)
            webhook_secret = secrets.token_hex(16)
            settings = load_settings(
                realtime_provider="local", redis_url=redis_url, public_url=f"http://127.0.0.1:{port}",
                stream_token_secret=secrets.token_hex(32), console_token=token, greeting=True,
                escalation_webhook_url=f"http://127.0.0.1:{receiver_port}/escalations",
                escalation_webhook_secret=webhook_secret, replica_id="demo",
            )
            await preload(settings, _progress)
            receiver, receiver_task = await _serve(_receiver_app(webhook_secret, clock, []), receiver_port)
            app = create_app(settings)

            def on_event(kind: str, fields: dict[str, Any]) -> None:  # the softphone's conversation, live
                if kind == "transcript":
                    _print(f"{clock.stamp()} {fields['call_id']} {fields['role']:<6}: {fields['text']}")
                elif kind == "barge_in":
                    _print(f"{clock.stamp()} {fields['call_id']} barge-in after {fields['heard_ms']} ms of the reply")
                elif kind == "escalation":
                    _print(f"{clock.stamp()} {fields['call_id']} escalation: {fields['trigger']} ({fields['reason']})")

            app.state.gateway.listeners.append(on_event)
            server, server_task = await _serve(app, port)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            _print(f"\n  console:   http://127.0.0.1:{port}/console/login?next=/console/phone")
            _print(f"  token:     {token}")
            _print("  (log in with the token: the softphone opens; press Call and allow the microphone)")
            _print(f"  logs:      {log_path}\n  Ctrl-C stops the demo.")
            try:
                await stop.wait()
            finally:
                server.should_exit = True
                receiver.should_exit = True
                await asyncio.wait_for(server_task, 30)
                await receiver_task
            return 0
    finally:
        shutdown_models()
        sys.stderr = sys_stderr
        log_file.close()


def run_demo(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "console", False):
            return asyncio.run(_console_demo(args))
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130
