"""Every wire parser that reads untrusted input, as one table of rows, and the input generator.

Adding a parser is one ``Row``: a name, a factory returning a fresh ``parse`` callable (a new dialect
instance per episode, so state machines are exercised across messages), the only exception types it
may raise, and a few valid sample messages the generator mutates. ``run_row`` feeds ``count`` inputs
in episodes: a random prefix of the valid samples (to reach every state), then 1-8 generated
messages (valid samples, mutations of them, random JSON, random bytes, in random order, so invalid
state transitions are hit too) and returns the failures: any exception
outside ``allowed`` (RecursionError, KeyError, TypeError, UnicodeError, ... included), and any parse
that produced more audio than it was given (outputs must be O(input)).

The generator is seeded (``random.Random(seed)``): a failure report carries the seed and the
input, so every failure reproduces.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Parse = Callable[[Any], Any]


@dataclass(frozen=True)
class Row:
    name: str
    make: Callable[[], Parse]
    allowed: tuple[type[BaseException], ...]
    samples: tuple[str | bytes, ...]
    binary: bool = False  # the parser also takes raw bytes frames (audio)


@dataclass(frozen=True)
class Failure:
    row: str
    seed: int
    message: str | bytes
    error: str


_WEIRD_STRINGS = ("", "\x00", "\ud800", "\udfff", "é" * 3, "日本語", "\u202e", "A" * 70_000, "0" * 401,
                  "NaN", "-0", "1e999", "\n", "\\", "\"")
_WEIRD_NUMBERS = (0, -1, 2**31, 2**63, -(2**63), 10**400, 1.5, -0.0, 1e308)


def _weird_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice(_WEIRD_NUMBERS)
    if kind == 3:
        return rng.choice(_WEIRD_STRINGS)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 24)))
    if kind == 5:
        return base64.b64encode(rng.randbytes(rng.randrange(0, 400))).decode()
    if kind == 6:
        return [_weird_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7:
        return {rng.choice(("event", "media", "start", "payload", "x", "")): _weird_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 4))}
    return rng.choice(("start", "media", "mark", "stop", "dtmf", "connected", "error", "clear"))


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, (*prefix, index))
    return found


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _delete(obj: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return obj
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return obj


def mutate(rng: random.Random, sample: str | bytes) -> str | bytes:
    """One structure-aware mutation of a valid message."""
    if isinstance(sample, bytes):
        choice = rng.randrange(4)
        if choice == 0:
            return sample[: rng.randrange(0, len(sample) + 1)]
        if choice == 1:
            return sample + rng.randbytes(rng.randrange(1, 64))
        if choice == 2:
            return rng.randbytes(rng.randrange(0, 2000))
        return b""
    try:
        obj = json.loads(sample)
    except ValueError:
        return sample[::-1]
    choice = rng.randrange(10)
    paths = _paths(obj)
    path = rng.choice(paths)
    if choice <= 2:
        obj = _set(obj, path, _weird_value(rng))
    elif choice == 3 and path:
        obj = _delete(obj, path)
    elif choice == 4 and isinstance(obj, dict):
        obj[rng.choice(("extra", "event", "streamSid", "stream_id", "sequenceNumber"))] = _weird_value(rng)
    elif choice == 5:
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        return text[: rng.randrange(0, len(text) + 1)]
    elif choice == 6:
        text = json.dumps(obj)
        cut = rng.randrange(0, len(text) + 1)
        return text[:cut] + rng.choice(("NaN", "Infinity", "-Infinity", "1e999", "\"\\ud800\"", "}", "{{", "\x00")) + text[cut:]
    elif choice == 7:
        depth = rng.choice((50, 500, 5000))
        return "[" * depth + json.dumps(obj) + "]" * depth
    elif choice == 8:
        text = json.dumps(obj)
        return text.encode() if rng.random() < 0.5 else text.encode("utf-16")
    else:
        obj = _set(obj, path, [obj] if not path else _weird_value(rng))
    try:
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    except (ValueError, TypeError):
        return "{}"


def generate(rng: random.Random, row: Row) -> str | bytes:
    choice = rng.randrange(10)
    if choice <= 1:
        return rng.choice(row.samples)
    if choice <= 7:
        return mutate(rng, rng.choice(row.samples))
    if choice == 8:
        return json.dumps(_weird_value(rng))
    return rng.randbytes(rng.randrange(0, 300)) if row.binary or rng.random() < 0.5 else rng.randbytes(
        rng.randrange(0, 300)).decode("latin-1")


def _audio_size(result: Any) -> int:
    payload = getattr(result, "payload", None)
    if isinstance(payload, bytes | bytearray):
        return len(payload)
    audio = getattr(result, "audio", None)
    return len(audio) if isinstance(audio, bytes | bytearray) else 0


def run_row(row: Row, count: int, seed: int, max_failures: int = 5) -> tuple[int, list[Failure]]:
    """Feed ``count`` generated inputs to ``row``; return (inputs fed, failures)."""
    rng = random.Random(seed)
    failures: list[Failure] = []
    fed = 0
    while fed < count and len(failures) < max_failures:
        parse = row.make()
        # Reach a random state first (e.g. started, mid-stream) with a prefix of the valid samples.
        episode = list(row.samples[: rng.randrange(0, len(row.samples) + 1)])
        episode += [generate(rng, row) for _ in range(rng.randrange(1, 9))]
        for message in episode:
            fed += 1
            try:
                result = parse(message)
            except row.allowed:
                continue
            except BaseException as error:
                failures.append(Failure(row.name, seed, message[:300], f"{type(error).__name__}: {error}"[:300]))
                break
            if _audio_size(result) > len(message):
                failures.append(Failure(row.name, seed, message[:300], "output larger than input"))
                break
    return fed, failures
