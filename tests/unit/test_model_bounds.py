"""What the model side sends is bounded in the call bridge (docs/security.md, "Model side"):
tool-call state, tool arguments (too large or nested too deeply: an error output, the call goes
on) and the error-code metric label. Real GA dialect, recorded sends (``test_bridge.Harness``)."""

from __future__ import annotations

import tracemalloc

from openai.types.realtime import ConversationItemCreateEvent

from service import metrics
from service.call.bridge import CallState
from tests.unit.test_bridge import Harness


def _error_kinds() -> set[str]:
    return {sample.labels["kind"] for family in metrics.REALTIME_ERRORS.collect() for sample in family.samples
            if "kind" in sample.labels}


async def _tool_call(h: Harness, response_id: str, call_id: str, name: str, arguments: str) -> None:
    await h.server({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                    "item": {"id": "fc_" + call_id, "type": "function_call", "call_id": call_id, "name": name,
                             "arguments": "", "status": "in_progress"}})
    await h.server({"type": "response.function_call_arguments.done", "response_id": response_id,
                    "item_id": "fc_" + call_id, "output_index": 0, "call_id": call_id, "name": name,
                    "arguments": arguments})


async def test_deeply_nested_tool_arguments_get_an_error_output_and_the_call_goes_on() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    await _tool_call(h, "r1", "call_1", "escalate_to_human", "[" * 100_000)  # main: RecursionError
    await h.server({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    output = next(m for m in h.to_model if m["type"] == "conversation.item.create")
    ConversationItemCreateEvent.model_validate(output)  # what the SDK would send
    assert output["item"]["type"] == "function_call_output" and output["item"]["call_id"] == "call_1"
    assert "invalid arguments" in output["item"]["output"]
    assert h.observer.escalations == [] and h.observer.tools == []
    assert h.closed == [] and h.bridge.state is not CallState.ENDING
    await h.caller_frame()  # the call goes on
    assert h.model_types()[-1] == "input_audio_buffer.append"


async def test_oversized_tool_arguments_get_an_error_output() -> None:
    h = Harness()
    await h.start()
    await h.server({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    await _tool_call(h, "r1", "call_1", "escalate_to_human", '{"reason": "%s"}' % ("x" * 200_000))
    await h.server({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    output = next(m for m in h.to_model if m["type"] == "conversation.item.create")
    assert "invalid arguments" in output["item"]["output"] and h.observer.escalations == []


async def test_tool_call_state_stays_bounded_when_responses_never_finish() -> None:
    """600 tool calls of 60 KB, each in its own response that never ends: main keeps them all
    (36 MB); the bridge keeps at most 16 responses' worth."""
    h = Harness()
    await h.start()
    arguments = '{"reason": "%s"}' % ("y" * 60_000)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(600):
            await _tool_call(h, f"r{n}", f"call_{n}", "lookup_order", arguments)
            await h.server({"type": "response.output_item.added", "response_id": f"r{n}", "output_index": 1,
                            "item": {"id": f"fx{n}", "type": "function_call", "call_id": f"orphan_{n}",
                                     "name": "lookup_order", "arguments": "", "status": "in_progress"}})
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 8 << 20, f"{grown} bytes held after 600 unfinished tool calls"
    assert h.closed == []


async def test_unknown_error_codes_map_onto_a_fixed_label_set() -> None:
    h = Harness()
    await h.start()
    before = _error_kinds()
    for n in range(50):
        await h.server({"type": "error", "error": {"type": f"weird_type_{n}", "code": f"made_up_code_{n}",
                                                   "message": "m" * 10_000}})
    added = _error_kinds() - before
    assert added <= {"other"}, added  # main: 50 new label values
    assert metrics.realtime_error_label("session_expired") == "session_expired"
    assert metrics.realtime_error_label("", "server_error") == "server_error"
    assert metrics.realtime_error_label("x" * 1000, None) == "other"
