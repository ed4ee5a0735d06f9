"""Process-wide cache of the local engine's models: loaded once, shared by every session.

``load_models(script_path)`` is blocking (first call ~1-2 s: Piper voice, recogniser model, the
recogniser worker processes) and thread-safe (a lock makes concurrent first calls load once). Async code must call it
through ``preload`` / ``load_models_async``, which run it in a worker thread, so loading never happens
on the event loop thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .asr import AsrModel, AsrService, build_asr_model
from .dialogue import IntentMatcher, Script, load_script
from .tts import Synthesizer

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[str, float], None]  # (stage description, fraction done 0-1)


@dataclass(frozen=True)
class LocalModels:
    script: Script
    matcher: IntentMatcher
    asr: AsrModel
    recogniser: AsrService
    tts: Synthesizer


_lock = threading.Lock()
_synth: Synthesizer | None = None
_by_script: dict[str, LocalModels] = {}


def asr_processes() -> int:
    """Recogniser worker processes: CALLBRIDGE_LOCAL_ASR_PROCESSES (validated by ``Settings``), else
    min(2, CPU count)."""
    from service.config import ConfigError, load_settings

    try:
        configured = load_settings().local_asr_processes
    except ConfigError:
        configured = 0
    return configured if configured > 0 else max(1, min(2, os.cpu_count() or 1))


def shutdown_models() -> None:
    """Stop every recogniser worker process and forget the cache (tests, process exit)."""
    with _lock:
        for models in _by_script.values():
            models.recogniser.close()
        _by_script.clear()


def _calibration_clips(synth: Synthesizer, script: Script) -> list[bytes]:
    """A few of the script's caller phrases spoken by Piper over the telephone path, at 16 kHz."""
    from .caller_audio import telephone
    from .dsp import float_to_pcm16, pcm16_to_float, resample_once

    phrases = [intent.examples[0] for intent in script.intents[:6]]
    return [float_to_pcm16(resample_once(pcm16_to_float(telephone(synth.sentence_pcm24(p))), 24000, 16000))
            for p in phrases]


def _key(script_path: Path | str | None) -> str:
    return str(Path(script_path).resolve()) if script_path else "<bundled>"


def load_models(script_path: Path | str | None = None, progress: ProgressCallback | None = None) -> LocalModels:
    """The shared models for a dialogue script (blocking; cached per script path). Raises
    ``ScriptError`` for an invalid script."""
    global _synth
    key = _key(script_path)
    with _lock:
        cached = _by_script.get(key)
        if cached is not None:
            if progress:
                progress("ready", 1.0)
            return cached
        report = progress or (lambda _stage, _fraction: None)
        report("reading dialogue script", 0.0)
        script = load_script(script_path)
        report("loading voice", 0.1)
        if _synth is None:
            _synth = Synthesizer.bundled(threads=max(1, min(2, os.cpu_count() or 1)))
        report("building speech recogniser", 0.4)
        asr = build_asr_model(script)
        if asr.skipped:
            log.warning("local.asr.words_skipped", words=list(asr.skipped)[:50], count=len(asr.skipped))
        asr.calibrate(_calibration_clips(_synth, script))
        report("starting speech recogniser workers", 0.7)
        recogniser = AsrService(asr, processes=asr_processes())
        models = LocalModels(script=script, matcher=IntentMatcher(script.intents), asr=asr, recogniser=recogniser, tts=_synth)
        _by_script[key] = models
        report("ready", 1.0)
        log.info("local.models.loaded", script=key, vocabulary=len(asr.vocabulary))
        return models


async def load_models_async(script_path: Path | str | None = None,
                            progress: ProgressCallback | None = None) -> LocalModels:
    """``load_models`` in a worker thread (the event loop keeps running while models load)."""
    return await asyncio.to_thread(load_models, script_path, progress)


async def preload(settings: object | None = None, progress_callback: ProgressCallback | None = None) -> LocalModels:
    """Load the local engine's models ahead of the first call (e.g. with a progress bar in the demo).
    ``settings`` may carry ``local_script``; the callback is invoked from a worker thread."""
    script_path = getattr(settings, "local_script", None) if settings is not None else None
    return await load_models_async(script_path, progress_callback)
