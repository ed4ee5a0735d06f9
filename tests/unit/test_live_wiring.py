"""GPT-Live wiring: settings, connection parameters (docs/models/live.md#connecting), the per-second
price, the asyncio ``LiveTransport`` (nothing overtakes ``session.start``; lost, expired and
expiring sessions are replaced) and the embedded engine's pure Live front (``LiveFront``)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from service.config import Settings
from service.realtime.events import RealtimeClosed
from service.realtime.live import LiveDialect
from service.realtime.live_transport import HOLD_FRAMES, LiveTransport
from service.realtime.local.live_front import TICK_BYTES, LiveFront
from service.realtime.prices import load_prices, prices_for, usage_cost_usd
from service.realtime.protocol import connection_params
from service.realtime.sessions import dialect_from, model_side
from tests.standins.live_types import server_event_problem

GA_CLIENT = TypeAdapter(RealtimeClientEvent)


def settings(**overrides: Any) -> Settings:
    return Settings(**{"realtime_api_key": "sk-secret", "realtime_dialect": "live", **overrides})


# --- settings and connection parameters -----------------------------------------------------------

def test_live_defaults_to_gpt_live_model_unless_set() -> None:
    assert settings().realtime_model == "gpt-live-1"
    assert settings(realtime_model="gpt-live-1.1").realtime_model == "gpt-live-1.1"
    assert Settings(realtime_api_key="k").realtime_model == "gpt-realtime-2.1"  # GA unchanged


def test_openai_url_and_bearer() -> None:
    url, headers = connection_params(settings(realtime_provider="openai"))
    assert url == "wss://api.openai.com/v1/live/sessions" and headers == {"Authorization": "Bearer sk-secret"}


def test_azure_url_with_api_key_or_entra_token() -> None:
    base = {"realtime_provider": "azure", "azure_endpoint": "https://res.openai.azure.com/anything"}
    url, headers = connection_params(settings(**base))
    assert url == "wss://res.openai.azure.com/openai/v1/live/sessions" and headers == {"api-key": "sk-secret"}
    url, headers = connection_params(settings(**base, azure_ad_token="entra"))
    assert headers == {"Authorization": "Bearer entra"}
    url, _ = connection_params(settings(**base, realtime_url="ws://127.0.0.1:1/openai/v1/live/sessions"))
    assert url == "ws://127.0.0.1:1/openai/v1/live/sessions"


def test_pcmu_only_for_mulaw_calls() -> None:
    s = settings(realtime_provider="openai", live_audio_format="pcmu")
    assert dialect_from(s, ("audio/x-mulaw", 8000)).model_audio == ("mulaw", 8000)
    assert dialect_from(s, ("audio/l16", 16000)).model_audio == ("pcm16", 24000)
    side = model_side(s, ("audio/x-mulaw", 8000))
    assert isinstance(side.dialect, LiveDialect)


def test_live_is_priced_per_second() -> None:
    prices = prices_for(load_prices(), "gpt-live-1.1")
    assert prices is not None
    assert usage_cost_usd({"session_seconds": 240}, prices) == pytest.approx(0.20)  # 4 min at $0.05/min


# --- LiveTransport -------------------------------------------------------------------------------

class FakeSocket:
    """A scripted inner transport: ``incoming`` is what the server sends, ``sent`` what went out."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.incoming: asyncio.Queue[str | RealtimeClosed] = asyncio.Queue()
        self.closed = False

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> str:
        item = await self.incoming.get()
        if isinstance(item, RealtimeClosed):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


STARTED = json.dumps({"type": "session.started", "event_id": "e", "session": {"id": "live_1", "expires_at": 2000}})


async def test_frames_wait_for_session_started_in_order_and_bounded() -> None:
    inner = FakeSocket()
    transport = LiveTransport(inner, clock=lambda: 0.0)
    await transport.send("start")
    for n in range(HOLD_FRAMES + 5):
        await transport.send(f"frame {n}")
    assert inner.sent == ["start"] and not transport.can_send_now()
    assert transport.dropped_while_starting == 5
    inner.incoming.put_nowait(STARTED)
    assert await transport.recv() == STARTED
    assert inner.sent[1:] == [f"frame {n}" for n in range(5, HOLD_FRAMES + 5)]  # oldest dropped, order kept
    await transport.send("live")
    assert inner.sent[-1] == "live"


@pytest.mark.parametrize(("reason", "code"), [("expired", 1001), ("connection_lost", 1001), ("close_requested", 1000),
                                             ("content", 1000), (None, 1001)])
async def test_end_of_session_maps_to_replace_or_end(reason: str | None, code: int) -> None:
    inner = FakeSocket()
    transport = LiveTransport(inner, clock=lambda: 0.0)
    if reason is not None:
        inner.incoming.put_nowait(json.dumps({"type": "session.closed", "reason": reason}))
        await transport.recv()
    inner.incoming.put_nowait(RealtimeClosed(1000, ""))
    with pytest.raises(RealtimeClosed) as closed:
        await transport.recv()
    assert closed.value.code == code


async def test_session_is_recycled_before_expiry() -> None:
    now = [0.0]
    inner = FakeSocket()
    transport = LiveTransport(inner, recycle_margin_s=60, clock=lambda: now[0])
    inner.incoming.put_nowait(STARTED)
    await transport.recv()
    now[0] = 1939.0  # 61 s before expires_at
    inner.incoming.put_nowait("x")
    assert await transport.recv() == "x"
    now[0] = 1941.0
    with pytest.raises(RealtimeClosed) as closed:
        await transport.recv()
    assert closed.value.code == 1001 and inner.closed


# --- the embedded engine's Live front ------------------------------------------------------------

def start(front: LiveFront, fmt: dict[str, Any] | None = None) -> tuple[list[str], list[str]]:
    return front.from_client(json.dumps({"type": "session.start", "event_id": "cb_1", "session": {
        "model": "gpt-live-1", "instructions": "Be kind.",
        "audio": {"format": fmt or {"type": "audio/pcm", "rate": 24000}, "output": {"voice": "marin"}},
        "delegation": {"type": "responses", "responses": {"model": "m", "tools": [
            {"type": "function", "name": "escalate_to_human", "parameters": {"type": "object", "properties": {}}}]}}}}))


def append(front: LiveFront, ms: int) -> tuple[list[str], list[str]]:
    return front.from_client(json.dumps({"type": "session.input_audio.append",
                                         "audio": base64.b64encode(bytes(48 * ms)).decode()}))


def test_front_start_becomes_a_valid_ga_update_and_started_is_valid_live() -> None:
    front = LiveFront()
    to_engine, to_client = start(front)
    update = json.loads(to_engine[0])
    GA_CLIENT.validate_python(update)
    assert update["session"]["tools"][0]["name"] == "escalate_to_human" and to_client == []
    started = [json.loads(e) for e in front.from_engine(json.dumps({"type": "session.updated", "session": {}}))]
    assert started[0]["type"] == "session.started" and server_event_problem(started[0]) is None
    assert json.loads(front.from_client("{}")[1][0])["type"] == "error"
    refused = LiveFront()
    assert json.loads(start(refused, {"type": "audio/pcmu", "rate": 8000})[1][0])["error"]["code"] == "unsupported_format"


def test_front_output_is_paced_by_input_with_silence_and_yields() -> None:
    front = LiveFront()
    start(front)
    front.from_engine(json.dumps({"type": "session.updated"}))
    front.from_engine(json.dumps({"type": "response.output_audio_transcript.delta", "delta": "Hello"}))
    front.from_engine(json.dumps({"type": "response.output_audio.delta",
                                  "delta": base64.b64encode(b"\x01\x02" * TICK_BYTES).decode()}))  # 200 ms
    to_engine, out = append(front, 100)
    events = [json.loads(e) for e in out]
    assert json.loads(to_engine[0])["type"] == "input_audio_buffer.append"
    assert [e["type"] for e in events] == ["session.output_audio.delta", "session.output_transcript.delta"]
    assert all(server_event_problem(e) is None for e in events)
    assert any(base64.b64decode(events[0]["delta"]))
    front.from_engine(json.dumps({"type": "input_audio_buffer.speech_started"}))  # the caller talks over it
    _, out = append(front, 100)
    assert not any(base64.b64decode(json.loads(out[0])["delta"]))  # the rest was dropped: silence
    _, out = append(front, 50)
    assert out == []  # output only per full 100 ms of input


def test_front_escalation_comes_out_as_responses_delegation() -> None:
    front = LiveFront()
    start(front)
    out = [json.loads(e) for e in front.from_engine(json.dumps({
        "type": "response.function_call_arguments.done", "item_id": "i", "call_id": "c1",
        "name": "escalate_to_human", "arguments": "{}"}))]
    assert [e["type"] for e in out] == ["session.delegation.created", "response.event", "response.event"]
    assert all(server_event_problem(e) is None for e in out[:2])
    to_engine, _ = front.from_client(json.dumps({"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": "{}"}}))
    assert json.loads(to_engine[0])["item"]["call_id"] == "c1"
