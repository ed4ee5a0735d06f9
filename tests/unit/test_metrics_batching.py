"""``BatchedHistogram``: the frame path's batched observations expose the bucket counts per-observation
``Histogram.observe`` would (exactly, values on bucket bounds included; the sum up to float rounding), and flush on size and on render."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service import metrics
from service.metrics import BatchedHistogram

BOUNDS = (0.0001, 0.0005, 0.001, 0.005, 0.015)


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("lat_seconds", "x", buckets=BOUNDS, registry=direct_registry)
    batched = Histogram("lat_seconds", "x", buckets=BOUNDS, registry=batched_registry)
    return direct_registry, direct, batched_registry, batched


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_batched_exposition_equals_per_observation() -> None:
    direct_registry, direct, batched_registry, batched = _pair()
    batcher = BatchedHistogram(batched, batch=7)
    rng = random.Random(5)
    values = [*BOUNDS, 0.0, 1.0, *(rng.expovariate(2000.0) for _ in range(1000))]  # bounds are "le"
    for value in values:
        direct.observe(value)
        batcher.observe(value)
    assert _samples(batched_registry) != _samples(direct_registry)  # 1006 % 7 = 5 still pending
    batcher.flush()
    expected, got = _samples(direct_registry), _samples(batched_registry)
    total = ("lat_seconds_sum", ())
    assert got.pop(total) == pytest.approx(expected.pop(total), rel=1e-12)  # summed in another order
    assert got == expected  # every bucket count exact
    batcher.flush()  # nothing pending: no change
    assert _samples(batched_registry)[total] == pytest.approx(_samples(direct_registry)[total], rel=1e-12)


def test_flushes_every_batch_and_before_rendering() -> None:
    _, _, batched_registry, batched = _pair()
    batcher = BatchedHistogram(batched, batch=4)
    for _ in range(4):
        batcher.observe(0.0002)
    assert _samples(batched_registry)[("lat_seconds_count", ())] == 4
    batcher.observe(0.0002)
    assert _samples(batched_registry)[("lat_seconds_count", ())] == 4

    metrics.flush_batched()  # whatever earlier tests left pending
    before = metrics.FRAME_FORWARD_SECONDS._sum.get()
    metrics.FRAME_FORWARD.observe(0.25)
    text = metrics.render_metrics().decode()
    assert "callbridge_frame_forward_seconds_count" in text
    assert metrics.FRAME_FORWARD_SECONDS._sum.get() == before + 0.25
    generate_latest(batched_registry)  # the private registry renders too (flush is per batcher)
