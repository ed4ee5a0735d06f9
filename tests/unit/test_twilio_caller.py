"""The Twilio caller stand-in: its playback/mark/clear model (pure), frame validation, speech synthesis,
and one end-to-end run against a minimal Twilio-protocol gateway on 127.0.0.1 (real HTTP + WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from service.providers.base import DtmfReceived, MediaReceived, ProtocolError, StreamStarted, StreamStopped
from service.providers.tokens import StreamTokenError, mint_stream_token, verify_stream_token
from service.providers.twilio.dialect import (
    STREAM_TOKEN_PARAMETER,
    TwilioDialect,
    after_stream_twiml,
    connect_stream_twiml,
    validate_twilio_request,
)
from tests.standins import speech as speech_module
from tests.standins.speech import (
    active_ms,
    mulaw_decode,
    mulaw_frames,
    parse_streamed_wav,
    rms_dbfs,
    silence,
    silence_frames,
    synthesize,
)
from tests.standins.twilio_caller import (
    CallRejected,
    PlaybackBuffer,
    TwilioCallerStandIn,
    parse_twiml,
    validate_gateway_frame,
)

# --- PlaybackBuffer (pure) ----------------------------------------------------------------------------


def test_mark_on_empty_buffer_is_due_at_once() -> None:
    buf = PlaybackBuffer(origin=100.0)
    reached = buf.add_mark(100.5, "m0")
    assert [m.name for m in reached] == ["m0"]
    assert reached[0].due_at == 100.5 and reached[0].played_total == 0 and not reached[0].cleared


def test_marks_are_reached_when_preceding_audio_has_played() -> None:
    buf = PlaybackBuffer(origin=0.0)
    assert buf.add_media(1.0, b"\x01" * 1600) == []  # 200 ms
    assert buf.add_mark(1.0, "a") == []
    buf.add_media(1.01, b"\x02" * 800)  # 100 ms more, queued behind
    assert buf.add_mark(1.01, "b") == []
    assert buf.next_mark_due() == pytest.approx(1.2)
    assert buf.advance(1.1) == [] and buf.played_total == 800
    reached = buf.advance(1.25)
    assert [m.name for m in reached] == ["a"] and reached[0].due_at == pytest.approx(1.2)
    assert reached[0].played_total == 1600
    assert buf.next_mark_due() == pytest.approx(1.3)
    reached = buf.advance(5.0)
    assert [m.name for m in reached] == ["b"] and reached[0].due_at == pytest.approx(1.3)
    assert buf.played_total == 2400 and buf.buffered_bytes == 0 and buf.next_mark_due() is None


def test_clear_echoes_reached_marks_then_flushes_pending_ones() -> None:
    buf = PlaybackBuffer(origin=0.0)
    for i in range(5):  # five 40 ms chunks, a mark after each
        buf.add_media(0.0, bytes([i]) * 320)
        buf.add_mark(0.0, f"m{i}")
    reached = buf.clear(0.1)  # 800 bytes played: m0 (320) and m1 (640) were reached before the clear
    assert [(m.name, m.cleared) for m in reached] == [
        ("m0", False), ("m1", False), ("m2", True), ("m3", True), ("m4", True)]
    assert [m.due_at for m in reached[2:]] == [0.1, 0.1, 0.1]
    assert buf.played_total == 800 and buf.discarded_total == 800 and buf.buffered_bytes == 0
    assert buf.clears[-1].flushed_marks == ("m2", "m3", "m4") and buf.clears[-1].played_total == 800
    # Exactly what was heard of chunk 2 (positions 640..960): 160 bytes; chunk 3: nothing.
    assert buf.played_of_range(640, 960) == 160 and buf.played_of_range(960, 1280) == 0
    assert buf.played_of_range(0, 1600) == 800
    # Audio after a clear starts a new run at its arrival time.
    buf.add_media(0.5, b"\x09" * 160)
    assert buf.add_mark(0.5, "after") == []
    assert [m.name for m in buf.advance(0.52)] == ["after"]
    assert buf.played_of_range(1600, 1760) == 160


def test_clear_on_empty_buffer_is_a_no_op_record() -> None:
    buf = PlaybackBuffer(origin=0.0)
    assert buf.clear(1.0) == []
    assert buf.clears[0].discarded_bytes == 0 and buf.clears[0].flushed_marks == ()


def test_underrun_leaves_a_gap_on_the_timeline() -> None:
    buf = PlaybackBuffer(origin=10.0)
    buf.add_media(10.0, b"\x10" * 800)  # plays 10.0-10.1
    buf.add_media(10.5, b"\x20" * 400)  # arrives after the underrun: plays 10.5-10.55
    buf.advance(11.0)
    timeline = buf.played_mulaw()
    assert len(timeline) == 4000 + 400
    assert timeline[:800] == b"\x10" * 800
    assert timeline[800:4000] == b"\xff" * 3200
    assert timeline[4000:] == b"\x20" * 400
    assert len(buf.played_mulaw(total_samples=100)) == 100


def test_back_to_back_audio_plays_without_gap() -> None:
    buf = PlaybackBuffer(origin=0.0)
    buf.add_media(0.0, b"\x01" * 800)
    buf.add_media(0.05, b"\x02" * 800)  # arrives while the first still plays
    buf.advance(1.0)
    assert buf.played_mulaw() == b"\x01" * 800 + b"\x02" * 800


ops = st.lists(
    st.tuples(st.sampled_from(["media", "mark", "clear", "advance"]),
              st.floats(min_value=0.0, max_value=0.2), st.integers(min_value=1, max_value=2000)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_playback_model_invariants(sequence: list[tuple[str, float, int]]) -> None:
    buf = PlaybackBuffer(origin=0.0)
    now = 0.0
    reached: list[Any] = []
    for index, (op, step, size) in enumerate(sequence):
        now += step
        if op == "media":
            reached += buf.add_media(now, bytes([index % 250]) * size)
        elif op == "mark":
            reached += buf.add_mark(now, f"m{index}")
        elif op == "clear":
            reached += buf.clear(now)
        else:
            reached += buf.advance(now)
        assert buf.played_total + buf.discarded_total + buf.buffered_bytes == buf.queued_total
        assert buf.played_total <= 8000 * now + 1
    reached += buf.clear(now + 100)
    names = [m.name for m in reached]
    assert names == [m.name for m in buf.marks]  # every mark exactly once, in queue order
    dues = [m.due_at for m in reached]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(dues))
    for mark in reached:
        assert mark.due_at >= mark.received_at - 1e-9
        if not mark.cleared:
            assert mark.played_total == buf.played_of_range(0, mark.position)
    timeline = buf.played_mulaw()
    assert len(timeline) >= buf.played_total
    assert buf.played_of_range(0, buf.queued_total) == buf.played_total


# --- frame validation and TwiML parsing ---------------------------------------------------------------

SID = "MZ" + "ab" * 16


@pytest.mark.parametrize(("frame", "problem"), [
    (b"\x00", "binary frame"),
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    (json.dumps({"event": "start", "streamSid": SID}), "unexpected event"),
    (json.dumps({"event": "clear"}), "streamSid"),
    (json.dumps({"event": "clear", "streamSid": "MZother"}), "streamSid"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {}}), "payload missing"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "!!"}}), "not valid base64"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "UklGRiQAAABXQVZF"}}), "WAV header"),
    (json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": 1}}), "mark.name"),
])
def test_gateway_frame_violations(frame: str | bytes, problem: str) -> None:
    _, problems = validate_gateway_frame(frame, SID)
    assert any(problem in p for p in problems), problems


def test_valid_gateway_frames_pass() -> None:
    dialect = TwilioDialect()
    dialect.parse(json.dumps({"event": "start", "streamSid": SID, "start": {
        "callSid": "CA" + "1" * 32, "accountSid": "AC" + "1" * 32,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    for frame in (dialect.build_media(b"\xff" * 160), dialect.build_mark("m1"), dialect.build_clear()):
        msg, problems = validate_gateway_frame(frame, SID)
        assert problems == [] and msg is not None
    assert validate_gateway_frame(dialect.build_clear(), None)[1] == ["'clear' sent before start"]


def test_parse_twiml_reads_the_connect_document() -> None:
    verbs = parse_twiml(connect_stream_twiml("http://127.0.0.1:9", "tok", {"a": "b"}))
    assert [v.name for v in verbs] == ["Connect", "Redirect"]
    stream = verbs[0].children[0]
    assert stream.attrs["url"] == "ws://127.0.0.1:9/twilio/media"
    assert [(p.attrs["name"], p.attrs["value"]) for p in stream.children] == [(STREAM_TOKEN_PARAMETER, "tok"), ("a", "b")]
    assert verbs[1].text == "http://127.0.0.1:9/twilio/after-stream"
    with pytest.raises(ValueError):
        parse_twiml("<NotResponse/>")
    with pytest.raises(ValueError):
        parse_twiml("not xml")


# --- speech ------------------------------------------------------------------------------------------


def test_espeak_speech_is_audible_and_plausibly_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_SPEECH_CACHE", str(tmp_path))
    short = synthesize("Hello.")
    long = synthesize("Hello, I have been waiting for an hour and I need help with my bill.")
    for pcm in (short, long):
        assert pcm.dtype == np.int16 and rms_dbfs(pcm) > -35
    # ~14 words at 165 wpm: several seconds of mostly voiced audio, far longer than one word.
    assert 2.5 < len(long) / 8000 < 8.0
    assert active_ms(long) > 0.5 * len(long) / 8
    assert len(long) > 3 * len(short)
    # Telephone band: most energy between 200 and 3400 Hz.
    spectrum = np.abs(np.fft.rfft(long.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(long), 1 / 8000)
    band = spectrum[(freqs > 200) & (freqs < 3400)].sum() / spectrum.sum()
    assert band > 0.7
    # Cached on disk: the second call reads the file and returns identical samples.
    assert len(list(tmp_path.glob("espeak-*.npy"))) == 2
    # A cache hit never starts espeak-ng again (checked by making that impossible, not by timing it).
    def no_espeak(*args: object, **kwargs: object) -> None:
        raise AssertionError("espeak-ng ran although the text was cached")

    monkeypatch.setattr(speech_module, "_espeak", no_espeak)
    again = synthesize("Hello, I have been waiting for an hour and I need help with my bill.")
    assert np.array_equal(again, long)


def test_piper_engine_produces_speech(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_SPEECH_CACHE", str(tmp_path))
    pcm = synthesize("I want to speak to a person.", engine="piper")
    assert 0.8 < len(pcm) / 8000 < 5.0 and rms_dbfs(pcm) > -30 and active_ms(pcm) > 500


def test_streamed_wav_with_bogus_sizes_is_read_to_the_end() -> None:
    samples = np.arange(-500, 500, dtype=np.int16)
    header = b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16) + b"data" + struct.pack("<I", 0x7FFFFFFF)
    pcm, rate = parse_streamed_wav(header + samples.tobytes())
    assert rate == 22050 and np.array_equal(pcm, samples)
    with pytest.raises(ValueError):
        parse_streamed_wav(b"RIFX")


def test_frames_and_silence() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(810) / 8000)).astype(np.int16)
    frames = mulaw_frames(tone)
    assert len(frames) == 6 and {len(f) for f in frames} == {160}
    decoded = mulaw_decode(b"".join(frames))
    assert abs(rms_dbfs(decoded[:810]) - rms_dbfs(tone)) < 0.5  # G.711 keeps the level
    assert decoded[810:].tolist() == [0] * (960 - 810)  # padding is silence
    assert silence_frames(50) == [b"\xff" * 160] * 3
    assert len(silence(250)) == 2000 and not silence(250).any()


# --- end to end against a minimal Twilio-protocol gateway --------------------------------------------

AUTH = "test-auth-token-0123456789abcdef"
SECRET = b"stream-secret"
TONE = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)  # 1 s, -13 dBFS


@dataclass
class MiniGateway:
    """Answers like a callbridge replica: signed webhook -> token TwiML; stream: token gate, a bot that
    queues 1 s of tone (40 ms chunks + marks), DTMF 1 = barge-in clear, 9 = close, 5 = send bad frames."""

    public_url: str = ""
    inbound: list[MediaReceived] = field(default_factory=list)
    inbound_at: list[float] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    sequence_numbers: list[int] = field(default_factory=list)
    after_stream_calls: int = 0

    def app(self) -> Starlette:
        async def voice(request: Request) -> Response:
            form = await request.form()
            if not validate_twilio_request(AUTH, self.public_url, "/twilio/voice", form,
                                           request.headers.get("X-Twilio-Signature")):
                return Response("bad signature", status_code=403)
            token = mint_stream_token(SECRET, str(form["CallSid"]), 60)
            return Response(connect_stream_twiml(self.public_url, token, {"tenant": "acme"}),
                            media_type="application/xml")

        async def after(request: Request) -> Response:
            form = await request.form()
            if not validate_twilio_request(AUTH, self.public_url, "/twilio/after-stream", form,
                                           request.headers.get("X-Twilio-Signature")):
                return Response("bad signature", status_code=403)
            self.after_stream_calls += 1
            return Response(after_stream_twiml(True, "support", ""), media_type="application/xml")

        async def media(ws: WebSocket) -> None:
            await ws.accept()
            dialect = TwilioDialect()
            try:
                while True:
                    text = await ws.receive_text()
                    try:
                        event = dialect.parse(text)
                    except ProtocolError:
                        continue
                    self.events.append(event)
                    self.sequence_numbers.append(dialect.last_sequence_number)
                    if isinstance(event, StreamStarted):
                        try:
                            verify_stream_token(SECRET, event.custom_parameters.get(STREAM_TOKEN_PARAMETER),
                                                event.call_id)
                        except StreamTokenError:
                            self.close_codes.append(1008)
                            await ws.close(1008)
                            return
                        encoded = b"".join(mulaw_frames(TONE))
                        for i in range(0, len(encoded), 320):
                            await ws.send_text(dialect.build_media(encoded[i:i + 320]))
                            await ws.send_text(dialect.build_mark(f"tone:{i + 320}"))
                    elif isinstance(event, MediaReceived):
                        self.inbound.append(event)
                        self.inbound_at.append(asyncio.get_running_loop().time())
                    elif isinstance(event, DtmfReceived):
                        if event.digit == "1":
                            await ws.send_text(dialect.build_clear())
                        elif event.digit == "5":
                            await ws.send_text('{"event":"media","streamSid":"MZwrong","media":{"payload":"UklGRg=="}}')
                        elif event.digit == "9":
                            self.close_codes.append(1000)
                            await ws.close(1000)
                            return
                    elif isinstance(event, StreamStopped):
                        return
            except WebSocketDisconnect:
                return

        return Starlette(routes=[Route("/twilio/voice", voice, methods=["POST"]),
                                 Route("/twilio/after-stream", after, methods=["POST"]),
                                 WebSocketRoute("/twilio/media", media)])


@pytest.fixture
async def gateway() -> AsyncIterator[MiniGateway]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # bound and listening before the server task runs: connects queue, no race
    gw = MiniGateway(public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(gw.app(), lifespan="off", log_level="warning", ws="websockets-sansio"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield gw
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


async def test_call_plays_bot_audio_echoes_marks_and_honours_clear(gateway: MiniGateway, tmp_path: Path) -> None:
    speech = synthesize("Hi, I need help.")
    async with TwilioCallerStandIn(gateway.public_url, AUTH) as twilio:
        call = await twilio.place_call(from_="+15551230000")
        async with call:
            assert call.parameters["tenant"] == "acme" and STREAM_TOKEN_PARAMETER in call.parameters
            speaking = call.queue_audio(speech)
            await call.wait_mark_echoes(5, timeout_s=10)  # >= 200 ms of tone played
            await call.send_dtmf("1")  # the mini gateway answers with clear
            await call.wait_for(lambda: len(call.playback.clears) == 1, timeout_s=10)
            await call.wait_mark_echoes(25, timeout_s=10)
            await asyncio.wait_for(speaking, 15)
            await call.send_dtmf("9")  # gateway closes the socket -> Twilio follows the <Redirect>
            assert await call.wait_closed(timeout_s=10) == 1000

    assert call.violations == []
    playback = call.playback
    clear = playback.clears[0]
    marks = playback.marks
    assert [m.name for m in marks] == [f"tone:{i}" for i in range(320, 8001, 320)]
    played = [m for m in marks if not m.cleared]
    flushed = [m for m in marks if m.cleared]
    assert len(played) >= 5 and flushed and [m.name for m in flushed] == list(clear.flushed_marks)
    first_audio = playback.media[0].at
    latencies = []
    for mark in played:  # echoed when playback reached the mark: position / 8000 s after the audio began
        assert mark.due_at == pytest.approx(first_audio + mark.position / 8000, abs=1e-6)
        assert mark.echoed_at is not None and mark.due_at is not None and mark.echoed_at >= mark.due_at
        latencies.append(mark.echoed_at - mark.due_at)
    for mark in flushed:
        assert mark.echoed_at is not None and mark.echoed_at >= clear.at
    # What was played = exactly the audio between the first chunk's arrival and the clear.
    assert clear.played_total == pytest.approx((clear.at - first_audio) * 8000, abs=2)
    assert playback.played_total == clear.played_total == playback.played_of_range(0, 8000)
    bot = call.played_audio()
    start = round((first_audio - call.origin) * 8000)
    heard = bot[start:start + playback.played_total]
    assert abs(rms_dbfs(heard) - rms_dbfs(TONE)) < 0.5
    assert not bot[start + playback.played_total:].any()

    # The gateway saw Twilio-exact caller media: chunks 1..n, 20 ms timestamps, real-time pacing.
    # sequenceNumber counts every message (start, media, mark echoes, dtmf) from 1 without gaps.
    assert gateway.sequence_numbers == [0, *range(1, len(gateway.sequence_numbers))]  # 0 = connected
    assert len(gateway.events) > len(gateway.inbound) + 25
    chunks = [m.chunk for m in gateway.inbound]
    assert chunks == list(range(1, len(chunks) + 1))
    assert [m.timestamp_ms for m in gateway.inbound] == [20 * i for i in range(len(chunks))]
    assert all(len(m.payload) == 160 for m in gateway.inbound)
    span = gateway.inbound_at[-1] - gateway.inbound_at[0]
    assert span == pytest.approx((len(chunks) - 1) * 0.02, abs=0.06)
    sent = b"".join(m.payload for m in gateway.inbound)
    assert sent[:len(b"".join(mulaw_frames(speech)))] == b"".join(mulaw_frames(speech))
    print(f"mark echo latency max {max(latencies) * 1000:.1f} ms; pacing lag max {call.pacing_lag_max_s * 1000:.1f} ms;"
          f" {len(chunks)} frames over {span:.3f} s")

    # After the socket closed, the signed <Redirect> was followed and the escalation TwiML received.
    assert gateway.after_stream_calls == 1 and call.after_stream_status == 200
    assert [v.name for v in parse_twiml(call.after_stream_twiml or "")] == ["Enqueue"]

    # Stereo WAV: caller speech left from t=0, bot tone right where it played.
    path = call.write_wav(tmp_path / "call.wav")
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert abs(rms_dbfs(stereo[:len(speech), 0]) - rms_dbfs(speech)) < 1.0
    assert abs(rms_dbfs(stereo[start:start + playback.played_total, 1]) - rms_dbfs(TONE)) < 0.5


async def test_stream_token_faults_and_unsigned_webhook(gateway: MiniGateway) -> None:
    async with TwilioCallerStandIn(gateway.public_url, AUTH) as twilio:
        with pytest.raises(CallRejected) as rejected:
            await twilio.place_call(signature=None)
        assert rejected.value.status == 403
        with pytest.raises(CallRejected):
            await twilio.place_call(signature="forged")

        call_sid = "CA" + "1" * 32
        expired = mint_stream_token(SECRET, call_sid, 10, now=time.time() - 3600)
        cases: dict[str, dict[str, Any]] = {
            "omitted": {"parameter_overrides": {STREAM_TOKEN_PARAMETER: None}},
            "forged": {"parameter_overrides": {STREAM_TOKEN_PARAMETER: mint_stream_token(b"x", call_sid, 60)}},
            "expired": {"parameter_overrides": {STREAM_TOKEN_PARAMETER: expired}, "call_sid": call_sid},
            "other call": {"start_call_sid": "CA" + "2" * 32},
        }
        for name, kwargs in cases.items():
            call = await twilio.place_call(continuous_media=False, **kwargs)
            async with call:
                assert await call.wait_closed(timeout_s=10) == 1008, name
            assert call.violations == [], name
            # A rejected stream still follows the <Redirect> (Twilio continues the TwiML).
            assert call.after_stream_status == 200
    assert gateway.close_codes == [1008] * 4


async def test_hang_up_sends_stop_and_skips_the_redirect(gateway: MiniGateway) -> None:
    async with TwilioCallerStandIn(gateway.public_url, AUTH) as twilio:
        call = await twilio.place_call()
        async with call:
            await call.wait_mark_echoes(1, timeout_s=10)
            await call.hang_up()
            with pytest.raises(ConnectionError):
                await call.send_audio(silence(100))
        assert call.closed and call.after_stream_twiml is None
    assert isinstance(gateway.events[-1], StreamStopped)
    assert gateway.after_stream_calls == 0


async def test_protocol_violations_by_the_gateway_are_recorded(gateway: MiniGateway) -> None:
    async with TwilioCallerStandIn(gateway.public_url, AUTH) as twilio:
        call = await twilio.place_call(continuous_media=False)
        async with call:
            await call.send_dtmf("5")
            await call.wait_for(lambda: len(call.violations) >= 2, timeout_s=10)
    assert any("streamSid" in v for v in call.violations)
    assert any("WAV header" in v for v in call.violations)


def test_missing_espeak_fails_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.standins.speech as speech_module

    monkeypatch.setenv("CB_SPEECH_CACHE", str(tmp_path))
    monkeypatch.setattr(speech_module.shutil, "which", lambda _name: None)
    with pytest.raises(speech_module.SpeechUnavailable, match="apt-get install -y espeak-ng"):
        synthesize("never cached before")


def test_mark_after_clear_on_an_idle_buffer_is_due_at_once() -> None:
    """Regression (found by hypothesis): positions of cleared bytes must not delay the next mark."""
    buf = PlaybackBuffer(origin=0.0)
    buf.add_media(0.0, b"\x01\x02")
    buf.clear(0.0)
    (first,) = buf.add_mark(0.0, "after-clear")
    assert first.due_at == 0.0 and first.played_total == 0
    buf.add_media(0.0, b"\x03")
    assert buf.add_mark(0.0, "after-one-byte") == []
    (second,) = buf.clear(100.0)
    assert second.due_at is not None and second.due_at >= first.due_at
