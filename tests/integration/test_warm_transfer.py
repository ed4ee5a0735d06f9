"""Warm transfer on Twilio through whole calls (issue 16 items 5-7): the gateway with a real
redis-server, the Realtime stand-in, and the Twilio stand-in following the after-stream, whisper and
``<Dial action>`` callbacks with signed requests, each simulated agent answering, busy, silent or a
voicemail."""

from __future__ import annotations

import io
import json
import time
import wave
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest

from service.providers.twilio.dialect import compute_twilio_signature
from service.providers.twilio.transfer import DIAL_DONE_PATH, HOLD_PATH, WHISPER_PATH
from tests.conftest import RedisServer, free_port
from tests.integration.conftest import AUTH_TOKEN, RunningGateway
from tests.integration.test_escalation_calls import delivered, escalation_setup, speak_turns
from tests.poll import wait_until
from tests.standins.realtime_server import RealtimeStandIn
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn
from tests.standins.twilio_transfer import TransferTrace, TwilioRestStandIn, follow_transfer

AGENT = "+15550100"
SECOND = "+15550200"
ASK = "My order is missing. Can I speak to a human agent please"
WORKFLOW = "WW" + "c" * 32


async def _escalate_and_follow(gw: RunningGateway, realtime: RealtimeStandIn, caller: TwilioCallerStandIn,
                               agents: dict[str, str]) -> tuple[CallHandle, TransferTrace]:
    call = await caller.place_call(from_="+15551234567")
    await speak_turns(call, realtime, 1)
    assert await call.wait_closed(timeout_s=20) == 1000
    await call.wait_for(lambda: call.after_stream_twiml is not None, timeout_s=10)
    trace = await follow_transfer(caller, call, agents)
    assert trace.violations == [], trace
    return call, trace


def _steps(gw: RunningGateway) -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {step: REGISTRY.get_sample_value("callbridge_transfer_steps_total", {"step": step}) or 0.0
            for step in ("dial", "queue", "bot", "hangup")}


async def test_the_agent_hears_the_briefing_then_is_connected(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_briefing_voice="Polly.Joanna") as (gw, realtime, caller, receiver):
        _call, trace = await _escalate_and_follow(gw, realtime, caller, {AGENT: "answer"})
        assert trace.outcome == "connected" and len(trace.agents) == 1
        agent = trace.agents[0]
        assert agent.answered_by == "human" and agent.bridged and agent.whisper_status == 200
        briefing = " ".join(agent.heard)
        record = (await delivered(receiver))[0]
        assert briefing.startswith("Transfer from the voice assistant.")
        assert "caller asked for a person" in briefing and "order is missing" in briefing.lower()
        assert agent.say_language == "en-US" and agent.say_voice == "Polly.Joanna"
        assert record["escalation_id"] and "4567" not in briefing  # the caller's number is never read out
        # The caller heard the hold clip first: the bundled WAV, audible.
        assert trace.played == [gw.settings.public_url + HOLD_PATH]
        async with httpx.AsyncClient() as http:
            clip = await http.get(gw.base_url + HOLD_PATH)
        with wave.open(io.BytesIO(clip.content)) as wav:
            assert wav.getframerate() == 8000 and wav.getsampwidth() == 2
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(float)
        level_db = 20 * np.log10(np.sqrt(np.mean(pcm**2)) / 32768)
        assert -30 < level_db < -10 and len(pcm) / 8000 >= 3.0
        # The dial action after a connected call ends it.
        assert [c.tag for c in ET.fromstring(trace.documents[-1])] == ["Hangup"]


async def test_a_japanese_caller_gets_a_japanese_briefing(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, ["注文が届きません。オペレーターと話したいです"], transfer_mode="warm",
                                transfer_number=AGENT) as (gw, realtime, caller, _receiver):
        _call, trace = await _escalate_and_follow(gw, realtime, caller, {AGENT: "answer"})
        agent = trace.agents[0]
        assert agent.say_language == "ja-JP" and trace.outcome == "connected"
        briefing = " ".join(agent.heard)
        assert briefing.startswith("音声アシスタントからの転送です。") and "注文が届きません" in briefing


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_busy_agent_falls_back_to_the_second_number(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_fallbacks="number,queue", transfer_fallback_number=SECOND) as (
            gw, realtime, caller, _receiver):
        before = _steps(gw)
        _call, trace = await _escalate_and_follow(gw, realtime, caller, {AGENT: "busy", SECOND: "answer"})
        assert [(a.target, a.dial_status, a.bridged) for a in trace.agents] == [
            (AGENT, "busy", False), (SECOND, "completed", True)]
        assert trace.agents[0].heard == [] and "order is missing" in " ".join(trace.agents[1].heard).lower()
        assert trace.outcome == "connected" and trace.played == [gw.settings.public_url + HOLD_PATH]
        after = _steps(gw)
        assert after["dial"] - before["dial"] == 2


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_a_voicemail_is_hung_up_and_the_call_goes_to_taskrouter_with_attributes(
        redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_fallbacks="queue", twilio_workflow_sid=WORKFLOW) as (
            _gw, realtime, caller, receiver):
        call, trace = await _escalate_and_follow(_gw, realtime, caller, {AGENT: "machine"})
        agent = trace.agents[0]
        assert agent.answered_by == "machine_start" and not agent.bridged and agent.heard == []
        assert trace.outcome == "queued" and trace.workflow_sid == WORKFLOW
        attributes = json.loads(trace.task_attributes)
        record = (await delivered(receiver))[0]
        assert attributes["escalation_id"] == record["escalation_id"] and attributes["call_id"] == call.call_sid
        assert attributes["summary"] == record["summary"] and attributes["trigger"] == "explicit_request"
        assert attributes["language"] == "en-US" and "tool_results" in attributes
        assert len(trace.task_attributes.encode()) <= 4096


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_no_answer_brings_the_call_back_to_the_bot_with_an_apology(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_fallbacks="bot") as (gw, realtime, caller, _receiver):
        call, trace = await _escalate_and_follow(gw, realtime, caller, {AGENT: "no-answer"})
        assert trace.agents[0].dial_status == "no-answer" and trace.outcome == "bot"
        resumed = await caller.follow(call, twiml=trace.stream_twiml)
        assert resumed is not None and resumed.call_sid == call.call_sid
        session = await realtime.wait_for_session(index=1, timeout_s=10)
        create = await session.wait_for_received("response.create", timeout_s=10)
        assert gw.settings.transfer_return_line in json.dumps(create.event)
        await resumed.wait_for(lambda: len(resumed.events("media")) >= 1, timeout_s=15)  # the bot speaks again
        snapshot = await gw.gateway.state_store.load_call(call.call_sid)
        # "returned", or already "none" once the new stream's state is written: no longer escalated.
        assert snapshot.fields["escalation_status"] in ("returned", "none") and snapshot.fields["resumes"] == "1"
        assert not await gw.gateway.is_escalated(call.call_sid)
        # A replica that remembers the escalation from before the return does not transfer the call again,
        # but one that sees it escalate anew does.
        gw.gateway.escalated_recently[call.call_sid] = time.time() - 30
        assert not await gw.gateway.is_escalated(call.call_sid)
        gw.gateway.mark_escalated(call.call_sid)
        assert await gw.gateway.is_escalated(call.call_sid)
        gw.gateway.returned_to_bot(call.call_sid)
        await resumed.hang_up()
        # A replayed dial callback for the same step cannot send the call back twice.
        url = f"{gw.settings.public_url}{DIAL_DONE_PATH}?call={call.call_sid}&step=0"
        replay = await caller.post_signed(url, {**caller.call_form(call.call_sid, call.from_, call.to),
                                                "DialCallStatus": "no-answer"})
        assert replay.status_code == 200 and [c.tag for c in ET.fromstring(replay.text)] == ["Say", "Hangup"]
        # A caller who hung up while the agent's phone rang gets no fallback at all.
        gone = await caller.post_signed(url, {**caller.call_form(call.call_sid, call.from_, call.to, status="completed"),
                                              "DialCallStatus": "no-answer"})
        assert [c.tag for c in ET.fromstring(gone.text)] == ["Hangup"]


async def test_transfer_callbacks_are_signature_checked(redis_server: RedisServer) -> None:
    async with escalation_setup(redis_server, [], transfer_mode="warm", transfer_number=AGENT) as (
            gw, _realtime, caller, _receiver):
        call_sid = "CA" + "e" * 32
        url = f"{gw.settings.public_url}{WHISPER_PATH}?call={call_sid}&step=0"
        form = {**caller.call_form("CA" + "f" * 32, "+15559870000", AGENT), "AnsweredBy": "human"}
        assert (await caller.post_signed(url, form, signature=False)).status_code == 403
        forged = compute_twilio_signature(AUTH_TOKEN, url.replace("step=0", "step=1"), form)
        assert (await caller.post_signed(url, form, signature=forged)).status_code == 403  # query is signed
        unknown_step = f"{gw.settings.public_url}{WHISPER_PATH}?call={call_sid}&step=7"
        assert (await caller.post_signed(unknown_step, form)).status_code == 400
        ok = await caller.post_signed(url, form)  # a valid callback for a call with no record: no briefing
        assert ok.status_code == 200 and list(ET.fromstring(ok.text)) == []


async def test_a_late_webhook_delivery_does_not_mark_a_returned_call_escalated(redis_server: RedisServer) -> None:
    """The delivery worker's finishing step leaves a call that came back to the bot alone."""
    import redis.asyncio as aioredis

    from service.escalation.webhook import _FINISH_SCRIPT

    client = aioredis.from_url(redis_server.url)
    try:
        for status, expected in (("returned", b"returned"), ("none", b"none"), ("pending", b"delivered")):
            await client.hset("t:call", mapping={"escalation_status": status})
            await client.eval(_FINISH_SCRIPT, 3, "t:outbox", "t:call", "t:dead", "g", "0-1", "delivered",
                              "1.0", "100", "E", "C", "200", "", "", "0")
            assert await client.hget("t:call", "escalation_status") == expected
    finally:
        await client.aclose()


async def _conference_call(redis_server: RedisServer, agents: dict[str, str], **overrides: object) -> tuple[
        TransferTrace, TwilioRestStandIn, RunningGateway, CallHandle]:
    """One escalated call with the conference variant, the REST stand-in playing the agents."""
    port = free_port()
    account = "AC" + "7" * 32
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_warm_via="conference", twilio_account_sid=account,
                                twilio_api_base=f"http://127.0.0.1:{port}", **overrides) as (
            gw, realtime, caller, _receiver):
        caller.account_sid = account
        async with TwilioRestStandIn(caller, agents, port=port) as rest:
            _call, trace = await _escalate_and_follow(gw, realtime, caller, {})
            await rest.wait_for(lambda: bool(rest.calls) and all(
                c.status_callback_status is not None for c in rest.calls) and (
                rest.calls[-1].leg.bridged or bool(rest.updates)))
            assert rest.violations == []
            return trace, rest, gw, _call


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_conference_variant_holds_the_caller_and_briefs_the_agent(redis_server: RedisServer) -> None:
    trace, rest, gw, call = await _conference_call(redis_server, {AGENT: "answer"})
    assert trace.outcome == "conference" and trace.conference == f"callbridge-{call.call_sid}"
    assert trace.played == [gw.settings.public_url + HOLD_PATH] and trace.hold_loops == "0"  # loops until answered
    [agent] = rest.calls
    assert agent.form["To"] == AGENT and agent.form["From"] == call.to and agent.form["MachineDetection"] == "Enable"
    assert agent.leg.answered_by == "human" and agent.conference == trace.conference
    assert "order is missing" in " ".join(agent.leg.heard).lower() and rest.updates == []
    assert agent.status_callback_status == 204


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_conference_variant_falls_back_over_rest(redis_server: RedisServer) -> None:
    trace, rest, _gw, call = await _conference_call(
        redis_server, {AGENT: "busy", SECOND: "machine"}, transfer_fallbacks="number,queue",
        transfer_fallback_number=SECOND)
    assert [(c.leg.target, c.leg.dial_status, c.leg.bridged) for c in rest.calls] == [
        (AGENT, "busy", False), (SECOND, "completed", False)]
    assert rest.calls[1].leg.answered_by == "machine_start" and rest.calls[1].leg.heard == []
    [update] = rest.updates
    assert update.call_sid == call.call_sid
    enqueue = ET.fromstring(update.twiml).find("Enqueue")
    assert enqueue is not None and enqueue.text == "humans" and trace.outcome == "conference"


@pytest.mark.slow  # a whole call each; the file takes ~30 s on the 2-core machine
async def test_conference_variant_back_to_the_bot_keeps_the_callers_number(redis_server: RedisServer) -> None:
    port = free_port()
    account = "AC" + "8" * 32
    async with escalation_setup(redis_server, [ASK], transfer_mode="warm", transfer_number=AGENT,
                                transfer_warm_via="conference", twilio_account_sid=account, transfer_fallbacks="bot",
                                twilio_api_base=f"http://127.0.0.1:{port}") as (gw, realtime, caller, _receiver):
        caller.account_sid = account
        async with TwilioRestStandIn(caller, {AGENT: "no-answer"}, port=port) as rest:
            call, trace = await _escalate_and_follow(gw, realtime, caller, {})
            await rest.wait_for(lambda: bool(rest.updates))
            assert trace.outcome == "conference" and rest.violations == []
            resumed = await caller.follow(call, twiml=rest.updates[0].twiml)  # Twilio runs the new TwiML
            assert resumed is not None
            session = await realtime.wait_for_session(index=1, timeout_s=10)
            create = await session.wait_for_received("response.create", timeout_s=10)
            assert gw.settings.transfer_return_line in json.dumps(create.event)

            async def new_stream_recorded() -> bool:  # the resumed stream's own state write has landed
                snap = await gw.gateway.state_store.load_call(call.call_sid)
                return snap is not None and snap.fields.get("stream_id") == resumed.stream_sid

            await wait_until(new_stream_recorded, timeout=10, what="the resumed stream's state")
            snapshot = await gw.gateway.state_store.load_call(call.call_sid)
            assert snapshot.fields["from"].endswith("4567") and "555123" not in snapshot.fields["from"]
            await resumed.hang_up()
