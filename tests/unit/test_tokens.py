"""Stream tokens (mint/verify) and phone-number masking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.providers.tokens import StreamTokenError, mint_stream_token, verify_stream_token
from service.redaction import mask_number

SECRET = b"callbridge-stream-token:0123456789abcdef"
CALL = "CA" + "0123456789abcdef" * 2
OTHER_CALL = "CA" + "fedcba9876543210" * 2
NOW = 1_760_000_000.25
TOKEN_RE = re.compile(r"^v1\.[0-9]{1,12}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$")


def reason(secret: bytes, token: str | None, call: str, now: float | None = NOW) -> str | None:
    try:
        verify_stream_token(secret, token, call, now=now)
    except StreamTokenError as error:
        return error.reason
    return None


def test_round_trip_and_format() -> None:
    token = mint_stream_token(SECRET, CALL, 300, now=NOW)
    assert TOKEN_RE.match(token), token
    assert int(token.split(".")[1]) == int(NOW) + 300
    assert reason(SECRET, token, CALL) is None
    assert reason(SECRET, token, CALL, now=NOW + 299) is None
    # Default clock: a fresh token verifies now.
    assert reason(SECRET, mint_stream_token(SECRET, CALL, 60), CALL, now=None) is None


def test_tokens_are_unique_per_mint() -> None:
    assert len({mint_stream_token(SECRET, CALL, 300, now=NOW) for _ in range(50)}) == 50


def test_expiry_boundary() -> None:
    token = mint_stream_token(SECRET, CALL, 10, now=NOW)
    expiry = int(NOW) + 10
    assert reason(SECRET, token, CALL, now=expiry - 0.001) is None
    assert reason(SECRET, token, CALL, now=expiry) == "expired"
    assert reason(SECRET, token, CALL, now=expiry + 3600) == "expired"


def test_each_failure_reason() -> None:
    token = mint_stream_token(SECRET, CALL, 300, now=NOW)
    assert reason(SECRET, None, CALL) == "missing"
    assert reason(SECRET, "", CALL) == "missing"
    assert reason(SECRET, "garbage", CALL) == "malformed"
    assert reason(SECRET, token + "x", CALL) == "malformed"
    assert reason(SECRET, "v2" + token[2:], CALL) == "malformed"
    assert reason(SECRET, token.replace(".", "..", 1), CALL) == "malformed"
    assert reason(SECRET, "é" * 20, CALL) == "malformed"
    assert reason(SECRET, "v1." + "1" * 200, CALL) == "malformed"
    assert reason(b"another secret", token, CALL) == "bad signature"
    assert reason(SECRET, token, OTHER_CALL) == "wrong call"
    assert reason(SECRET, token, "") == "wrong call"


def test_forged_expiry_is_a_bad_signature() -> None:
    token = mint_stream_token(SECRET, CALL, 10, now=NOW)
    parts = token.split(".")
    parts[1] = str(int(parts[1]) + 10_000)
    assert reason(SECRET, ".".join(parts), CALL, now=NOW + 60) == "bad signature"


def test_replayed_token_of_another_call_is_refused_even_unexpired() -> None:
    token_a = mint_stream_token(SECRET, CALL, 300, now=NOW)
    token_b = mint_stream_token(SECRET, OTHER_CALL, 300, now=NOW)
    assert reason(SECRET, token_a, OTHER_CALL) == "wrong call"
    # Splicing B's call tag into A's token breaks the MAC.
    a, b = token_a.split("."), token_b.split(".")
    spliced = ".".join([*a[:3], b[3], a[4]])
    assert reason(SECRET, spliced, OTHER_CALL) == "bad signature"


def test_errors_never_leak_token_secret_or_call() -> None:
    token = mint_stream_token(SECRET, CALL, 300, now=NOW)
    for secret, call, now in ((b"x", CALL, NOW), (SECRET, OTHER_CALL, NOW), (SECRET, CALL, NOW + 10**6)):
        with pytest.raises(StreamTokenError) as info:
            verify_stream_token(secret, token, call, now=now)
        text = str(info.value) + repr(info.value)
        for secret_part in (token, token.split(".")[-1], SECRET.decode(), CALL, OTHER_CALL):
            assert secret_part not in text


def test_configuration_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        mint_stream_token(b"", CALL, 300)
    with pytest.raises(ValueError):
        mint_stream_token(SECRET, "", 300)
    with pytest.raises(ValueError):
        mint_stream_token(SECRET, CALL, 0)
    with pytest.raises(ValueError) as info:
        verify_stream_token(b"", "v1.x", CALL)
    assert not isinstance(info.value, StreamTokenError)


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@settings(max_examples=500, deadline=None)
@given(position=st.integers(min_value=0, max_value=200), replacement=st.sampled_from(B64URL + "0=+/ é"))
def test_any_single_character_tamper_is_rejected(position: int, replacement: str) -> None:
    token = mint_stream_token(SECRET, CALL, 300, now=NOW)
    position %= len(token)
    if token[position] == replacement:
        return
    tampered = token[:position] + replacement + token[position + 1:]
    assert reason(SECRET, tampered, CALL) in {"malformed", "bad signature"}


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=1, max_value=90), extra=st.text(alphabet=B64URL, max_size=5))
def test_truncated_or_extended_tokens_are_rejected(cut: int, extra: str) -> None:
    token = mint_stream_token(SECRET, CALL, 300, now=NOW)
    assert reason(SECRET, token[:-cut], CALL) in {"malformed", "bad signature", "missing"}
    if extra:
        assert reason(SECRET, token + extra, CALL) in {"malformed", "bad signature"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=150))
def test_arbitrary_strings_never_verify(candidate: str) -> None:
    assert reason(SECRET, candidate, CALL) in {"missing", "malformed", "bad signature"}


@settings(max_examples=100, deadline=None)
@given(secret=st.binary(min_size=1, max_size=64), call=st.text(min_size=1, max_size=40),
       ttl=st.integers(min_value=1, max_value=3600), now=st.floats(min_value=0, max_value=4e9))
def test_round_trip_for_any_secret_call_and_ttl(secret: bytes, call: str, ttl: int, now: float) -> None:
    token = mint_stream_token(secret, call, ttl, now=now)
    assert TOKEN_RE.match(token)
    assert reason(secret, token, call, now=now) is None
    assert reason(secret, token, call, now=int(now) + ttl) == "expired"


# --- masking ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "masked"), [
    ("+15551234567", "*******4567"),
    ("+1 (555) 123-4567", "*******4567"),
    ("+442071234567", "********4567"),
    ("5551234", "***1234"),
    ("12345", "*****"),
    ("anonymous", "***"),
    ("client:alice", "***"),
    ("sip:alice@pbx.example.com", "sip:***@pbx.example.com"),
    ("sip:+15551234567@pbx.example.com;transport=tls", "sip:***@pbx.example.com"),
    ("", ""),
    (None, ""),
])
def test_mask_number(raw: str | None, masked: str) -> None:
    assert mask_number(raw) == masked


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_mask_never_reveals_more_than_four_digits(value: str) -> None:
    masked = mask_number(value)
    if value.lower().startswith(("sip:", "sips:")):
        return  # the host part is kept on purpose
    assert sum(c.isdigit() for c in masked) <= 4
    digits = "".join(c for c in value if c.isascii() and c.isdigit())
    if len(digits) >= 7 and masked != "***":
        assert masked.endswith(digits[-4:])
