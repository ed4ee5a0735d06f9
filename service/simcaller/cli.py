"""``callbridge call URL [--provider P] [--say TEXT | --audio FILE.wav]...``: a simulated caller as a tool.

Places a call on any running deployment exactly as the carrier would (signed voice webhook, its markup,
its media stream with the stream token), speaks each line in order at real-time pace, listens
``--listen-s`` seconds after each, prints what happened, and records the call to WAV (caller left, bot
right). ``--provider twilio`` (the default) uses the Twilio caller of ``service.simcaller.twilio_caller``;
every other routed carrier uses ``service.simcaller.carrier_call`` with its profile from
``service.simcaller.carriers``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path


def signing_key(args: argparse.Namespace) -> tuple[str, str]:
    """(the key that signs the carrier's webhooks, where it should have come from). Twilio, SignalWire and
    Plivo sign with the secret the gateway also holds, so its ``CALLBRIDGE_*`` variable is the fallback;
    Telnyx signs with a private key the gateway never has (``--key``: a base64 Ed25519 seed)."""
    from service.simcaller.carriers import CARRIERS

    profile = CARRIERS[args.provider]
    key = args.key or (args.auth_token if args.provider == "twilio" else None)
    if args.provider == "telnyx":
        return key or "", "--key (a base64 Ed25519 seed whose public key the gateway is configured with)"
    if args.provider == "exotel" and not key:  # HTTP Basic on the socket: user and password
        user, password = os.environ.get(profile.key_setting, ""), os.environ.get("CALLBRIDGE_EXOTEL_STREAM_PASSWORD", "")
        key = f"{user}:{password}" if user and password else None
    return key or os.environ.get(profile.key_setting, ""), f"--key (or {profile.key_setting})"


async def _speech(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    from service.simcaller.speech import speak_mulaw, wav_mulaw

    segments: list[tuple[str, bytes]] = []
    for path in args.audio:
        segments.append((f"audio {path}", await asyncio.to_thread(wav_mulaw, path)))
    for text in args.say:
        segments.append((f"say {text!r}", await asyncio.to_thread(speak_mulaw, text)))
    return segments


async def _run(args: argparse.Namespace) -> int:
    token, source = signing_key(args)
    if not token:
        print(f"callbridge call: {source} is needed to sign the webhook", file=sys.stderr)
        return 2
    if args.provider != "twilio":
        return await _run_carrier(args, token)
    from service.simcaller.twilio_caller import CallRejected, TwilioCallerStandIn

    segments = await _speech(args)
    loop = asyncio.get_running_loop()
    async with TwilioCallerStandIn(args.url.rstrip("/"), token, public_url=args.public_url) as caller:
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


async def _run_carrier(args: argparse.Namespace, key: str) -> int:
    from service.simcaller.carrier_call import CallRejected, CarrierCaller, mulaw_to_wire
    from service.simcaller.carriers import CARRIERS

    segments = await _speech(args)
    loop = asyncio.get_running_loop()
    profile = CARRIERS[args.provider]
    async with CarrierCaller(profile, args.url.rstrip("/"), key, public_url=args.public_url) as caller:
        try:
            call = await caller.place_call()
        except CallRejected as error:
            print(f"call rejected: HTTP {error.status}: {error.text[:300]}", file=sys.stderr)
            return 1
        start = loop.time()
        rate = call.wire.audio.bytes_per_second
        print(f"[{0:6.2f}s] {profile.name} call {call.call_id} connected ({call.wire.audio.codec} "
              f"{call.wire.audio.rate} Hz)")
        for label, audio in segments:
            if call.closed:
                break
            print(f"[{loop.time() - start:6.2f}s] caller: {label}")
            await call.send_audio(mulaw_to_wire(audio, call.wire.audio))
            before = call.playback.played_total
            deadline = loop.time() + args.listen_s
            while loop.time() < deadline and not call.closed:
                await asyncio.sleep(0.1)  # listening at real-time pace
            heard = (call.playback.played_total - before) / rate
            print(f"[{loop.time() - start:6.2f}s] bot audio heard: {heard:.1f} s, flushes: {len(call.playback.clears)}")
        if not call.closed:
            await call.hang_up()
        if call.violations:
            print(f"protocol violations by the gateway: {call.violations}", file=sys.stderr)
        if args.record:
            print(f"recording: {call.write_wav(Path(args.record))}")
        return 1 if call.violations else 0


def run_call_command(args: argparse.Namespace) -> int:
    import httpx
    from websockets.exceptions import WebSocketException

    try:
        return asyncio.run(_run(args))
    except (httpx.HTTPError, OSError, WebSocketException, TimeoutError) as error:
        print(f"callbridge call: cannot reach {args.url}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
