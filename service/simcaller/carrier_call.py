"""A simulated caller on any routed carrier: places a call on a gateway the way that carrier does and plays
the bot, over real sockets. The carrier-specific parts are pure (``service.simcaller.carriers`` for the
set-up, ``service.simcaller.wires`` for the stream); this module is the one asyncio adapter.

``await CarrierCaller(CARRIERS["plivo"], base_url, key).place_call()``:

1. POSTs the carrier's signed voice webhook to ``{public_url}{voice_path}`` (sent to ``base_url``'s host)
   and reads the answer (``CallRejected`` when it opens no stream).
2. Opens the media socket (the public stream URL re-aimed at ``base_url``'s host), sends the carrier's
   opening frames with the echoed per-call values, then one media frame per ``wire.frame_ms`` on absolute
   loop-clock deadlines; when the script is empty it sends silence, as carriers do.
3. Plays the bot with the Twilio caller's ``PlaybackBuffer`` at the stream's byte rate: markers are
   acknowledged when playback reaches them, flushes drop what is queued (pending markers acknowledged only
   where the carrier does so), and every gateway frame is checked against the carrier's rules into
   ``violations``.
4. When the gateway closes the socket (not after our hang-up), POSTs the signed ``<Redirect>`` URL like
   the carrier continuing its markup and keeps the answer in ``after_stream_text``.

Memory per call: the audio script (what was queued), caller audio on the timeline and the bot audio
received (the stream's byte rate each), one small record per gateway frame. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.audio.g711 import ulaw_to_pcm16
from service.simcaller.carriers import CarrierProfile, StreamPlan
from service.simcaller.twilio_caller import MarkRecord, PlaybackBuffer
from service.simcaller.wires import CallerWire, Frame, WireAudio

__all__ = ["CallRejected", "CarrierCall", "CarrierCaller", "Received", "mulaw_to_wire", "retarget"]

Segment = npt.NDArray[np.int16] | bytes


def mulaw_to_wire(mulaw8k: bytes, audio: WireAudio) -> bytes:
    """8 kHz mu-law speech (what ``service.simcaller.speech`` makes) as wire audio of ``audio``'s format."""
    if audio.codec == "mulaw" and audio.rate == 8000:
        return mulaw8k
    pcm = ulaw_to_pcm16(mulaw8k)
    if audio.rate != 8000:
        from service.realtime.local.dsp import resample_once

        scaled = resample_once(pcm.astype(np.float32) / 32768.0, 8000, audio.rate)
        pcm = (np.clip(scaled, -1, 1) * 32767).astype(np.int16)
    return audio.encode(pcm)


class CallRejected(Exception):
    """The voice webhook did not answer with a media stream (status and body kept)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"call not connected to a stream (HTTP {status}): {text[:200]}")
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Received:
    """One gateway frame: loop time, how the carrier read it, marker name."""

    at: float
    kind: str
    name: str = ""


def retarget(url: str, base_url: str) -> str:
    """``url`` (on the public host) aimed at ``base_url``'s host, path and query kept; ws(s) stays a socket
    URL (``ws://`` for an ``http://`` base), http(s) takes the base's scheme."""
    parts, base = urlsplit(url), urlsplit(base_url)
    socket = parts.scheme in ("ws", "wss")
    scheme = ("wss" if base.scheme == "https" else "ws") if socket else base.scheme
    return urlunsplit((scheme, base.netloc, parts.path, parts.query, ""))


class CarrierCaller:
    """Places calls on a gateway at ``base_url`` as ``profile``'s carrier. ``public_url`` is the URL the
    gateway believes it is reached at (signatures are over it; default ``base_url``). ``key`` signs the
    webhooks (empty: none are signed)."""

    def __init__(self, profile: CarrierProfile, base_url: str, key: str, *, public_url: str | None = None,
                 http_timeout: float = 10.0) -> None:
        self.profile = profile
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.key = key
        self.http = httpx.AsyncClient(timeout=http_timeout, trust_env=False)

    async def __aenter__(self) -> CarrierCaller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(self, public_url: str, form: Mapping[str, str], *, key: str | None = None) -> httpx.Response:
        """POST a webhook to ``public_url`` (sent to ``base_url``'s host), signed with ``key`` (default the
        caller's key; "" = unsigned)."""
        request = self.profile.sign(self.key if key is None else key, public_url, form)
        return await self.http.post(retarget(public_url, self.base_url), content=request.body,
                                    headers=request.headers)

    async def answer(self, call_id: str, *, from_: str = "+15551230000", to: str = "+15559870000",
                     key: str | None = None) -> httpx.Response:
        """Just the voice webhook for ``call_id``."""
        form = self.profile.call_form(call_id, from_, to, "ringing")
        return await self.post(self.public_url + self.profile.voice_path, form, key=key)

    async def place_call(self, *, from_: str = "+15551230000", to: str = "+15559870000",
                         call_id: str | None = None, parameter_overrides: Mapping[str, str | None] | None = None,
                         open_timeout: float = 10.0) -> CarrierCall:
        """Webhook -> answer -> media socket -> opening frames -> media flowing. ``parameter_overrides``
        replace echoed values (None drops one), e.g. to forge or omit the stream token."""
        call_id = call_id or self.profile.new_call_id()
        if self.profile.fixed_plan is not None:
            plan = self.profile.fixed_plan(self.public_url, self.key)
        else:
            response = await self.answer(call_id, from_=from_, to=to)
            if response.status_code != 200:
                raise CallRejected(response.status_code, response.text)
            try:
                plan = self.profile.parse_answer(response.text)
            except ValueError:
                raise CallRejected(response.status_code, response.text) from None
        parameters = dict(plan.parameters)
        for name, value in (parameter_overrides or {}).items():
            if value is None:
                parameters.pop(name, None)
            else:
                parameters[name] = value
        call = CarrierCall(self, call_id, plan, from_=from_, to=to)
        await call.open(parameters, open_timeout=open_timeout)
        return call

    async def open_stream(self, call_id: str, plan: StreamPlan, parameters: Mapping[str, str], *,
                          open_timeout: float = 10.0) -> CarrierCall:
        """A stream for ``call_id`` as ``plan`` describes, echoing ``parameters`` (replays, forged tokens)."""
        call = CarrierCall(self, call_id, plan)
        await call.open(parameters, open_timeout=open_timeout)
        return call


class CarrierCall:
    """One call's media stream, from the carrier's side. ``async with`` or ``aclose()``."""

    def __init__(self, caller: CarrierCaller, call_id: str, plan: StreamPlan, *, from_: str = "+15551230000",
                 to: str = "+15559870000") -> None:
        self.caller = caller
        self.call_id = call_id
        self.plan = plan
        self.from_ = from_
        self.to = to
        self.wire: CallerWire = caller.profile.new_wire(call_id, plan)
        self._loop = asyncio.get_running_loop()
        self.origin = self._loop.time()
        self.playback = PlaybackBuffer(self.origin, self.wire.audio.bytes_per_second)
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.close_code: int | None = None
        self.after_stream_status: int | None = None
        self.after_stream_text: str | None = None
        self.hung_up = False
        self.media_sent = 0
        self._ws: ClientConnection | None = None
        self._script: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._caller_audio = bytearray()
        self._bot_audio = bytearray()
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()
        self._player_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, parameters: Mapping[str, str], *, open_timeout: float = 10.0) -> None:
        url = retarget(self.plan.url, self.caller.base_url)
        self._ws = await connect(url, additional_headers=self.plan.headers, open_timeout=open_timeout, proxy=None,
                                 max_size=2**20, ping_interval=None, compression=None)
        self._tasks.append(asyncio.create_task(self._receiver()))
        for frame in self.wire.opening(parameters):
            await self.send_raw(frame)
        self.origin = self._loop.time()
        self.playback = PlaybackBuffer(self.origin, self.wire.audio.bytes_per_second)
        self._tasks.append(asyncio.create_task(self._sender()))
        self._tasks.append(asyncio.create_task(self._player()))

    # --- sending ---------------------------------------------------------------------------------

    async def send_raw(self, frame: Frame) -> None:
        """Send any frame as is (also malformed-input tests). Nothing once the socket is closed."""
        async with self._send_lock:
            if self._ws is not None and not self._closed.is_set():
                with contextlib.suppress(ConnectionClosed):
                    await self._ws.send(frame)

    def queue_audio(self, *segments: Segment) -> asyncio.Future[None]:
        """Append caller audio (int16 PCM at the stream's rate, or wire bytes) to the script; the future
        resolves when its last frame has been sent. Padded to whole frames with silence."""
        size = self.wire.frame_bytes
        silence = self.wire.audio.silence
        data = bytearray()
        for segment in segments:
            chunk = bytes(segment) if isinstance(segment, bytes | bytearray) else self.wire.audio.encode(segment)
            data += chunk
        if len(data) % size:
            data += silence * ((size - len(data) % size) // len(silence))
        done: asyncio.Future[None] = self._loop.create_future()
        frames = [bytes(data[i:i + size]) for i in range(0, len(data), size)]
        if not frames:
            done.set_result(None)
            return done
        for frame in frames[:-1]:
            self._script.append((frame, None))
        self._script.append((frames[-1], done))
        return done

    async def send_audio(self, *segments: Segment, timeout_s: float | None = None) -> None:
        """``queue_audio`` and wait until it has all been sent (real time)."""
        future = self.queue_audio(*segments)
        closed: asyncio.Future[Any] = asyncio.ensure_future(self._closed.wait())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait([future, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not future.done() or future.cancelled():
            raise ConnectionError("stream closed before the audio was sent")

    async def send_dtmf(self, digit: str) -> None:
        await self.send_raw(self.wire.dtmf(digit))

    async def hang_up(self) -> None:
        """The caller hangs up: the carrier's end-of-stream message if it has one, then close (1000)."""
        if self._closed.is_set():
            return
        self.hung_up = True
        stop = self.wire.stop()
        if stop is not None:
            await self.send_raw(stop)
        await self.close_socket(1000)

    async def close_socket(self, code: int = 1000) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(code)
        await self.wait_closed(timeout_s=10)

    # --- receiving and playback ----------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _ack(self, marks: list[MarkRecord]) -> None:
        for mark in marks:
            if mark.cleared and not self.wire.echo_marks_on_clear:
                continue
            mark.echoed_at = self._loop.time()
            await self.send_raw(self.wire.ack(mark.name))

    async def _receiver(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for frame in ws:
                now = self._loop.time()
                out = self.wire.read(frame)
                self.violations.extend(out.problems)
                acks: list[MarkRecord] = []
                if not out.problems:
                    if out.kind == "media":
                        self._bot_audio += out.audio
                        acks = self.playback.add_media(now, out.audio)
                    elif out.kind == "mark":
                        acks = self.playback.add_mark(now, out.name)
                    elif out.kind == "clear":
                        acks = self.playback.clear(now)
                self.received.append(Received(now, out.kind, out.name))
                await self._ack(acks)
                for reply in out.replies:
                    await self.send_raw(reply)
                self._player_wake.set()
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            await self._on_closed(ws)

    async def _on_closed(self, ws: ClientConnection) -> None:
        self.close_code = ws.close_code
        self.playback.advance(self._loop.time())
        self._closed.set()
        self._player_wake.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for _frame, future in self._script:
            if future is not None and not future.done():
                future.cancel()
        await self._notify()
        if not self.hung_up and self.plan.after:
            form = self.caller.profile.call_form(self.call_id, self.from_, self.to, "in-progress")
            try:
                response = await self.caller.post(self.plan.after, form)
                self.after_stream_status, self.after_stream_text = response.status_code, response.text
            except (httpx.HTTPError, RuntimeError) as error:  # RuntimeError: the caller was closed
                self.violations.append(f"after-stream request failed: {error!r}")
        self._finished.set()
        await self._notify()

    async def _player(self) -> None:
        """Acknowledge markers when playback reaches them (wakes at the due time or on any gateway frame)."""
        while not self._closed.is_set():
            self._player_wake.clear()
            due = self.playback.next_mark_due()
            if due is None:
                await self._player_wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._player_wake.wait()
            if self._closed.is_set():
                return
            acks = self.playback.advance(self._loop.time())
            if acks:
                await self._ack(acks)
                await self._notify()

    async def _sender(self) -> None:
        """One media frame per ``frame_ms`` on absolute deadlines (origin + frame * (k + 1))."""
        step = self.wire.frame_ms / 1000
        size = self.wire.frame_bytes
        silence = self.wire.audio.silence * (size // len(self.wire.audio.silence))
        slot = 0
        while not self._closed.is_set():
            delay = self.origin + step * (slot + 1) - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing on the loop clock, not synchronisation
            frame, done = self._script.popleft() if self._script else (silence, None)
            offset = slot * size
            if len(self._caller_audio) < offset:
                self._caller_audio.extend(silence[:1] * (offset - len(self._caller_audio)))
            self._caller_audio[offset:offset + size] = frame
            await self.send_raw(self.wire.media(frame))
            self.media_sent += 1
            slot += 1
            if done is not None and not done.done():
                done.set_result(None)

    # --- waiting and results ---------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Until ``predicate()`` holds (re-checked after every gateway frame, ack and close)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_closed(self, timeout_s: float = 10.0) -> int | None:
        """Until the socket closed (and the after-stream request, if any, was answered): the close code."""
        async with asyncio.timeout(timeout_s):
            await self._finished.wait()
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def events(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    @property
    def bytes_per_ms(self) -> float:
        return self.wire.audio.bytes_per_second / 1000

    def bot_audio(self) -> npt.NDArray[np.int16]:
        """Every bot audio byte received (played or later flushed), decoded: int16 at the stream's rate."""
        return self.wire.audio.decode(bytes(self._bot_audio))

    def caller_audio(self) -> bytes:
        """What the caller sent, wire bytes on the timeline."""
        return bytes(self._caller_audio)

    def stereo(self) -> npt.NDArray[np.int16]:
        """(N, 2) int16 at the stream's rate: caller left, played bot audio right, on the call's timeline
        (bot runs are placed at whole samples)."""
        width = self.wire.audio.width
        caller = self.wire.audio.decode(self.caller_audio())
        bot = np.zeros(0, dtype=np.int16)
        for offset, data in self.playback.played_segments():
            start = offset // width
            samples = self.wire.audio.decode(data)
            if len(bot) < start + len(samples):
                bot = np.concatenate([bot, np.zeros(start + len(samples) - len(bot), dtype=np.int16)])
            bot[start:start + len(samples)] = samples
        length = max(len(caller), len(bot))
        out = np.zeros((length, 2), dtype=np.int16)
        out[:len(caller), 0] = caller
        out[:len(bot), 1] = bot
        return out

    def write_wav(self, path: str | Path) -> Path:
        """``stereo()`` as a 16-bit stereo WAV at the stream's rate."""
        target = Path(path)
        with wave.open(str(target), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(self.wire.audio.rate)
            out.writeframes(self.stereo().astype("<i2").tobytes())
        return target

    async def aclose(self) -> None:
        """Tear down: abort the socket if still open, cancel tasks. Idempotent."""
        if not self._closed.is_set() and self._ws is not None:
            self.hung_up = True
            transport = getattr(self._ws, "transport", None)
            if transport is not None:
                transport.abort()
            with contextlib.suppress(TimeoutError):
                await self.wait_closed(timeout_s=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> CarrierCall:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
