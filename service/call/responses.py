"""Responses and tool calls of turn-based model dialects (docs/models/realtime.md, "Function calling").

Drives the ``ReplyTracker``: at most one ``response.create`` in flight, a request made while a reply
is active waits for its ``response.done``; every tool call gets exactly one function output (an
error output for unusable arguments), and a function output never triggers a response by itself,
so one response is requested after a response's tool calls. The escalation tool escalates; business
tools (docs/tools.md) go to ``ToolCalls``, which answers them and requests the response when they finish.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog

from service import metrics
from service.call.handoff import HandoffState
from service.call.observer import EscalationRequest
from service.call.parts import CallParts
from service.call.toolargs import ESCALATION_TOOL_NAME, parse_tool_arguments, tool_arguments_problem
from service.call.toolcalls import ToolCalls
from service.call.turns import ReplyState
from service.realtime import events as rt
from service.redaction import bounded_free_text

log = structlog.get_logger(__name__)

# Error codes that are expected races, not failures (docs/models/realtime.md, "Errors").
BENIGN_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
)
# Model error codes that mean "no capacity for this call", not a bug (docs/models/realtime.md, "Errors").
# GPT-Live adds ``credit_balance_exhausted`` (prepaid balance empty) and ``billing_hard_limit_reached``
# (docs/models/live.md, "Connecting").
QUOTA_CODES = frozenset({"insufficient_quota", "rate_limit_exceeded", "session_limit_reached",
                         "credit_balance_exhausted", "billing_hard_limit_reached"})


class Responses:
    """``escalate`` is the call's escalation entry point (the escalation tool calls it)."""

    def __init__(self, parts: CallParts, escalate: Callable[[EscalationRequest], Awaitable[None]],
                 tools: ToolCalls | None = None) -> None:
        self._p = parts
        self._escalate = escalate
        self._tools = tools

    async def request(self, instructions: str | None) -> None:
        """``response.create`` now, or after the active response's ``response.done``."""
        if self._p.replies.request(instructions):
            await self._p.send_model(self._p.dialect.response_create(instructions))

    async def created(self, event: rt.ResponseCreated) -> None:
        self._p.replies.created(event.response_id)
        self._p.handoff.response_created(event.response_id)
        self._p.stats.responses += 1

    async def item_added(self, event: rt.OutputItemAdded) -> None:
        if event.item_type == "function_call":
            self._p.replies.tool_call_started(event.call_id, event.name)

    async def arguments_done(self, event: rt.FunctionCallArgumentsDone) -> None:
        if not self._p.replies.tool_call_done(event.response_id, event.call_id, event.name, event.arguments):
            log.warning("realtime.tool_call_dropped", reason="too many calls in one response")

    async def done(self, done: rt.ResponseDone) -> None:
        """Book the response's end and answer its tool calls (which may escalate)."""
        p = self._p
        p.replies.done(done.response_id)
        if done.usage:
            p.observer.usage(done.usage)
        if done.status == "failed":
            p.stats.errors += 1
            metrics.REALTIME_ERRORS.labels("response_failed").inc()
            log.warning("realtime.response_failed", response_id=done.response_id, reason=done.reason[:200])
        tool_calls = p.replies.pop_tool_calls(done.response_id)
        if done.status != "completed":
            return
        if self._tools is not None:  # business tools: outputs and the next response come when they finish
            business = [call for call in tool_calls if self._tools.handles(call[1])]
            self._tools.start_batch(business)
            tool_calls = [call for call in tool_calls if call not in business]
        for call_id, name, arguments in tool_calls:
            await self._run_tool(call_id, name, arguments)
        if tool_calls and p.handoff.state is HandoffState.NONE and p.replies.pending is None:
            p.replies.pending = ""  # a function output never triggers a response by itself

    async def continue_pending(self) -> None:
        """After a ``response.done`` outside a hand-off: send the request that waited, if any."""
        if self._p.handoff.state is HandoffState.NONE and self._p.replies.pending is not None:
            await self.request(self._p.replies.take_pending() or None)

    def error(self, error: rt.RealtimeError) -> bool:
        """Log and count a server ``error``; False for expected races (a refused ``response.create``
        is asked again later). ``session_expired`` is followed by a close: the session is replaced."""
        if error.code in BENIGN_ERRORS or "already shorter" in error.message:
            if error.code == "conversation_already_has_active_response" and self._p.replies.state is ReplyState.REQUESTED:
                self._p.replies.refused()
            log.info("realtime.benign_error", code=error.code[:64], message=error.message[:300])
            return False
        self._p.stats.errors += 1
        metrics.REALTIME_ERRORS.labels(metrics.realtime_error_label(error.code, error.type)).inc()
        log.error("realtime.error", type=error.type[:64], code=error.code[:64], message=error.message[:300],
                  param=error.param[:64])  # the server's free text: capped
        return True

    async def _run_tool(self, call_id: str, name: str, arguments: str) -> None:
        """Answer every tool call with a function output; the escalation tool escalates at once.
        Unusable arguments (too large, not a JSON object) get an error output; the call goes on."""
        p = self._p
        problem = tool_arguments_problem(arguments)
        if problem is not None:
            log.warning("realtime.tool_arguments_invalid", tool=name[:64], problem=problem, size=len(arguments))
            metrics.REALTIME_ERRORS.labels("tool_arguments").inc()
            output = json.dumps({"error": f"invalid arguments: {problem}"})
            await p.send_model(p.dialect.function_call_output(call_id, output))
            return
        await p.send_model(p.dialect.function_call_output(call_id, p.observer.tool_call(name, arguments)))
        if name == ESCALATION_TOOL_NAME:
            args = parse_tool_arguments(arguments)
            reason = bounded_free_text(args.get("reason")) or "the model asked for a human"
            await self._escalate(EscalationRequest(trigger="model_tool", reason=reason, inputs=args))
