"""Just-in-time playout: the bot's audio is held by the gateway and handed to the provider at most
``lead_ms`` ahead of what the caller has heard, so that on a pause the unheard remainder is still ours.

Pure (no I/O, no clock of its own). The driver (``BotLeg``) pushes each chunk of wire audio as the
model produces it, asks ``take(ahead_ms)`` what to send now (``ahead_ms``: audio already queued at
the provider and not yet played, from the playback ledger), and calls ``due_in_ms`` to know when to
ask again. After a ``clear`` it calls ``rewind`` with the heard positions, so a resumed playback
starts at the exact sample the caller stopped hearing; ``drop`` forgets everything (a real
interruption). ``acknowledge`` releases audio the caller has heard for sure (a mark came back).

Chunks: sent in batches of ``max(20 ms, lead_ms / 2)`` (at most ``lead_ms``) whenever the provider's queue falls to
``lead_ms - batch``, so the queue stays between ``lead_ms - batch`` and ``lead_ms`` (the timer of
the driver has ``lead_ms - batch`` of slack before the caller hears a gap: an ``underrun``, counted).
``lead_ms = 0`` sends everything at once (the audio is still kept until heard, for ``rewind``).

Guarantees: chunks come out in push order, never split inside a sample, one item per chunk; memory
is bounded by ``max_ms`` of held audio per call (a push beyond it is refused and counted in
``overflowed_bytes``): 120 s x 8 bytes/ms = 960 kB for G.711, 3.8 MB for L16 16 kHz.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from service.call.playback import HeardPosition

DEFAULT_MAX_MS = 120_000
MIN_BATCH_MS = 20


@dataclass(slots=True)
class _Held:
    item_id: str
    data: bytearray = field(default_factory=bytearray)
    base: int = 0  # item offset (bytes) of data[0]
    sent: int = 0  # item offset up to which audio went to the provider
    received: int = 0  # item bytes received from the model in all (== base + len(data))


class PlayoutBuffer:
    """One call's held bot audio (see the module docstring). Not thread-safe; one event loop."""

    def __init__(self, bytes_per_ms: int, lead_ms: int, sample_bytes: int = 1, max_ms: int = DEFAULT_MAX_MS) -> None:
        if bytes_per_ms <= 0 or sample_bytes <= 0 or lead_ms < 0 or max_ms <= 0:
            raise ValueError("bytes_per_ms, sample_bytes and max_ms must be > 0, lead_ms >= 0")
        self._bpms, self._lead, self._sample = bytes_per_ms, lead_ms, sample_bytes
        self._batch_ms = min(lead_ms, max(MIN_BATCH_MS, lead_ms // 2)) if lead_ms else MIN_BATCH_MS
        self._max_bytes = max_ms * bytes_per_ms
        self._items: deque[_Held] = deque()
        self._held_bytes = 0
        self._starved = False  # audio was waiting when the last take returned: a late take underran
        self.underruns = 0
        self.overflowed_bytes = 0

    @property
    def lead_ms(self) -> int:
        return self._lead

    @property
    def pending_bytes(self) -> int:
        """Audio received and not yet sent to the provider."""
        return sum(item.received - item.sent for item in self._items)

    @property
    def held_bytes(self) -> int:
        """Audio kept in memory (sent but not known heard, plus not yet sent)."""
        return self._held_bytes

    def received_bytes(self, item_id: str) -> int:
        """Bytes of ``item_id`` received from the model so far (0 once forgotten or unknown)."""
        for item in self._items:
            if item.item_id == item_id:
                return item.received
        return 0

    def unsent_items(self) -> list[tuple[str, int]]:
        """Items received but not one byte sent yet, with their received bytes (a later item of the
        reply, held behind the lead): never heard, so a real interruption truncates them to 0."""
        return [(item.item_id, item.received) for item in self._items if item.sent == 0 and item.received]

    def push(self, item_id: str, wire: bytes) -> bool:
        """Hold ``wire`` bytes of ``item_id``; False (nothing held) beyond ``max_ms`` of held audio."""
        if self._held_bytes + len(wire) > self._max_bytes:
            self.overflowed_bytes += len(wire)
            return False
        item = self._items[-1] if self._items and self._items[-1].item_id == item_id else None
        if item is None:
            item = _Held(item_id)
            self._items.append(item)
        item.data += wire
        item.received += len(wire)
        self._held_bytes += len(wire)
        return True

    def take(self, ahead_ms: float) -> list[tuple[str, bytes]]:
        """What to send now, given ``ahead_ms`` of audio already queued at the provider: whole
        samples, at most one chunk per item, in order. Counts an underrun when audio was waiting and
        the provider's queue ran dry before this call."""
        pending = self.pending_bytes
        if pending and self._starved and ahead_ms <= 0:
            self.underruns += 1
        if self._lead == 0:
            budget = pending
        else:
            room_ms = round(self._lead - max(0.0, ahead_ms), 3)  # clock arithmetic leaves 1e-11 crumbs
            if room_ms < self._batch_ms and ahead_ms > 0:
                self._starved = pending > 0
                return []
            budget = int(room_ms) * self._bpms
        budget -= budget % self._sample
        out: list[tuple[str, bytes]] = []
        for item in self._items:
            if budget <= 0:
                break
            n = min(budget, item.received - item.sent)
            n -= n % self._sample
            if n <= 0:
                continue
            start = item.sent - item.base
            out.append((item.item_id, bytes(item.data[start:start + n])))
            item.sent += n
            budget -= n
        self._starved = self.pending_bytes > 0
        return out

    def due_in_ms(self, ahead_ms: float) -> float | None:
        """When ``take`` will next have something to send (ms from now), or None (nothing waiting)."""
        if not self.pending_bytes:
            return None
        if self._lead == 0:
            return 0.0
        return max(0.0, max(0.0, ahead_ms) - (self._lead - self._batch_ms))

    def acknowledge(self, item_id: str, heard_bytes: int) -> None:
        """The caller has heard ``item_id`` up to ``heard_bytes`` for sure: forget that audio; an item
        received, sent and heard in full is forgotten entirely (its earlier items were too)."""
        for index, item in enumerate(self._items):
            if item.item_id != item_id:
                continue
            cut = min(heard_bytes, item.sent) - item.base
            if cut > 0:
                del item.data[:cut]
                item.base += cut
                self._held_bytes -= cut
            for _ in range(index):  # marks echo in order: every earlier item was heard in full
                self._forget(self._items[0])
            if item.base >= item.received and item is self._items[0] and item is not self._items[-1]:
                self._forget(item)
            return

    def rewind(self, positions: list[HeardPosition]) -> None:
        """The provider's queue was cleared: resend each item from where it was heard (whole samples)."""
        heard = {p.item_id: p.heard_bytes for p in positions}
        for item in self._items:
            if item.item_id in heard:
                to = max(item.base, heard[item.item_id] - heard[item.item_id] % self._sample)
                item.sent = min(item.sent, to)
        self._starved = False

    def drop(self) -> None:
        """Forget all held audio (the reply was interrupted for real)."""
        self._items.clear()
        self._held_bytes = 0
        self._starved = False

    def _forget(self, item: _Held) -> None:
        self._items.remove(item)
        self._held_bytes -= len(item.data)
