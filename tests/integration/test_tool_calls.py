"""Business tools in whole calls over real sockets: the gateway under uvicorn, the Twilio caller
stand-in speaking real audio, the Realtime stand-in making the tool call (validating what the gateway
sends against the ``openai`` types), and a real HTTP tool service on 127.0.0.1 that verifies the
``Callbridge-Signature`` (docs/tools.md)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import REGISTRY

from service.simcaller.twilio_caller import mulaw_decode
from tests.conftest import RedisServer
from tests.integration.conftest import AUTH_TOKEN, RunningGateway, run_gateway
from tests.integration.test_call_bridge import API_KEY
from tests.poll import wait_until
from tests.standins.realtime_server import (
    FunctionCallScript,
    RealtimeStandIn,
    ScriptedBehaviour,
    StandInSession,
)
from tests.standins.speech import silence, synthesize
from tests.standins.tool_server import ToolServer
from tests.standins.twilio_caller import CallHandle, TwilioCallerStandIn

SECRET = "tool-secret-abcdef0123456789"
SCHEMA = {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]}
QUESTION = synthesize("My order?")


@contextlib.asynccontextmanager
async def tool_call_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, arguments: dict[str, Any], *,
    filler_after_ms: int = 300, timeout_s: float = 1.0, slow_s: float = 1.5, redis_url: str = "",
    gateway: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[RunningGateway, RealtimeStandIn, CallHandle, ToolServer, list[tuple[str, dict[str, Any]]]]]:
    monkeypatch.setenv("ORDER_TOOL_SECRET", SECRET)
    behaviour = ScriptedBehaviour(transcripts=["where is my order A-1042"], reply_ms=900,
                                  function_calls={1: FunctionCallScript(name="lookup_order", arguments=arguments)})
    async with ToolServer(SECRET, slow_s=slow_s, hang_s=10) as server, \
            RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime:
        tools = tmp_path / "tools.yaml"
        tools.write_text(yaml.safe_dump({"tools": [{
            "name": "lookup_order", "description": "Look up an order's status by its number.", "parameters": SCHEMA,
            "url": server.url(kind), "timeout_s": timeout_s, "idempotent": True, "secret_env": "ORDER_TOOL_SECRET",
            "filler_after_ms": filler_after_ms}]}))
        settings = {"realtime_provider": "openai", "realtime_api_key": API_KEY, "realtime_url": realtime.url,
                    "vad_silence_duration_ms": 300, "tools_file": str(tools), "tools_max_response_bytes": 4096}
        if redis_url:
            settings["redis_url"] = redis_url
        settings.update(gateway or {})  # gateway settings (e.g. the call's filler)
        async with run_gateway(start_services=bool(redis_url), **settings) as gw, TwilioCallerStandIn(gw.base_url, AUTH_TOKEN, keep_raw=True) as caller:
            events: list[tuple[str, dict[str, Any]]] = []
            gw.gateway.listeners.append(lambda kind, fields: events.append((kind, fields)))
            call = await caller.place_call(from_="+15551234567")
            yield gw, realtime, call, server, events


async def _tool_turn(realtime: RealtimeStandIn, call: CallHandle) -> StandInSession:
    """The caller asks; the model calls the tool; its output comes back and the model answers."""
    session = await realtime.wait_for_session()
    await session.wait_for_received("session.update")
    declared = [t["name"] for t in session.session.get("tools", [])]
    assert declared == ["escalate_to_human", "lookup_order"]
    await call.send_audio(QUESTION, silence(500))
    await session.wait_until(lambda: session.responses_done >= 2, timeout_s=15)
    return session


def _output(session: StandInSession) -> dict[str, Any]:
    (item,) = session.function_outputs
    return dict(json.loads(item["output"]))


def _next_response_after_output(session: StandInSession) -> None:
    """A ``response.create`` went out after the function output, and that response completed with audio."""
    types = session.received_types()
    output_at = next(i for i, r in enumerate(session.received) if r.type == "conversation.item.create")
    assert "response.create" in types[output_at:], types[output_at:]
    assert session.responses[1].status == "completed" and session.responses[1].function_call is None


async def test_signed_request_result_in_the_output_then_the_models_reply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    async with tool_call_setup(tmp_path, monkeypatch, "tools", {"order_number": "A-1042"},
                               redis_url=redis_server.url) as (gw, realtime, call, server, events):
        session = await _tool_turn(realtime, call)
        (request,) = server.requests
        assert request.signature_ok
        assert request.payload["tool"] == "lookup_order" and request.payload["arguments"] == {"order_number": "A-1042"}
        assert request.payload["call_id"] == call.call_sid
        assert request.payload["context"]["caller"] == "*******4567"  # masked: the full number never leaves
        assert _output(session) == {"ok": True, "result": {"order_number": "A-1042", "status": "shipped",
                                                           "delivery": "tomorrow before noon"}}
        _next_response_after_output(session)
        await call.wait_for(lambda: call.playback.played_total > 0, timeout_s=10)  # the reply is heard
        await call.hang_up()
        await call.wait_closed()
        assert realtime.violations == [] and call.violations == []
        store = gw.gateway.state_store
        await wait_until(lambda: gw.gateway.calls == {}, what="the call to end")
        await store.flush(5.0)
        snapshot = await store.load_call(call.call_sid)
        (turn,) = [t for t in snapshot.transcript if t.role == "tool"]  # in the Redis transcript
        assert json.loads(turn.text)["result"]["status"] == "shipped"
    recorded = [fields for kind, fields in events if kind == "tool_call"]
    assert recorded and recorded[0]["outcome"] == "ok" and recorded[0]["result"]["status"] == "shipped"
    summary = next(fields["summary"] for kind, fields in events if kind == "call_ended")
    assert [(t["tool"], t["outcome"]) for t in summary["tool_calls"]] == [("lookup_order", "ok")]


def _dbfs(mulaw: bytes) -> float:
    pcm = mulaw_decode(mulaw).astype(np.float64)
    return 20 * math.log10(max(float(np.sqrt(np.mean(pcm ** 2))), 1e-9) / 32768)


async def test_a_slow_tool_gets_a_filler_that_stops_when_the_model_speaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The call's filler (docs/first-words.md) covers the tool: heard within filler_after_ms + 100 ms
    of the request, repeated while the tool runs (short repeat here, so a clip is still sounding when
    the answer comes), and cleared just before the model's first audio."""
    after_ms = 300
    async with tool_call_setup(tmp_path, monkeypatch, "slow", {"order_number": "A-1042"}, filler_after_ms=after_ms,
                               timeout_s=4.0, slow_s=1.5,
                               gateway={"filler_after_ms": after_ms, "filler_repeat_ms": 200}) as (_gw, realtime, call, server, _events):
        await _tool_turn(realtime, call)
        (request,) = server.requests
        await call.wait_for(lambda: any(m.received_at > request.at for m in call.playback.marks), timeout_s=10)
        records = call.received
        marked = {i for i, r in enumerate(records[:-1]) if r.event == "media" and records[i + 1].event == "mark"}
        model_audio = next(r for i, r in enumerate(records) if i in marked and r.at > request.at)
        clips = [r for i, r in enumerate(records) if r.event == "media" and i not in marked and r.at > request.at - 1]
        assert clips, "no filler was played"
        waited_ms = (clips[0].at - request.at) * 1000
        assert waited_ms <= after_ms + 100, f"filler heard {waited_ms:.0f} ms after the tool request"
        assert len(clips) >= 2  # repeated while the tool ran (1.5 s)
        payload = base64.b64decode(json.loads(clips[0].raw or "{}")["media"]["payload"])
        assert _dbfs(payload) > -30, "the filler is not audible"
        # stopped the instant the model speaks: nothing of it after, and a clear just before the answer
        assert all(clip.at < model_audio.at for clip in clips)
        clear = next(r for r in records if r.event == "clear" and r.at > clips[-1].at)
        assert clear.at <= model_audio.at and (model_audio.at - clear.at) < 0.1
        assert call.playback.clears[-1].discarded_bytes > 0  # the rest of the clip was flushed, not played
        assert realtime.violations == [] and call.violations == []


@pytest.mark.parametrize("kind, outcome", [("hang", "timeout"), ("fail", "http_status"), ("big", "too_large"),
                                           ("notjson", "invalid_json")])
async def test_a_failing_tool_gives_a_failure_output_and_the_call_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, outcome: str) -> None:
    async with tool_call_setup(tmp_path, monkeypatch, kind, {"order_number": "A-1042"}, timeout_s=0.6,
                               filler_after_ms=2000) as (_gw, realtime, call, _server, events):
        session = await _tool_turn(realtime, call)
        output = _output(session)
        assert output["ok"] is False and output["error"] and "Apologise" in output["instructions"]
        _next_response_after_output(session)
        await call.wait_for(lambda: call.playback.played_total > 0, timeout_s=10)  # the model's apology is heard
        assert not call.closed
        assert [fields["outcome"] for kind_, fields in events if kind_ == "tool_call"] == [outcome]
        assert realtime.violations == [] and call.violations == []


async def test_invalid_arguments_never_reach_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with tool_call_setup(tmp_path, monkeypatch, "tools", {"order_number": 1042}) as (_gw, realtime, call, server, _events):
        session = await _tool_turn(realtime, call)
        output = _output(session)
        assert output["ok"] is False and "1042 is not of type 'string'" in output["error"]
        _next_response_after_output(session)
        assert server.requests == []
        assert not call.closed


async def test_a_pre_warmed_session_declares_the_tools_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session opened at the voice webhook (docs/first-words.md) is configured like a call's own."""
    claimed = REGISTRY.get_sample_value("callbridge_prewarm_total", {"outcome": "claimed"}) or 0.0
    async with tool_call_setup(tmp_path, monkeypatch, "tools", {"order_number": "A-7"},
                               gateway={"prewarm": 1}) as (_gw, realtime, call, server, _events):
        session = await _tool_turn(realtime, call)  # asserts escalate_to_human + lookup_order declared
        assert len(realtime.handshakes) == 1  # one session: the pre-warmed one, claimed by the stream
        assert [r.payload["arguments"] for r in server.requests] == [{"order_number": "A-7"}]
        assert _output(session)["ok"] is True
    assert REGISTRY.get_sample_value("callbridge_prewarm_total", {"outcome": "claimed"}) == claimed + 1
