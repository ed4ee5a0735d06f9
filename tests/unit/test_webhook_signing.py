"""Callbridge-Signature signing/verification, the verify-webhook CLI, and the pure retry policy."""

from __future__ import annotations

import hashlib
import hmac
import io
from email.utils import formatdate
from pathlib import Path

import pytest

from service.escalation.webhook import (
    SignatureError,
    backoff_delay,
    check_signature,
    classify_status,
    main_verify_webhook,
    parse_retry_after,
    sign,
    verify_signature,
)

SECRET = "whsec_test_0123456789"
BODY = b'{"escalation_id":"01HZX","trigger":"dtmf"}'
T = 1_700_000_000


def test_header_format_matches_an_independent_hmac() -> None:
    header = sign(SECRET, BODY, T)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert verify_signature(SECRET, header, BODY, now=T + 10)
    assert check_signature(SECRET.encode(), header, BODY, now=T) == T


def test_tampered_body_fails() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify_signature(SECRET, header, BODY.replace(b"dtmf", b"DTMF"), now=T)
    assert not verify_signature(SECRET, header, BODY + b" ", now=T)


def test_wrong_secret_fails() -> None:
    assert not verify_signature("other-secret", sign(SECRET, BODY, T), BODY, now=T)
    with pytest.raises(SignatureError, match="no secret"):
        check_signature("", sign(SECRET, BODY, T), BODY, now=T)


def test_stale_and_future_timestamps_fail() -> None:
    header = sign(SECRET, BODY, T)
    assert verify_signature(SECRET, header, BODY, tolerance_s=300, now=T + 300)
    assert not verify_signature(SECRET, header, BODY, tolerance_s=300, now=T + 301)
    assert not verify_signature(SECRET, header, BODY, tolerance_s=300, now=T - 301)
    with pytest.raises(SignatureError, match="tolerance"):
        check_signature(SECRET, header, BODY, now=T + 3600)


def test_timestamp_is_bound_into_the_mac() -> None:
    signature = sign(SECRET, BODY, T).split("v1=")[1]
    assert not verify_signature(SECRET, f"t={T + 5},v1={signature}", BODY, now=T + 5)


def test_rotation_any_v1_may_match_and_malformed_headers_fail() -> None:
    good = sign(SECRET, BODY, T).split("v1=")[1]
    old = sign("old-secret", BODY, T).split("v1=")[1]
    assert verify_signature(SECRET, f"t={T},v1={old},v1={good}", BODY, now=T)
    for header in ("", "v1=abc", f"t={T}", "t=abc,v1=00", "garbage"):
        assert not verify_signature(SECRET, header, BODY, now=T)


def test_cli_valid_invalid_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY)
    header = sign(SECRET, BODY, T)
    monkeypatch.setenv("CALLBRIDGE_ESCALATION_WEBHOOK_SECRET", SECRET)
    assert main_verify_webhook(["--header", header, "--body", str(body_file), "--now", str(T + 1)]) == 0
    assert "signature valid" in capsys.readouterr().out

    body_file.write_bytes(BODY + b"x")
    assert main_verify_webhook(["--header", header, "--body", str(body_file), "--now", str(T + 1)]) == 1
    assert "INVALID: no v1 signature matches" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(BODY)))
    assert main_verify_webhook(["--header", header, "--now", str(T + 999)]) == 1
    assert "tolerance" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(BODY)))
    assert main_verify_webhook(["--header", header, "--secret", SECRET, "--now", str(T)]) == 0

    monkeypatch.delenv("CALLBRIDGE_ESCALATION_WEBHOOK_SECRET")
    assert main_verify_webhook(["--header", header, "--body", str(body_file)]) == 2
    assert "no secret" in capsys.readouterr().err
    assert main_verify_webhook(["--header", header, "--secret", "s", "--body", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
     (400, "dead_letter"), (401, "dead_letter"), (404, "dead_letter"), (422, "dead_letter"), (301, "dead_letter")],
)
def test_classify_status(status: int, outcome: str) -> None:
    assert classify_status(status) == outcome


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_is_exponential_jittered_and_capped() -> None:
    assert [backoff_delay(n, 0.5, 60, lambda: 1.0) for n in (1, 2, 3, 4, 8, 9, 50)] == [0.5, 1, 2, 4, 60, 60, 60]
    assert backoff_delay(5, 0.5, 60, lambda: 0.0) == 0.25  # never below base/2
    samples = {backoff_delay(6, 0.5, 60) for _ in range(50)}
    assert len(samples) > 40 and all(0.25 <= s <= 16 for s in samples)


@pytest.mark.parametrize(
    ("header", "tolerance"),
    [
        ("t=1700000000,v1=\u00e9\u00e9" + "a" * 62, 300.0),  # non-ASCII v1
        ("t=" + "9" * 401 + ",v1=" + "a" * 64, 300.0),  # a 401-digit timestamp
        ("t=\u0661\u0662\u0663,v1=" + "a" * 64, 300.0),  # non-ASCII digits
        ("t=1700000000,v1=" + "a" * 64, float("nan")),
        ("t=1700000000,v1=" + "a" * 64, float("inf")),
        ("t=1700000000,v1=" + "a" * 64, -1.0),
        ("x" * 100_000, 300.0),
    ],
)
def test_verification_never_raises_on_hostile_input(header: str, tolerance: float) -> None:
    """Regression (issue 12.8): these raised (TypeError, OverflowError) or, for NaN, accepted any age."""
    assert verify_signature(SECRET, header, BODY, tolerance, now=1_700_000_000) is False
    assert main_verify_webhook(["--header", header, "--secret", SECRET, "--tolerance", str(tolerance),
                                "--body", "/dev/null", "--now", "1700000000"]) == 1


def test_nan_tolerance_no_longer_accepts_an_ancient_valid_signature() -> None:
    header = sign(SECRET, BODY, timestamp=1_000_000_000)
    assert verify_signature(SECRET, header, BODY, float("inf")) is False
    assert verify_signature(SECRET, header, BODY, float("nan")) is False
    assert verify_signature(SECRET, header, BODY, 10 ** 10) is True  # a huge but finite tolerance is honest
