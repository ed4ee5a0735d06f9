"""Fuzz every wire parser (``tests/fuzz/rows.py``): a short run in the default suite, at least 100k
generated inputs per parser in the slow suite (``pytest -m slow``). Zero uncaught exceptions allowed:
a parser raises only its own error type, and never yields more audio than it was given."""

from __future__ import annotations

import os
import time

import pytest

from tests.fuzz.registry import run_row
from tests.fuzz.rows import ROWS

SHORT = int(os.environ.get("CALLBRIDGE_FUZZ_SHORT", "400"))
LONG = int(os.environ.get("CALLBRIDGE_FUZZ_LONG", "100000"))


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_short_fuzz(row) -> None:  # type: ignore[no-untyped-def]
    fed, failures = run_row(row, SHORT, seed=hash(row.name) & 0xFFFF)
    assert fed >= SHORT
    assert failures == []


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_long_fuzz(row) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fed, failures = run_row(row, LONG, seed=20261204)
    print(f"\nfuzz {row.name}: {fed} inputs in {time.perf_counter() - started:.1f} s, {len(failures)} failures")
    assert fed >= LONG
    assert failures == []


def test_the_generator_reaches_errors_and_successes() -> None:
    """Not vacuous: for every row, generated inputs both parse and get refused."""
    import random

    from tests.fuzz.registry import generate

    for row in ROWS:
        rng = random.Random(7)
        ok = refused = 0
        for _ in range(300):
            parse = row.make()
            for sample in row.samples[:2]:  # into a started state where the row has one
                try:
                    parse(sample)
                except row.allowed:
                    pass
            try:
                result = parse(generate(rng, row))
            except row.allowed:
                refused += 1
                continue
            if result is None or result is False:
                refused += 1  # "not valid" from a parser that answers instead of raising
            else:
                ok += 1
        assert refused > 0 and ok > 0, (row.name, ok, refused)
