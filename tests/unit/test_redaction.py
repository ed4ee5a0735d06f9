"""PII redaction and caps (service/redaction.py): what is caught, what is left alone."""

from __future__ import annotations

import pytest

from service.redaction import bounded_free_text, cap_text, is_luhn_valid, is_my_number, redact_pii


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 thanks", "card [card] thanks"),
        ("card 4111-1111-1111-1111", "card [card]"),
        ("amex 378282246310005.", "amex [card]."),
        ("not a card 4111 1111 1111 1112", "not a card [phone]"),
        ("ssn 078-05-1120", "ssn [national-id]"),
        ("My Number 1234 5678 9018", "My Number [national-id]"),
        ("mail me at jane.doe+x@mail.example.co.uk ok", "mail me at [email] ok"),
        ("call +1 415 555 0123", "call [phone]"),
        ("order 12345 on 2026-11-27", "order 12345 on 2026-11-27"),
        ("カード番号は４１１１　１１１１　１１１１　１１１１です", "カード番号は[card]です"),
        ("電話は090-1234-5678、メールはtaro@example.jpです", "電話は[phone]、メールは[email]です"),
        ("マイナンバーは123456789018です", "マイナンバーは[national-id]です"),
    ],
)
def test_redact_pii(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


def test_checksums() -> None:
    assert is_luhn_valid("4111111111111111") and not is_luhn_valid("4111111111111112")
    assert is_my_number("123456789018") and not is_my_number("123456789012") and not is_my_number("12345678901")


def test_caps_bound_whatever_a_peer_sends() -> None:
    huge = "x" * 5_000_000
    assert len(cap_text(huge, 100)) < 130
    assert cap_text("short", 100) == "short"
    assert len(bounded_free_text(huge)) == 500
    assert bounded_free_text(None) == "" and bounded_free_text({"a": 1}) == "{'a': 1}"
    assert len(redact_pii("4" * 1_000_000)) == 1_000_000  # a long digit run is not a card; linear time


def test_ids_with_digit_runs_are_left_alone() -> None:
    for text in ("CA" + "4111111111111111" + "a" * 16, "01HZX4111111111111111ABC", "MZ123456789018abcdefabcdefabcdefab"):
        assert redact_pii(text) == text
