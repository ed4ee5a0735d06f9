"""Run the protocol-exact Realtime stand-in in its own process for load scenarios; prints its URL.

Appends are not strictly re-validated (``validate_appends=False``: the append builder is validated
by the unit tests) and not recorded, so the stand-in is not the bottleneck. Stops on SIGTERM. SIGUSR1
drops every open session with close code 1011 (a model-side fault; the fault suite uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour


async def main(reply_ms: int, replies: bool) -> None:
    behaviour = ScriptedBehaviour(
        reply_ms=reply_ms, auto_response=replies, pacing=4.0, record_appends=False, validate_appends=False, validate_outgoing=False,
        input_audio_keep_s=0, transcripts=["I would like to check on my order please"], cycle_transcripts=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with RealtimeStandIn(behaviour) as server:

        closing: set[asyncio.Task[None]] = set()

        def drop_all() -> None:
            for session in list(server.sessions):
                if not session.closed:
                    task = loop.create_task(session.close(1011, "fault injected"))
                    closing.add(task)
                    task.add_done_callback(closing.discard)

        loop.add_signal_handler(signal.SIGUSR1, drop_all)
        print(server.url, flush=True)
        await stop.wait()
        print(f"violations={len(server.violations)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--reply-ms", type=int, default=1500)
    parser.add_argument("--no-replies", action="store_true", help="never answer (callers only stream audio)")
    options = parser.parse_args()
    asyncio.run(main(options.reply_ms, not options.no_replies))
