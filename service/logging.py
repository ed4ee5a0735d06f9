"""structlog set-up: JSON lines for machines, readable console for people, and PII/secret redaction.

Call-scoped context (call_id, stream_id, provider) is bound with ``bind_call_context`` via
contextvars, so every line logged inside a call's tasks carries it without passing loggers around.
Redaction runs last before rendering, on every event: every string field is capped
(``service.redaction.cap_text``, 512 chars), card numbers, national ids and e-mails are replaced by
tags, phone numbers keep their last 4 digits, and values that look like API keys or tokens are
dropped (docs/security.md, "Logs").
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from service.redaction import LOG_FIELD_MAX_CHARS, cap_text, mask_phone_number, redact_pii

_SECRETISH = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"
    r"|\bv1\.\d{9,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]{16,}|\b[a-f0-9]{32,}\b)"
)
_SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization|signature)", re.IGNORECASE)
_SAFE_KEYS = frozenset({"event", "level", "logger", "timestamp", "call_id", "stream_id", "provider", "replica"})
REDACTED = "[redacted]"
_SAFE_MAX_CHARS = 80  # ids are validated (34 chars); the cap is a second line of defence
_EXCEPTION_MAX_CHARS = 8192


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if key not in _SAFE_KEYS and _SECRET_KEYS.search(key):
            return REDACTED
        limit = _EXCEPTION_MAX_CHARS if key == "exception" else LOG_FIELD_MAX_CHARS
        return mask_phone_number(_SECRETISH.sub(REDACTED, redact_pii(cap_text(value, limit), phones=False)))
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, v) for v in value]
    if key not in _SAFE_KEYS and _SECRET_KEYS.search(key) and value is not None and not isinstance(value, (bool, int, float)):
        return REDACTED
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers and drop secrets in every field (incl. the message)."""
    for key in list(event_dict):
        if key in _SAFE_KEYS and key != "event":
            value = event_dict[key]  # provider ids (CA.../MZ...) are not secrets and must stay searchable
            if isinstance(value, str):
                event_dict[key] = cap_text(value, _SAFE_MAX_CHARS)
            continue
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog (and route stdlib logging, e.g. uvicorn's, through the same renderer)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def bind_call_context(**fields: str) -> None:
    """Bind call-scoped fields (call_id, stream_id, provider) for the current task and its children."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_call_context() -> None:
    structlog.contextvars.clear_contextvars()
