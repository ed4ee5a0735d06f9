"""asyncio adapter of the local engine: ``LocalTransport`` (a ``RealtimeTransport``) and
``open_local_session``.

The bridge talks to it exactly as to a cloud WebSocket: ``send(json_text)``, ``recv() -> json_text``
(raising ``RealtimeClosed`` at the end), ``close()``. Behind it:

- ``LocalSession`` (pure) runs on the event loop: parsing, VAD and resampling cost ~0.1 ms per 20 ms
  audio frame.
- Speech recognition streams to worker processes (``AsrService``): pocketsphinx holds the GIL, so
  it must not share this process's interpreter with the loop.
- Speech synthesis runs in a thread pool (onnxruntime releases the GIL), one sentence at a time, so
  the first sentence's audio is sent while later ones are still being synthesised; first sentences
  jump the pool's queue (``PriorityPool``).

Output buffer (bounded): server events wait in a deque read by ``recv``. Producers wait for room
*before* generating: ``send`` waits while more than ``MAX_BUFFERED_EVENTS`` (512) events are
unread, and synthesis waits while more than ``AUDIO_HIGH_WATER`` (64) are unread. Worst case, the
buffer holds 512 events + one sentence of audio: about 512 x 13 KB (a 200 ms audio delta in base64)
+ ~0.7 MB ~= 7 MB per session if the reader stops reading; in normal operation it holds a few
events. Events stay in emission order (every enqueue is synchronous after the session call that
produced it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from service.realtime.events import RealtimeClosed

from .models import LocalModels, load_models_async
from .session import AsrAbort, AsrFeed, AsrFinish, LocalSession, Output, StopSynthesis, Synthesize
from .vad import VadConfig

log = structlog.get_logger(__name__)

MAX_BUFFERED_EVENTS = 512
AUDIO_HIGH_WATER = 64

class PriorityPool:
    """Synthesis threads with two priorities: a reply's first sentence (0) runs before any queued later
    sentence (1), so one call's long answer does not delay another call's first audio. Jobs of equal
    priority run in submission order. The queue is unbounded in count but each session has at most one
    job queued at a time (``_speak`` awaits each sentence), so it holds at most one job per session."""

    def __init__(self, threads: int) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        for n in range(threads):
            threading.Thread(target=self._run, daemon=True, name=f"callbridge-tts-{n}").start()

    def _run(self) -> None:
        while True:
            _, _, job = self._queue.get()
            job()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            if future.cancelled():
                return
            result, failure = None, None
            try:
                result = fn(*args)
            except BaseException as error:  # delivered to the awaiting task
                failure = error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, result, failure)

        self._queue.put((priority, next(self._seq), job))
        return future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_pool: PriorityPool | None = None
_pool_lock = threading.Lock()


def tts_pool() -> PriorityPool:
    """The process-wide synthesis pool (one thread per core)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = PriorityPool(max(1, os.cpu_count() or 1))
        return _pool


class LocalTransport:
    """In-process Realtime transport to a ``LocalSession``. Create with ``open_local_session`` (or
    directly, inside a running loop). ``send`` is ordered; ``close`` is idempotent and cancel-safe."""

    def __init__(self, models: LocalModels, session: LocalSession) -> None:
        self.models = models
        self.session = session
        self._buffer: deque[str] = deque()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._close_code = 1000
        self._keys: dict[int, int] = {}  # session utterance id -> recogniser key
        self._tasks: set[asyncio.Task[None]] = set()
        self._speaking: dict[str, asyncio.Task[None]] = {}
        self._dispatch(session.start())

    # ------------------------------------------------------------------ RealtimeTransport

    async def send(self, text: str) -> None:
        """Deliver one client event (JSON text). Raises ``RealtimeClosed`` after ``close``."""
        if self._closed:
            raise RealtimeClosed(self._close_code, "local session closed")
        while len(self._buffer) > MAX_BUFFERED_EVENTS and not self._closed:
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise RealtimeClosed(self._close_code, "local session closed")
        self._dispatch(self.session.handle_text(text))

    async def recv(self) -> str:
        """The next server event (JSON text), in emission order. Raises ``RealtimeClosed`` after
        ``close`` (unread events are dropped, as a closed socket drops them)."""
        while not self._buffer:
            if self._closed:
                raise RealtimeClosed(self._close_code, "local session closed")
            self._readable.clear()
            await self._readable.wait()
        if self._closed:
            raise RealtimeClosed(self._close_code, "local session closed")
        text = self._buffer.popleft()
        if len(self._buffer) <= AUDIO_HIGH_WATER:
            self._room.set()
        return text

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._dispatch(self.session.close())
        for key in list(self._keys.values()):
            self.models.recogniser.abort(key)
        self._keys.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._buffer.clear()
        self._readable.set()
        self._room.set()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, dict):
                if not self._closed:
                    self._buffer.append(json.dumps(output))
                    self._readable.set()
            elif isinstance(output, AsrFeed):
                key = self._keys.get(output.utterance)
                if key is None:
                    key = self._keys[output.utterance] = self.models.recogniser.new_key()
                self.models.recogniser.feed(key, output.pcm16k)
            elif isinstance(output, AsrFinish):
                key = self._keys.pop(output.utterance, None)
                self._spawn(self._finish_utterance(output.utterance, key))
            elif isinstance(output, AsrAbort):
                key = self._keys.pop(output.utterance, None)
                if key is not None:
                    self.models.recogniser.abort(key)
            elif isinstance(output, Synthesize):
                if not self._closed:
                    self._speaking[output.response_id] = self._spawn(self._speak(output))
            elif isinstance(output, StopSynthesis):
                task = self._speaking.pop(output.response_id, None)
                if task is not None:
                    task.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("local.engine.task_failed", error=repr(task.exception()))

    async def _finish_utterance(self, utterance: int, key: int | None) -> None:
        from .asr import AsrResult

        result = await self.models.recogniser.finish(key) if key is not None else AsrResult("", 0.0, 0)
        if not self._closed:
            self._dispatch(self.session.on_transcript(utterance, result))

    async def _wait_room(self) -> None:
        while len(self._buffer) > AUDIO_HIGH_WATER and not self._closed:
            self._room.clear()
            await self._room.wait()

    async def _speak(self, job: Synthesize) -> None:
        try:
            for index, sentence in enumerate(job.sentences):
                await self._wait_room()
                pcm = await tts_pool().submit(0 if index == 0 else 1, self.models.tts.sentence_pcm24, sentence,
                                              job.voice)
                if self._closed:
                    return
                self._dispatch(self.session.on_audio(job.response_id, sentence, pcm))
            self._dispatch(self.session.on_audio_done(job.response_id))
        finally:
            self._speaking.pop(job.response_id, None)


async def open_local_session(settings: Any = None, models: LocalModels | None = None) -> LocalTransport:
    """Open a local-engine Realtime session (loads the shared models in a worker thread on first use).

    ``settings`` (``service.config.Settings`` or anything with the same attributes) provides
    ``local_script``, ``voice`` and the VAD defaults; the bridge's ``session.update`` overrides them as
    it would on the cloud. English only.
    """
    if models is None:
        models = await load_models_async(getattr(settings, "local_script", None))
    vad = VadConfig(threshold=float(getattr(settings, "vad_threshold", 0.5)),
                    prefix_padding_ms=int(getattr(settings, "vad_prefix_padding_ms", 300)),
                    silence_duration_ms=int(getattr(settings, "vad_silence_duration_ms", 500)))
    session = LocalSession(models, voice=str(getattr(settings, "voice", "alloy")), vad=vad)
    return LocalTransport(models, session)
