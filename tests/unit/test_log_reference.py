"""docs/log-reference.md stays complete: every event the service logs is documented, with its fields.

Events are found by parsing the service code (``ast``), not by a line regex, so calls split over
several lines, any logger variable name (``log``, ``self._log``, a bound logger) and any level are
covered. A naive line grep is kept as a cross-check that the parser misses nothing it would find.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
DOC = ROOT / "docs" / "log-reference.md"

LEVEL_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"})
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+$")
_LOGGER_RECEIVER = re.compile(r"(?:^|\.)_?(?:log|logger)$")
_HEADING = re.compile(r"^### `([^`]+)`\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@dataclass
class LoggedEvent:
    name: str
    fields: set[str] = field(default_factory=set)
    levels: set[str] = field(default_factory=set)
    sites: list[str] = field(default_factory=list)


def _log_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVEL_METHODS
    ]


def _deferred_log_calls(tree: ast.AST) -> list[tuple[ast.Call, str, ast.expr]]:
    """Calls that hand a logger's level method on with the event after it, e.g.
    ``_now(log.info, "area.event", field=...)``: (call, level, the event argument)."""
    found: list[tuple[ast.Call, str, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[0], ast.Attribute):
            method = node.args[0]
            if method.attr in LEVEL_METHODS and _LOGGER_RECEIVER.search(ast.unparse(method.value)):
                found.append((node, method.attr, node.args[1]))
    return found


def logged_events(root: Path = SERVICE) -> dict[str, LoggedEvent]:
    """Every dotted event name passed as the first argument of a log-level call under ``root`` (or
    right after a level method handed to a helper: ``_now(log.info, "area.event", ...)``)."""
    events: dict[str, LoggedEvent] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for deferred, level, name in _deferred_log_calls(tree):
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and EVENT_NAME.match(name.value):
                entry = events.setdefault(name.value, LoggedEvent(name.value))
                entry.levels.add(level)
                entry.sites.append(f"{path.relative_to(root.parent)}:{deferred.lineno}")
                entry.fields.update(k.arg for k in deferred.keywords if k.arg is not None and k.arg != "event")
        for call in _log_calls(tree):
            first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "event"), None)
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if not EVENT_NAME.match(first.value):
                continue
            assert isinstance(call.func, ast.Attribute)
            entry = events.setdefault(first.value, LoggedEvent(first.value))
            entry.levels.add(call.func.attr)
            entry.sites.append(f"{path.relative_to(root.parent)}:{call.lineno}")
            entry.fields.update(k.arg for k in call.keywords if k.arg is not None and k.arg != "event")
    return events


def documented_events(text: str | None = None) -> dict[str, str]:
    """``### `event` `` headings of the log reference -> the text of their entry."""
    text = DOC.read_text(encoding="utf-8") if text is None else text
    text = _FENCE.sub("", text.split("\n## Queries", 1)[0])  # the template in a code block is not an entry
    matches = list(_HEADING.finditer(text))
    entries: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end():end]
        body = re.split(r"^#{1,2} ", body, maxsplit=1, flags=re.MULTILINE)[0]
        entries[match.group(1)] = body
    return entries


def test_scanner_finds_what_a_line_grep_finds() -> None:
    """The AST scan is a superset of a plain `log.<level>("event"` grep over the same files."""
    grep = re.compile(r"\blog\.(?:debug|info|warning|error|exception|critical)\(\s*[\"']([a-z0-9_.]+)[\"']")
    grepped = {m.group(1) for path in SERVICE.rglob("*.py") for m in grep.finditer(path.read_text(encoding="utf-8"))}
    grepped = {name for name in grepped if EVENT_NAME.match(name)}
    scanned = set(logged_events())
    assert grepped, "the grep found no log calls at all: has the logging convention changed?"
    assert grepped - scanned == set()


def test_scanner_handles_multiline_calls_and_other_receivers(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "import structlog\n"
        "log = structlog.get_logger(__name__)\n"
        "class C:\n"
        "    def f(self, x):\n"
        "        self._log.warning(\n"
        "            'area.multi_line',\n"
        "            alpha=1,\n"
        "            beta=x,\n"
        "        )\n"
        "        log.bind(k=1).info('area.bound', gamma=2)\n"
        "        defer(log.warning, 'area.deferred', delta=3)\n"  # a level method handed to a helper
        "        log.info(f'area.{x}')\n"          # dynamic: not an event name we can document
        "        parser.error('not an event')\n",  # not dotted: ignored
        encoding="utf-8",
    )
    found = logged_events(tmp_path)
    assert set(found) == {"area.multi_line", "area.bound", "area.deferred"}
    assert found["area.deferred"].fields == {"delta"} and found["area.deferred"].levels == {"warning"}
    assert found["area.multi_line"].fields == {"alpha", "beta"}
    assert found["area.multi_line"].levels == {"warning"}
    assert found["area.bound"].fields == {"gamma"}


def test_every_logged_event_is_documented() -> None:
    events = logged_events()
    documented = documented_events()
    missing = {name: event.sites for name, event in events.items() if name not in documented}
    assert missing == {}, "add these to docs/log-reference.md (see 'Adding an entry')"


def test_no_documented_event_is_stale() -> None:
    stale = set(documented_events()) - set(logged_events())
    assert stale == set(), "these are documented but no longer logged by service/"


def test_every_keyword_field_is_documented() -> None:
    documented = documented_events()
    undocumented = {
        name: sorted(f for f in event.fields if f"`{f}`" not in documented.get(name, ""))
        for name, event in logged_events().items()
    }
    undocumented = {name: fields for name, fields in undocumented.items() if fields and name in documented}
    assert undocumented == {}


def test_logger_calls_use_literal_dotted_event_names() -> None:
    """On the structlog loggers (``log``/``logger``), the event is always a literal dotted name, so it
    can be searched for and documented."""
    offenders: list[str] = []
    for path in sorted(SERVICE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _log_calls(tree):
            assert isinstance(call.func, ast.Attribute)
            if not _LOGGER_RECEIVER.search(ast.unparse(call.func.value)) or not call.args:
                continue
            first = call.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and EVENT_NAME.match(first.value)):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(first)[:60]}")
    assert offenders == []


def test_doc_headings_are_unique_and_the_query_section_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = _HEADING.findall(_FENCE.sub("", text.split("\n## Queries", 1)[0]))
    assert len(headings) == len(set(headings))
    assert "\n## Queries" in text
    assert "```logql" in text and "jq " in text
