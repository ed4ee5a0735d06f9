"""The two audio legs of a call, between the wire codec and the model's PCM16 24 kHz (or, when the
model speaks the carrier's own codec, ``RealtimeDialect.model_audio``, straight through).

``CallerLeg`` (caller -> model) is the inbound hot path: one frame is transcoded and written to the
model socket without waiting for anything but the socket send; while caller audio cannot flow (the
session is not configured, or was lost) frames go to the link's bounded pre-buffer. ``BotLeg``
(model -> caller) transcodes each chunk of model audio, sends it to the provider followed by a
playback marker recorded in the ledger, and flushes the provider on barge-in. Both are ordered (one
call's event loop drives them) and allocate nothing per frame beyond the transcoded buffers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

from service import metrics
from service.audio.codecs import (
    InboundCodec,
    OutboundCodec,
    Passthrough,
    codec_spec,
    make_inbound,
    make_outbound,
    passes_through,
)
from service.call.framing import WireFramer
from service.call.link import ModelLink
from service.call.observer import CallObserver
from service.call.playback import HeardPosition, PlaybackLedger, PlaybackState
from service.call.playout import PlayoutBuffer
from service.call.stats import CallStats
from service.providers.base import TelephonyDialect, build_media_frame, media_framing
from service.realtime.events import RealtimeClosed, RealtimeDialect

SendFrame = Callable[[str | bytes], Awaitable[None]]
"""Sends one provider message: ``str`` as a text frame, ``bytes`` as a binary frame."""

# callbridge_frames_in_total is added to once a second of audio per call, not per frame.
_FRAMES_IN_REPORT_EVERY = 50


def wire_bytes_per_ms(codec: tuple[str, int]) -> int:
    spec = codec_spec(*codec)
    return spec.rate * spec.bytes_per_sample // 1000


class CallerLeg:
    """Caller audio into the model session (see the module docstring). ``lost()`` is called when
    the model socket turns out to be closed (the session is then replaced; the frame is lost)."""

    def __init__(self, codec: tuple[str, int], link: ModelLink, model: RealtimeDialect, stats: CallStats,
                 observer: CallObserver, lost: Callable[[], None]) -> None:
        self._inbound: InboundCodec = Passthrough() if passes_through(codec, model.model_audio) else make_inbound(*codec)
        self.spec = codec_spec(*codec)
        self.bytes_per_ms = wire_bytes_per_ms(codec)
        # Called with each forwarded frame's wire bytes while an interruption is being decided
        # (service.call.bargein); None otherwise, so the hot path pays one attribute check.
        self.tap: Callable[[bytes], None] | None = None
        self._link, self._model, self._stats, self._observer, self._lost = link, model, stats, observer, lost
        self._reported = 0

    def forward_now(self, payload: bytes, received: float) -> bool:
        """Forward at once if the model leg can take it without waiting; False: nothing done."""
        sender = self._link.audio_now
        if sender is None or not sender.can_send_now():
            return False
        self._count()
        try:
            sender.send_now(self._model.audio_append_b64(self._inbound.process_b64(payload)))
        except RealtimeClosed:
            self._lost()
            return True
        self._forwarded(payload, received)
        return True

    async def forward(self, payload: bytes, received: float) -> None:
        """Forward with an awaited send, or hold the frame while audio cannot flow."""
        self._count()
        if self._link.audio_send is None:
            self._link.prebuffer.append(payload)
            return
        try:
            await self._link.audio_send(self._model.audio_append_b64(self._inbound.process_b64(payload)))
        except RealtimeClosed:
            self._lost()
            return
        self._forwarded(payload, received)

    async def send_held(self, send: Callable[[str], Awaitable[None]]) -> None:
        """After the configuration went out: the held frames, oldest first (frames arriving meanwhile
        are appended to the same pre-buffer, so order holds); then audio flows live."""
        while self._link.prebuffer and self._link.send is not None:
            await send(self._model.audio_append_b64(self._inbound.process_b64(self._link.prebuffer.popleft())))
        self._link.open_audio()

    def report(self) -> None:
        metrics.FRAMES_IN.inc(self._stats.frames_in - self._reported)
        self._reported = self._stats.frames_in

    def _count(self) -> None:
        self._stats.frames_in += 1
        if self._stats.frames_in - self._reported >= _FRAMES_IN_REPORT_EVERY:
            self.report()

    def _forwarded(self, payload: bytes, received: float) -> None:
        if self.tap is not None:
            self.tap(payload)
        if received >= self._link.live_since:  # frames held while the session was set up are not "live"
            metrics.FRAME_FORWARD.observe(time.perf_counter() - received)
        self._observer.caller_audio(payload)


class BotLeg:
    """Model audio out to the provider, with what the caller heard kept in ``ledger``.

    Audio goes through the just-in-time ``playout`` buffer (``service.call.playout``): it is sent at
    most ``lead_ms`` ahead of playback (a loop timer sends the next batch), and what was sent but not
    heard is kept, so ``flush`` can be followed by ``resume`` (from the exact heard sample) or
    ``discard``. On the way out, audio is cut to the carrier's ``MediaFraming`` (``call.framing``:
    any size for Twilio-like carriers, exact 20 ms binary frames for Vonage, 320-byte multiples of at
    least 3.2 KB for Exotel) and sent as the frames its dialect builds; one playback marker follows
    each batch; a reply's short last piece is padded with wire silence when its audio is complete
    (``finish``). Where the carrier buffers only so far ahead (``max_ahead_ms``), the lead never
    exceeds it. Sends are serialised by a lock, so a batch and its marker are never split by another
    send, and ``flush`` waits at most for one batch already on its way."""

    def __init__(self, codec: tuple[str, int], provider: TelephonyDialect, to_provider: SendFrame,
                 stats: CallStats, clock: Callable[[], float], lead_ms: int = 0,
                 model_audio: tuple[str, int] = ("pcm16", 24000)) -> None:
        self.bytes_per_ms = wire_bytes_per_ms(codec)
        spec = codec_spec(*codec)
        self._codec = codec
        framing = media_framing(provider)
        if framing.max_ahead_ms:
            lead_ms = min(lead_ms or framing.max_ahead_ms, framing.max_ahead_ms)
        self._framer = WireFramer(framing, spec.silence)
        self._framer_item: str | None = None  # the item whose audio the framer's remainder belongs to
        self._finished: deque[str] = deque(maxlen=16)  # items whose audio is complete (tail may be padded)
        self.ledger = PlaybackLedger(self.bytes_per_ms)
        self.playout = PlayoutBuffer(self.bytes_per_ms, lead_ms, spec.bytes_per_sample)
        self._outbound: OutboundCodec = Passthrough() if passes_through(codec, model_audio) else make_outbound(*codec)
        self._provider, self._to_provider, self._stats, self._clock = provider, to_provider, stats, clock
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._underruns = 0
        self.paused = False

    @property
    def playing(self) -> bool:
        """Bot audio is queued at the provider, or held here to be sent (paused or not)."""
        return self.ledger.state is PlaybackState.PLAYING or self.playout.pending_bytes > 0

    async def play(self, item_id: str, pcm24k: bytes) -> bool:
        """Hold one chunk for playout and send what is due; False when nothing new plays now (the
        resampler had nothing to emit yet, playback is paused, or the playout buffer is full)."""
        wire = self._outbound.process(pcm24k)
        if not wire:
            return False
        if not self.playout.push(item_id, wire):
            self._stats.dropped_deltas += 1
            return False
        if self.paused:
            return False  # held: it plays if the pause turns out false
        await self.release()
        return True

    async def finish(self, item_id: str, dropped: bool = False) -> None:
        """The item's audio is complete: once it has all left the playout buffer, the framer's
        remainder goes out padded to a valid chunk (nothing for a ``dropped`` reply)."""
        if dropped:
            if self._framer_item == item_id:
                self._framer.reset()
            return
        self._finished.append(item_id)  # bounded: only the last few replies can still be playing
        await self.release()

    async def release(self) -> None:
        """Send what the lead allows now (framed, each batch followed by its marker), then arm the timer."""
        async with self._lock:
            if self.paused:
                return
            now = self._clock()
            for item_id, wire in self.playout.take(self.ledger.ahead_ms(now)):
                if self._framer_item not in (None, item_id):
                    await self._send_tail(now)  # the previous item's last piece, padded
                self._framer_item = item_id
                await self._send_batch(item_id, self._framer.push(wire), now)
            if (self._framer_item in self._finished and self._framer.pending_bytes
                    and not self.playout.pending_bytes):
                await self._send_tail(now)
            if self.playout.underruns > self._underruns:
                metrics.PLAYOUT_UNDERRUNS.inc(self.playout.underruns - self._underruns)
                self._underruns = self.playout.underruns
            self._arm(self.playout.due_in_ms(self.ledger.ahead_ms(self._clock())))

    async def _send_tail(self, now: float) -> None:
        item_id, tail = self._framer_item, self._framer.finish()
        if item_id is not None and tail is not None:
            await self._send_batch(item_id, [tail], now)

    async def _send_batch(self, item_id: str, chunks: list[bytes], now: float) -> None:
        if not chunks:
            return
        total = 0
        for chunk in chunks:
            await self._to_provider(build_media_frame(self._provider, chunk))
            total += len(chunk)
        await self._to_provider(self._provider.build_mark(self.ledger.on_audio_sent(item_id, total, now)))
        self._stats.frames_out += 1
        self._stats.bot_audio_ms += total / self.bytes_per_ms
        metrics.FRAMES_OUT.inc()

    def _arm(self, due_ms: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due_ms is None:
            return
        self._timer = asyncio.get_running_loop().call_later(due_ms / 1000.0, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> list[HeardPosition]:
        """Empty the provider's buffer now and pause: what each queued item was heard to (with
        ``generated_ms``, held audio included, so ``cut`` says if a truncate is due). The unheard
        audio stays held (``resume`` plays it from the heard sample, ``discard`` forgets it); the
        framer's unsent remainder is dropped (it lies past the heard sample and is replayed)."""
        async with self._lock:
            self.paused = True
            self._arm(None)
            await self._to_provider(self._provider.build_clear())
            self._framer.reset()
            now = self._clock()
            positions = self.ledger.clear(now) if self.ledger.state is PlaybackState.PLAYING else []
            for position in positions:
                self.ledger.rewind(position.item_id, position.heard_bytes)
            self.playout.rewind(positions)
            # held audio counts as unheard (``generated_ms``), and items held but never sent were heard to 0
            known = {p.item_id for p in positions}
            return [replace(p, generated_ms=self.received_ms(p.item_id)) for p in positions] + [
                HeardPosition(item_id, 0, 0, 0, received // self.bytes_per_ms)
                for item_id, received in self.playout.unsent_items() if item_id not in known]

    async def resume(self) -> None:
        """Play the held audio again from where the caller stopped hearing it."""
        self.paused = False
        await self.release()

    def discard(self) -> None:
        """Forget the held audio (a real interruption) and start the next reply clean."""
        self.paused = False
        self._arm(None)
        self.playout.drop()
        self._outbound.reset()
        self._framer.reset()
        self._framer_item = None

    def received_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` received from the model (what a truncate may cut back from)."""
        return self.playout.received_bytes(item_id) // self.bytes_per_ms

    def echoed(self, name: str) -> bool:
        """A marker came back; True if playback drained (the caller heard everything received)."""
        if not self.ledger.on_mark_echoed(name, self._clock()):
            return False
        item_id = self.ledger.last_echoed_item
        if item_id is not None:
            self.playout.acknowledge(item_id, self.ledger.echoed_bytes(item_id))
        return (self.ledger.state is PlaybackState.SILENT and not self.playout.pending_bytes
                and not self._framer.pending_bytes)

    def close(self) -> None:
        """The call ended: stop the timer and any send it started (idempotent)."""
        self._arm(None)
        for task in list(self._tasks):
            task.cancel()

    def stop(self) -> None:
        """The call ended: ``close``, and forget held audio (no paced bot audio outlives the call)."""
        self.close()
        self.discard()

    async def play_tone(self, pcm24k: bytes) -> float:
        """Play a generated signal at once (no marker, no lead); returns its duration in seconds."""
        self._outbound.reset()
        framer = WireFramer(media_framing(self._provider), codec_spec(*self._codec).silence)
        wire = make_outbound(*self._codec).process(pcm24k)  # PCM16 24 kHz even when model audio passes through
        chunks = framer.push(wire)
        tail = framer.finish()
        chunks += [tail] if tail is not None else []
        for chunk in chunks:
            await self._to_provider(build_media_frame(self._provider, chunk))
        return sum(len(c) for c in chunks) / self.bytes_per_ms / 1000
