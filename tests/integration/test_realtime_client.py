"""The WebSocket client adapter against the Realtime stand-in over real sockets on 127.0.0.1, and the
stand-in's own protocol behaviour (VAD timing, paced replies, barge-in, cancel, truncate, tools,
validation of client events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

import pytest

from service.config import Settings
from service.realtime.client import RealtimeConnectError, WebSocketTransport, connect_realtime
from service.realtime.events import (
    AudioDelta,
    FunctionCallArgumentsDone,
    FunctionTool,
    InputTranscriptionCompleted,
    ItemAdded,
    ItemTruncated,
    OtherEvent,
    OutputItemAdded,
    RealtimeClosed,
    RealtimeDialect,
    RealtimeError,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
)
from service.realtime.protocol import dialect_for
from tests.standins.realtime_server import (
    FunctionCallScript,
    RealtimeStandIn,
    ScriptedBehaviour,
    silence_pcm16,
    tone_pcm16,
)

Dialect = Literal["ga", "beta"]
KEY = "sk-test-0123456789"
TIMEOUT = 5.0
E = TypeVar("E")


def openai_settings(server: RealtimeStandIn, dialect: Dialect = "ga", **extra: Any) -> Settings:
    return Settings(realtime_provider="openai", realtime_api_key=KEY, realtime_url=server.url,
                    realtime_dialect=dialect, realtime_connect_timeout_s=3.0, **extra)


class Client:
    """A transport + dialect pair that reads typed events."""

    def __init__(self, transport: WebSocketTransport, dialect: RealtimeDialect) -> None:
        self.t = transport
        self.d = dialect
        self.events: list[ServerEvent] = []

    async def next(self) -> ServerEvent:
        event = self.d.parse(await asyncio.wait_for(self.t.recv(), TIMEOUT))
        self.events.append(event)
        return event

    async def until(self, predicate: Callable[[ServerEvent], bool]) -> ServerEvent:
        while True:
            event = await self.next()
            if predicate(event):
                return event

    async def expect(self, cls: type[E]) -> E:
        """Read events until one of type ``cls`` arrives (bounded by TIMEOUT per event)."""
        event = await self.until(lambda e: isinstance(e, cls))
        assert isinstance(event, cls)
        return event

    async def configure(self, config: SessionConfig | None = None) -> SessionUpdated:
        created = await self.next()
        assert isinstance(created, SessionCreated)
        await self.t.send(self.d.session_update(config or SessionConfig(instructions="Be brief.")))
        updated = await self.until(lambda e: isinstance(e, SessionUpdated))
        assert isinstance(updated, SessionUpdated)
        return updated

    async def speak(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), 960):  # 20 ms appends, as a bridge sends them
            await self.t.send(self.d.audio_append(pcm[i : i + 960]))


@pytest.fixture
async def standin() -> AsyncIterator[RealtimeStandIn]:
    async with RealtimeStandIn(ScriptedBehaviour(transcripts=["I need help with my bill"], reply_ms=600,
                                                 pacing=20.0)) as server:
        yield server
        assert server.violations == []


async def open_client(server: RealtimeStandIn, dialect: Dialect = "ga") -> Client:
    return Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))


# ---------------------------------------------------------------------------------------------------
# Handshake: URL, headers and dialect per provider


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_openai_handshake_headers_and_dialect(dialect: Dialect) -> None:
    async with RealtimeStandIn(require_auth=("Authorization", f"Bearer {KEY}")) as server:
        client = Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))
        await client.configure()
        session = await server.wait_for_session()
        assert session.dialect == dialect
        assert session.path == "/v1/realtime?model=gpt-realtime"
        assert session.headers["authorization"] == f"Bearer {KEY}"
        assert ("openai-beta" in session.headers) == (dialect == "beta")
        if dialect == "beta":
            assert session.headers["openai-beta"] == "realtime=v1"
        assert "api-key" not in session.headers
        assert "permessage-deflate" not in session.headers.get("sec-websocket-extensions", "")
        await client.t.close()
        assert server.violations == []


@pytest.mark.parametrize(("dialect", "path"), [
    ("ga", "/openai/v1/realtime?model=my-deploy"),
    ("beta", "/openai/realtime?api-version=2025-04-01-preview&deployment=my-deploy"),
])
async def test_azure_handshake_path_header_and_dialect(dialect: Dialect, path: str) -> None:
    async with RealtimeStandIn(require_auth=("api-key", KEY)) as server:
        settings = Settings(realtime_provider="azure", realtime_api_key=KEY, azure_endpoint=server.azure_endpoint,
                            realtime_model="my-deploy", realtime_dialect=dialect)
        client = Client(await connect_realtime(settings), dialect_for(dialect))
        updated = await client.configure()
        session = await server.wait_for_session()
        assert session.path == path
        assert session.dialect == dialect
        assert session.headers["api-key"] == KEY
        assert "authorization" not in session.headers and "openai-beta" not in session.headers
        if dialect == "ga":
            assert updated.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        else:
            assert updated.session["input_audio_format"] == "pcm16"
        await client.t.close()
        assert server.violations == []


async def test_wrong_key_is_a_non_retryable_401_and_the_key_is_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    async with RealtimeStandIn(require_auth=("Authorization", "Bearer the-right-key")) as server:
        with pytest.raises(RealtimeConnectError) as caught:
            await connect_realtime(openai_settings(server))
        assert caught.value.status == 401
        assert not caught.value.retryable
        assert server.handshakes[-1].status == 401 and server.sessions == []
    output = capsys.readouterr()
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert KEY not in output.out + output.err


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (404, False), (429, True), (503, True)])
async def test_rejected_handshakes_report_status(status: int, retryable: bool) -> None:
    async with RealtimeStandIn(reject_status=status) as server:
        with pytest.raises(RealtimeConnectError) as caught:
            await connect_realtime(openai_settings(server))
    assert (caught.value.status, caught.value.retryable) == (status, retryable)


async def test_unknown_path_is_404_and_azure_ga_rejects_api_version() -> None:
    async with RealtimeStandIn() as server:
        wrong = Settings(realtime_provider="openai", realtime_api_key=KEY,
                         realtime_url=f"ws://127.0.0.1:{server.port}/v2/realtime?model=x")
        with pytest.raises(RealtimeConnectError) as caught:
            await connect_realtime(wrong)
        assert caught.value.status == 404
        mixed = Settings(realtime_provider="azure", realtime_api_key=KEY,
                         realtime_url=f"ws://127.0.0.1:{server.port}/openai/v1/realtime?model=d&api-version=x")
        with pytest.raises(RealtimeConnectError) as caught:
            await connect_realtime(mixed)
        assert caught.value.status == 400


async def test_connection_refused_is_retryable(unused_port: int) -> None:
    settings = Settings(realtime_provider="openai", realtime_api_key=KEY,
                        realtime_url=f"ws://127.0.0.1:{unused_port}/v1/realtime?model=m")
    with pytest.raises(RealtimeConnectError) as caught:
        await connect_realtime(settings)
    assert caught.value.status is None and caught.value.retryable


async def test_connect_timeout_is_bounded() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # never answers the upgrade; returns when the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(realtime_provider="openai", realtime_api_key=KEY, realtime_connect_timeout_s=0.3,
                        realtime_url=f"ws://127.0.0.1:{port}/v1/realtime?model=m")
    start = time.monotonic()
    with pytest.raises(RealtimeConnectError, match="timed out") as caught:
        await connect_realtime(settings)
    elapsed = time.monotonic() - start
    server.close()
    await server.wait_closed()
    assert accepted.is_set() and caught.value.retryable
    assert 0.25 <= elapsed < 2.0


# ---------------------------------------------------------------------------------------------------
# Transport semantics


async def test_server_close_surfaces_as_realtime_closed_and_close_is_idempotent(standin: RealtimeStandIn) -> None:
    client = await open_client(standin)
    await client.configure()
    session = await standin.wait_for_session()
    await session.send_error("invalid_request_error", "session_expired",
                             "Your session hit the maximum duration of 30 minutes.")
    error = await client.next()
    assert error == RealtimeError(type="invalid_request_error", code="session_expired",
                                  message="Your session hit the maximum duration of 30 minutes.")
    await session.close(1001, "session expired")
    with pytest.raises(RealtimeClosed) as caught:
        await client.next()
    assert (caught.value.code, caught.value.reason) == (1001, "session expired")
    with pytest.raises(RealtimeClosed):
        await client.t.recv()
    with pytest.raises(RealtimeClosed):
        await client.t.send(client.d.response_create())
    await client.t.close()
    await client.t.close()
    assert client.t.close_code == 1001


async def test_client_close_is_seen_by_the_server(standin: RealtimeStandIn) -> None:
    client = await open_client(standin)
    await client.configure()
    session = await standin.wait_for_session()
    await client.t.close()
    await session.wait_until(lambda: session.closed, TIMEOUT)
    assert session.close_code == 1000


# ---------------------------------------------------------------------------------------------------
# The stand-in's protocol behaviour, seen through the client


def speech(lead_ms: int, speech_ms: int, tail_ms: int) -> bytes:
    return silence_pcm16(lead_ms) + tone_pcm16(speech_ms) + silence_pcm16(tail_ms)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_turn_vad_ms_transcript_and_paced_reply(dialect: Dialect) -> None:
    behaviour = ScriptedBehaviour(transcripts=["I need help with my bill"], reply_ms=1000, chunk_ms=100, pacing=4.0)
    async with RealtimeStandIn(behaviour) as server:
        client = Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))
        await client.configure(SessionConfig(instructions="Be brief.", vad_prefix_padding_ms=300,
                                             vad_silence_duration_ms=500))
        await client.speak(speech(1000, 1200, 700))
        started = await client.expect(SpeechStarted)
        stopped = await client.expect(SpeechStopped)
        # onset at 1000 ms minus 300 ms padding; end of speech 2200 ms plus 500 ms silence (docs/models/realtime.md#turn-detection)
        assert started == SpeechStarted(audio_start_ms=700, item_id=started.item_id)
        assert stopped == SpeechStopped(audio_end_ms=2700, item_id=started.item_id)
        transcript = await client.expect(InputTranscriptionCompleted)
        assert transcript == InputTranscriptionCompleted(item_id=started.item_id,
                                                         transcript="I need help with my bill")
        created = await client.expect(ResponseCreated)
        audio = bytearray()
        first_delta_at = last_delta_at = 0.0
        while True:
            event = await client.next()
            if isinstance(event, AudioDelta):
                last_delta_at = time.monotonic()
                first_delta_at = first_delta_at or last_delta_at
                audio += event.audio
            if isinstance(event, ResponseDone):
                break
        assert isinstance(created, ResponseCreated) and event.response_id == created.response_id
        assert event.status == "completed" and event.usage["output_token_details"]["audio_tokens"] == 20
        assert bytes(audio) == behaviour.reply_pcm() and len(audio) == 1000 * 48
        streamed_s = last_delta_at - first_delta_at
        # 10 chunks of 100 ms at 4x: 9 gaps of 25 ms = 0.225 s, far less than the 1 s of audio
        assert 0.18 <= streamed_s < 0.8, streamed_s
        session = server.sessions[0]
        types = session.sent_types()
        audio_type = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
        added = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
        order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", added, "response.created", "rate_limits.updated",
                 "response.output_item.added", "response.content_part.added", audio_type, "response.done"]
        positions = [types.index(name) for name in order]
        assert positions == sorted(positions)
        await client.t.close()
        assert server.violations == []


async def test_barge_in_cancels_and_truncate_is_checked_against_item_audio() -> None:
    behaviour = ScriptedBehaviour(reply_ms=4000, chunk_ms=100, pacing=2.0)
    async with RealtimeStandIn(behaviour) as server:
        client = await open_client(server)
        await client.configure()
        await client.t.send(client.d.response_create())
        added = await client.expect(OutputItemAdded)
        assert isinstance(added, OutputItemAdded)
        received = 0
        while received < 3 * 4800:  # three deltas in, the caller starts talking
            event = await client.next()
            if isinstance(event, AudioDelta):
                received += len(event.audio)
        await client.speak(tone_pcm16(200))
        done = await client.expect(ResponseDone)
        assert isinstance(done, ResponseDone)
        assert (done.status, done.reason) == ("cancelled", "turn_detected")
        assert any(isinstance(e, SpeechStarted) for e in client.events)
        session = server.sessions[0]
        item_ms = session.item_audio_ms(added.item_id)
        assert 300 <= item_ms < 4000  # generation stopped early
        total = sum(len(e.audio) for e in client.events if isinstance(e, AudioDelta))
        assert total == item_ms * 48
        # beyond the item's audio: the service's "already shorter" error, with our event_id echoed
        await client.t.send(client.d.item_truncate(added.item_id, item_ms + 500))
        too_long_id = client.d.last_event_id  # type: ignore[attr-defined]
        error = await client.expect(RealtimeError)
        assert isinstance(error, RealtimeError)
        assert error.message == f"Audio content of {item_ms} ms is already shorter than {item_ms + 500} ms"
        assert error.event_id == too_long_id
        before = time.time()
        await client.t.send(client.d.item_truncate(added.item_id, 240))
        truncated = await client.expect(ItemTruncated)
        assert truncated == ItemTruncated(item_id=added.item_id, audio_end_ms=240)
        assert [(t.item_id, t.audio_end_ms, t.accepted) for t in session.truncates] == [
            (added.item_id, item_ms + 500, False), (added.item_id, 240, True)]
        assert session.truncates[1].wall_time >= before
        assert session.item_audio_ms(added.item_id) == 240
        await client.t.send(client.d.item_truncate("item_nope", 10))
        unknown = await client.expect(RealtimeError)
        assert isinstance(unknown, RealtimeError) and "item_nope" in unknown.message
        await client.t.close()
        assert server.violations == []


async def test_cancel_and_create_race_errors(standin: RealtimeStandIn) -> None:
    standin.behaviour.reply_ms = 3000
    standin.behaviour.pacing = 1.0
    client = await open_client(standin, "beta")
    await client.configure()
    await client.t.send(client.d.response_cancel())
    not_active = await client.expect(RealtimeError)
    assert isinstance(not_active, RealtimeError) and not_active.code == "response_cancel_not_active"
    assert not_active.event_id == client.d.last_event_id  # type: ignore[attr-defined]
    await client.t.send(client.d.response_create())
    created = await client.expect(ResponseCreated)
    await client.t.send(client.d.response_create())
    busy = await client.expect(RealtimeError)
    assert isinstance(busy, RealtimeError) and busy.code == "conversation_already_has_active_response"
    assert isinstance(created, ResponseCreated)
    await client.t.send(client.d.response_cancel(created.response_id))
    done = await client.expect(ResponseDone)
    assert isinstance(done, ResponseDone)
    assert (done.response_id, done.status, done.reason) == (created.response_id, "cancelled", "client_cancelled")
    await client.t.close()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_scripted_function_call_round_trip(dialect: Dialect) -> None:
    behaviour = ScriptedBehaviour(reply_ms=300, pacing=0, function_calls={
        1: FunctionCallScript("escalate_to_human", {"reason": "caller is angry"}, call_id="call_42")})
    tool = FunctionTool("escalate_to_human", "Transfer to a human.",
                        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]})
    async with RealtimeStandIn(behaviour) as server:
        client = Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))
        await client.configure(SessionConfig(instructions="x", tools=(tool,)))
        await client.t.send(client.d.response_create())
        added = await client.expect(OutputItemAdded)
        assert isinstance(added, OutputItemAdded)
        assert (added.item_type, added.name, added.call_id) == ("function_call", "escalate_to_human", "call_42")
        args = await client.expect(FunctionCallArgumentsDone)
        assert isinstance(args, FunctionCallArgumentsDone)
        assert args.arguments == '{"reason": "caller is angry"}' and args.call_id == "call_42"
        assert args.name == ("escalate_to_human" if dialect == "ga" else "")  # beta type has no name
        done = await client.expect(ResponseDone)
        assert isinstance(done, ResponseDone) and done.status == "completed"
        assert [item["type"] for item in done.output] == ["function_call"]
        await client.t.send(client.d.function_call_output("call_42", '{"queued": true}'))
        await client.t.send(client.d.response_create())
        second = await client.expect(ResponseDone)
        assert isinstance(second, ResponseDone) and second.status == "completed"
        assert any(isinstance(e, AudioDelta) for e in client.events)
        session = server.sessions[0]
        assert [o["call_id"] for o in session.function_outputs] == ["call_42"]
        await client.t.close()
        assert server.violations == []


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_validation_catches_invalid_client_events(dialect: Dialect) -> None:
    async with RealtimeStandIn() as server:
        client = Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))
        await client.configure()
        other = dialect_for("beta" if dialect == "ga" else "ga")
        await client.t.send(other.session_update(SessionConfig(instructions="wrong dialect")))
        error = await client.expect(RealtimeError)
        assert isinstance(error, RealtimeError) and error.type == "invalid_request_error"
        assert error.event_id == other.last_event_id  # type: ignore[attr-defined]
        await client.t.send('{"type":"input_audio_buffer.append","event_id":"bad_1"}')
        missing = await client.expect(RealtimeError)
        assert isinstance(missing, RealtimeError) and missing.event_id == "bad_1"
        session = server.sessions[0]
        await session.wait_until(lambda: len(server.violations) >= 2)
        problems = [v.problem for v in server.violations]
        if dialect == "ga":
            assert any("RealtimeSessionCreateRequest.type: Field required" in p for p in problems)
        else:
            assert any("session.type" in p or "session.audio" in p for p in problems)
        assert any(v.event_type == "input_audio_buffer.append" for v in server.violations)
        # the rejected update changed nothing
        assert session.session.get("instructions") == "Be brief."
        await client.t.close()
        server.violations.clear()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_text_items_clear_and_manual_commit(dialect: Dialect) -> None:
    async with RealtimeStandIn() as server:
        client = Client(await connect_realtime(openai_settings(server, dialect)), dialect_for(dialect))
        await client.configure()
        await client.t.send(client.d.system_text_item("The caller is a premium customer."))
        await client.t.send(client.d.user_text_item("Earlier I asked about my bill."))
        first = await client.expect(ItemAdded)
        assert first.item["role"] == "system"
        user = await client.until(lambda e: isinstance(e, ItemAdded) and e.item["role"] == "user")
        assert isinstance(user, ItemAdded)
        assert user.item["content"] == [{"type": "input_text", "text": "Earlier I asked about my bill."}]
        await client.speak(silence_pcm16(60))
        await client.t.send(client.d.input_audio_clear())
        cleared = await client.until(lambda e: isinstance(e, OtherEvent))
        assert cleared == OtherEvent(type="input_audio_buffer.cleared")
        await client.t.send('{"type":"input_audio_buffer.commit","event_id":"commit_1"}')
        empty = await client.expect(RealtimeError)
        assert (empty.code, empty.event_id) == ("input_audio_buffer_commit_empty", "commit_1")
        session = server.sessions[0]
        added = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
        assert session.sent_types().count(added) == 2
        assert session.received_types()[:3] == ["session.update", "conversation.item.create",
                                                "conversation.item.create"]
        await client.t.close()
        assert server.violations == []
