from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from service.logging import bind_call_context, clear_call_context, configure_logging
from service.redaction import mask_phone_number


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("json", "debug")
    yield buffer
    clear_call_context()


def _records(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+15551234567", "+*******4567"),
        ("call 555-123-4567 now", "call ******4567 now"),
        ("+81 3 1234 5678", "+*******5678"),
        ("on 2026-11-27 at 10:00", "on 2026-11-27 at 10:00"),
        ("order 12345", "order 12345"),
    ],
)
def test_mask_phone_number(text: str, expected: str) -> None:
    assert mask_phone_number(text) == expected


def test_json_lines_carry_call_context(json_lines: io.StringIO) -> None:
    bind_call_context(call_id="CA123", stream_id="MZ456", provider="twilio")
    structlog.get_logger("t").info("call.started", frames=3)
    record = _records(json_lines)[-1]
    assert record["event"] == "call.started"
    assert record["call_id"] == "CA123"
    assert record["stream_id"] == "MZ456"
    assert record["provider"] == "twilio"
    assert record["frames"] == 3
    assert "timestamp" in record


def test_redaction_masks_numbers_and_drops_secrets(json_lines: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info(
        "x",
        caller="+15551234567",
        api_key="sk-live-abcdefghijklmnop",
        note="header was Bearer abcdefghijklmnopqrstuvwxyz",
        nested={"authorization": "Bearer zzzzzzzzzzzzzzzz", "to": "+442071234567"},
    )
    raw = json_lines.getvalue()
    assert "5551234567" not in raw and "4567" in raw
    assert "abcdefghijklmnop" not in raw
    assert "zzzzzzzz" not in raw
    assert "2071234567" not in raw
    record = _records(json_lines)[-1]
    assert record["api_key"] == "[redacted]"


def test_stdlib_logging_goes_through_redaction(json_lines: io.StringIO) -> None:
    import logging

    logging.getLogger("uvicorn.error").warning("client +15559876543 connected")
    raw = json_lines.getvalue()
    assert "5559876543" not in raw
    assert "*******6543" in raw


def test_every_string_field_is_capped_and_pii_redacted(json_lines: io.StringIO) -> None:
    """Regression (issue 12.2/12.7): a megabyte field used to be logged whole; card numbers in clear."""
    huge = "A" * (1 << 20)
    structlog.get_logger("t").warning("test.huge", value=huge, call_id="CA" + "z" * 10_000,
                                      note="card 4111 1111 1111 1111, ssn 078-05-1120, mail a.b@example.com")
    line = json_lines.getvalue()
    assert len(line) < 2048
    record = _records(json_lines)[0]
    assert record["value"].startswith("A" * 100) and record["value"].endswith(f"(+{(1 << 20) - 512} chars)")
    assert "4111" not in record["note"] and "078-05" not in record["note"] and "example.com" not in record["note"]
    assert "[card]" in record["note"] and "[national-id]" in record["note"] and "[email]" in record["note"]
