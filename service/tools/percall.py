"""One call's view of the business tools: binds the process-wide ``ToolRunner`` to the call id and
context, and reports each finished tool call to the call's recorder (transcript, escalation record,
summary). Implements ``service.call.toolcalls.ToolBackend``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service import metrics
from service.redaction import redact_pii
from service.tools.registry import load_tools_file
from service.tools.runner import ToolContext, ToolResult, ToolRunner


def _redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with every string redacted under the PII policy (depth-capped, like the JSON it came from)."""
    if depth > 32:
        return None
    if isinstance(value, str):
        return redact_pii(value[:2000])
    if isinstance(value, dict):
        return {str(k)[:200]: _redacted(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, list):
        return [_redacted(v, depth + 1) for v in value[:100]]
    return value


def tool_entry(result: ToolResult) -> dict[str, Any]:
    """A finished tool call as recorded (transcript, escalation record, summary): redacted, bounded."""
    entry: dict[str, Any] = {"tool": result.tool[:64], "outcome": result.outcome,
                             "latency_ms": round(result.latency_s * 1000, 1),
                             "arguments": _redacted(result.arguments)}
    if result.ok:
        entry["result"] = _redacted(result.result)
    else:
        entry["error"] = result.detail[:200]
    return entry


class CallTools:
    """Business tools for one call. ``on_result`` gets each finished call's ``tool_entry``."""

    def __init__(self, runner: ToolRunner, call_id: str, context: ToolContext,
                 on_result: Callable[[dict[str, Any]], None]) -> None:
        self._runner, self._call_id, self._context, self._on_result = runner, call_id, context, on_result

    def handles(self, name: str) -> bool:
        return self._runner.registry.get(name) is not None

    def filler_after_ms(self, name: str) -> int | None:
        return self._runner.filler_after_ms(name)

    async def run(self, name: str, arguments: str) -> str:
        result = await self._runner.run(self._call_id, name, arguments, self._context)
        self._on_result(tool_entry(result))
        return result.output

    def busy(self, name: str, arguments: str) -> str:
        metrics.TOOL_CALLS.labels(name if self.handles(name) else "unknown", "busy").inc()
        self._on_result({"tool": name[:64], "outcome": "busy", "latency_ms": 0.0, "arguments": None,
                         "error": "too many tool calls running"})
        return orjson.dumps({"ok": False, "error": "too many look-ups at once; try again in a moment"}).decode()


def tool_runner_for(gateway: Any) -> ToolRunner | None:
    """The process's ``ToolRunner`` (created on first use, closed by ``stop_gateway_services``), or
    None without ``CALLBRIDGE_TOOLS_FILE``. The file was validated when the settings were loaded."""
    settings = gateway.settings
    if settings.tools_file is None:
        return None
    if gateway.tool_runner is None:
        gateway.tool_runner = ToolRunner(load_tools_file(settings.tools_file),
                                         max_response_bytes=settings.tools_max_response_bytes)
    runner: ToolRunner = gateway.tool_runner
    return runner
