from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import ConfigError, load_settings


def test_defaults_resolve_to_local_engine_without_keys() -> None:
    settings = load_settings()
    assert settings.provider == "local"
    assert settings.realtime_dialect == "ga"
    assert settings.call_ttl_s == 86400


def test_openai_key_fallback_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123456789")
    settings = load_settings()
    assert settings.provider == "openai"
    assert settings.realtime_api_key.get_secret_value() == "sk-test-123456789"
    assert "sk-test" not in repr(settings)
    assert "sk-test" not in str(settings.model_dump())


def test_azure_uses_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_REALTIME_PROVIDER", "azure")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azkey")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    settings = load_settings()
    assert settings.realtime_api_key.get_secret_value() == "azkey"
    assert settings.azure_endpoint == "https://res.openai.azure.com"


def test_azure_without_endpoint_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_REALTIME_PROVIDER", "azure")
    with pytest.raises(ConfigError, match="AZURE"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("CALLBRIDGE_PORT", "not-a-port", "CALLBRIDGE_PORT"),
        ("CALLBRIDGE_VAD_THRESHOLD", "1.5", "CALLBRIDGE_VAD_THRESHOLD"),
        ("CALLBRIDGE_PUBLIC_URL", "ftp://x", "CALLBRIDGE_PUBLIC_URL"),
        ("CALLBRIDGE_REALTIME_DIALECT", "gamma", "CALLBRIDGE_REALTIME_DIALECT"),
        ("CALLBRIDGE_MAX_OUTPUT_TOKENS", "5000", "CALLBRIDGE_MAX_OUTPUT_TOKENS"),
        ("CALLBRIDGE_PRICES_FILE", "/nonexistent/prices.json", "CALLBRIDGE_PRICES_FILE"),
        ("CALLBRIDGE_REALTIME_REASONING_EFFORT", "extreme", "CALLBRIDGE_REALTIME_REASONING_EFFORT"),
        ("CALLBRIDGE_TRANSFER_MODE", "lukewarm", "CALLBRIDGE_TRANSFER_MODE"),
        ("CALLBRIDGE_TRANSFER_FALLBACKS", "queue,voicemail", "CALLBRIDGE_TRANSFER_FALLBACKS"),
        ("CALLBRIDGE_TRANSFER_FALLBACKS", "queue,queue", "CALLBRIDGE_TRANSFER_FALLBACKS"),
        ("CALLBRIDGE_TRANSFER_FALLBACKS", "number", "CALLBRIDGE_TRANSFER_FALLBACK_NUMBER"),
        ("CALLBRIDGE_TWILIO_WORKFLOW_SID", "WWnothex", "CALLBRIDGE_TWILIO_WORKFLOW_SID"),
        ("CALLBRIDGE_TRANSFER_WARM_VIA", "carrier-pigeon", "CALLBRIDGE_TRANSFER_WARM_VIA"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message


def test_max_output_tokens_accepts_inf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_MAX_OUTPUT_TOKENS", "inf")
    assert load_settings().max_output_tokens == "inf"


def test_serve_with_bad_config_exits_with_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin", "CALLBRIDGE_PORT": "nope"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["callbridge: invalid configuration: CALLBRIDGE_PORT: "
                     "Input should be a valid integer, unable to parse string as an integer"]


def test_secret_never_printed_in_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_REALTIME_API_KEY", "sk-supersecret-value")
    monkeypatch.setenv("CALLBRIDGE_PORT", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "supersecret" not in str(caught.value)


def test_no_secret_means_no_stream_key_and_serve_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 12.1): the stream-token key is never a public constant."""
    from service.cli import warn_if_streams_disabled

    settings = load_settings()
    assert settings.effective_stream_token_secret() == b""
    assert not settings.streams_enabled
    assert warn_if_streams_disabled(settings) is True
    assert "every media stream is refused" in capsys.readouterr().err
    configured = load_settings(stream_token_secret="s3cret-value")
    assert configured.effective_stream_token_secret() == b"s3cret-value"
    assert warn_if_streams_disabled(configured) is False
    derived = load_settings(twilio_auth_token="tok")
    assert derived.effective_stream_token_secret() not in (b"", b"callbridge-stream-token:")


@pytest.mark.parametrize("url", ["ftp://crm.example.com/x", "file:///etc/passwd", "gopher://h", "crm.example.com/x"])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_ESCALATION_WEBHOOK_URL"):
        load_settings(escalation_webhook_url=url, escalation_webhook_secret="s")


def test_webhook_url_without_secret_refuses_to_start() -> None:
    """Regression (issue 12.8): the gateway signed with an empty key after a warning."""
    with pytest.raises(ConfigError, match="CALLBRIDGE_ESCALATION_WEBHOOK_SECRET"):
        load_settings(escalation_webhook_url="https://crm.example.com/hook")
    assert load_settings(escalation_webhook_url="https://crm.example.com/hook", escalation_webhook_secret="s")
def test_carrier_settings_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    settings = load_settings()
    assert (settings.telnyx_codec, settings.exotel_sample_rate, settings.telnyx_signature_tolerance_s) == ("PCMU", 8000, 300)
    assert not settings.signalwire_signing_key.get_secret_value() and not settings.exotel_stream_user
    key = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("CALLBRIDGE_TELNYX_PUBLIC_KEY", f" {key} ")
    monkeypatch.setenv("CALLBRIDGE_TELNYX_CODEC", "L16")
    monkeypatch.setenv("CALLBRIDGE_EXOTEL_SAMPLE_RATE", "16000")
    monkeypatch.setenv("CALLBRIDGE_SIGNALWIRE_SIGNING_KEY", "PSKsecret")
    settings = load_settings()
    assert settings.telnyx_public_key.get_secret_value() == key
    assert (settings.telnyx_codec, settings.exotel_sample_rate) == ("L16", 16000)
    assert "PSKsecret" not in repr(settings)


def test_plivo_and_vonage_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.providers.plivo.dialect import SETTING_CONTENT_TYPES, PlivoDialect
    from service.providers.vonage.dialect import VonageDialect

    settings = load_settings()
    assert (settings.plivo_content_type, settings.vonage_rate) == ("mulaw", 16000)
    assert not settings.plivo_auth_token.get_secret_value() and not settings.vonage_signature_secret.get_secret_value()
    monkeypatch.setenv("CALLBRIDGE_PLIVO_AUTH_TOKEN", "plivo-secret-token")
    monkeypatch.setenv("CALLBRIDGE_VONAGE_SIGNATURE_SECRET", "vonage-secret")
    monkeypatch.setenv("CALLBRIDGE_VONAGE_RATE", "8000")
    for choice, content_type in SETTING_CONTENT_TYPES.items():
        monkeypatch.setenv("CALLBRIDGE_PLIVO_CONTENT_TYPE", choice)
        settings = load_settings()
        assert PlivoDialect(SETTING_CONTENT_TYPES[settings.plivo_content_type]).content_type == content_type
    assert VonageDialect(settings.vonage_rate).frame_bytes == 320
    assert "plivo-secret-token" not in repr(settings) and "vonage-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TELNYX_PUBLIC_KEY", "not base64!", "TELNYX_PUBLIC_KEY: must be base64"),
        ("TELNYX_PUBLIC_KEY", "c2hvcnQ=", "32-byte"),
        ("TELNYX_CODEC", "OPUS", "TELNYX_CODEC"),
        ("EXOTEL_SAMPLE_RATE", "24000", "EXOTEL_SAMPLE_RATE"),
        ("TELNYX_SIGNATURE_TOLERANCE_S", "0", "TELNYX_SIGNATURE_TOLERANCE_S"),
        ("PLIVO_CONTENT_TYPE", "audio/x-alaw", "PLIVO_CONTENT_TYPE"),
        ("VONAGE_RATE", "24000", "VONAGE_RATE"),
    ],
)
def test_bad_carrier_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(f"CALLBRIDGE_{name}", value)
    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_conference_transfer_needs_the_account_sid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_TRANSFER_MODE", "warm")
    monkeypatch.setenv("CALLBRIDGE_TRANSFER_WARM_VIA", "conference")
    with pytest.raises(ConfigError, match="CALLBRIDGE_TWILIO_ACCOUNT_SID"):
        load_settings()
    monkeypatch.setenv("CALLBRIDGE_TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
    assert load_settings().transfer_warm_via == "conference"
