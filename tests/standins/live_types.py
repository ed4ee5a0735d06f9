"""Strict checks of GPT-Live events against the ``openai`` package's own types (docs/models/live.md,
"Validating"): the SDK's ``TypeAdapter`` must accept the event, and no model in the validated tree
may hold unknown (extra) fields, because the service rejects them while the SDK models allow them.
Shared by the unit tests and the Live stand-in."""

from __future__ import annotations

import typing
from typing import Any

from openai.types.live import ClientEvent, ServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

_CLIENT = TypeAdapter(ClientEvent)
_SERVER = TypeAdapter(ServerEvent)


def _members(union: Any) -> dict[str, type[BaseModel]]:
    """``type`` literal -> SDK model class of a tagged union (to dispatch for readable errors)."""
    out: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(typing.get_args(union)[0]):
        for literal in typing.get_args(member.model_fields["type"].annotation):
            out[literal] = member
    return out


_CLIENT_MEMBERS = _members(ClientEvent)
_SERVER_MEMBERS = _members(ServerEvent)
# Context appends need the ``delegation_id`` key even when it is null (docs/models/live.md, context).
_NEEDS_DELEGATION_ID = frozenset({"session.instructions.append", "session.thinking.append", "session.commentary.append"})


def unknown_fields(value: Any, path: str = "") -> list[str]:
    """Dotted paths of every extra (unknown) field in a validated SDK model tree."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            found.append(f"{path}.{key}".lstrip("."))
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, each in enumerate(value):
            found += unknown_fields(each, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, each in value.items():
            found += unknown_fields(each, f"{path}.{key}")
    return found


def client_event_problem(event: dict[str, Any]) -> str | None:
    """None if ``event`` is a valid client event with no unknown field, else what is wrong."""
    member = _CLIENT_MEMBERS.get(event.get("type"))  # type: ignore[arg-type]
    if member is None:
        return f"unknown client event type {event.get('type')!r}"
    try:
        member.model_validate(event)
        model = _CLIENT.validate_python(event)
    except ValidationError as error:
        return f"invalid {event.get('type')!r}: {error.errors()[0]['loc']} {error.errors()[0]['msg']}"
    extra = unknown_fields(model)
    if extra:
        return f"unknown field(s) in {event.get('type')!r}: {', '.join(extra)}"
    if event.get("type") in _NEEDS_DELEGATION_ID and "delegation_id" not in event:
        return f"{event['type']!r} needs a delegation_id key (null allowed)"
    return None


def server_event_problem(event: dict[str, Any]) -> str | None:
    """None if ``event`` is a valid server event with no unknown field (the stand-in checks what it sends)."""
    member = _SERVER_MEMBERS.get(event.get("type"))  # type: ignore[arg-type]
    if member is None:
        return f"unknown server event type {event.get('type')!r}"
    try:
        member.model_validate(event)
        model = _SERVER.validate_python(event)
    except ValidationError as error:
        return f"invalid {event.get('type')!r}: {error.errors()[0]['loc']} {error.errors()[0]['msg']}"
    extra = unknown_fields(model)
    return f"unknown field(s) in {event.get('type')!r}: {', '.join(extra)}" if extra else None
