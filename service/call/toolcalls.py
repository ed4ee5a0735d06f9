"""Business tool calls of one call, run off the audio path (docs/tools.md, "In a call").

The bridge hands each business tool call (any tool but the escalation tool) to ``ToolCalls.start``
once the response that made it is done; a task runs it through the ``ToolBackend`` (the signed HTTP
runner, ``service.tools``) while caller and bot audio keep flowing. When every tool call of that
response has its output, the outputs are sent in call order and one ``response.create`` follows
(a function output never makes the model speak by itself).

Guarantees:
- Every started tool call gets exactly one function output, unless the call ends first (then its
  task is cancelled; ``close`` is idempotent and cancel-safe). If the model session was replaced
  while it ran (a reconnect), the new session never saw the call: the result goes to it as a
  system note instead.
- Bounded: at most ``max_running`` tool calls run per call (a further call gets a ``busy`` error
  output at once); each task holds only its arguments (<= 64 KB) and its output (<= the runner's
  response bound).
- While tools run, the call's ``Filler`` (docs/first-words.md) is started with reason ``tool`` and
  the shortest ``filler_after_ms`` of the batch (None, the filler's own default, when no tool of the
  batch sets one; a wait already running since the caller's turn ended keeps its earlier deadline).
  The bridge stops it before the model's next audio; it is not stopped when the tool answers (the
  model still needs a moment to speak: the filler covers that too).
- A backend that raises anyway (a bug) produces an error output; the call goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
import structlog

from service.call.filler import NoFiller
from service.call.handoff import HandoffState
from service.call.parts import CallParts

log = structlog.get_logger(__name__)

DEFAULT_MAX_RUNNING = 4
# While a tool runs the filler repeats after at most this much silence (its 4 plays then cover
# about 6 s), so the caller never waits ~1.5 s in silence (issue 16.3) whatever CALLBRIDGE_FILLER_REPEAT_MS says.
TOOL_REPEAT_MS = 1000
SendOutput = Callable[[str, str, str, bool], Awaitable[None]]


class ToolBackend(Protocol):
    """What runs business tools for one call (``service.tools.percall.CallTools``)."""

    def handles(self, name: str) -> bool:
        """True for a tool this backend runs (declared in the tools file)."""
        ...

    def filler_after_ms(self, name: str) -> int | None:
        """The tool's own wait before the filler, or None for the filler's default."""
        ...

    async def run(self, name: str, arguments: str) -> str:
        """The function output text; never raises (failures are outputs the model can apologise for)."""
        ...

    def busy(self, name: str, arguments: str) -> str:
        """The output for a call refused because too many are running (counted, recorded)."""
        ...


class Filler(Protocol):
    """Something the caller hears while they wait (``service.call.filler``)."""

    def start(self, reason: str, after_ms: int | None = None, repeat_ms: int | None = None) -> None: ...

    async def stop(self, reason: str) -> None: ...


class ToolCalls:
    """The running business tool calls of one call. Event-loop only (not thread-safe).

    ``send_output(call_id, name, output, stale)`` sends one ``function_call_output`` (``stale``: the
    model session that made the call was replaced meanwhile, see ``session``); ``respond()`` asks
    the model for its next response (queued by the bridge if one is active); ``session()`` numbers
    the model session currently attached."""

    def __init__(self, backend: ToolBackend | None, send_output: SendOutput,
                 respond: Callable[[], Awaitable[None]], filler: Filler | None = None,
                 max_running: int = DEFAULT_MAX_RUNNING, session: Callable[[], int] = lambda: 0) -> None:
        self._session = session
        self._backend = backend
        self._send_output, self._respond = send_output, respond
        self.filler: Filler = filler or NoFiller()
        self._max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def for_call(cls, backend: ToolBackend | None, parts: CallParts, respond: Callable[[], Awaitable[None]],
                 max_running: int = DEFAULT_MAX_RUNNING) -> ToolCalls:
        """The bridge's instance: outputs go through ``parts.send_model`` (not once the call is
        ending), the next response only outside a hand-off and when no reply is under way; the
        filler is the call's own (``parts.filler``, docs/first-words.md), which the bridge stops
        before each chunk of model audio. With no backend it handles nothing."""

        async def send_output(call_id: str, name: str, output: str, stale: bool) -> None:
            if parts.closing:
                return
            if stale:  # a replacement session knows no such call_id: tell it the result as a note
                log.info("tool.output_as_note", tool=name[:64], reason="model session replaced")
                await parts.send_model(parts.dialect.system_text_item(
                    f"Result of the {name[:64]} tool call made before the connection was re-established: {output}"))
                return
            await parts.send_model(parts.dialect.function_call_output(call_id, output))

        async def respond_now() -> None:
            # a reply already under way answers the caller's newer turn (they spoke while the tool
            # ran): no second reply (docs/models/realtime.md, "Function calling")
            if not parts.closing and parts.handoff.state is HandoffState.NONE and not parts.replies.busy:
                await respond()

        return cls(backend, send_output, respond_now, parts.filler, max_running, lambda: parts.link.sessions)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def handles(self, name: str) -> bool:
        return self._backend is not None and self._backend.handles(name)

    def start_batch(self, calls: list[tuple[str, str, str]]) -> None:
        """Start one response's business tool calls ``(call_id, name, arguments)``: one task that
        runs them concurrently, sends the outputs in call order, then asks for the next response."""
        if self._closed or not calls or self._backend is None:
            return
        backend = self._backend
        admitted: list[tuple[str, str, str]] = []
        refused: list[tuple[str, str, str]] = []
        for call_id, name, arguments in calls:
            if self.running + len(admitted) < self._max_running:
                admitted.append((call_id, name, arguments))
            else:
                refused.append((call_id, name, backend.busy(name, arguments)))
        if admitted:
            waits = [w for _, name, _ in admitted if (w := backend.filler_after_ms(name)) is not None]
            self.filler.start("tool", min(waits) if waits else None, TOOL_REPEAT_MS)
        task = asyncio.get_running_loop().create_task(self._batch(admitted, refused, self._session()),
                                                      name="tool-calls")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batch(self, admitted: list[tuple[str, str, str]], refused: list[tuple[str, str, str]],
                     session: int) -> None:
        outputs = await asyncio.gather(*(self._one(name, arguments) for _, name, arguments in admitted))
        if self._closed:
            return
        stale = self._session() != session
        for (call_id, name, _), output in zip(admitted, outputs, strict=True):
            await self._send_output(call_id, name, output, stale)
        for call_id, name, output in refused:
            await self._send_output(call_id, name, output, stale)
        await self._respond()

    async def _one(self, name: str, arguments: str) -> str:
        assert self._backend is not None  # only admitted with a backend
        try:
            return await self._backend.run(name, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug in the backend: the model still gets an answer
            log.error("tool.backend_failed", tool=name[:64], error=repr(error)[:300])
            return orjson.dumps({"ok": False, "error": "the tool failed"}).decode()

    async def close(self) -> None:
        """The call is ending: cancel running tool calls (their outputs are not sent)."""
        self._closed = True
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # cancelled or failed: the call is over
