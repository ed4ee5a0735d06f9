"""``ToolCalls`` inside one call (pure asyncio, a scripted backend): outputs in the model's call
order then exactly one response request, the per-call bound, the filler started with the batch's
shortest wait and stopped before model audio, and nothing sent after the call closed."""

from __future__ import annotations

import asyncio

import orjson

from service.call.toolcalls import ToolCalls
from tests.poll import wait_until


class Backend:
    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.busy_calls: list[str] = []

    def handles(self, name: str) -> bool:
        return name != "escalate_to_human"

    def filler_after_ms(self, name: str) -> int:
        return {"fast": 200, "slow": 900}.get(name)

    async def run(self, name: str, arguments: str) -> str:
        await self.release.setdefault(name, asyncio.Event()).wait()
        if name == "broken":
            raise RuntimeError("bug")
        return orjson.dumps({"ok": True, "tool": name}).decode()

    def busy(self, name: str, arguments: str) -> str:
        self.busy_calls.append(name)
        return '{"ok": false, "error": "busy"}'


class Filler:
    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.stopped: list[str] = []

    def start(self, reason: str, after_ms: int | None = None, repeat_ms: int | None = None) -> None:
        self.started.append((reason, after_ms))

    async def stop(self, reason: str) -> None:
        self.stopped.append(reason)


def _setup(max_running: int = 4) -> tuple[ToolCalls, Backend, Filler, list[tuple[str, str]], list[str]]:
    backend, filler = Backend(), Filler()
    sent: list[tuple[str, str]] = []
    responses: list[str] = []

    async def send(call_id: str, name: str, output: str, stale: bool) -> None:
        assert not stale
        sent.append((call_id, output))

    async def respond() -> None:
        responses.append("response.create")

    return ToolCalls(backend, send, respond, filler, max_running), backend, filler, sent, responses


async def test_outputs_in_call_order_then_one_response() -> None:
    tools, backend, filler, sent, responses = _setup()
    tools.start_batch([("c1", "slow", "{}"), ("c2", "fast", "{}")])
    assert filler.started == [("tool", 200)] and tools.running == 1
    backend.release.setdefault("fast", asyncio.Event()).set()  # the second finishes first
    await asyncio.sleep(0)
    assert sent == []  # nothing until the whole batch is done
    backend.release.setdefault("slow", asyncio.Event()).set()
    await wait_until(lambda: responses != [], timeout=2, what="the response request")
    assert [call_id for call_id, _ in sent] == ["c1", "c2"] and responses == ["response.create"]
    assert orjson.loads(sent[0][1])["tool"] == "slow"
    assert filler.stopped == []  # the bridge stops it before the model's audio, not the tool's answer


async def test_calls_beyond_the_bound_get_a_busy_output_at_once() -> None:
    tools, backend, filler, sent, responses = _setup(max_running=2)
    tools.start_batch([("c1", "a", "{}"), ("c2", "b", "{}"), ("c3", "c", "{}")])
    assert backend.busy_calls == ["c"]
    assert filler.started == [("tool", None)]  # no tool sets a wait: the filler's own default
    for name in ("a", "b"):
        backend.release.setdefault(name, asyncio.Event()).set()
    await wait_until(lambda: responses != [], timeout=2, what="the response request")
    assert [call_id for call_id, _ in sent] == ["c1", "c2", "c3"]
    assert orjson.loads(sent[2][1])["error"] == "busy"


async def test_a_backend_bug_is_an_error_output() -> None:
    tools, backend, _filler, sent, responses = _setup()
    tools.start_batch([("c1", "broken", "{}")])
    backend.release.setdefault("broken", asyncio.Event()).set()
    await wait_until(lambda: responses != [], timeout=2, what="the response request")
    assert orjson.loads(sent[0][1]) == {"ok": False, "error": "the tool failed"}


async def test_closing_cancels_running_calls_and_sends_nothing() -> None:
    tools, _backend, _filler, sent, responses = _setup()
    tools.start_batch([("c1", "slow", "{}")])
    await tools.close()
    assert tools.running == 0 and sent == [] and responses == []  # the bridge cancels the filler itself
    tools.start_batch([("c2", "slow", "{}")])  # after close: ignored
    assert tools.running == 0


async def test_without_a_backend_nothing_is_handled() -> None:
    async def never(*_args: object) -> None:
        raise AssertionError("nothing should be sent")

    tools = ToolCalls(None, never, never)
    assert not tools.handles("lookup_order")
    tools.start_batch([("c1", "lookup_order", "{}")])
    assert tools.running == 0
    await tools.close()
