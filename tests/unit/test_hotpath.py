"""The compiled audio kernels (service/_hotpath.c) against the numpy reference: same bytes, always.

The reference (``NumpyCallerToModel``/``NumpyModelToCaller``) is itself tested on signals in
test_resample.py (passband, stopband, chunking exactness); here every output of the compiled twin
must equal it bit for bit, over random streams, random chunkings (odd byte splits included), resets,
clipping and exact rounding ties.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
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
from service.providers.base import MediaReceived, ProtocolError
from service.providers.twilio import dialect as twilio_module
from service.providers.twilio.dialect import TwilioDialect
from tests.unit.test_bridge import STREAM, started_twilio_dialect

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
    assert resample.CallerToModel is hotpath.CallerToModel
    assert resample.ModelToCaller is hotpath.ModelToCaller


# Chunk plans: (chunk length, reset before this chunk?)
_up_chunks = st.lists(st.tuples(st.integers(0, 700), st.booleans()), min_size=1, max_size=12)
_down_chunks = st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=12)


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(plan=_up_chunks, seed=st.integers(0, 2**32 - 1))
def test_caller_to_model_equals_reference(plan: list[tuple[int, bool]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    compiled, reference = hotpath.CallerToModel(), NumpyCallerToModel()
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
    up = hotpath.CallerToModel()
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


# --- Twilio media recogniser vs the Python dialect ------------------------------------------------

SID = STREAM  # the stream of the shared started-dialect helper


def _media_pairs(payload: str, seq: str = "7", chunk: str = "6", timestamp: str = "100") -> dict[str, list[tuple[str, str]]]:
    """The Twilio message as (key, JSON value text) pairs, so tests can reorder, duplicate and space them."""
    return {
        "top": [("event", '"media"'), ("sequenceNumber", json.dumps(seq)), ("media", ""), ("streamSid", json.dumps(SID))],
        "media": [("track", '"inbound"'), ("chunk", json.dumps(chunk)), ("timestamp", json.dumps(timestamp)),
                  ("payload", json.dumps(payload))],
    }


def _render(pairs: list[tuple[str, str]], space: str) -> str:
    return "{" + ",".join(f"{space}{json.dumps(k)}{space}:{space}{v}{space}" for k, v in pairs) + "}"


def _python_parse(message: bytes) -> tuple[MediaReceived | ProtocolError, int]:
    """The general Python dialect path (the recogniser switched off) and its sequence number after."""
    dialect = started_twilio_dialect()
    original = twilio_module._parse_media_fast
    twilio_module._parse_media_fast = None
    try:
        try:
            event = dialect.parse(message)
        except ProtocolError as error:
            return error, dialect.last_sequence_number
    finally:
        twilio_module._parse_media_fast = original
    assert isinstance(event, MediaReceived)
    return event, dialect.last_sequence_number


_mutations = st.sampled_from([
    "none", "reorder", "space", "tabs", "duplicate_top", "duplicate_media", "extra_top", "extra_media",
    "no_track", "no_seq", "int_seq", "int_chunk", "escape_key", "escape_value", "unicode_value",
    "other_sid", "other_event", "other_track", "bad_b64", "b64_pad_bits", "b64_no_pad", "b64_space",
    "trailing", "truncate", "empty_payload", "long_counter", "unicode_digit", "no_chunk", "nested_array",
])


@needs_compiled
@settings(max_examples=600, deadline=None)
@given(mutation=_mutations, audio=st.binary(min_size=1, max_size=200), seed=st.integers(0, 10**6))
def test_media_recogniser_agrees_with_the_python_dialect(mutation: str, audio: bytes, seed: int) -> None:
    """Whatever the C recogniser accepts, the Python dialect parses to the same event and sequence
    number; whatever it declines (None) is left to the dialect, errors and all."""
    rng = random.Random(seed)
    payload = base64.b64encode(audio).decode()
    seq, chunk, timestamp = str(rng.randint(0, 10**6)), str(rng.randint(0, 10**6)), str(rng.randint(0, 10**9))
    parts = _media_pairs(payload, seq, chunk, timestamp)
    top, media = parts["top"], parts["media"]
    space = ""
    if mutation == "reorder":
        rng.shuffle(top)
        rng.shuffle(media)
    elif mutation == "space":
        space = " "
    elif mutation == "tabs":
        space = "\t\r\n "
    elif mutation == "duplicate_top":
        top.append(("sequenceNumber", '"99"'))
    elif mutation == "duplicate_media":
        media.append(("chunk", '"99"'))
    elif mutation == "extra_top":
        top.append(("extra", '"x"'))
    elif mutation == "extra_media":
        media.append(("extra", '"x"'))
    elif mutation == "no_track":
        media = [p for p in media if p[0] != "track"]
    elif mutation == "no_seq":
        top = [p for p in top if p[0] != "sequenceNumber"]
    elif mutation == "int_seq":
        top = [(k, seq if k == "sequenceNumber" else v) for k, v in top]
    elif mutation == "int_chunk":
        media = [(k, chunk if k == "chunk" else v) for k, v in media]
    elif mutation == "escape_key":
        top = [("ev\\u0065nt" if k == "event" else k, v) for k, v in top]
    elif mutation == "escape_value":
        top = [(k, '"medi\\u0061"' if k == "event" else v) for k, v in top]
    elif mutation == "unicode_value":
        media = [(k, '"inbound\u00e9"' if k == "track" else v) for k, v in media]
    elif mutation == "other_sid":
        top = [(k, '"MZother"' if k == "streamSid" else v) for k, v in top]
    elif mutation == "other_event":
        top = [(k, '"mark"' if k == "event" else v) for k, v in top]
    elif mutation == "other_track":
        media = [(k, '"outbound"' if k == "track" else v) for k, v in media]
    elif mutation == "bad_b64":
        media = [(k, json.dumps(payload[:-1] + "!") if k == "payload" else v) for k, v in media]
    elif mutation == "b64_pad_bits":  # non-zero bits under the padding
        odd = base64.b64encode(audio[:1]).decode()
        media = [(k, json.dumps(odd[:1] + "B" + odd[2:]) if k == "payload" else v) for k, v in media]
    elif mutation == "b64_no_pad":
        media = [(k, json.dumps(payload.rstrip("=")) if k == "payload" else v) for k, v in media]
    elif mutation == "b64_space":
        media = [(k, json.dumps(payload[:4] + " " + payload[4:]) if k == "payload" else v) for k, v in media]
    elif mutation == "empty_payload":
        media = [(k, '""' if k == "payload" else v) for k, v in media]
    elif mutation == "long_counter":
        media = [(k, '"1234567890123456789"' if k == "timestamp" else v) for k, v in media]
    elif mutation == "unicode_digit":
        media = [(k, '"\u0663"' if k == "chunk" else v) for k, v in media]
    elif mutation == "no_chunk":
        media = [p for p in media if p[0] != "chunk"]
    elif mutation == "nested_array":
        top.append(("extra", "[1, 2]"))
    top = [(k, _render(media, space) if k == "media" else v) for k, v in top]
    text = _render(top, space)
    if mutation == "trailing":
        text += " x"
    elif mutation == "truncate":
        text = text[: rng.randint(0, len(text) - 1)]
    message = text.encode()

    fast = hotpath.parse_twilio_media(message, SID)
    reference, sequence_after = _python_parse(message)
    if mutation in ("none", "reorder", "space", "tabs", "no_track", "no_seq"):
        assert fast is not None, "the recogniser must take Twilio's own shape"
    if fast is None:
        return
    assert isinstance(reference, MediaReceived)
    number, chunk_number, timestamp_ms, decoded = fast
    assert (decoded, timestamp_ms, chunk_number) == (reference.payload, reference.timestamp_ms, reference.chunk)
    assert decoded == audio
    assert sequence_after == (number or 1)  # 1: the start message's number


@needs_compiled
def test_dialect_uses_the_recogniser_only_for_its_started_stream() -> None:
    message = _render([(k, _render(_media_pairs("AAAA")["media"], "") if k == "media" else v)
                       for k, v in _media_pairs("AAAA")["top"]], "").encode()
    dialect = started_twilio_dialect()
    event = dialect.parse(message)
    assert event == MediaReceived(b"\x00\x00\x00", 100, 6) and dialect.last_sequence_number == 7
    with pytest.raises(ProtocolError, match="before 'start'"):
        TwilioDialect().parse(message)  # not started: the general path and its error
    dialect.parse(json.dumps({"event": "stop", "sequenceNumber": "8", "streamSid": SID, "stop": {}}))
    with pytest.raises(ProtocolError, match="after 'stop'"):
        dialect.parse(message)
