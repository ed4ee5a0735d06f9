"""The console's APIs read real Redis: a call written by one replica's store shows up with its id,
state, owner and masked caller, and its transcript grows as turns are written."""

from __future__ import annotations

import asyncio

import httpx

from service.app import create_app
from service.config import Settings
from service.state.store import StateStore

TOKEN = "console-integration-token"


def test_active_call_and_transcript_come_from_redis(redis_server) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        writer_store = StateStore(redis_server.url, prefix="cb", replica_id="r-other")
        await writer_store.start()
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        reader = StateStore(redis_server.url, prefix="cb", replica_id="r-console")
        await reader.start()
        app.state.gateway.state_store = reader
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            call = writer_store.call("CA-console-1")
            call.started({"from": "+14155550123", "provider": "twilio"})
            call.transcript("caller", "hello there")
            assert await writer_store.flush(5.0)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                listing = (await client.get("/console/api/calls", headers=headers)).json()["calls"]
                assert [row["call_id"] for row in listing] == ["CA-console-1"]
                row = listing[0]
                assert row["replica"] == "r-other" and row["state"] == "active"
                assert "4155550123" not in row["caller"] and row["caller"].endswith("0123")
                call.transcript("bot", "hi, how can I help?")
                assert await writer_store.flush(5.0)
                one = (await client.get("/console/api/calls/CA-console-1", headers=headers)).json()
                assert [t["text"] for t in one["transcript"]] == ["hello there", "hi, how can I help?"]
                denied = await client.get("/console/api/calls/CA-console-1")
                assert denied.status_code == 401 and "hello" not in denied.text
        finally:
            await reader.close()
            await writer_store.close()

    asyncio.run(scenario())
