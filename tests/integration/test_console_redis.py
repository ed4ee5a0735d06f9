"""The console's APIs read real Redis: a call written by one replica's store shows up with its id,
state, owner and masked caller, and its transcript grows as turns are written."""

from __future__ import annotations

import asyncio

import httpx
import pytest

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


def test_escalations_fleet_and_sse_over_a_real_socket(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Dead letters carry the receiver's answer; live replicas are listed; the SSE feed sends the
    call list as an event on a real 127.0.0.1 socket, then the client closes it."""
    import uvicorn

    from tests.conftest import free_port

    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        await store.heartbeat_once()
        await store.redis.xadd(store.keys.dead_letter, {"escalation_id": "E1", "call_id": "CA-x", "status": "422",
                                                        "response": "bad field", "dead_at": "1", "body": "{}"})
        call = store.call("CA-sse-1")
        call.started({"from": "+14155550123"})
        assert await store.flush(5.0)
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        app.state.gateway.state_store = store
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
        task = asyncio.create_task(server.serve())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                for _ in range(200):  # bounded wait for the server to listen
                    if server.started:
                        break
                    await asyncio.sleep(0.05)
                esc = (await client.get("/console/api/escalations", headers=headers)).json()
                assert esc["dead_letter"][0]["escalation_id"] == "E1" and esc["dead_letter"][0]["response"] == "bad field"
                assert "body" not in esc["dead_letter"][0]
                fleet = (await client.get("/console/api/fleet", headers=headers)).json()
                assert [r["replica"] for r in fleet["replicas"]] == ["r-1"]
                assert (await client.get("/console/api/stream/calls")).status_code == 401
                async with client.stream("GET", "/console/api/stream/calls", headers=headers) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    lines: list[str] = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line.startswith("data: "):
                            break
                        assert len(lines) < 20
                    assert "CA-sse-1" in lines[-1] and "id: 1" in lines
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            await store.close()

    asyncio.run(scenario())


def test_redeliver_moves_a_dead_letter_back_to_the_outbox(redis_server) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        body = b'{"escalation_id":"E7","trigger":"dtmf"}'
        entry_id = await store.redis.xadd(store.keys.dead_letter, {"escalation_id": "E7", "call_id": "CA-7",
                                                                   "status": "410", "response": "gone", "body": body})
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        app.state.gateway.state_store = store
        headers = {"Authorization": f"Bearer {TOKEN}"}
        path = f"/console/api/escalations/dead/{entry_id.decode()}/redeliver"
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                assert (await client.get(path, headers=headers)).status_code == 405
                cross = await client.post(path, headers={**headers, "Origin": "http://evil.example"})
                assert cross.status_code == 403
                assert await store.redis.xlen(store.keys.dead_letter) == 1
                assert (await client.post(path, headers=headers)).json() == {"queued": "E7"}
                assert (await client.post(path, headers=headers)).status_code == 404
            assert await store.redis.xlen(store.keys.dead_letter) == 0
            [(_id, fields)] = await store.redis.xrange(store.keys.outbox)
            assert fields[b"body"] == body and fields[b"escalation_id"] == b"E7" and fields[b"call_id"] == b"CA-7"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_call_events_escalation_list_and_agent_view_from_redis(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Events written by the call's writer reach the call API in order; an escalation recorded by the
    outbox shows in the recent list with its delivery status; the agent link opens its view."""
    import time

    from service.console import auth
    from service.escalation.outbox import Outbox
    from service.escalation.record import EscalationRecord

    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        outbox = Outbox.for_store(store)
        await outbox.start()
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        app.state.gateway.state_store = store
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            call = store.call("CA-ev-1")
            call.started({"from": "+14155550123", "provider": "twilio"})
            call.transcript("caller", "I was charged twice on my bill")
            call.event("barge_in", {"heard_ms": 1200, "sent_ms": 3400})
            call.event("tool_call", {"name": "lookup_order", "result": "x" * 5000})
            call.event("escalation", {"trigger": "explicit_request", "reason": "caller asked for a person"})
            assert await store.flush(5.0)
            outbox.enqueue(EscalationRecord("ESC-9", "CA-ev-1", "explicit_request", time.time(), b"{}"))
            assert await outbox.flush(5.0)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                one = (await client.get("/console/api/calls/CA-ev-1", headers=headers)).json()
                assert [e["kind"] for e in one["events"]] == ["barge_in", "tool_call", "escalation"]
                assert one["events"][0]["heard_ms"] == 1200
                assert len(one["events"][1]["result"]) < 300  # capped when written
                assert one["escalation_detail"]["status"] == "pending" and one["escalation_detail"]["id"] == "ESC-9"
                esc = (await client.get("/console/api/escalations", headers=headers)).json()
                assert [(e["escalation_id"], e["status"]) for e in esc["recent"]] == [("ESC-9", "pending")]
                assert [e["escalation_id"] for e in esc["pending"]] == ["ESC-9"]
                link = auth.agent_link("http://gw", auth.agent_link_key(TOKEN, ""), "ESC-9", time.time(), 60)
                page = await client.get(link)
                assert page.status_code == 200 and "charged twice" in page.text and "lookup_order" in page.text
                assert "caller asked for a person" in page.text
                assert (await client.get(link.replace("ESC-9", "ESC-8"))).status_code == 401
        finally:
            await outbox.close()
            await store.close()

    asyncio.run(scenario())


def test_sse_client_that_never_reads_is_dropped(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A raw socket subscribes to the active-calls feed and never reads while the feed changes fast
    (300 calls, ~100 KB per snapshot): once the socket buffers are full the server's send blocks, the
    client is dropped after SSE_SEND_TIMEOUT_S and its connection closed; what it was sent is bounded
    by the socket buffers (nothing queued per client), and a reading client is served meanwhile.
    The connection is aborted by the gateway's HTTP guard (``http.write_stalled``), not left to
    flush forever."""
    import contextlib
    import socket

    import uvicorn

    from service import http_guard
    from service.app import uvicorn_config
    from service.console import routes
    from tests.conftest import free_port
    from tests.poll import wait_until

    monkeypatch.setattr(routes, "SSE_PERIOD_S", 0.01)
    monkeypatch.setattr(routes, "SSE_SEND_TIMEOUT_S", 1.0)
    monkeypatch.setattr(http_guard, "WRITE_STALL_TIMEOUT_S", 1.0)

    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        for n in range(300):
            store.call(f"CA-flood-{n:03d}").started({"from": "+14155550123", "provider": "twilio"})
        assert await store.flush(10.0)
        settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
        app = create_app(settings, start_services=False)
        app.state.gateway.state_store = store
        port = free_port()
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, lifespan="off"))  # the gateway's HTTP guard
        task = asyncio.create_task(server.serve())
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stop = asyncio.Event()

        async def churn() -> None:  # every snapshot differs: the feed always has something to send
            n = 0
            while not stop.is_set():
                n += 1
                store.call("CA-flood-000").set_state(f"s{n}")
                await store.flush(1.0)

        churner = asyncio.create_task(churn())
        try:
            await wait_until(lambda: server.started, timeout=10, what="server listening")
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(f"GET /console/api/stream/calls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
            await wait_until(lambda: len(server.server_state.connections) == 1, timeout=10, what="stream open")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                async with client.stream("GET", "/console/api/stream/calls",
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    events = 0
                    async for line in response.aiter_lines():
                        events += line.startswith("event: calls")
                        if events >= 3:
                            break
            await wait_until(lambda: len(server.server_state.connections) == 0, timeout=30,
                             what="the stalled client dropped")
            stalled.setblocking(True)
            stalled.settimeout(10)
            received = 0
            with contextlib.suppress(ConnectionResetError):  # aborted: the kernel may answer with a reset
                while chunk := stalled.recv(65536):  # what the kernel held, up to the server's abort
                    received += len(chunk)
                    assert received < 32 << 20
            assert received < 32 << 20
        finally:
            stop.set()
            await churner
            stalled.close()
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            await store.close()

    asyncio.run(scenario())


def test_call_recorder_writes_the_console_events_and_cost(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The per-call recorder puts barge-ins (heard ms), model reconnects, tool calls with their result
    and the running cost into Redis, where the console's call page reads them."""
    from service.call.recorder import CallRecorder
    from service.gateway import Gateway
    from service.providers.base import StreamStarted
    from service.realtime.prices import load_prices, prices_for, usage_cost_usd

    async def scenario() -> None:
        store = StateStore(redis_server.url, prefix="cb", replica_id="r-1")
        await store.start()
        settings = Settings(redis_url=redis_server.url, realtime_api_key="sk-test", _env_file=None)  # type: ignore[call-arg]
        gateway = Gateway(settings=settings, state_store=store)
        started = StreamStarted(stream_id="MZ1", call_id="CA-rec-1", account_id="AC1",
                                custom_parameters={"from": "+14155550123"})
        try:
            recorder = CallRecorder(gateway, started, "twilio")
            recorder.bot_truncated("item-1", heard_ms=1180, sent_ms=4200)
            recorder.model_reconnected(1)
            result = recorder.tool_call("unknown_tool", "{}")
            usage = {"input_token_details": {"audio_tokens": 2000, "text_tokens": 500},
                     "output_token_details": {"audio_tokens": 3000, "text_tokens": 100}}
            recorder.usage(usage)
            recorder.usage(usage)
            assert await store.flush(5.0)
            snap = await store.load_call("CA-rec-1")
            assert snap is not None
            assert [(e["kind"], e.get("heard_ms"), e.get("attempt")) for e in snap.events] == [
                ("barge_in", 1180, None), ("reconnect", None, 1), ("tool_call", None, None)]
            assert snap.events[2]["name"] == "unknown_tool" and snap.events[2]["result"] == result
            prices = prices_for(load_prices(settings.prices_file), settings.realtime_model)
            assert prices is not None
            assert float(snap.fields["cost_usd"]) == pytest.approx(2 * usage_cost_usd(usage, prices), rel=1e-4)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_fleet_shows_draining_replicas_and_calls_they_own(redis_server) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        serving = StateStore(redis_server.url, prefix="cb", replica_id="r-a")
        draining = StateStore(redis_server.url, prefix="cb", replica_id="r-b")
        for store in (serving, draining):
            await store.start()
        draining.draining = True  # what drain_gateway sets
        try:
            draining.call("CA-b1").started({"provider": "twilio"})
            draining.call("CA-b2").started({"provider": "twilio"})
            assert await draining.flush(5.0)
            await serving.heartbeat_once()
            await draining.heartbeat_once()
            settings = Settings(console_token=TOKEN, redis_url=redis_server.url, _env_file=None)  # type: ignore[arg-type, call-arg]
            app = create_app(settings, start_services=False)
            app.state.gateway.state_store = serving
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                fleet = (await client.get("/console/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"})).json()
            assert [(r["replica"], r["draining"], r["active_calls"]) for r in fleet["replicas"]] == [
                ("r-a", False, 0), ("r-b", True, 2)]
        finally:
            for store in (serving, draining):
                await store.close()

    asyncio.run(scenario())
