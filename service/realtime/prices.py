"""Model prices, keyed by model name: the bundled table of public list prices (``prices.json``),
overridable and extendable by an operator's file (``CALLBRIDGE_PRICES_FILE``, same shape: negotiated
or Azure prices, deployment names). Lookup is by the longest matching name prefix, so dated model
versions find their family. A model with no entry is not priced: its cost is reported as 0 and one
warning per model and process says so, rather than pricing it wrongly.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TOKEN_KEYS = ("text_in", "text_cached_in", "text_out", "audio_in", "audio_cached_in", "audio_out")
_warned: set[str] = set()


class PriceTableError(ValueError):
    """A prices file that cannot be used (named in the message, for the start-up error)."""


def _validate(table: dict[str, Any], source: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for model, prices in table.items():
        if model.startswith("_"):
            continue  # comments
        if not isinstance(prices, dict):
            raise PriceTableError(f"{source}: entry {model!r} must be an object")
        if "usd_per_minute" in prices:
            keys: tuple[str, ...] = ("usd_per_minute",)
        else:
            keys = TOKEN_KEYS
            missing = [key for key in keys if key not in prices]
            if missing:
                raise PriceTableError(f"{source}: entry {model!r} lacks {missing}")
        for key in keys:
            value = prices[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PriceTableError(f"{source}: {model}.{key} must be a number >= 0")
        out[model] = {key: float(prices[key]) for key in keys}
    return out


def load_prices(override_file: Path | None = None) -> dict[str, dict[str, float]]:
    """The bundled table with the operator's file laid over it. Raises ``PriceTableError``."""
    bundled = json.loads(resources.files("service.realtime").joinpath("prices.json").read_text(encoding="utf-8"))
    table = _validate(bundled, "bundled prices.json")
    if override_file is not None:
        try:
            data = json.loads(Path(override_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise PriceTableError(f"CALLBRIDGE_PRICES_FILE {override_file}: {error}") from None
        if not isinstance(data, dict):
            raise PriceTableError(f"CALLBRIDGE_PRICES_FILE {override_file}: must be a JSON object")
        table.update(_validate(data, f"CALLBRIDGE_PRICES_FILE {override_file}"))
    return table


def prices_for(table: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    """The entry of the longest prefix of ``model`` in ``table``; None (warned once) if none."""
    best = max((key for key in table if model.startswith(key)), key=len, default=None)
    if best is None:
        if model not in _warned and len(_warned) < 1000:
            _warned.add(model)
            log.warning("cost.model_not_priced", model=model[:80])
        return None
    return table[best]


def usage_cost_usd(usage: dict[str, Any], prices: dict[str, float]) -> float:
    """Cost of one ``response.done`` usage (docs/models/realtime.md, "Usage and cost"), prices in USD
    per 1M tokens. Cached input is priced per modality where the usage says which (GA); the beta
    dialect gives no split, so cached tokens are taken from text first (the cached prefix is mostly
    instructions)."""
    if "usd_per_minute" in prices:
        # priced by session time (GPT-Live, docs/models/live.md "Usage and cost"): the seconds new
        # since the last usage event; a token-priced usage on such a model costs nothing here
        return float(usage.get("session_seconds") or 0) * prices["usd_per_minute"] / 60
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    cached = int(inp.get("cached_tokens") or 0)
    cached_details = inp.get("cached_tokens_details") or {}
    text_in = int(inp.get("text_tokens") or 0)
    audio_in = int(inp.get("audio_tokens") or 0)
    if cached_details:
        cached_text = int(cached_details.get("text_tokens") or 0)
        cached_audio = int(cached_details.get("audio_tokens") or 0)
    else:
        cached_text = min(cached, text_in)
        cached_audio = cached - cached_text
    total = (
        max(text_in - cached_text, 0) * prices["text_in"]
        + max(audio_in - cached_audio, 0) * prices["audio_in"]
        + cached_text * prices["text_cached_in"]
        + cached_audio * prices["audio_cached_in"]
        + int(out.get("text_tokens") or 0) * prices["text_out"]
        + int(out.get("audio_tokens") or 0) * prices["audio_out"]
    )
    return total / 1_000_000
