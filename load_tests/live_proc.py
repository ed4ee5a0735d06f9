"""Run the protocol-exact GPT-Live stand-in in its own process for load scenarios; prints its URL.

Appends are not re-validated and no per-delta records are kept (the builders are validated by the
unit tests), so the stand-in is not the bottleneck. Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal

from load_tests.common import API_KEY
from tests.standins.live_server import LiveBehaviour, LiveStandIn


async def main() -> None:
    behaviour = LiveBehaviour(replies=["Sure, let me check on your order for you right now."],
                              validate_outgoing=False, validate_appends=False, record_events=False)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with LiveStandIn(behaviour, api_key=API_KEY) as server:
        print(server.url, flush=True)
        await stop.wait()
        print(f"violations={len(server.violations)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
