"""Playback accounting: how much of each assistant item the caller has actually heard.

Pure (no I/O; the clock is passed in). The bridge sends a mark after every chunk of bot audio; the
provider echoes a mark when the audio before it has played, or at once for every pending mark when
we send ``clear`` (docs/providers/twilio.md, "Marks and clear"; every carrier's acknowledgement is
mapped onto the same mark echo by its dialect). So:

- heard position of an item = bytes up to its last mark echoed *before* ``clear`` was sent, plus
  the playback time since that echo, capped at the bytes actually sent for the item
  (docs/models/realtime.md, "Barge-in": ``audio_end_ms`` is clamped to what was received);
- echoes that arrive after ``clear`` for marks outstanding at that moment say nothing about playback
  and are ignored.

States (``PlaybackState``; the table is ``PLAYBACK_TRANSITIONS``):

    SILENT --sent--> PLAYING (--sent--> PLAYING, --echo--> PLAYING)
    PLAYING --drained--> SILENT   (the last outstanding mark was echoed: the caller heard it all)
    PLAYING --cleared--> SILENT   (we sent the provider's flush)
    any --stale_echo--> same      (an echo that carries no playback information)

Before an item's first echo, its playback start is estimated from a queue model (audio plays back
to back from the later of its send time and the end of what was queued before it).

Memory: one ``_Mark`` per chunk still queued at the provider (about 40 bytes each, bounded by the
audio queued ahead, e.g. 10 s of reply in 100 ms deltas = 100 marks), one ``_ItemPlayback`` per
assistant item of the call (kept for the truncate decision, pruned to the last 32).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from service.call.machine import Machine

MULAW_BYTES_PER_MS = 8  # G.711 at 8 kHz (docs/audio.md)
_MAX_ITEMS = 32


class PlaybackState(enum.Enum):
    SILENT = "silent"
    PLAYING = "playing"


PLAYBACK_EVENTS = ("sent", "echo", "drained", "cleared", "stale_echo")
PLAYBACK_TRANSITIONS: dict[tuple[PlaybackState, str], PlaybackState] = {
    (PlaybackState.SILENT, "sent"): PlaybackState.PLAYING,
    (PlaybackState.PLAYING, "sent"): PlaybackState.PLAYING,
    (PlaybackState.PLAYING, "echo"): PlaybackState.PLAYING,
    (PlaybackState.PLAYING, "drained"): PlaybackState.SILENT,
    (PlaybackState.PLAYING, "cleared"): PlaybackState.SILENT,
    (PlaybackState.SILENT, "stale_echo"): PlaybackState.SILENT,
    (PlaybackState.PLAYING, "stale_echo"): PlaybackState.PLAYING,
}


@dataclass(slots=True)
class _Mark:
    item_id: str
    end_bytes: int  # cumulative bytes of the item sent up to this mark


@dataclass(slots=True)
class _ItemPlayback:
    item_id: str
    sent_bytes: int = 0
    echoed_bytes: int = 0
    echoed_at: float | None = None  # clock time of the last echo that counted
    start_estimate: float | None = None  # estimated clock time byte ``base_bytes`` started playing
    base_bytes: int = 0  # item offset playback (re)started from: 0, or the heard position of a rewind


@dataclass(frozen=True, slots=True)
class HeardPosition:
    item_id: str
    heard_ms: int
    sent_ms: int
    heard_bytes: int = 0  # the same position in wire bytes (sample-exact, for resuming playback)
    generated_ms: int = 0  # audio the model produced for the item, held (not yet sent) audio included

    @property
    def total_ms(self) -> int:
        """The item's audio as the model holds it: the larger of what was sent and what was generated."""
        return max(self.sent_ms, self.generated_ms)

    @property
    def cut(self) -> bool:
        """True when some of the item's audio was not heard (a truncate is needed)."""
        return self.heard_ms < self.total_ms


class PlaybackLedger:
    """Tracks audio sent to the provider, marks, echoes and ``clear``s for one call.

    ``bytes_per_ms``: the wire codec's bytes per millisecond of audio (8 for G.711 at 8 kHz, 32 for
    L16 at 16 kHz); all sizes passed in are wire bytes."""

    def __init__(self, bytes_per_ms: int = MULAW_BYTES_PER_MS) -> None:
        self.machine: Machine[PlaybackState] = Machine("playback", PlaybackState.SILENT, PLAYBACK_TRANSITIONS)
        self._bpms = bytes_per_ms
        self._marks: OrderedDict[str, _Mark] = OrderedDict()
        self._cleared_marks: set[str] = set()
        self._items: OrderedDict[str, _ItemPlayback] = OrderedDict()
        self._queue_end = 0.0  # estimated clock time when everything sent has played
        self._mark_seq = 0
        self.last_echoed_item: str | None = None  # the item of the last echo that counted

    # --- sending ---------------------------------------------------------------------------------
    def on_audio_sent(self, item_id: str, nbytes: int, now: float) -> str:
        """Record ``nbytes`` of wire audio sent for ``item_id``; return the name of the mark to send next."""
        self.machine.fire("sent")
        item = self._items.get(item_id)
        if item is None:
            item = _ItemPlayback(item_id=item_id)
            self._items[item_id] = item
            while len(self._items) > _MAX_ITEMS:
                self._items.popitem(last=False)
        if item.start_estimate is None:
            item.start_estimate = max(now, self._queue_end)
        item.sent_bytes += nbytes
        self._queue_end = max(now, self._queue_end) + nbytes / (self._bpms * 1000.0)
        self._mark_seq += 1
        name = f"cb{self._mark_seq}"
        self._marks[name] = _Mark(item_id=item_id, end_bytes=item.sent_bytes)
        return name

    # --- provider feedback --------------------------------------------------------------------------
    def on_mark_echoed(self, name: str, now: float) -> bool:
        """Apply an echo; return False for echoes that carry no playback information. After a
        True, ``state`` says whether playback drained (SILENT) or goes on (PLAYING)."""
        if name in self._cleared_marks:
            self._cleared_marks.discard(name)
            self.machine.fire("stale_echo")
            return False
        mark = self._marks.pop(name, None)
        if mark is None:
            self.machine.fire("stale_echo")
            return False
        # Marks are echoed in order; earlier marks still listed were passed too.
        for older in [n for n, m in self._marks.items() if _is_before(n, name)]:
            self._marks.pop(older, None)
        item = self._items.get(mark.item_id)
        self.last_echoed_item = mark.item_id
        if item is not None:
            item.echoed_bytes = max(item.echoed_bytes, mark.end_bytes)
            item.echoed_at = now
        if not self._marks:
            self._queue_end = min(self._queue_end, now)
        self.machine.fire("echo" if self._marks else "drained")
        return True

    def clear(self, now: float) -> list[HeardPosition]:
        """We flush the provider now: what each queued item was heard to (head first; items that
        never started: 0), then ``on_clear``. Only valid while PLAYING."""
        queued = self.queued_items()
        positions = [self.heard(item, now) for item in queued]
        positions[1:] = [HeardPosition(p.item_id, 0, p.sent_ms, 0) for p in positions[1:]]
        self.on_clear(now)
        return positions

    def on_clear(self, now: float) -> None:
        """The provider's buffer was emptied: pending marks will echo without meaning."""
        self.machine.fire("cleared")
        self._cleared_marks.update(self._marks)
        self._marks.clear()
        self._queue_end = now

    def rewind(self, item_id: str, to_bytes: int) -> None:
        """After a ``clear``: the item's playback will resume from ``to_bytes`` (its heard position),
        so later sends of that item count from there and its heard position never goes back."""
        item = self._items.get(item_id)
        if item is None:
            return
        to_bytes = max(0, min(to_bytes, item.sent_bytes))
        item.sent_bytes = item.echoed_bytes = item.base_bytes = to_bytes
        item.echoed_at = item.start_estimate = None

    # --- queries -------------------------------------------------------------------------------------
    @property
    def state(self) -> PlaybackState:
        return self.machine.state

    def ahead_ms(self, now: float) -> float:
        """Audio queued at the provider and not yet played, by the queue model (ms, >= 0)."""
        return max(0.0, self._queue_end - now) * 1000.0

    def is_playing(self, now: float) -> bool:
        """True while bot audio is queued or playing at the provider."""
        return bool(self._marks) or self._queue_end > now

    def queued_ms(self, now: float) -> float:
        """Estimated audio (ms) sent but not yet played at ``now`` (the pacing input)."""
        return max(0.0, self._queue_end - now) * 1000.0

    def queued_items(self) -> list[str]:
        """Items with marks still pending at the provider, in playback order (head first)."""
        seen: dict[str, None] = {}
        for mark in self._marks.values():
            seen.setdefault(mark.item_id, None)
        return list(seen)

    def playing_item(self) -> str | None:
        """The item at the playback head: the item of the oldest mark not yet echoed."""
        for mark in self._marks.values():
            return mark.item_id
        return None

    def heard(self, item_id: str, now: float) -> HeardPosition:
        """How much of ``item_id`` the caller heard by ``now`` (ms), never more than was sent."""
        item = self._items.get(item_id)
        if item is None:
            return HeardPosition(item_id, 0, 0)
        if item.echoed_at is not None:
            played = item.echoed_bytes + (now - item.echoed_at) * 1000.0 * self._bpms
        elif item.start_estimate is not None:
            played = item.base_bytes + max(0.0, (now - item.start_estimate) * 1000.0 * self._bpms)
        else:
            played = item.base_bytes
        played_bytes = min(round(played), item.sent_bytes)
        return HeardPosition(item_id, played_bytes // self._bpms, item.sent_bytes // self._bpms, played_bytes)

    def echoed_bytes(self, item_id: str) -> int:
        """Bytes of ``item_id`` confirmed played by an echo (0 for unknown items)."""
        item = self._items.get(item_id)
        return item.echoed_bytes if item is not None else 0

    @property
    def outstanding_marks(self) -> int:
        return len(self._marks)


def _is_before(candidate: str, reference: str) -> bool:
    return int(candidate[2:]) < int(reference[2:])
