"""Business tool calls through the real bridge (real Twilio and GA dialects, a fake clock, recorded
sends): nothing answers the tool until it finishes, then its output and one ``response.create``;
the filler stops before the model's next audio reaches the provider; no second reply when one is
already under way; the escalation tool is still answered at once."""

from __future__ import annotations

import asyncio
import json

from service.call.bridge import CallBridge
from service.realtime.events import SessionConfig
from service.realtime.protocol import GaDialect
from tests.poll import wait_until
from tests.unit.test_bridge import CALL, Harness


class Backend:
    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.calls: list[tuple[str, str]] = []

    def handles(self, name: str) -> bool:
        return name == "lookup_order"

    def filler_after_ms(self, name: str) -> int | None:
        return 300

    async def run(self, name: str, arguments: str) -> str:
        self.calls.append((name, arguments))
        await self.done.wait()
        return json.dumps({"ok": True, "result": {"status": "shipped"}})

    def busy(self, name: str, arguments: str) -> str:
        return '{"ok": false}'


class Filler:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    active = True

    def start(self, reason: str, after_ms: int | None = None, repeat_ms: int | None = None) -> None:
        self.log.append(f"start {reason} {after_ms}")

    async def stop(self, reason: str) -> None:
        self.log.append(f"stop {reason}")

    def cancel(self) -> None:
        self.log.append("cancel")


class ToolHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.backend = Backend()
        self.log: list[str] = []
        self.bridge = CallBridge(
            call_id=CALL, provider=self.twilio, realtime=GaDialect(), session_config=SessionConfig(instructions="x"),
            to_provider=self._send_twilio, close_provider=self._close, greeting=False, observer=self.observer,
            clock=self.clock, tools=self.backend)
        self.bridge.tools.filler = self.bridge.speaking.filler = Filler(self.log)  # type: ignore[assignment]

    async def _send_twilio(self, text: str) -> None:
        self.log.append("provider " + json.loads(text)["event"])
        await super()._send_twilio(text)

    async def tool_response(self, response_id: str, name: str = "lookup_order") -> None:
        await self.server({"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})
        await self.server({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                           "item": {"id": "fc_" + response_id, "type": "function_call", "call_id": "call_" + response_id,
                                    "name": name, "arguments": "", "status": "in_progress"}})
        await self.server({"type": "response.function_call_arguments.done", "response_id": response_id,
                           "item_id": "fc_" + response_id, "output_index": 0, "call_id": "call_" + response_id,
                           "name": name, "arguments": '{"order_number": "A-1"}'})
        item = {"id": "fc_" + response_id, "type": "function_call", "call_id": "call_" + response_id, "name": name,
                "arguments": '{"order_number": "A-1"}', "status": "completed"}
        await self.server({"type": "response.done",
                           "response": {"id": response_id, "status": "completed", "output": [item]}})


async def test_the_output_and_the_next_response_wait_for_the_tool() -> None:
    h = ToolHarness()
    await h.start()
    await h.tool_response("r1")
    assert h.model_types()[-1] != "conversation.item.create"  # nothing answered yet: the tool runs
    assert h.log == ["start tool 300"] and h.bridge.tools.running == 1
    h.backend.done.set()
    await wait_until(lambda: h.model_types()[-1:] == ["response.create"], timeout=2, what="response.create")
    output = h.to_model[-2]
    assert output["item"] == {"type": "function_call_output", "call_id": "call_r1",
                              "output": '{"ok": true, "result": {"status": "shipped"}}'}
    assert h.backend.calls == [("lookup_order", '{"order_number": "A-1"}')]
    await h.server({"type": "response.created", "response": {"id": "r2", "status": "in_progress"}})
    await h.bot_delta("r2", "item_A", 100)
    first_media = h.log.index("provider media")
    assert "stop bot_audio" in h.log[:first_media]  # the filler stopped before the model is heard


async def test_no_second_reply_when_one_is_under_way() -> None:
    h = ToolHarness()
    await h.start()
    await h.tool_response("r1")
    # the caller spoke while the tool ran and the model (server VAD) is answering that turn
    await h.server({"type": "response.created", "response": {"id": "r2", "status": "in_progress"}})
    h.backend.done.set()
    await wait_until(lambda: h.bridge.tools.running == 0, timeout=2, what="the tool batch to finish")
    assert h.model_types()[-1] == "conversation.item.create"  # the output, and no response.create
    assert h.model_types().count("response.create") == 0


async def test_the_escalation_tool_is_still_answered_at_once() -> None:
    h = ToolHarness()
    await h.start()
    await h.tool_response("r1", name="escalate_to_human")
    assert h.bridge.tools.running == 0 and h.log == []
    assert h.observer.tools and h.observer.tools[0][0] == "escalate_to_human"


async def test_a_result_after_a_reconnect_goes_to_the_new_session_as_a_note() -> None:
    h = ToolHarness()
    await h.start()
    await h.tool_response("r1")
    await h.bridge.model.reattach(h._send_model)  # the model socket dropped; a replacement session
    await h.server({"type": "session.created", "session": {}})
    await h.server({"type": "session.updated", "session": {}})
    h.backend.done.set()
    await wait_until(lambda: h.bridge.tools.running == 0, timeout=2, what="the tool batch to finish")
    items = [e["item"] for e in h.to_model if e["type"] == "conversation.item.create"]
    assert all(item["type"] != "function_call_output" for item in items)  # call_r1 is unknown there
    note = items[-1]
    assert note["role"] == "system" and '"status": "shipped"' in note["content"][0]["text"]
    assert h.model_types()[-1] == "response.create"
