"""Sentiment and escalation through whole calls: the gateway with a real redis-server, the Realtime
stand-in scripting the caller's transcripts, the Twilio stand-in speaking real audio, and a real
webhook receiver on 127.0.0.1 that verifies signatures and dedupes by Idempotency-Key."""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY, wait_call_count
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn
from tests.standins.webhook_receiver import WebhookReceiver

SECRET = "whsec-test-0123456789"


@contextlib.asynccontextmanager
async def escalation_setup(
    redis_server: RedisServer, transcripts: list[str], **overrides: Any
) -> AsyncIterator[tuple[RunningGateway, RealtimeStandIn, TwilioCallerStandIn, WebhookReceiver]]:
    receiver = WebhookReceiver(SECRET)
    await receiver.up()
    behaviour = ScriptedBehaviour(transcripts=transcripts, reply_ms=400)
    try:
        async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
            settings = {
                "realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                "vad_silence_duration_ms": 300, "redis_url": redis_server.url,
                "escalation_webhook_url": receiver.url, "escalation_webhook_secret": SECRET,
                "transfer_queue": "humans", **overrides,
            }
            async with run_gateway(start_services=True, **settings) as gw, \
                    TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
                yield gw, realtime, caller, receiver
    finally:
        await receiver.down()


UTTERANCE = synthesize("I have a question about my account")


async def speak_turns(call: CallHandle, realtime: RealtimeStandIn, turns: int) -> None:
    session = await realtime.wait_for_session()
    for n in range(1, turns + 1):
        if call.closed:
            return
        with contextlib.suppress(ConnectionError):
            await call.send_audio(UTTERANCE, silence(500))
        with contextlib.suppress(TimeoutError):
            await session.wait_until(lambda n=n: session.responses_done >= n or call.closed, timeout_s=10)


async def delivered(receiver: WebhookReceiver, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
    assert await receiver.wait_for(lambda r: len(r.accepted) >= count, timeout), "escalation not delivered"
    return [request.payload for request in receiver.accepted.values()]


async def assert_transferred(call: CallHandle) -> None:
    assert await call.wait_closed(timeout_s=20) == 1000
    await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
    enqueue = ET.fromstring(call.after_stream_twiml or "").find("./Enqueue")
    assert enqueue is not None and enqueue.text == "humans"


async def test_angry_caller_escalates_once_with_full_context(redis_server: RedisServer) -> None:
    transcripts = [
        "This is ridiculous I have been waiting for three weeks",
        "This is the third time I am calling and nobody helps me",
        "I am furious this is completely unacceptable terrible service",
        "Are you even listening to me this is a waste of time",
    ]
    async with escalation_setup(redis_server, transcripts) as (gw, realtime, caller, receiver):
        call = await caller.place_call(from_="+15551234567")
        await speak_turns(call, realtime, len(transcripts))
        await assert_transferred(call)
        payloads = await delivered(receiver)
        assert len(receiver.accepted) == 1 and receiver.bad_signatures == 0
        record = payloads[0]
        assert record["trigger"] == "sentiment"
        assert record["call_id"] == call.call_sid
        assert record["caller"].endswith("4567") and "555123" not in record["caller"]
        assert len(record["transcript"]) >= 2
        assert any("third time" in turn["text"] for turn in record["transcript"])
        assert record["sentiment"] and record["sentiment"][-1]["score"] >= gw.settings.escalation_threshold
        assert record["summary"]
        request = next(iter(receiver.accepted.values()))
        assert request.signature_ok and request.idempotency_key == record["escalation_id"]
        snapshot = await gw.gateway.state_store.load_call(call.call_sid)
        assert snapshot.fields["escalation_status"] in ("pending", "delivered")
        assert snapshot.fields["caller" if "caller" in snapshot.fields else "from"].endswith("4567")


@pytest.mark.slow  # long scripted call; the policy unit tests cover calm turns in the default run
async def test_calm_caller_never_escalates(redis_server: RedisServer) -> None:
    transcripts = [
        "Hi I would like to check the status of my order",
        "Thank you that is really helpful",
        "Great that answers my question",
        "Have a nice day goodbye",
    ]
    async with escalation_setup(redis_server, transcripts) as (gw, realtime, caller, receiver):
        call = await caller.place_call()
        await speak_turns(call, realtime, len(transcripts))
        assert not call.closed
        session = realtime.sessions[0]
        assert session.responses_done >= len(transcripts)
        await call.hang_up()
        await wait_call_count(gw, 0)
        assert receiver.requests == []
        await gw.gateway.state_store.flush(5.0)
        snapshot = await gw.gateway.state_store.load_call(call.call_sid)
        assert snapshot.fields["escalation_status"] == "none"
        assert [t.role for t in snapshot.transcript].count("caller") == len(transcripts)
        assert call.call_sid not in await gw.gateway.state_store.active_calls()


@pytest.mark.parametrize(
    "utterance", ["Can I speak to a human agent please", "オペレーターと話したいです", "担当者に代わってください"]
)
async def test_explicit_request_escalates_at_once(redis_server: RedisServer, utterance: str) -> None:
    async with escalation_setup(redis_server, [utterance]) as (_gw, realtime, caller, receiver):
        call = await caller.place_call()
        await speak_turns(call, realtime, 1)
        await assert_transferred(call)
        record = (await delivered(receiver))[0]
        assert record["trigger"] == "explicit_request"


async def test_dtmf_zero_escalates_at_once(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, []) as (_gw, realtime, caller, receiver):
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await session.wait_for_received("session.update")
        await call.send_dtmf("0")
        await assert_transferred(call)
        record = (await delivered(receiver))[0]
        assert record["trigger"] == "dtmf"


async def test_redis_restart_mid_call_loses_no_state(redis_server: RedisServer) -> None:
    transcripts = ["first question about billing", "second question about my plan", "third question thanks"]
    async with escalation_setup(redis_server, transcripts) as (gw, realtime, caller, _receiver):
        call = await caller.place_call()
        await speak_turns(call, realtime, 1)
        redis_server.stop()
        await speak_turns_from(call, realtime, 2)  # the call goes on while Redis is down
        assert not call.closed
        redis_server.start()
        await speak_turns_from(call, realtime, 3)
        store = gw.gateway.state_store
        assert await store.flush(15.0)
        snapshot = await store.load_call(call.call_sid)
        caller_turns = [t.text for t in snapshot.transcript if t.role == "caller"]
        assert caller_turns == transcripts
        await call.hang_up()


async def speak_turns_from(call: CallHandle, realtime: RealtimeStandIn, n: int) -> None:
    session = realtime.sessions[0]
    await call.send_audio(UTTERANCE, silence(500))
    await session.wait_until(lambda: session.responses_done >= n, timeout_s=10)


async def test_mid_stream_transfer_through_the_twilio_rest_api(redis_server: RedisServer) -> None:
    """With CALLBRIDGE_TRANSFER_VIA_REST the live call is updated with the transfer TwiML (docs/providers/twilio.md#rest-transfer)."""
    import base64

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.conftest import free_port

    updates: list[tuple[str, str, dict[str, str]]] = []

    async def update_call(request: Request) -> JSONResponse:
        form = await request.form()
        auth = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        updates.append((request.url.path, auth, {k: str(v) for k, v in form.items()}))
        return JSONResponse({"sid": request.path_params["call_sid"], "status": "in-progress"})

    port = free_port()
    app = Starlette(routes=[Route("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json", update_call,
                                  methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    account = "AC" + "d" * 32
    try:
        async with escalation_setup(redis_server, [], transfer_via_rest=True, twilio_account_sid=account,
                                    twilio_api_base=f"http://127.0.0.1:{port}") as (_gw, realtime, caller, receiver):
            call = await caller.place_call()
            session = await realtime.wait_for_session()
            await session.wait_for_received("session.update")
            await call.send_dtmf("0")
            assert await call.wait_closed(timeout_s=20) == 1000
            assert len(updates) == 1
            path, auth, form = updates[0]
            assert path == f"/2010-04-01/Accounts/{account}/Calls/{call.call_sid}.json"
            assert auth == f"{account}:{AUTH_TOKEN}"
            assert "<Enqueue>humans</Enqueue>" in form["Twiml"]
            await delivered(receiver)
    finally:
        server.should_exit = True
        await task


async def test_the_webhook_record_carries_a_working_agent_link(redis_server: RedisServer) -> None:
    """Issue 17.3: with the console on, the escalation record links to the agent view of exactly this
    escalation (signed, expiring); the link opens it, a tampered one is refused."""
    import httpx

    async with escalation_setup(redis_server, [], console_token="console-operator-token") as (gw, _rt, caller, receiver):
        call = await caller.place_call()
        await caller_dtmf_zero(call)
        record = (await delivered(receiver))[0]
        link = record["agent_url"]
        assert link.startswith(gw.settings.public_url + "/console/agent/" + record["escalation_id"] + "?")
        async with httpx.AsyncClient() as http:
            opened = await http.get(link.replace(gw.settings.public_url, gw.base_url))
            assert opened.status_code == 200 and record["escalation_id"] in opened.text
            tampered = await http.get(link.replace(gw.settings.public_url, gw.base_url)[:-2] + "xx")
            assert tampered.status_code in (401, 403, 404)


async def caller_dtmf_zero(call: CallHandle) -> None:
    await call.send_dtmf("0")
    await assert_transferred(call)
