"""Tool-call arguments from the model: untrusted JSON text, checked before anything reads it.

Bounded (docs/security.md, "Model side"): at most ``MAX_TOOL_ARGUMENTS`` bytes, parsed by orjson
(depth-limited, so never a RecursionError), and only a JSON object is usable.
"""

from __future__ import annotations

from typing import Any

import orjson

ESCALATION_TOOL_NAME = "escalate_to_human"
MAX_TOOL_ARGUMENTS = 64 * 1024


def tool_arguments_problem(arguments: str) -> str | None:
    """Why ``arguments`` cannot be used (too large, not JSON, too deep, not an object), or None."""
    if len(arguments) > MAX_TOOL_ARGUMENTS:
        return f"larger than {MAX_TOOL_ARGUMENTS} bytes"
    try:
        value = orjson.loads(arguments or "{}")
    except (ValueError, RecursionError, TypeError):
        return "not valid JSON (or nested too deeply)"
    if not isinstance(value, dict):
        return "not a JSON object"
    return None


def parse_tool_arguments(arguments: str) -> dict[str, Any]:
    """The arguments as a dict, or {} when they are unusable (e.g. cut off with the response).
    Never raises."""
    if tool_arguments_problem(arguments) is not None:
        return {}
    value: dict[str, Any] = orjson.loads(arguments or "{}")
    return value
