"""Business tool calls over signed HTTP (docs/tools.md): one POST per call, off the audio path.

Request: ``POST <url>`` with JSON ``{"call_id", "tool", "arguments", "context": {"caller", "language"}}``
(the caller's number masked), signed exactly like escalation webhooks (``Callbridge-Signature``,
``service.escalation.webhook.sign``) when the tool has a secret.

Guarantees:
- ``ToolRunner.run`` never raises (except ``CancelledError``): every outcome, good or bad, is a
  ``ToolResult`` whose ``output`` is the JSON text to give the model as the function output.
- Arguments are checked against the tool's schema first; invalid ones never reach the tool.
- Bounded: at most ``timeout_s`` per call in total (retries included), at most
  ``max_response_bytes`` of the answer read (the rest is never downloaded), at most
  ``max_connections`` requests in flight process-wide (httpx pool; more wait for a connection
  within their own deadline).
- Retries (one, within the same deadline) only for ``idempotent`` tools, and only when the
  request may not have been processed or the server said so: connection errors, 502, 503, 504.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import structlog

from service import metrics
from service.call.toolargs import tool_arguments_problem
from service.escalation.webhook import SIGNATURE_HEADER, sign
from service.redaction import cap_text
from service.tools.registry import ToolRegistry, ToolSpec

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
_RETRY_STATUSES = frozenset({502, 503, 504})
_APOLOGY = "Apologise briefly, tell the caller you could not check that right now, and offer another way to help."


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What the tool may know about the call: the caller's number masked (last 4 digits), the language."""

    caller: str = ""
    language: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One finished tool call. ``output`` goes to the model; ``result`` is the tool's JSON (ok only)."""

    tool: str
    outcome: str  # one of metrics.TOOL_OUTCOMES
    output: str
    arguments: Any = None
    result: Any = None
    detail: str = ""
    status: int | None = None
    latency_s: float = 0.0
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _failure(message: str) -> str:
    return orjson.dumps({"ok": False, "error": message, "instructions": _APOLOGY}).decode()


class _Oversized(Exception):
    pass


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The whole body if it is at most ``limit`` bytes (decoded), else ``_Oversized``; memory
    ``limit`` plus one network chunk."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _Oversized
    return bytes(body)


class ToolRunner:
    """Runs business tool calls for every call of this process over one shared ``httpx`` client."""

    def __init__(self, registry: ToolRegistry, *, client: httpx.AsyncClient | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, max_connections: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
            follow_redirects=False, trust_env=False)
        self._owns_client = client is None
        self._max_bytes = max_response_bytes
        self._clock = clock
        for tool in registry.tools:  # the label children exist before the first call
            for outcome in metrics.TOOL_OUTCOMES:
                metrics.TOOL_CALLS.labels(tool.name, outcome)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def filler_after_ms(self, name: str) -> int | None:
        tool = self.registry.get(name)
        return tool.filler_after_ms if tool is not None else None

    async def run(self, call_id: str, name: str, arguments: str, context: ToolContext) -> ToolResult:
        """Check, POST and interpret one tool call; see the module guarantees."""
        started = self._clock()
        tool = self.registry.get(name)
        label = tool.name if tool is not None else "unknown"
        result = await self._run(call_id, tool, name, arguments, context, started)
        metrics.TOOL_CALLS.labels(label, result.outcome).inc()
        if result.attempts:
            metrics.TOOL_SECONDS.labels(label).observe(result.latency_s)
        log.info("tool.call", tool=cap_text(name, 64), outcome=result.outcome, status=result.status,
                 latency_ms=round(result.latency_s * 1000, 1), attempts=result.attempts,
                 detail=cap_text(result.detail, 200))
        return result

    async def _run(self, call_id: str, tool: ToolSpec | None, name: str, arguments: str, context: ToolContext,
                   started: float) -> ToolResult:
        if tool is None:
            return ToolResult(name, "unknown_tool", _failure(f"there is no tool called {name[:64]!r}"),
                              detail="not in the tools file")
        problem = tool_arguments_problem(arguments)
        parsed: Any = None if problem is not None else orjson.loads(arguments or "{}")
        if problem is None:
            problem = tool.arguments_problem(parsed)
        if problem is not None:
            return ToolResult(name, "invalid_arguments",
                              orjson.dumps({"ok": False, "error": f"invalid arguments: {problem}",
                                            "instructions": "Ask the caller for what is missing, then call the tool again."}).decode(),
                              arguments=parsed, detail=problem)
        body = orjson.dumps({"call_id": call_id, "tool": tool.name, "arguments": parsed,
                             "context": {"caller": context.caller, "language": context.language}})
        deadline = started + tool.timeout_s
        attempts = 0
        while True:
            attempts += 1
            outcome, status, payload, detail, retry = await self._attempt(tool, body, deadline)
            if not (retry and tool.idempotent and attempts < 2 and deadline - self._clock() > 0.05):
                break
        latency = self._clock() - started
        if outcome == "ok":
            return ToolResult(name, "ok", orjson.dumps({"ok": True, "result": payload}).decode(), arguments=parsed,
                              result=payload, status=status, latency_s=latency, attempts=attempts)
        return ToolResult(name, outcome, _failure(_MESSAGES[outcome]), arguments=parsed, detail=detail,
                          status=status, latency_s=latency, attempts=attempts)

    async def _attempt(self, tool: ToolSpec, body: bytes, deadline: float) -> tuple[str, int | None, Any, str, bool]:
        """(outcome, status, parsed JSON, detail, worth retrying)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "callbridge-tools"}
        if tool.secret:
            headers[SIGNATURE_HEADER] = sign(tool.secret, body)
        remaining = deadline - self._clock()
        if remaining <= 0:
            return "timeout", None, None, f"no answer within {tool.timeout_s:g} s", False
        try:
            async with asyncio.timeout(remaining):
                async with self._client.stream("POST", tool.url, content=body, headers=headers,
                                               timeout=httpx.Timeout(remaining)) as response:
                    status = response.status_code
                    if not 200 <= status < 300:
                        return "http_status", status, None, f"HTTP {status}", status in _RETRY_STATUSES
                    data = await _read_bounded(response, self._max_bytes)
        except (TimeoutError, httpx.TimeoutException):
            return "timeout", None, None, f"no answer within {tool.timeout_s:g} s", False
        except _Oversized:
            return "too_large", status, None, f"answer larger than {self._max_bytes} bytes", False
        except httpx.HTTPError as error:
            return "unreachable", None, None, type(error).__name__, True
        try:
            return "ok", status, orjson.loads(data), "", False
        except orjson.JSONDecodeError:
            return "invalid_json", status, None, "the answer is not JSON", False


_MESSAGES = {
    "timeout": "the system did not answer in time",
    "unreachable": "the system could not be reached",
    "http_status": "the system reported an error",
    "too_large": "the system's answer was too large to use",
    "invalid_json": "the system's answer could not be read",
}
