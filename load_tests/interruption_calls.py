"""One scripted interruption over real sockets, measured: the shared harness of
``tests/integration/test_interruptions.py`` and ``load_tests/bench_interruptions.py``.

Set-up per scenario: the Realtime stand-in (honours ``interrupt_response``/``create_response`` as
the service does; scripted transcripts: the caller's question, then the interjection's), the
gateway in-process under uvicorn with its real settings, and the Twilio caller stand-in streaming
real-time audio and playing the bot's audio back with mark echoes. The bot's reply is a chirp, so
every played stretch can be located in it exactly (where playback resumed, what was heard).

The caller asks a question, waits until ``talk_after_ms`` of the reply has played, then says the
interjection (speech, a cough, a knock, an echo of the bot) and listens until the reply is over
(or the model answered). Measured: the decision (real or not, the rule, the time it took), the
provider-flush reaction, the share of the reply heard and the silence the caller heard (false
ones), the seam (how far the resumed audio is from where the caller stopped hearing), cancels,
truncates (and their error against what was played), responses asked for after the interjection,
and deleted caller items. All waits are bounded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.audio.codecs import make_outbound
from tests.integration.conftest import AUTH_TOKEN, run_gateway
from tests.poll import wait_until
from tests.standins.realtime_server import RealtimeStandIn, ScriptedBehaviour
from tests.standins.speech import silence, synthesize
from tests.standins.twilio_caller import TwilioCallerStandIn

API_KEY = "sk-test-0123456789abcdef"
RATE = 8000
PCM24 = 24000


@dataclass(frozen=True)
class Interjection:
    """What the caller does over the reply. ``real``: the expected decision."""

    name: str
    audio: npt.NDArray[np.int16]  # 8 kHz
    transcript: str  # what the stand-in's transcription reports for it ("" = no words)
    real: bool
    language: str = "en"


@dataclass
class Outcome:
    interjection: str
    expected_real: bool
    decided_real: bool | None = None
    reason: str = ""
    decided_after_ms: float | None = None
    reaction_ms: float | None = None
    heard_share: float = 0.0  # of the reply's samples, each counted once
    gap_ms: float | None = None  # silence between the flush and resumed audio (false ones)
    seam_ms: float | None = None  # resumed position - played position at the flush (+ skipped, - repeated)
    cancels: int = 0
    truncates: list[tuple[int, float]] = field(default_factory=list)  # (audio_end_ms, played ms at flush)
    creates_after: int = 0
    deleted_items: int = 0
    answered: bool = False  # a response after the interjection produced audio
    violations: list[str] = field(default_factory=list)


def chirp_pcm24(ms: int, f0: float = 250.0, f1: float = 1800.0) -> bytes:
    """A linear chirp at -12 dBFS: no stretch of it repeats, so played audio can be located in it."""
    n = PCM24 * ms // 1000
    t = np.arange(n, dtype=np.float64) / PCM24
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * t[-1]))
    return (0.25 * 32767 * np.sin(phase)).astype("<i2").tobytes()


def cough(ms: int = 320, seed: int = 1, level: float = 0.3) -> npt.NDArray[np.int16]:
    """A cough-like burst: band-passed noise with a sharp attack and a decay (no pitch, no words)."""
    rng = np.random.default_rng(seed)
    n = RATE * ms // 1000
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    envelope = np.minimum(1.0, np.arange(n) / (0.01 * RATE)) * np.exp(-np.arange(n) / (0.12 * RATE))
    return (level * 32767 * noise / np.max(np.abs(noise)) * envelope).astype(np.int16)


def knock(seed: int = 2) -> npt.NDArray[np.int16]:
    """Two door knocks 180 ms apart."""
    one = cough(60, seed=seed, level=0.6)
    return np.concatenate([one, np.zeros(RATE * 120 // 1000, dtype=np.int16), one])


def echo_of(reply24: bytes, ms: int = 900, dbfs: float = -43.0) -> npt.NDArray[np.int16]:
    """The bot's own voice coming back from a speakerphone: the reply, quiet (``dbfs`` RMS)."""
    x = np.frombuffer(reply24, dtype="<i2")[: PCM24 * ms // 1000 : 3].astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) or 1.0
    return (x * (32768 * 10 ** (dbfs / 20) / rms)).astype(np.int16)


def speech(text: str, language: str = "en") -> npt.NDArray[np.int16]:
    return synthesize(text, voice="ja" if language == "ja" else "en-us")


def _locate(wire: bytes, piece: bytes) -> int:
    """Offset of ``piece`` in the reply (-1: not from the reply)."""
    probe = piece[: min(len(piece), 80)]
    return wire.find(probe) if len(probe) >= 16 else -1


async def run_scenario(interjection: Interjection, *, reply_ms: int = 4000, talk_after_ms: int = 1000,
                       pacing: float = 1.0, settings: dict[str, Any] | None = None,
                       vad_rms_threshold: float = 200.0) -> Outcome:
    """Run one call with one interjection; see the module docstring."""
    reply = chirp_pcm24(reply_ms)
    wire = make_outbound("mulaw", 8000).process(reply)
    behaviour = ScriptedBehaviour(reply_audio=reply, transcripts=["tell me about my order", interjection.transcript],
                                  pacing=pacing, chunk_ms=100, vad_rms_threshold=vad_rms_threshold)
    out = Outcome(interjection.name, interjection.real)
    overrides = {"vad_silence_duration_ms": 300, "input_transcription_model": "whisper-1", **(settings or {})}
    async with RealtimeStandIn(behaviour, require_auth=("Authorization", f"Bearer {API_KEY}")) as realtime, \
            run_gateway(realtime_provider="openai", realtime_api_key=API_KEY, realtime_url=realtime.url,
                        **overrides) as gw, \
            TwilioCallerStandIn(gw.base_url, AUTH_TOKEN) as caller:
        call = await caller.place_call()
        session = await realtime.wait_for_session()
        await call.send_audio(speech("Tell me about my order please."), silence(400))
        await session.wait_for_sent("response.output_audio.delta", timeout_s=15)
        await call.wait_for(lambda: call.playback.played_total >= talk_after_ms * 8, timeout_s=15)
        bridge = next(iter(gw.gateway.calls.values())).bridge
        started = time.monotonic()
        await call.send_audio(interjection.audio, silence(1200))
        await wait_until(lambda: bool(bridge.barge_in.decisions) or bridge.stats.barge_ins > 0, timeout=10,
                         what="an interruption decision")
        decisions = list(bridge.barge_in.decisions)
        if decisions:
            decision, _positions = decisions[-1]
            out.decided_real, out.reason, out.decided_after_ms = decision.real, decision.reason, decision.after_ms
        elif bridge.stats.barge_ins:  # the immediate policy: every speech start is a real interruption
            out.decided_real, out.reason = True, "immediate"
        if bridge.stats.barge_in_reactions_ms:
            out.reaction_ms = bridge.stats.barge_in_reactions_ms[-1]
        if out.decided_real:
            await session.wait_until(lambda: session.responses_done >= 2, timeout_s=15)
            await wait_until(lambda: len(call.playback.media) > 0 and call.playback.buffered_bytes == 0
                             and not bridge.bot.playing, timeout=15, what="the answer played")
        else:
            await wait_until(lambda: not bridge.bot.playing and session.responses_done >= 1
                             and call.playback.buffered_bytes == 0, timeout=reply_ms / 1000 + 15,
                             what="the reply played to its end")
        call.playback.advance(time.monotonic())
        received = session.received
        out.cancels = sum(1 for r in received if r.type == "response.cancel" and r.at >= started)
        out.creates_after = sum(1 for r in received if r.type == "response.create" and r.at >= started)
        out.deleted_items = sum(1 for r in received if r.type == "conversation.item.delete")
        clears = call.playback.clears
        first_clear = clears[0] if clears else None
        played_at_clear = first_clear.played_total / 8 if first_clear else 0.0
        out.truncates = [(t.audio_end_ms, played_at_clear) for t in session.truncates]
        out.answered = out.decided_real is True and session.responses_done >= 2
        second = [s.at for s in session.sent if s.type == "response.created"][1:2]
        _measure_playback(out, call, wire, first_clear, second[0] if second else None)
        out.violations = [*realtime.violations, *call.violations]
        await call.hang_up()
    return out


def _measure_playback(out: Outcome, call: Any, wire: bytes, first_clear: Any, answer_at: float | None) -> None:
    """Heard share, seam and gap from the caller's own playback timeline; audio of the model's
    answer (it replays the same chirp), from ``answer_at`` on, is not the interrupted reply."""
    segments = list(call.playback._segments)  # (timeline sample, bytes) of what actually played
    if answer_at is not None:
        cut = round((answer_at - call.playback.origin) * 8000)
        segments = [(sample, data[: max(0, cut - sample)]) for sample, data in segments if sample < cut]
    covered = np.zeros(len(wire), dtype=bool)
    located: list[tuple[int, int, int]] = []  # (timeline sample, reply offset, length)
    for sample, data in segments:
        position, offset = 0, 0
        while position < len(data):  # a segment may hold a seam (resumed with no gap)
            offset = _locate(wire, bytes(data[position:]))
            if offset < 0:
                break
            length = 0
            while position + length < len(data) and offset + length < len(wire) \
                    and data[position + length] == wire[offset + length]:
                length += 1
            if length == 0:
                break
            covered[offset:offset + length] = True
            located.append((sample + position, offset, length))
            position += length
    out.heard_share = float(covered.sum()) / max(1, len(wire))
    if first_clear is None or len(located) < 2:
        return
    clear_sample = round((first_clear.at - call.playback.origin) * 8000)
    before = [s for s in located if s[0] + s[2] <= clear_sample + 8]
    after = [s for s in located if s not in before]
    if before and after:
        end_before = before[-1][1] + before[-1][2]
        out.seam_ms = (after[0][1] - end_before) / 8
        resumed = [m.at for m in call.playback.media if m.at > first_clear.at]
        if resumed:
            out.gap_ms = (resumed[0] - first_clear.at) * 1000


async def run_many(interjections: list[Interjection], concurrency: int = 3, **kwargs: Any) -> list[Outcome]:
    """``run_scenario`` for each, ``concurrency`` at a time, results in input order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Interjection) -> Outcome:
        async with gate:
            return await run_scenario(item, **kwargs)

    return list(await asyncio.gather(*(one(item) for item in interjections)))
