"""The tools file (``CALLBRIDGE_TOOLS_FILE``, docs/tools.md): pure parsing and validation, no I/O
beyond reading the one file and the signing secrets' environment variables.

Guarantees:
- ``load_tools_file`` either returns a registry in which every tool is usable, or raises
  ``ToolsFileError`` listing every problem found, one line each, prefixed with where it is
  (``tools[2].url: ...``), so an operator fixes the file in one pass.
- A tool's ``parameters`` is a valid JSON schema (Draft 2020-12) describing an object; arguments
  the model sends are checked against it (``ToolSpec.arguments_problem``) before any request.
- Secrets are read once at start-up and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.realtime.events import FunctionTool

RESERVED_NAMES = frozenset({"escalate_to_human"})
MAX_TOOLS = 32
MAX_FILE_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ToolsFileError(ValueError):
    """The tools file cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"tools file {source}: " + "; ".join(problems))


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ToolEntry(BaseModel):
    """One entry exactly as written in the file (unknown keys are refused: a typo is a problem)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str
    description: str = Field(min_length=1, max_length=1024)
    parameters: dict[str, Any]
    url: str
    timeout_s: float = Field(5.0, gt=0, le=60)
    idempotent: bool = False
    secret_env: str | None = None
    filler_after_ms: int | None = Field(None, ge=0, le=10_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-', starting with a letter")
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is the gateway's own tool")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as error:
            where = "/".join(str(p) for p in error.path) or "(top)"
            raise ValueError(f"not a valid JSON schema at {where}: {error.message[:200]}") from None
        if value.get("type") != "object":
            raise ValueError("must be a JSON schema with type: object (the model sends an object)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ValueError("must be an absolute https:// URL")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must be https:// (plain http is allowed only for loopback hosts)")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (use secret_env for signing)")
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name")
        return value


class _ToolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[dict[str, Any]] = Field(max_length=MAX_TOOLS)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One usable business tool. ``secret`` is the signing key (b"" = unsigned), kept out of repr."""

    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    timeout_s: float
    idempotent: bool
    filler_after_ms: int | None  # None: the filler's own default (docs/tools.md)
    secret: bytes = field(default=b"", repr=False)
    _validator: Draft202012Validator = field(default=None, repr=False, compare=False)

    def arguments_problem(self, arguments: Mapping[str, Any]) -> str | None:
        """The first way ``arguments`` break the schema (short, safe to show the model), or None."""
        error = next(iter(self._validator.iter_errors(arguments)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return (f"{where}: " if where else "") + error.message[:200]


@dataclass(frozen=True, slots=True)
class ToolRegistry:
    """The tools of this deployment, by name (declaration order kept)."""

    tools: tuple[ToolSpec, ...] = ()

    def get(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def __len__(self) -> int:
        return len(self.tools)

    def function_tools(self) -> tuple[FunctionTool, ...]:
        """The tools as declared to the model (name, description, parameters; nothing else leaks)."""
        return tuple(FunctionTool(t.name, t.description, t.parameters) for t in self.tools)


def _where(index: int, loc: tuple[Any, ...]) -> str:
    return f"tools[{index}]" + "".join(f".{part}" if isinstance(part, str) else f"[{part}]" for part in loc)


def parse_tools(document: Any, source: str, environ: Mapping[str, str] | None = None) -> ToolRegistry:
    """A registry from the parsed YAML ``document``, or ``ToolsFileError`` with every problem."""
    env = os.environ if environ is None else environ
    try:
        top = _ToolsFile.model_validate(document)
    except ValidationError as error:
        top_problems = [(".".join(str(p) for p in e["loc"]) or "(top)") + ": " + e["msg"] for e in error.errors()]
        raise ToolsFileError(source, top_problems or ["expected a mapping with a 'tools' list"]) from None
    problems: list[str] = []
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(top.tools):
        name = raw.get("name")
        if isinstance(name, str) and name in seen:  # checked even when an earlier entry is broken
            problems.append(f"{_where(index, ('name',))}: {name!r} is declared twice")
            continue
        seen.add(name if isinstance(name, str) else "")
        try:
            entry = _ToolEntry.model_validate(raw)
        except ValidationError as error:
            problems += [f"{_where(index, tuple(e['loc']))}: {e['msg']}" for e in error.errors()]
            continue
        secret = b""
        if entry.secret_env is not None:
            value = env.get(entry.secret_env, "")
            if not value:
                problems.append(f"{_where(index, ('secret_env',))}: environment variable {entry.secret_env} is not set or empty")
                continue
            secret = value.encode()
        specs.append(ToolSpec(
            name=entry.name, description=entry.description, parameters=entry.parameters, url=entry.url,
            timeout_s=entry.timeout_s, idempotent=entry.idempotent,
            filler_after_ms=entry.filler_after_ms,
            secret=secret, _validator=Draft202012Validator(entry.parameters),
        ))
    if problems:
        raise ToolsFileError(source, problems)
    return ToolRegistry(tuple(specs))


def load_tools_file(path: str | Path, environ: Mapping[str, str] | None = None) -> ToolRegistry:
    """Read and validate the tools file at ``path`` (at most 256 KB of YAML)."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ToolsFileError(source, [f"cannot be read: {error.strerror or error}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ToolsFileError(source, [f"larger than {MAX_FILE_BYTES} bytes"])
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ToolsFileError(source, [f"not valid YAML{at}: {getattr(error, 'problem', None) or error}"]) from None
    return parse_tools(document, source, environ)


def example_tools_path() -> Path:
    """The support-desk example shipped with the package (docs/tools.md, "Example")."""
    return Path(str(resources.files("service.tools").joinpath("support_desk.yaml")))


_DECLARED: dict[str, tuple[FunctionTool, ...]] = {}


def declared_tools(path: str | Path) -> tuple[FunctionTool, ...]:
    """The tools file's declarations for the model session, read once per path per process (like the
    runner's registry, so what the model is told and what the gateway runs agree; at most 8 paths
    kept). Raises ``ToolsFileError`` like ``load_tools_file`` on the first read."""
    key = str(path)
    tools = _DECLARED.get(key)
    if tools is None:
        tools = load_tools_file(path).function_tools()
        if len(_DECLARED) >= 8:
            _DECLARED.clear()
        _DECLARED[key] = tools
    return tools
