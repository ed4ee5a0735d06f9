"""``ProviderPump`` with a real ``CallBridge`` (Twilio and GA dialects): the synchronous hot path for
media and mark echoes, the queue for everything else, order across both paths, pause/resume of the
socket at the queue limit, the end of the stream, and failures raised from ``run``.

The socket is a stand-in for the far side (``ServerWebSocket`` in production): it records the handler
and the pause/resume calls; the tests deliver frames by calling the registered ``on_message``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from service.audio.resample import CallerToModel
from service.call.bridge import CallBridge, CallState
from service.call.pump import ProviderPump, PushSocket
from service.realtime.events import SessionConfig
from service.realtime.protocol import GaDialect
from tests.unit.test_bridge import CALL, STREAM, started_twilio_dialect

TIMEOUT = 2.0


class PushSocketStandIn:
    """The far side of a push socket: keeps the handler, records pause/resume."""

    def __init__(self) -> None:
        self.on_message: Callable[[bytes], None] | None = None
        self.on_end: Callable[[], None] | None = None
        self.calls: list[str] = []
        self.registered = asyncio.Event()
        self.on_resume: Callable[[], None] | None = None

    def set_message_handler(self, on_message: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        self.on_message, self.on_end = on_message, on_end
        self.calls.append("set")
        self.registered.set()

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")
        if self.on_resume is not None:
            self.on_resume()

    def deliver(self, frame: bytes) -> None:
        assert self.on_message is not None
        self.on_message(frame)

    def end(self) -> None:
        assert self.on_end is not None
        self.on_end()


class ModelSide:
    """The Realtime socket: an immediate sender (``ImmediateSend``) and the async ``send``, one log."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (path: "now" | "async", event)
        self.ready = True  # what can_send_now() answers
        self.gate: asyncio.Event | None = None  # when set up, async sends wait for it
        self.waiting = asyncio.Event()  # an async send is waiting at the gate
        self.fail_now: Exception | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def can_send_now(self) -> bool:
        return self.ready

    def send_now(self, text: str) -> None:
        if self.fail_now is not None:
            raise self.fail_now
        self._record("now", text)

    async def send(self, text: str) -> None:
        if self.gate is not None and not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        self._record("async", text)

    def _record(self, path: str, text: str) -> None:
        self.sent.append((path, json.loads(text)))
        for count, future in self._waiters:
            if len(self.sent) >= count and not future.done():
                future.set_result(None)

    async def wait_for(self, count: int) -> None:
        """Until ``count`` events have been sent in total (bounded)."""
        if len(self.sent) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, future))
        async with asyncio.timeout(TIMEOUT):
            await future

    def types(self) -> list[str]:
        return [event["type"] for _path, event in self.sent]

    def appends(self) -> list[tuple[str, bytes]]:
        """(path, PCM16 24 kHz) of every input_audio_buffer.append, in send order."""
        return [(path, base64.b64decode(event["audio"])) for path, event in self.sent
                if event["type"] == "input_audio_buffer.append"]


def resampled(payloads: list[bytes]) -> list[bytes]:
    """What the model must receive for these caller frames, in this order (the resampler has state)."""
    inbound = CallerToModel()
    return [inbound.process(payload) for payload in payloads]


def caller_payload(i: int) -> bytes:
    """A distinct 20 ms mu-law frame per ``i`` (a different level each)."""
    return bytes([(i * 37 + 5) % 256]) * 160


class Call:
    """A real CallBridge for one Twilio stream, its ProviderPump, and the recorded far ends."""

    def __init__(self, limit: int = 64) -> None:
        self.twilio = started_twilio_dialect()
        self.seq = 1
        self.model = ModelSide()
        self.to_twilio: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.bridge = CallBridge(
            call_id=CALL, provider=self.twilio, realtime=GaDialect(),
            session_config=SessionConfig(instructions="be nice"),
            to_provider=self._send_twilio, close_provider=self._close, greeting=False,
            max_malformed_frames=3,
        )
        self.socket = PushSocketStandIn()
        assert isinstance(self.socket, PushSocket)
        self.feed = ProviderPump(self.bridge, self.socket, limit=limit)
        self.run: asyncio.Task[None] | None = None

    async def _send_twilio(self, text: str) -> None:
        self.to_twilio.append(json.loads(text))

    async def _close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    async def start_feed(self) -> None:
        self.run = asyncio.create_task(self.feed.run())
        async with asyncio.timeout(TIMEOUT):
            await self.socket.registered.wait()

    async def finish_feed(self) -> None:
        """End the stream and wait for ``run`` to return (it drains the queue first)."""
        assert self.run is not None
        self.socket.end()
        async with asyncio.timeout(TIMEOUT):
            await self.run

    async def attach(self) -> None:
        await self.bridge.model.attach(self.model.send, self.model)

    async def realtime(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", "evt")
        await self.bridge.on_realtime_message(json.dumps(event))

    async def configure(self) -> None:
        """Connected and configured as a session does it: session.update, then live audio."""
        await self.attach()
        await self.realtime({"type": "session.created", "session": {}})
        await self.realtime({"type": "session.updated", "session": {}})
        assert self.bridge.state is CallState.LISTENING

    def frame(self, event: str, **fields: Any) -> bytes:
        self.seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self.seq), "streamSid": STREAM, **fields}).encode()

    def media(self, payload: bytes) -> bytes:
        return self.frame("media", media={"track": "inbound", "chunk": str(self.seq), "timestamp": "0",
                                          "payload": base64.b64encode(payload).decode()})

    def dtmf(self, digit: str) -> bytes:
        return self.frame("dtmf", dtmf={"track": "inbound_track", "digit": digit})


@pytest.fixture
async def make_call() -> AsyncIterator[Callable[..., Call]]:
    """Calls whose feed task is cancelled at teardown if a test failed before it ended."""
    calls: list[Call] = []

    def make(limit: int = 64) -> Call:
        calls.append(Call(limit))
        return calls[-1]

    yield make
    for c in calls:
        if c.run is not None and not c.run.done():
            c.run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await c.run


@pytest.fixture
def call(make_call: Callable[..., Call]) -> Call:
    return make_call()


async def test_media_before_configuration_is_queued_then_prebuffered_and_live_media_is_sent_synchronously(
    call: Call,
) -> None:
    await call.start_feed()
    await call.attach()  # connected, session.update not sent yet: caller audio must be held
    held = [caller_payload(0), caller_payload(1)]
    for payload in held:
        call.socket.deliver(call.media(payload))
    assert call.model.sent == []  # nothing forwarded synchronously: the session is not configured
    call.socket.deliver(call.dtmf("5"))  # queued behind the held frames; reaches the model via run()
    await call.model.wait_for(1)
    assert call.model.types() == ["conversation.item.create"]
    assert call.bridge.stats.frames_in == 2  # both frames were handled by run() (prebuffered)

    await call.realtime({"type": "session.created", "session": {}})
    assert call.model.types()[1:] == ["session.update", "input_audio_buffer.append", "input_audio_buffer.append"]
    await call.realtime({"type": "session.updated", "session": {}})

    live = caller_payload(2)
    before = len(call.model.sent)
    call.socket.deliver(call.media(live))
    # no await since on_message: the append went out inside the socket callback
    assert len(call.model.sent) == before + 1
    assert call.model.sent[-1][0] == "now"
    assert call.model.appends() == [("async", pcm) for pcm in resampled(held)] + [
        ("now", resampled([*held, live])[2])
    ]
    assert call.bridge.stats.frames_in == 3
    await call.finish_feed()


async def test_back_pressured_model_queues_frames_and_later_frames_wait_behind_them(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    payloads = [caller_payload(i) for i in range(6)]
    call.socket.deliver(call.media(payloads[0]))  # sent at once
    assert [path for path, _ in call.model.appends()] == ["now"]

    call.model.ready = False  # the model socket's write buffer is full
    call.socket.deliver(call.media(payloads[1]))
    call.socket.deliver(call.media(payloads[2]))
    call.model.ready = True  # writable again, but frames 1-2 are still queued
    call.socket.deliver(call.media(payloads[3]))
    call.socket.deliver(call.media(payloads[4]))
    assert len(call.model.appends()) == 1  # 3 and 4 did not overtake the queued frames
    await call.model.wait_for(len(call.model.sent) + 4)

    call.socket.deliver(call.media(payloads[5]))  # queue drained: the hot path again
    appends = call.model.appends()
    assert [path for path, _ in appends] == ["now", "async", "async", "async", "async", "now"]
    assert [pcm for _, pcm in appends] == resampled(payloads)
    assert call.bridge.stats.frames_in == 6
    await call.finish_feed()


async def test_dtmf_between_media_frames_reaches_the_model_between_their_appends(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    start = len(call.model.sent)
    payloads = [caller_payload(i) for i in range(3)]
    call.socket.deliver(call.media(payloads[0]))
    call.socket.deliver(call.dtmf("7"))
    call.socket.deliver(call.media(payloads[1]))  # queued behind the DTMF item
    call.socket.deliver(call.media(payloads[2]))
    await call.model.wait_for(start + 4)
    sent = call.model.sent[start:]
    assert [(path, event["type"]) for path, event in sent] == [
        ("now", "input_audio_buffer.append"),
        ("async", "conversation.item.create"),
        ("async", "input_audio_buffer.append"),
        ("async", "input_audio_buffer.append"),
    ]
    assert "7" in sent[1][1]["item"]["content"][0]["text"]
    assert [pcm for _, pcm in call.model.appends()] == resampled(payloads)
    assert call.bridge.stats.dtmf == 1
    await call.finish_feed()


async def test_socket_reading_pauses_at_the_limit_and_resumes_at_a_quarter(make_call: Callable[..., Call]) -> None:
    call = make_call(limit=8)
    await call.configure()
    await call.start_feed()
    call.model.ready = False  # every frame goes through the queue
    call.model.gate = asyncio.Event()  # and the first one stays in flight
    sent_at_resume: list[int] = []
    call.socket.on_resume = lambda: sent_at_resume.append(len(call.model.appends()))
    payloads = [caller_payload(i) for i in range(10)]
    for payload in payloads[:7]:
        call.socket.deliver(call.media(payload))
    assert call.socket.calls == ["set"]
    call.socket.deliver(call.media(payloads[7]))  # the 8th queued frame
    assert call.socket.calls == ["set", "pause"]
    for payload in payloads[8:]:  # frames already read by the socket still arrive; no second pause
        call.socket.deliver(call.media(payload))
    assert call.socket.calls == ["set", "pause"]
    async with asyncio.timeout(TIMEOUT):
        await call.model.waiting.wait()
    assert call.model.appends() == []

    call.model.gate.set()
    await call.model.wait_for(len(call.model.sent) + 10)
    assert call.socket.calls == ["set", "pause", "resume"]
    assert sent_at_resume == [8]  # 10 queued - 8 handled = 2 = limit // 4
    await call.finish_feed()
    assert call.socket.calls == ["set", "pause", "resume"]
    assert [pcm for _, pcm in call.model.appends()] == resampled(payloads)
    assert {path for path, _ in call.model.appends()} == {"async"}


async def test_run_returns_after_the_end_only_once_the_queue_is_drained(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    assert call.run is not None
    call.model.ready = False
    call.model.gate = asyncio.Event()
    payloads = [caller_payload(i) for i in range(3)]
    for payload in payloads:
        call.socket.deliver(call.media(payload))
    async with asyncio.timeout(TIMEOUT):
        await call.model.waiting.wait()  # run() is inside the first frame's send
    call.socket.end()
    call.socket.deliver(call.media(caller_payload(99)))  # after the end: ignored
    assert not call.run.done()
    call.model.gate.set()
    async with asyncio.timeout(TIMEOUT):
        await call.run
    assert call.run.result() is None
    assert [pcm for _, pcm in call.model.appends()] == resampled(payloads)
    assert call.bridge.stats.frames_in == 3


async def test_run_returns_at_once_when_the_stream_ends_with_nothing_queued(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    call.socket.deliver(call.media(caller_payload(0)))
    await call.finish_feed()
    assert [path for path, _ in call.model.appends()] == ["now"]


async def test_malformed_frame_goes_through_run_and_is_counted_in_order(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    start = len(call.model.sent)
    payloads = [caller_payload(i) for i in range(2)]
    call.socket.deliver(call.media(payloads[0]))
    call.socket.deliver(b"not json")
    assert call.bridge.stats.malformed_frames == 0  # not handled in the socket callback
    call.socket.deliver(call.media(payloads[1]))  # waits behind the malformed frame
    await call.finish_feed()
    assert call.bridge.stats.malformed_frames == 1
    assert [path for path, _ in call.model.sent[start:]] == ["now", "async"]
    assert [pcm for _, pcm in call.model.appends()] == resampled(payloads)
    assert call.closed == [] and call.bridge.state is CallState.LISTENING


async def test_mark_echo_is_applied_inside_the_socket_callback(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    await call.realtime({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    pcm = (np.sin(np.arange(24 * 100) * 0.1) * 3000).astype("<i2").tobytes()
    await call.realtime({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "item_A",
                         "output_index": 0, "content_index": 0, "delta": base64.b64encode(pcm).decode()})
    assert [event["event"] for event in call.to_twilio] == ["media", "mark"]
    assert call.bridge.state is CallState.BOT_SPEAKING
    call.socket.deliver(call.frame("mark", mark={"name": call.to_twilio[1]["mark"]["name"]}))
    assert call.bridge.state is CallState.LISTENING  # playback done, with no await since the echo
    await call.finish_feed()


async def test_failure_in_the_hot_path_is_raised_from_run(call: Call) -> None:
    await call.configure()
    await call.start_feed()
    assert call.run is not None
    call.socket.deliver(call.media(caller_payload(0)))
    call.model.fail_now = RuntimeError("model socket exploded")
    call.socket.deliver(call.media(caller_payload(1)))  # the callback itself must not raise
    call.model.fail_now = None
    call.socket.deliver(call.media(caller_payload(2)))  # after the failure: ignored
    with pytest.raises(RuntimeError, match="model socket exploded"):
        async with asyncio.timeout(TIMEOUT):
            await call.run
    assert [pcm for _, pcm in call.model.appends()] == resampled([caller_payload(0)])
