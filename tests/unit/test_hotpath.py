"""The compiled audio kernels (service/_hotpath.c) against the numpy reference: same bytes, always.

The reference (``NumpyCallerToModel``/``NumpyModelToCaller``, polyphase ``numpy.convolve``) is itself
checked against ``scipy.signal.upfirdn`` and on signals in test_resample.py (passband, stopband,
chunking exactness); here every output of the compiled twin must equal it bit for bit, over random
streams, random chunkings (odd byte splits included), resets, clipping and exact rounding ties.
"""

from __future__ import annotations

import binascii
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio import resample
from service.audio.g711 import ULAW_DECODE_TABLE
from service.audio.resample import (
    FACTOR,
    PROTOTYPE,
    NumpyCallerToModel,
    NumpyModelToCaller,
)

try:
    from service import _hotpath as hotpath
except ImportError:  # built without a C compiler
    hotpath = None  # type: ignore[assignment]

needs_compiled = pytest.mark.skipif(hotpath is None, reason="compiled kernels not built (no C compiler)")


def test_ci_builds_the_compiled_kernels() -> None:
    """The gateway uses them whenever they were built; CI must build them (.ci/bootstrap installs gcc)."""
    if hotpath is None and not os.environ.get("CI"):
        pytest.skip("compiled kernels not built here (no C compiler); the numpy reference is in use")
    assert hotpath is not None, "CI must build service._hotpath"
    assert resample.COMPILED
    assert isinstance(resample.CallerToModel, type) and issubclass(resample.CallerToModel, hotpath.CallerToModel)
    assert resample.ModelToCaller is hotpath.ModelToCaller


@needs_compiled
def test_the_compiled_module_holds_arithmetic_only() -> None:
    """No parser and no base64 in C (issue: a hand-written parser of untrusted input is a liability)."""
    public = {name for name in dir(hotpath) if not name.startswith("_")}
    assert public == {"CallerToModel", "ModelToCaller", "Resampler", "TAPS", "install"}
    assert not hasattr(hotpath.CallerToModel, "process_b64")
    assert resample.CallerToModel().process_b64(b"\xff" * 3) == binascii.b2a_base64(bytes(18), newline=False).decode()


# Chunk plans: (chunk length, reset before this chunk?)
_up_chunks = st.lists(st.tuples(st.integers(0, 700), st.booleans()), min_size=1, max_size=12)
_down_chunks = st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=12)


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(plan=_up_chunks, seed=st.integers(0, 2**32 - 1))
def test_caller_to_model_equals_reference(plan: list[tuple[int, bool]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    compiled, reference = resample.CallerToModel(), NumpyCallerToModel()
    for length, reset in plan:
        if reset:
            compiled.reset()
            reference.reset()
        mulaw = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        expected = reference.process(mulaw)
        assert len(expected) == 6 * length
        # process and process_b64 advance the state alike: alternate them on the same object
        if length % 2:
            assert compiled.process_b64(mulaw) == binascii.b2a_base64(expected, newline=False).decode("ascii")
        else:
            assert compiled.process(mulaw) == expected
        assert compiled.held_back == 0


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(plan=_down_chunks, seed=st.integers(0, 2**32 - 1), loudness=st.sampled_from([30.0, 3000.0, 60000.0]))
def test_model_to_caller_equals_reference(plan: list[tuple[int, bool]], seed: int, loudness: float) -> None:
    """Byte-level chunking (odd splits, incomplete 3-sample groups); loud input clips."""
    rng = np.random.default_rng(seed)
    compiled, reference = hotpath.ModelToCaller(), NumpyModelToCaller()
    for length, reset in plan:
        if reset:
            compiled.reset()
            reference.reset()
        pcm = np.clip(rng.standard_normal(length // 2 + 1) * loudness, -32768, 32767).astype("<i2").tobytes()[:length]
        assert compiled.process(pcm) == reference.process(pcm)
        assert compiled.held_back == reference.held_back


_RATE_CHANGES = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(change=st.sampled_from(_RATE_CHANGES), plan=_up_chunks, seed=st.integers(0, 2**32 - 1),
       loudness=st.sampled_from([30.0, 3000.0, 60000.0]))
def test_generic_resampler_equals_reference(
    change: tuple[int, int], plan: list[tuple[int, bool]], seed: int, loudness: float
) -> None:
    """The compiled generic kernel (A-law and L16 paths) against ``Resampler``: every output sample and
    the held-back count, over random chunkings, resets and clipping input."""
    rng = np.random.default_rng(seed)
    compiled = resample.make_resampler(*change, compiled=True)
    reference = resample.make_resampler(*change, compiled=False)
    assert isinstance(reference, resample.Resampler) and not isinstance(compiled, resample.Resampler)
    for length, reset in plan:
        if reset:
            compiled.reset()
            reference.reset()
        x = np.clip(rng.standard_normal(length) * loudness, -32768, 32767).astype(np.int16)
        assert np.array_equal(compiled.process(x), reference.process(x))
        assert compiled.held_back == reference.held_back


@needs_compiled
def test_generic_resampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        hotpath.Resampler(0, 1, bytes(8))
    with pytest.raises(ValueError):
        hotpath.Resampler(3, 1, bytes(7))  # not whole float64 values
    with pytest.raises(ValueError):
        hotpath.Resampler(3, 1, bytes(8 * 600))  # more taps than any design here
    with pytest.raises(ValueError, match="even number of bytes"):
        hotpath.Resampler(3, 1, bytes(8)).process(b"\x00")
    with pytest.raises(ValueError, match="no resampler"):
        resample.make_resampler(8000, 16000)


def _two_impulse_ties(wanted: int) -> list[tuple[bytes, int, Fraction]]:
    """Caller inputs whose filtered output is exactly halfway between two integers.

    Output y[3t + k] of two impulses at t and t - d is ``c_k[0] * v1 + c_k[d] * v2`` (coefficients on
    the 2**-20 grid, v decoded mu-law values): search code pairs for a sum with fraction 1/2.
    Returns (mu-law input, index of that output sample, its exact value).
    """
    scale = 1 << 20
    coefficients = np.round(FACTOR * PROTOTYPE * scale).astype(np.int64)
    values = ULAW_DECODE_TABLE.astype(np.int64)
    found: list[tuple[bytes, int, Fraction]] = []
    for k in range(FACTOR):
        for d in range(1, len(coefficients) // FACTOR):
            m0, md = int(coefficients[k]), int(coefficients[FACTOR * d + k])
            sums = (m0 * values[:, None] + md * values[None, :]) % scale
            for newer, older in np.argwhere(sums == scale // 2)[:2]:
                frame = [0xFF] * 80
                frame[40 - d], frame[40] = int(older), int(newer)
                exact = Fraction(m0 * int(values[newer]) + md * int(values[older]), scale)
                found.append((bytes(frame), FACTOR * 40 + k, exact))
                if len(found) >= wanted:
                    return found
    return found


@needs_compiled
def test_rounding_ties_are_half_even() -> None:
    """Exact .5 outputs round to even in both implementations (numpy's rint), so a compiled kernel
    that rounded half away from zero (C's ``round``) would fail here."""
    ties = _two_impulse_ties(wanted=12)
    assert len(ties) == 12
    discriminating = 0
    for mulaw, index, exact in ties:
        assert exact.denominator == 2
        expected = round(exact)  # Python rounds a Fraction half to even
        away = int(exact + Fraction(1, 2)) if exact > 0 else -int(-exact + Fraction(1, 2))
        discriminating += expected != away
        for implementation in (hotpath.CallerToModel(), NumpyCallerToModel()):
            out = np.frombuffer(implementation.process(mulaw), "<i2")
            assert out[index] == expected
    assert discriminating > 0


@needs_compiled
def test_full_scale_clips_like_reference() -> None:
    """A full-scale square wave overshoots after filtering (Gibbs): both clip to int16 the same way."""
    square = np.where((np.arange(4800) // 40) % 2, 32767, -32768).astype("<i2").tobytes()
    assert hotpath.ModelToCaller().process(square) == NumpyModelToCaller().process(square)
    loud_mulaw = bytes([0x80, 0x00] * 400)  # +-32124 alternating at 4 kHz
    out = hotpath.CallerToModel().process(loud_mulaw)
    assert out == NumpyCallerToModel().process(loud_mulaw)
    assert np.abs(np.frombuffer(out, "<i2")).max() >= 32000


@needs_compiled
def test_arguments_and_buffers() -> None:
    up = resample.CallerToModel()
    frame = os.urandom(160)
    assert up.process(memoryview(frame)) == NumpyCallerToModel().process(frame)
    assert up.process(b"") == b"" and up.process_b64(b"") == ""
    with pytest.raises(TypeError):
        up.process("not bytes")  # type: ignore[arg-type]
    down = hotpath.ModelToCaller()
    assert down.process(bytearray(b"\x01")) == b"" and down.held_back == 0
    assert down.process(b"\x00" * 5) == b"\xff"  # odd byte carried: 3 samples -> one silent code
    with pytest.raises(TypeError):
        down.process(None)  # type: ignore[arg-type]
