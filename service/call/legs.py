"""The two audio legs of a call, between the wire codec and the model's PCM16 24 kHz.

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

from service import metrics
from service.audio.codecs import codec_spec, make_inbound, make_outbound
from service.call.framing import WireFramer, ahead_allowance
from service.call.link import ModelLink
from service.call.observer import CallObserver
from service.call.playback import HeardPosition, PlaybackLedger, PlaybackState
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
        self._inbound = make_inbound(*codec)
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
        if received >= self._link.live_since:  # frames held while the session was set up are not "live"
            metrics.FRAME_FORWARD.observe(time.perf_counter() - received)
        self._observer.caller_audio(payload)


class BotLeg:
    """Model audio out to the provider, with what the caller heard kept in ``ledger``.

    Chunks are cut to the carrier's ``MediaFraming`` (``call.framing``) and sent as the frames its dialect
    builds (text, or binary for carriers such as Vonage: ``providers.base.build_media_frame``); one
    playback marker follows each batch. Where the carrier buffers only so far ahead (``max_ahead_ms``),
    chunks beyond that wait in ``_held`` and a pacer task sends them as playback makes room. Ordered:
    held chunks always go out before newer ones. Memory: ``_held`` is bounded by ``MAX_HELD_MS`` of wire
    audio (3.8 MB at L16 16 kHz); audio beyond it is dropped and counted.
    """

    MAX_HELD_MS = 120_000

    def __init__(self, codec: tuple[str, int], provider: TelephonyDialect, to_provider: SendFrame,
                 stats: CallStats, clock: Callable[[], float]) -> None:
        self.bytes_per_ms = wire_bytes_per_ms(codec)
        self.ledger = PlaybackLedger(self.bytes_per_ms)
        self._outbound = make_outbound(*codec)
        framing = media_framing(provider)
        self._framer = WireFramer(framing, codec_spec(*codec).silence)
        self._max_ahead_ms = framing.max_ahead_ms
        self._held: deque[tuple[str, bytes]] = deque()
        self._held_bytes = 0
        self._pacer: asyncio.Task[None] | None = None
        self._pacing_lock = asyncio.Lock()
        self._provider, self._to_provider, self._stats, self._clock = provider, to_provider, stats, clock

    @property
    def playing(self) -> bool:
        return self.ledger.state is PlaybackState.PLAYING or bool(self._held)

    async def play(self, item_id: str, pcm24k: bytes) -> bool:
        """Send one chunk and its marker; False when nothing went out yet (the resampler or the framer
        is still collecting a full chunk)."""
        wire = self._outbound.process(pcm24k)
        if not wire:
            return False
        chunks = self._framer.push(wire)
        if not chunks:
            return False
        await self._send(item_id, chunks)
        return True

    async def finish(self, item_id: str, dropped: bool = False) -> None:
        """The item's audio is complete: send what the framer still holds, padded to a valid chunk
        (nothing for a ``dropped`` reply: a barge-in already discarded it)."""
        if dropped:
            self._framer.reset()
            return
        tail = self._framer.finish()
        if tail is not None:
            await self._send(item_id, [tail])

    async def flush(self) -> list[HeardPosition]:
        """Empty the provider's buffer now (only while playing): what each queued item was heard to."""
        self._drop_held()
        await self._to_provider(self._provider.build_clear())
        positions = self.ledger.clear(self._clock()) if self.ledger.state is PlaybackState.PLAYING else []
        self._outbound.reset()
        self._framer.reset()
        return positions

    def echoed(self, name: str) -> bool:
        """A marker came back; True if playback drained (the caller heard everything sent)."""
        return (self.ledger.on_mark_echoed(name, self._clock()) and self.ledger.state is PlaybackState.SILENT
                and not self._held)

    async def play_tone(self, pcm24k: bytes) -> float:
        """Play a generated signal at once (no marker, no pacing); returns its duration in seconds."""
        self._drop_held()
        self._outbound.reset()
        self._framer.reset()
        chunks = self._framer.push(self._outbound.process(pcm24k))
        tail = self._framer.finish()
        chunks += [tail] if tail is not None else []
        for chunk in chunks:
            await self._to_provider(build_media_frame(self._provider, chunk))
        return sum(len(c) for c in chunks) / self.bytes_per_ms / 1000

    def stop(self) -> None:
        """The call ended: stop pacing and drop what was held (idempotent)."""
        self._drop_held()

    # --- internals ---------------------------------------------------------------------------------
    async def _send(self, item_id: str, chunks: list[bytes]) -> None:
        if self._max_ahead_ms or self._held:
            self._hold(item_id, chunks)
            await self._release()
            if self._held and (self._pacer is None or self._pacer.done()):
                self._pacer = asyncio.create_task(self._pace(), name="bot-pacer")
            return
        await self._send_batch(item_id, chunks)

    def _hold(self, item_id: str, chunks: list[bytes]) -> None:
        limit = self.MAX_HELD_MS * self.bytes_per_ms
        for chunk in chunks:
            if self._held_bytes + len(chunk) > limit:
                self._stats.provider_sends_dropped += 1
                continue
            self._held.append((item_id, chunk))
            self._held_bytes += len(chunk)

    def _take_ready(self, now: float) -> list[tuple[str, list[bytes]]]:
        """Held chunks that fit under ``max_ahead_ms`` now, grouped into per-item batches, in order."""
        room = ahead_allowance(self._max_ahead_ms, self.ledger.queued_ms(now)) * self.bytes_per_ms
        batches: list[tuple[str, list[bytes]]] = []
        while self._held and len(self._held[0][1]) <= room:
            item_id, chunk = self._held.popleft()
            self._held_bytes -= len(chunk)
            room -= len(chunk)
            if batches and batches[-1][0] == item_id:
                batches[-1][1].append(chunk)
            else:
                batches.append((item_id, [chunk]))
        return batches

    async def _pace(self) -> None:
        """Send held chunks as playback makes room (wakes when the head chunk fits; bounded by _held)."""
        while self._held:
            head_ms = len(self._held[0][1]) / self.bytes_per_ms
            wait_ms = self.ledger.queued_ms(self._clock()) + head_ms - self._max_ahead_ms
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)  # real-time pacing, not synchronisation
            await self._release()

    async def _release(self) -> None:
        """Send what fits now. Under ``_pacing_lock`` so that a sender waiting on a full socket cannot be
        overtaken by the other (``play`` and the pacer task both release): chunks leave in order."""
        async with self._pacing_lock:
            for item_id, batch in self._take_ready(self._clock()):
                await self._send_batch(item_id, batch)

    async def _send_batch(self, item_id: str, chunks: list[bytes]) -> None:
        total = 0
        for chunk in chunks:
            await self._to_provider(build_media_frame(self._provider, chunk))
            total += len(chunk)
        now = self._clock()
        await self._to_provider(self._provider.build_mark(self.ledger.on_audio_sent(item_id, total, now)))
        self._stats.frames_out += 1
        self._stats.bot_audio_ms += total / self.bytes_per_ms
        metrics.FRAMES_OUT.inc()

    def _drop_held(self) -> None:
        if self._pacer is not None and not self._pacer.done():
            self._pacer.cancel()
        self._pacer = None
        self._held.clear()
        self._held_bytes = 0
