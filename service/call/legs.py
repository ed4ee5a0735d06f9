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

import time
from collections.abc import Awaitable, Callable

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
from service.call.link import ModelLink, SendText
from service.call.observer import CallObserver
from service.call.playback import HeardPosition, PlaybackLedger, PlaybackState
from service.call.stats import CallStats
from service.providers.base import TelephonyDialect
from service.realtime.events import RealtimeClosed, RealtimeDialect

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
    """Model audio out to the provider, with what the caller heard kept in ``ledger``."""

    def __init__(self, codec: tuple[str, int], provider: TelephonyDialect, to_provider: SendText,
                 stats: CallStats, clock: Callable[[], float], model_audio: tuple[str, int] = ("pcm16", 24000)) -> None:
        self.bytes_per_ms = wire_bytes_per_ms(codec)
        self._codec = codec
        self.ledger = PlaybackLedger(self.bytes_per_ms)
        self._outbound: OutboundCodec = Passthrough() if passes_through(codec, model_audio) else make_outbound(*codec)
        self._provider, self._to_provider, self._stats, self._clock = provider, to_provider, stats, clock

    @property
    def playing(self) -> bool:
        return self.ledger.state is PlaybackState.PLAYING

    async def play(self, item_id: str, pcm24k: bytes) -> bool:
        """Send one chunk and its marker; False when the resampler had nothing to emit yet."""
        wire = self._outbound.process(pcm24k)
        if not wire:
            return False
        now = self._clock()
        await self._to_provider(self._provider.build_media(wire))
        await self._to_provider(self._provider.build_mark(self.ledger.on_audio_sent(item_id, len(wire), now)))
        self._stats.frames_out += 1
        self._stats.bot_audio_ms += len(wire) / self.bytes_per_ms
        metrics.FRAMES_OUT.inc()
        return True

    async def flush(self) -> list[HeardPosition]:
        """Empty the provider's buffer now (only while playing): what each queued item was heard to."""
        await self._to_provider(self._provider.build_clear())
        positions = self.ledger.clear(self._clock())
        self._outbound.reset()
        return positions

    def echoed(self, name: str) -> bool:
        """A marker came back; True if playback drained (the caller heard everything sent)."""
        return self.ledger.on_mark_echoed(name, self._clock()) and self.ledger.state is PlaybackState.SILENT

    async def play_tone(self, pcm24k: bytes) -> float:
        """Play a generated signal at once (no marker); returns its duration in seconds."""
        self._outbound.reset()
        wire = make_outbound(*self._codec).process(pcm24k)  # PCM16 24 kHz even when model audio passes through
        await self._to_provider(self._provider.build_media(wire))
        return len(wire) / self.bytes_per_ms / 1000
