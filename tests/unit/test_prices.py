"""The price table: bundled list prices, the operator's override file, prefix lookup, unknown models
not priced (and said so once), and the cost formula per modality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.realtime.prices import PriceTableError, load_prices, prices_for, usage_cost_usd

GA_USAGE = {
    "input_token_details": {"text_tokens": 1000, "audio_tokens": 2000, "cached_tokens": 500,
                            "cached_tokens_details": {"text_tokens": 300, "audio_tokens": 200}},
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}


def test_bundled_list_prices_and_prefix_lookup() -> None:
    table = load_prices()
    assert prices_for(table, "gpt-realtime-2.1") == {"text_in": 4.0, "text_cached_in": 0.4, "text_out": 24.0,
                                                      "audio_in": 32.0, "audio_cached_in": 0.4, "audio_out": 64.0}
    assert prices_for(table, "gpt-realtime-2.1-mini")["audio_cached_in"] == 0.3  # type: ignore[index]
    assert prices_for(table, "gpt-realtime-1.5")["text_out"] == 16.0  # type: ignore[index]
    assert prices_for(table, "gpt-live-1") == {"usd_per_minute": 0.05}


def test_cost_formula_prices_cached_input_per_modality() -> None:
    prices = prices_for(load_prices(), "gpt-realtime-2.1-mini")
    assert prices is not None
    expected = (700 * 0.60 + 300 * 0.06 + 1800 * 10.0 + 200 * 0.30 + 100 * 2.40 + 400 * 20.0) / 1e6
    assert usage_cost_usd(GA_USAGE, prices) == pytest.approx(expected)
    beta = {"input_token_details": {"text_tokens": 1000, "audio_tokens": 2000, "cached_tokens": 1200},
            "output_token_details": {}}
    # no split: cached tokens come off the text input first (1000), the rest (200) off audio
    assert usage_cost_usd(beta, prices) == pytest.approx((1000 * 0.06 + 1800 * 10.0 + 200 * 0.30) / 1e6)


def test_unknown_model_is_not_priced_and_said_once() -> None:
    table = load_prices()
    with capture_logs() as logs:
        assert prices_for(table, "my-azure-deployment") is None
        assert prices_for(table, "my-azure-deployment") is None
    assert [line["event"] for line in logs] == ["cost.model_not_priced"]


def test_override_file_adds_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-azure-deployment": {"text_in": 1, "text_cached_in": 0.1, "text_out": 2,
                                                        "audio_in": 3, "audio_cached_in": 0.3, "audio_out": 4},
                                "gpt-realtime-2.1": {"usd_per_minute": 0.2}}))
    table = load_prices(path)
    assert prices_for(table, "my-azure-deployment")["audio_out"] == 4.0  # type: ignore[index]
    assert prices_for(table, "gpt-realtime-2.1") == {"usd_per_minute": 0.2}


@pytest.mark.parametrize("content, fragment", [
    ("not json", "CALLBRIDGE_PRICES_FILE"),
    ("[1]", "must be a JSON object"),
    (json.dumps({"m": {"text_in": 1}}), "lacks"),
    (json.dumps({"m": {"usd_per_minute": -1}}), ">= 0"),
    (json.dumps({"m": {"usd_per_minute": True}}), ">= 0"),
])
def test_bad_override_file_is_a_clear_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceTableError, match=fragment):
        load_prices(path)
