"""``callbridge call URL [--say TEXT | --audio FILE.wav]...``: the simulated Twilio caller as a tool.

Places a call on any running deployment exactly as Twilio would (signed voice webhook when given the
auth token, TwiML, media stream with the stream token), speaks each line in order at real-time pace,
listens ``--listen-s`` seconds after each (or until the bot goes quiet), prints what happened, and
records the call to WAV (caller left, bot right).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path


async def _run(args: argparse.Namespace) -> int:
    from service.simcaller.speech import speak_mulaw, wav_mulaw
    from service.simcaller.twilio_caller import CallRejected, TwilioCallerStandIn

    token = args.auth_token or os.environ.get("CALLBRIDGE_TWILIO_AUTH_TOKEN", "")
    if not token:
        print("callbridge call: --auth-token (or CALLBRIDGE_TWILIO_AUTH_TOKEN) is needed to sign the webhook",
              file=sys.stderr)
        return 2
    segments: list[tuple[str, bytes]] = []
    for path in args.audio:
        segments.append((f"audio {path}", await asyncio.to_thread(wav_mulaw, path)))
    for text in args.say:
        segments.append((f"say {text!r}", await asyncio.to_thread(speak_mulaw, text)))
    loop = asyncio.get_running_loop()
    async with TwilioCallerStandIn(args.url.rstrip("/"), token) as caller:
        try:
            call = await caller.place_call()
        except CallRejected as error:
            print(f"call rejected: HTTP {error.status}: {error.twiml[:300]}", file=sys.stderr)
            return 1
        start = loop.time()
        print(f"[{0:6.2f}s] call {call.call_sid} connected")
        for label, audio in segments:
            if call.closed:
                break
            print(f"[{loop.time() - start:6.2f}s] caller: {label}")
            await call.send_audio(audio)
            before = call.playback.played_total
            deadline = loop.time() + args.listen_s
            while loop.time() < deadline and not call.closed:
                await asyncio.sleep(0.1)  # listening at real-time pace
            heard = (call.playback.played_total - before) / 8000
            print(f"[{loop.time() - start:6.2f}s] bot audio heard: {heard:.1f} s, clears: {len(call.playback.clears)}")
        if not call.closed:
            await call.hang_up()
        if call.violations:
            print(f"protocol violations by the gateway: {call.violations}", file=sys.stderr)
        if args.record:
            path = call.write_wav(Path(args.record))
            print(f"recording: {path}")
        return 1 if call.violations else 0


def run_call_command(args: argparse.Namespace) -> int:
    import httpx
    from websockets.exceptions import WebSocketException

    try:
        return asyncio.run(_run(args))
    except (httpx.HTTPError, OSError, WebSocketException, TimeoutError) as error:
        print(f"callbridge call: cannot reach {args.url}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
