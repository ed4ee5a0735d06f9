"""The tools file (docs/tools.md): the issue's exact format loads; every problem is reported, one line
each, with where it is; schemas are real JSON schemas; http only for loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.config import ConfigError, load_settings
from service.tools.registry import ToolsFileError, example_tools_path, load_tools_file, parse_tools

ISSUE_FORMAT = """
tools:
  - name: lookup_order
    description: Look up an order's status by its number.
    parameters: {type: object, properties: {order_number: {type: string}}, required: [order_number]}
    url: https://backend.example.com/tools/lookup_order
    timeout_s: 5
    idempotent: true
    secret_env: ORDER_TOOL_SECRET   # optional: name of the environment variable holding the signing secret
    filler_after_ms: 700            # optional
"""


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"name": "lookup_order", "description": "d",
                                "parameters": {"type": "object", "properties": {"n": {"type": "string"}}},
                                "url": "https://tools.example.com/x"}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def test_the_issue_format_loads_with_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(ISSUE_FORMAT)
    registry = load_tools_file(path, {"ORDER_TOOL_SECRET": "s3cret"})
    tool = registry.get("lookup_order")
    assert tool is not None and tool.secret == b"s3cret" and tool.timeout_s == 5 and tool.idempotent
    assert tool.filler_after_ms == 700 and "s3cret" not in repr(tool)
    declared = registry.function_tools()
    assert [(t.name, t.parameters["required"]) for t in declared] == [("lookup_order", ["order_number"])]


def test_the_shipped_example_is_valid() -> None:
    registry = load_tools_file(example_tools_path(), {"ORDER_TOOL_SECRET": "x"})
    assert [t.name for t in registry.tools] == ["lookup_order", "book_callback"]
    assert registry.get("book_callback") is not None and not registry.get("book_callback").idempotent  # type: ignore[union-attr]


def test_defaults_apply() -> None:
    tool = parse_tools({"tools": [_entry()]}, "t").tools[0]
    assert (tool.timeout_s, tool.idempotent, tool.secret, tool.filler_after_ms) == (5.0, False, b"", None)


def test_every_problem_is_reported_once_with_its_place() -> None:
    document = {"tools": [
        _entry(url="http://backend.example.com/x"),  # plain http off loopback
        _entry(name="second", parameters={"type": "object", "properties": {"n": {"type": "strng"}}}),
        _entry(name="third", timeout_s=0, color="red"),
        _entry(name="escalate_to_human"),
        _entry(name="fifth", secret_env="NOT_SET_ANYWHERE"),
        _entry(name="second"),
        _entry(name="seventh", parameters={"type": "string"}),
    ]}
    with pytest.raises(ToolsFileError) as caught:
        parse_tools(document, "tools.yaml", environ={})
    problems = caught.value.problems
    assert len(problems) == 8, problems
    joined = "\n".join(problems)
    for expected in ("tools[0].url: Value error, must be https://", "tools[1].parameters: Value error, not a valid JSON schema",
                     "tools[2].timeout_s:", "tools[2].color: Extra inputs", "tools[3].name: Value error, 'escalate_to_human'",
                     "tools[4].secret_env: environment variable NOT_SET_ANYWHERE", "tools[5].name: 'second' is declared twice",
                     "tools[6].parameters: Value error, must be a JSON schema with type: object"):
        assert expected in joined, (expected, joined)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/x", "http://localhost/x", "http://[::1]:80/x",
                                 "https://tools.example.com/x"])
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    assert parse_tools({"tools": [_entry(url=url)]}, "t").tools[0].url == url


@pytest.mark.parametrize("url", ["ftp://x/y", "/relative", "https://user:pw@tools.example.com/x", "http://10.0.0.1/x"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ToolsFileError, match=r"tools\[0\]\.url"):
        parse_tools({"tools": [_entry(url=url)]}, "t")


@pytest.mark.parametrize("text, expected", [
    ("tools: [", "not valid YAML at line"),
    ("- a\n- b\n", "Input should be a valid dictionary"),
    ("tools: {}", "tools: Input should be a valid list"),
    ("other: 1", "tools: Field required"),
])
def test_malformed_files_say_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(text)
    with pytest.raises(ToolsFileError, match=expected):
        load_tools_file(path)


def test_a_missing_or_huge_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ToolsFileError, match="cannot be read"):
        load_tools_file(tmp_path / "nope.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_text("#" * 300_000)
    with pytest.raises(ToolsFileError, match="larger than"):
        load_tools_file(huge)


def test_arguments_are_checked_against_the_schema() -> None:
    tool = parse_tools(yaml.safe_load(ISSUE_FORMAT), "t", environ={"ORDER_TOOL_SECRET": "x"}).tools[0]
    assert tool.arguments_problem({"order_number": "A-1"}) is None
    assert tool.arguments_problem({}) == "'order_number' is a required property"
    assert tool.arguments_problem({"order_number": 5}) == "order_number: 5 is not of type 'string'"


def test_settings_refuse_a_bad_tools_file_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump({"tools": [_entry(url="http://example.com/x")]}))
    with pytest.raises(ConfigError, match=r"CALLBRIDGE_TOOLS_FILE: .*tools\[0\]\.url: Value error, must be https://"):
        load_settings(tools_file=str(path))
    path.write_text(yaml.safe_dump({"tools": [_entry()]}))
    assert load_settings(tools_file=str(path)).tools_file == path
