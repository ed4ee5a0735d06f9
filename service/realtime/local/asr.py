"""Speech recognition for the local engine: pocketsphinx 5 with a language model built from the script.

English only: no offline Japanese (or other language) recogniser is available (docs/models/local.md#languages).

- ``build_asr_model(script)`` writes a trigram ARPA model and a pronunciation dictionary restricted to
  the script's caller phrases + vocabulary (words missing from the bundled CMU dictionary are
  skipped and listed in ``AsrModel.skipped``). Done once per script per process (cached in
  ``models.py``), never on the event loop.
- ``DecoderPool`` hands out pocketsphinx decoders (one per utterance in progress; a decoder is not
  thread-safe, so it is used by one thread at a time). Idle decoders are kept for reuse, so the
  pool's size is the peak number of simultaneous utterances. Each decoder costs ~0.1 s to create and
  a few MB (acoustic model + the small LM/dictionary).
- ``Utterance`` streams 16 kHz PCM16 into a decoder while the caller speaks; ``finish`` returns the
  transcript and a confidence (mean word posterior, 0-1). All its methods block and must be called
  serially for one utterance.
- ``AsrService`` runs the decoders in worker **processes**: pocketsphinx holds the GIL while it
  decodes (measured: ``end_utt`` of a 4 s utterance stalls every other thread, the event loop
  included, for ~190 ms), so in-process threads would block the loop. The parent only sends audio
  down a pipe (a non-blocking queue put from the loop; a sender thread does the blocking writes) and
  gets results back through a reader thread that resolves asyncio futures.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pocketsphinx
import structlog

from .dialogue import Script
from .lm import build_arpa, dictionary_text, read_cmudict, tokenize

SAMPLE_RATE = 16000  # the bundled acoustic model will not start at 8 kHz (docs/models/local.md#recogniser)
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[COUGH]", "[BREATH]", "[UH]", "[UM]", "[SMACK]"}

_DIGIT_LOOP = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass(frozen=True, slots=True)
class AsrResult:
    text: str
    confidence: float  # 0-1; 0 for an empty hypothesis
    frames: int  # 10 ms frames decoded


@dataclass
class AsrModel:
    """Files of the recogniser for one script (kept on disk while the model object lives)."""

    hmm: str
    lm_path: str
    dict_path: str
    vocabulary: frozenset[str]
    skipped: tuple[str, ...]
    cmninit: str = ""  # initial cepstral means ("" = the acoustic model's default)
    _tmp: Any = field(repr=False, default=None)

    def new_decoder(self) -> pocketsphinx.Decoder:
        """A fresh decoder (blocking, ~20 ms with the small model)."""
        extra = {"cmninit": self.cmninit} if self.cmninit else {}
        return pocketsphinx.Decoder(hmm=self.hmm, lm=self.lm_path, dict=self.dict_path, samprate=SAMPLE_RATE,
                                    loglevel="FATAL", bestpath=True, **extra)

    def calibrate(self, clips: list[bytes]) -> None:
        """Set ``cmninit`` from representative 16 kHz speech (blocking). Live cepstral mean
        normalisation otherwise starts from the model's wideband defaults and misrecognises a fresh
        decoder's first telephone utterance (measured: "where is my order" -> "when are you")."""
        decoder = self.new_decoder()
        for clip in clips:
            decoder.start_utt()
            decoder.process_raw(clip, False, False)
            decoder.end_utt()
        self.cmninit = decoder.get_cmn(False)


def build_asr_model(script: Script) -> AsrModel:
    """Build the script's language model and dictionary (blocking, ~0.3 s)."""
    model_dir = Path(pocketsphinx.get_model_path())
    sentences = [tokenize(p) for p in script.caller_phrases()]
    # Every digit may follow every digit (order numbers are free digit strings).
    sentences += [[a, b] for a in _DIGIT_LOOP for b in _DIGIT_LOOP]
    sentences += [["my", "order", "number", "is", d, d, d, d] for d in _DIGIT_LOOP]
    words = {w for s in sentences for w in s}
    prons = read_cmudict(model_dir / "en-us" / "cmudict-en-us.dict", words)
    skipped = tuple(sorted(words - set(prons)))
    kept = [[w for w in s if w in prons] for s in sentences]
    kept = [s for s in kept if s]
    tmp = tempfile.TemporaryDirectory(prefix="callbridge-asr-")
    lm_path = Path(tmp.name) / "script.lm"
    dict_path = Path(tmp.name) / "script.dict"
    lm_path.write_text(build_arpa(kept, prons.keys()), encoding="utf-8")
    dict_path.write_text(dictionary_text(prons), encoding="utf-8")
    return AsrModel(hmm=str(model_dir / "en-us" / "en-us"), lm_path=str(lm_path), dict_path=str(dict_path),
                    vocabulary=frozenset(prons), skipped=skipped, _tmp=tmp)


class DecoderPool:
    """Thread-safe pool of decoders for one ``AsrModel``; grows to the peak concurrent demand."""

    def __init__(self, model: AsrModel) -> None:
        self.model = model
        self._idle: list[pocketsphinx.Decoder] = []
        self._lock = threading.Lock()
        self.created = 0

    def acquire(self) -> pocketsphinx.Decoder:
        """An idle decoder, or a new one (blocking): call from a worker thread."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.created += 1
        return self.model.new_decoder()

    def release(self, decoder: pocketsphinx.Decoder) -> None:
        with self._lock:
            self._idle.append(decoder)

    def warm(self, count: int = 1) -> None:
        """Create decoders ahead of demand (blocking)."""
        for decoder in [self.acquire() for _ in range(count)]:
            self.release(decoder)


class Utterance:
    """One caller utterance being decoded. Methods block; call them serially from a worker thread."""

    def __init__(self, pool: DecoderPool) -> None:
        self._pool = pool
        self._decoder: pocketsphinx.Decoder | None = None
        self._pending = b""

    def feed(self, pcm16k: bytes) -> None:
        """Decode more 16 kHz PCM16 audio (starts the utterance on first call)."""
        if self._decoder is None:
            self._decoder = self._pool.acquire()
            self._decoder.start_utt()
        data = self._pending + pcm16k
        cut = len(data) - len(data) % 2
        self._pending = data[cut:]
        if cut:
            self._decoder.process_raw(data[:cut], False, False)

    def finish(self) -> AsrResult:
        """End the utterance and return the best hypothesis with its confidence; frees the decoder."""
        decoder = self._decoder
        if decoder is None:
            return AsrResult("", 0.0, 0)
        self._decoder = None
        try:
            decoder.end_utt()
            hyp = decoder.hyp()
            frames = decoder.n_frames()
            if hyp is None or not hyp.hypstr.strip():
                return AsrResult("", 0.0, frames)
            posts = [seg.prob for seg in decoder.seg() if seg.word.split("(")[0] not in _FILLERS]
            confidence = sum(posts) / len(posts) if posts else 0.0
            return AsrResult(hyp.hypstr.strip(), float(max(0.0, min(1.0, confidence))), frames)
        finally:
            self._pool.release(decoder)

    def abort(self) -> None:
        """Drop the utterance (barge-in cleanup, session close); frees the decoder."""
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            try:
                decoder.end_utt()
            finally:
                self._pool.release(decoder)


# --- worker processes -----------------------------------------------------------------------------

log = structlog.get_logger(__name__)


def _worker_main(conn: Connection, hmm: str, lm_path: str, dict_path: str, cmninit: str = "") -> None:
    """ASR worker process: owns decoders; messages ("feed", key, bytes) / ("finish", key) /
    ("abort", key) / ("stop",); replies ("ready",) once, then ("result", key, text, confidence, frames)."""
    model = AsrModel(hmm=hmm, lm_path=lm_path, dict_path=dict_path, vocabulary=frozenset(), skipped=(),
                     cmninit=cmninit)
    pool = DecoderPool(model)
    pool.warm(1)
    utterances: dict[int, Utterance] = {}
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "feed":
            utt = utterances.get(message[1])
            if utt is None:
                utt = utterances[message[1]] = Utterance(pool)
            utt.feed(message[2])
        elif kind == "finish":
            utt = utterances.pop(message[1], None)
            result = utt.finish() if utt is not None else AsrResult("", 0.0, 0)
            conn.send(("result", message[1], result.text, result.confidence, result.frames))
        elif kind == "abort":
            utt = utterances.pop(message[1], None)
            if utt is not None:
                utt.abort()
        elif kind == "stop":
            return


def _worker_entry(fd: int, hmm: str, lm_path: str, dict_path: str, cmninit: str = "") -> None:
    """Entry point of the worker's ``python -c``: the pipe arrives as an inherited socket fd."""
    _worker_main(Connection(fd), hmm, lm_path, dict_path, cmninit)


_WORKER_CODE = ("import sys; from service.realtime.local.asr import _worker_entry; "
                "_worker_entry(int(sys.argv[1]), *sys.argv[2:])")


class _Worker:
    """One recogniser process, started with ``subprocess`` (not ``multiprocessing``, whose spawn mode
    re-imports the caller's ``__main__`` and so breaks unguarded scripts)."""

    def __init__(self, model: AsrModel) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])  # the directory holding the `service` package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(child_sock.fileno()), model.hmm, model.lm_path, model.dict_path,
             model.cmninit],
            pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn: Connection = Connection(parent_sock.detach())
        if not self.conn.poll(60) or self.conn.recv() != ("ready",):
            self.process.kill()
            raise RuntimeError("speech recogniser worker did not start")
        # Outbox: unbounded SimpleQueue, but fed only with live caller audio (32 KB/s per speaking
        # caller) and drained continuously by the sender thread.
        self.outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send_loop, daemon=True, name="callbridge-asr-send")
        self.sender.start()

    def _send_loop(self) -> None:
        while True:
            message = self.outbox.get()
            if message is None:
                return
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return


class AsrService:
    """Speech recognition in worker processes, usable from asyncio. ``feed``/``abort`` never block;
    ``finish`` awaits the result. One utterance always goes to one worker (round-robin by key)."""

    def __init__(self, model: AsrModel, processes: int = 1) -> None:
        self.model = model
        self._workers = [_Worker(model) for _ in range(max(1, processes))]
        self._keys = itertools.count(1)
        self._assigned: dict[int, _Worker] = {}
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[AsrResult]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._readers = [threading.Thread(target=self._read_loop, args=(w,), daemon=True, name="callbridge-asr-recv")
                         for w in self._workers]
        for reader in self._readers:
            reader.start()

    def new_key(self) -> int:
        """A process-unique utterance key."""
        return next(self._keys)

    def _worker(self, key: int) -> _Worker:
        with self._lock:
            worker = self._assigned.get(key)
            if worker is None:
                worker = self._assigned[key] = self._workers[key % len(self._workers)]
            return worker

    def feed(self, key: int, pcm16k: bytes) -> None:
        if not self._closed and pcm16k:
            self._worker(key).outbox.put(("feed", key, pcm16k))

    def abort(self, key: int) -> None:
        with self._lock:
            worker = self._assigned.pop(key, None)
        if worker is not None and not self._closed:
            worker.outbox.put(("abort", key))

    async def finish(self, key: int) -> AsrResult:
        """End the utterance and await its transcript (empty result if the worker is gone)."""
        if self._closed:
            return AsrResult("", 0.0, 0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AsrResult] = loop.create_future()
        worker = self._worker(key)
        with self._lock:
            self._waiting[key] = (loop, future)
            self._assigned.pop(key, None)
        worker.outbox.put(("finish", key))
        return await future

    def _resolve(self, key: int, result: AsrResult) -> None:
        with self._lock:
            waiting = self._waiting.pop(key, None)
        if waiting is not None:
            loop, future = waiting
            try:
                loop.call_soon_threadsafe(_set_result, future, result)
            except RuntimeError:  # loop closed
                pass

    def _read_loop(self, worker: _Worker) -> None:
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "result":
                self._resolve(message[1], AsrResult(message[2], float(message[3]), int(message[4])))
        if not self._closed:
            log.error("local.asr.worker_died", exitcode=worker.process.poll())
        with self._lock:
            stranded = [k for k, w in self._assigned.items() if w is worker] + list(self._waiting)
        for key in stranded:
            self._resolve(key, AsrResult("", 0.0, 0))

    def close(self) -> None:
        """Stop the workers (blocking, bounded to ~2 s per worker)."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.outbox.put(("stop",))
            worker.outbox.put(None)
        for worker in self._workers:
            try:
                worker.process.wait(2)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(1)
            worker.conn.close()


def _set_result(future: asyncio.Future[AsrResult], result: AsrResult) -> None:
    if not future.done():
        future.set_result(result)
