"""Outbound media framing: bot audio cut into the chunk sizes the carrier accepts, and held back when
the carrier would otherwise buffer too far ahead of real time. Pure (no I/O; the clock is passed in).

The carrier's rules come from its dialect as a ``MediaFraming`` (``providers.base``), so the call core
never names a carrier: Twilio-like carriers take any chunk (nothing is held, a chunk goes out as it
came); Vonage wants exactly one 20 ms frame per message; Exotel wants multiples of 320 bytes of at least
3.2 KB. A reply's last, shorter piece is padded with wire silence when the reply's audio ends
(``finish``) or dropped on barge-in (``reset``).

Guarantees: chunks come out in the order the audio went in, each valid for the framing (the last one of
a reply at least ``multiple_of`` long, and exactly ``max_bytes`` when ``min_bytes == max_bytes``).
Memory: under one chunk (``max(min_bytes, multiple_of)`` bytes) is held between calls.
"""

from __future__ import annotations

from service.providers.base import MediaFraming

__all__ = ["WireFramer", "ahead_allowance"]


class WireFramer:
    """Cuts one call's outbound wire audio into valid chunks (see the module docstring)."""

    __slots__ = ("_exact", "_pending", "_silence", "framing", "passthrough")

    def __init__(self, framing: MediaFraming, silence: bytes) -> None:
        if framing.multiple_of < 1 or framing.min_bytes < 1 or not silence:
            raise ValueError("framing sizes must be positive and silence one wire sample")
        if framing.max_bytes and framing.max_bytes < max(framing.min_bytes, framing.multiple_of):
            raise ValueError("max_bytes below min_bytes/multiple_of")
        self.framing = framing
        self.passthrough = framing.multiple_of == 1 and framing.min_bytes == 1 and not framing.max_bytes
        self._exact = framing.max_bytes if framing.max_bytes and framing.max_bytes == framing.min_bytes else 0
        self._silence = silence
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, audio: bytes) -> list[bytes]:
        """Queue ``audio``; return the chunks now complete (possibly none), in order."""
        if self.passthrough:
            return [audio] if audio else []
        self._pending += audio
        framing, pending = self.framing, self._pending
        chunks: list[bytes] = []
        if self._exact:
            size = self._exact
            count = len(pending) // size
            chunks = [bytes(pending[i * size:(i + 1) * size]) for i in range(count)]
            del pending[: count * size]
            return chunks
        while len(pending) >= max(framing.min_bytes, framing.multiple_of):
            take = len(pending) - len(pending) % framing.multiple_of
            if framing.max_bytes:
                take = min(take, framing.max_bytes - framing.max_bytes % framing.multiple_of)
            chunks.append(bytes(pending[:take]))
            del pending[:take]
        return chunks

    def finish(self) -> bytes | None:
        """The end of a reply's audio: the held remainder padded with silence to a valid last chunk
        (a multiple of ``multiple_of``; exactly one frame for exact framings), or None if nothing is held."""
        if not self._pending:
            return None
        unit = self._exact or self.framing.multiple_of
        missing = -len(self._pending) % unit
        sample = len(self._silence)
        tail = bytes(self._pending) + self._silence * (missing // sample) + b"\x00" * (missing % sample)
        self._pending.clear()
        return tail

    def reset(self) -> int:
        """Barge-in: drop the held remainder (it was never sent); returns the bytes dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped


def ahead_allowance(max_ahead_ms: int, queued_ms: float) -> float:
    """Milliseconds of audio that may still be sent now without the carrier holding more than
    ``max_ahead_ms`` unplayed (``queued_ms`` is what it holds now); unlimited (inf) when 0."""
    if not max_ahead_ms:
        return float("inf")
    return max(0.0, max_ahead_ms - queued_ms)
