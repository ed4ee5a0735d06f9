"""Benchmark of pause-then-decide barge-in (docs/interruptions.md): 40 scripted interruptions over
real sockets, 20 real and 20 false, in English and Japanese, synthesized speech (espeak-ng) and
synthesized noise (coughs, knocks, the bot's own echo from a speakerphone).

Each interruption is one call through the real gateway (``load_tests/interruption_calls.py``): the
caller asks, talks over the reply after 1 s of it, and the outcome is measured from both ends.
Reported:

- precision and recall of the "real interruption" decision (a real one is a positive);
- the delay a real interruption waits before it is confirmed (median, p95; the bot is silent from
  the first frame, so this only delays the cancel/truncate, never the flush);
- after false ones: the share of the reply the caller heard (each sample once), the silence heard,
  and the seam (resumed position vs. where the caller stopped hearing);
- the provider-flush reaction (speech start to ``clear`` sent).

``--baseline`` also runs the same 40 with ``CALLBRIDGE_INTERRUPT_CONFIRM_MS=0`` (every speech start
interrupts at once) in the same run, for the comparison.

Usage: .venv/bin/python -m load_tests.bench_interruptions [--concurrency 3] [--quick] [--baseline]
Writes load_tests/results/bench_interruptions.json (not committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict
from typing import Any

from load_tests.common import RESULTS
from load_tests.interruption_calls import (
    Interjection,
    Outcome,
    chirp_pcm24,
    cough,
    echo_of,
    knock,
    run_many,
    speech,
)

REAL_EN = ["wait, stop, that's wrong", "no no, that's not what I asked", "hold on, I have a question",
           "sorry, can you repeat that please", "actually I need to change my address",
           "stop, I want to talk to a person", "excuse me, that is not my order", "one second, let me check that",
           "no, cancel that please", "I already did that yesterday"]
REAL_JA = ["ちょっと待ってください", "いいえ、違います", "すみません、もう一度お願いします", "それは違うと思います",
           "担当者と話したいです", "ちょっと待って、質問があります", "住所を変更したいんですが", "キャンセルしてください",
           "いや、そうじゃなくて", "もう一回言ってもらえますか"]
BACKCHANNEL_EN = ["uh-huh", "yeah", "okay", "right", "mm-hmm", "I see"]
BACKCHANNEL_JA = ["はい", "うん", "ええ", "なるほど", "そうですね", "はいはい"]


def interjections(reply_ms: int) -> list[Interjection]:
    items = [Interjection(f"real-en:{t}", speech(t), t, True) for t in REAL_EN]
    items += [Interjection(f"real-ja:{t}", speech(t, "ja"), t, True, "ja") for t in REAL_JA]
    items += [Interjection(f"bc-en:{t}", speech(t), t, False) for t in BACKCHANNEL_EN]
    items += [Interjection(f"bc-ja:{t}", speech(t, "ja"), t, False, "ja") for t in BACKCHANNEL_JA]
    reply = chirp_pcm24(reply_ms)
    items += [Interjection(f"noise:cough{seed}", cough(seed=seed), "", False) for seed in (1, 2, 3)]
    items += [Interjection(f"noise:knock{seed}", knock(seed=seed), "", False) for seed in (4, 5)]
    items += [Interjection("noise:short-cough", cough(180, seed=6), "", False)]
    items += [Interjection(f"noise:echo{n}", echo_of(reply, ms=ms), "", False) for n, ms in ((1, 900), (2, 1500))]
    return items


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    tp = sum(1 for o in outcomes if o.expected_real and o.decided_real)
    fp = sum(1 for o in outcomes if not o.expected_real and o.decided_real)
    fn = sum(1 for o in outcomes if o.expected_real and not o.decided_real)
    real_delays = [o.decided_after_ms for o in outcomes if o.expected_real and o.decided_real
                   and o.decided_after_ms is not None]
    false_ok = [o for o in outcomes if not o.expected_real and o.decided_real is False]
    false_all = [o for o in outcomes if not o.expected_real]
    reactions = [o.reaction_ms for o in outcomes if o.reaction_ms is not None]
    truncate_errors = [abs(end - played) for o in outcomes for end, played in o.truncates[:1]]
    return {
        "interruptions": len(outcomes),
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "false_judged_real": [o.interjection for o in outcomes if not o.expected_real and o.decided_real],
        "real_judged_false": [o.interjection for o in outcomes if o.expected_real and not o.decided_real],
        "confirm_delay_ms_median": round(statistics.median(real_delays), 1) if real_delays else None,
        "confirm_delay_ms_p95": _quantile(real_delays, 0.95),
        "heard_share_after_false_median": round(statistics.median(o.heard_share for o in false_all), 4)
        if false_all else None,
        "heard_share_after_false_min": round(min(o.heard_share for o in false_all), 4) if false_all else None,
        "gap_ms_after_false_median": _round(statistics.median([o.gap_ms for o in false_ok if o.gap_ms is not None]
                                                              or [0.0])),
        "gap_ms_after_false_max": _round(max((o.gap_ms for o in false_ok if o.gap_ms is not None), default=None)),
        "seam_ms_abs_max": _round(max((abs(o.seam_ms) for o in false_ok if o.seam_ms is not None), default=None)),
        "flush_reaction_ms_p95": _round(_quantile(reactions, 0.95)),
        "truncate_error_ms_max": _round(max(truncate_errors, default=None)),
        "new_responses_after_false": sum(o.creates_after for o in false_ok),
        "violations": sum(len(o.violations) for o in outcomes),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 interruptions instead of 40 (development)")
    parser.add_argument("--baseline", action="store_true", help="also run with CALLBRIDGE_INTERRUPT_CONFIRM_MS=0")
    parser.add_argument("--confirm-ms", type=int, default=None, help="CALLBRIDGE_INTERRUPT_CONFIRM_MS to test")
    args = parser.parse_args()
    reply_ms = 5000
    items = interjections(reply_ms)
    if args.quick:
        items = [items[0], items[10], items[20], items[32]]
    settings = {} if args.confirm_ms is None else {"interrupt_confirm_ms": args.confirm_ms}
    started = time.monotonic()
    outcomes = await run_many(items, concurrency=args.concurrency, reply_ms=reply_ms, settings=settings)
    report: dict[str, Any] = {"pause_then_decide": summarise(outcomes), "settings": settings,
                              "wall_s": round(time.monotonic() - started, 1)}
    if args.baseline:
        base = await run_many(items, concurrency=args.concurrency, reply_ms=reply_ms,
                              settings={"interrupt_confirm_ms": 0})
        report["immediate_baseline"] = summarise(base)
        report["baseline_outcomes"] = [asdict(o) for o in base]
    report["outcomes"] = [asdict(o) for o in outcomes]
    for name in ("pause_then_decide", "immediate_baseline"):
        if name in report:
            print(f"\n== {name}")
            for key, value in report[name].items():
                print(f"  {key:34s} {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_interruptions.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
