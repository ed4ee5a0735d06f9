"""The tool runner against a real HTTP tool service on 127.0.0.1: the signed request body, the
function output for each answer (good, slow, failing, oversized, not JSON), retries only for
idempotent tools, invalid arguments never sent."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from service.tools.registry import parse_tools
from service.tools.runner import ToolContext, ToolRunner
from tests.standins.tool_server import ToolServer

SECRET = "tool-secret-0123456789"
SCHEMA = {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]}
CONTEXT = ToolContext(caller="*******4567", language="en")


def _runner(server: ToolServer, kind: str, *, timeout_s: float = 2.0, idempotent: bool = False,
            secret: bool = True, max_bytes: int = 65536) -> ToolRunner:
    entry: dict[str, Any] = {"name": "lookup_order", "description": "Look up an order.", "parameters": SCHEMA,
                             "url": server.url(kind), "timeout_s": timeout_s, "idempotent": idempotent}
    if secret:
        entry["secret_env"] = "T_SECRET"
    registry = parse_tools({"tools": [entry]}, "test", environ={"T_SECRET": SECRET})
    return ToolRunner(registry, max_response_bytes=max_bytes)


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("callbridge_tool_calls_total", {"tool": "lookup_order", "outcome": outcome}) or 0.0


async def test_a_signed_request_and_its_result_as_the_output() -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "tools")
        before = _count("ok")
        result = await runner.run("CA123", "lookup_order", '{"order_number": "A-1042"}', CONTEXT)
        await runner.aclose()
    assert result.ok and result.attempts == 1 and result.status == 200
    (request,) = server.requests
    assert request.signature_ok, "Callbridge-Signature does not verify with the tool's secret"
    assert request.headers["content-type"] == "application/json"
    assert request.payload == {"call_id": "CA123", "tool": "lookup_order", "arguments": {"order_number": "A-1042"},
                               "context": {"caller": "*******4567", "language": "en"}}
    output = json.loads(result.output)
    assert output == {"ok": True, "result": {"order_number": "A-1042", "status": "shipped",
                                             "delivery": "tomorrow before noon"}}
    assert _count("ok") == before + 1


async def test_an_unsigned_tool_sends_no_signature() -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "tools", secret=False)
        assert (await runner.run("CA1", "lookup_order", '{"order_number": "1"}', CONTEXT)).ok
        await runner.aclose()
    assert "callbridge-signature" not in server.requests[0].headers


@pytest.mark.parametrize("arguments, problem", [
    ('{"order_number": 42}', "42 is not of type 'string'"),
    ("{}", "'order_number' is a required property"),
    ('["A-1"]', "not a JSON object"),
    ('{"order_number": "A', "not valid JSON"),
])
async def test_invalid_arguments_never_reach_the_tool(arguments: str, problem: str) -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "tools")
        result = await runner.run("CA1", "lookup_order", arguments, CONTEXT)
        await runner.aclose()
    assert server.requests == []
    assert result.outcome == "invalid_arguments" and result.attempts == 0
    output = json.loads(result.output)
    assert output["ok"] is False and problem in output["error"]


@pytest.mark.parametrize("kind, outcome, status", [
    ("fail", "http_status", 500),
    ("big", "too_large", 200),
    ("notjson", "invalid_json", 200),
    ("hang", "timeout", None),
])
async def test_failures_become_an_output_the_model_can_apologise_for(kind: str, outcome: str, status: int | None) -> None:
    async with ToolServer(SECRET, hang_s=5) as server:
        runner = _runner(server, kind, timeout_s=0.5, max_bytes=4096)
        before = _count(outcome)
        result = await runner.run("CA1", "lookup_order", '{"order_number": "A-1"}', CONTEXT)
        await runner.aclose()
    assert result.outcome == outcome and result.status == status and result.attempts == 1
    output = json.loads(result.output)
    assert output["ok"] is False and output["error"] and "Apologise" in output["instructions"]
    assert "result" not in output
    assert _count(outcome) == before + 1
    if kind == "hang":  # bounded by the tool's timeout, not by the server
        assert result.latency_s < 2.0


async def test_a_tool_that_is_not_idempotent_is_never_retried() -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "flaky", idempotent=False)
        result = await runner.run("CA1", "lookup_order", '{"order_number": "A-1"}', CONTEXT)
        await runner.aclose()
    assert result.outcome == "http_status" and result.status == 503 and result.attempts == 1
    assert len(server.requests) == 1


async def test_an_idempotent_tool_retries_after_a_503_within_its_deadline() -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "flaky", idempotent=True)
        result = await runner.run("CA1", "lookup_order", '{"order_number": "A-1"}', CONTEXT)
        await runner.aclose()
    assert result.ok and result.attempts == 2 and [r.payload["call_id"] for r in server.requests] == ["CA1", "CA1"]
    assert all(r.signature_ok for r in server.requests)


async def test_an_unknown_tool_is_an_error_output() -> None:
    async with ToolServer(SECRET) as server:
        runner = _runner(server, "tools")
        result = await runner.run("CA1", "transfer_money", "{}", CONTEXT)
        await runner.aclose()
    assert result.outcome == "unknown_tool" and server.requests == []
    assert orjson.loads(result.output)["ok"] is False
