"""What every provider's media stream shares: admission (a valid ``start`` within time and budget,
a single-use stream token bound to the call, one live stream per call), the bridged call itself
(recorder, model side, resumption seed, model-session cap), the resumption claim for the provider's
after-stream webhook, and the ASGI socket adapter. A provider package passes its dialect, the name of
the ``start`` parameter carrying the token, and (optionally) its REST transfer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service import metrics
from service.call.filler import filler_settings
from service.call.recorder import build_observer
from service.call.session import CallSession
from service.logging import bind_call_context, clear_call_context
from service.providers.base import ProtocolError, StreamConnected, StreamStarted, TelephonyDialect
from service.providers.streamguard import stream_guard_for
from service.providers.tokens import StreamTokenError, verify_stream_token
from service.realtime import sessions as model_sessions
from service.realtime.prewarm import prewarm_pool_for
from service.redaction import cap_text, mask_number
from service.state.model_leases import model_leases_for
from service.state.resume import ResumeSeed, claim_resume, take_resume_seed
from service.tools.percall import CallTools, tool_runner_for
from service.tools.runner import ToolContext
from service.wsio import Message, MessageSocket, UpgradeRequest, WebSocketClosed

if TYPE_CHECKING:
    from service.gateway import Gateway

log = structlog.get_logger(__name__)

RestTransfer = Callable[[], Awaitable[bool]]
RestTransferFactory = Callable[[StreamStarted], RestTransfer | None]


#: Before a valid ``start`` the peer is unauthenticated: at most this many messages (``connected``,
#: ``start``, a malformed one or two), each at most this long (our own ``start`` with its token is
#: about 1 KB). docs/security.md, "Unauthenticated connections"; docs/providers/twilio.md, "Stream start".
PRE_START_MAX_MESSAGES = 4
PRE_START_MAX_BYTES = 4096


async def _await_start(
    websocket: MessageSocket, dialect: TelephonyDialect, timeout_s: float, max_malformed: int
) -> StreamStarted | str:
    """Read until ``start`` (one ``connected`` may precede it). Returns the reason instead on
    timeout, close, a malformed flood, more than ``PRE_START_MAX_MESSAGES`` messages, a message over
    ``PRE_START_MAX_BYTES`` or a second ``connected``: the peer's work before ``start`` is bounded."""
    deadline = time.monotonic() + timeout_s
    malformed = 0
    messages = 0
    connected = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "no valid start in time"
        try:
            data = await asyncio.wait_for(websocket.recv(), timeout=remaining)
        except (TimeoutError, WebSocketClosed):
            return "no valid start in time"
        messages += 1
        if messages > PRE_START_MAX_MESSAGES:
            return "too many messages before start"
        if len(data) > PRE_START_MAX_BYTES:
            return "message before start too large"
        try:
            event = dialect.parse(data)
        except ProtocolError as error:
            malformed += 1
            metrics.MALFORMED_FRAMES.labels(dialect.name).inc()
            log.warning("provider.malformed_frame", error=str(error), phase="before_start")
            if malformed >= max_malformed:
                return "too many malformed frames"
            continue
        if isinstance(event, StreamStarted):
            return event
        if isinstance(event, StreamConnected):
            if connected:
                return "connected repeated"
            connected = True


async def run_media_stream(gateway: Gateway, websocket: MessageSocket, dialect: TelephonyDialect, *,
                           token_parameter: str | None, rest_transfer: RestTransferFactory | None = None,
                           token_of: Callable[[StreamStarted], str | None] | None = None) -> None:
    """One provider media stream, from its handshake to the end of the call (the socket is open): a
    valid ``start`` within the timeout and budget, a valid single-use stream token for its call, one
    live stream per call; then the call is bridged. Refusals close with 1008 and open nothing.

    ``token_parameter=None``: the carrier answers no webhook of ours, so there is no stream token (Exotel);
    the caller has authenticated the socket itself (HTTP Basic on the upgrade) and admission still
    enforces one use per stream id and one live stream per call."""
    provider = dialect.name
    settings = gateway.settings
    if token_parameter is None:
        started = await _await_start(websocket, dialect, settings.stream_start_timeout_s, settings.max_malformed_frames)
        if isinstance(started, str):
            metrics.STREAM_REJECTED.labels("no_start").inc()
            log.warning("stream.rejected", provider=provider, reason=started)
            await websocket.close(1008, "start required")
            return
        await _admit_and_bridge(gateway, websocket, dialect, started, f"stream:{provider}:{started.stream_id}",
                                int(time.time()) + settings.stream_token_ttl_s, rest_transfer)
        return
    if not settings.streams_enabled:  # no key: refuse before parsing anything (docs/security.md, "Stream tokens")
        metrics.STREAM_REJECTED.labels("no_secret").inc()
        log.warning("stream.rejected", provider=provider, reason="no stream-token secret configured")
        await websocket.close(1008, "streams disabled")
        return
    started = await _await_start(websocket, dialect, settings.stream_start_timeout_s, settings.max_malformed_frames)
    if isinstance(started, str):
        metrics.STREAM_REJECTED.labels("no_start").inc()
        log.warning("stream.rejected", provider=provider, reason=started)
        await websocket.close(1008, "start required")
        return
    try:
        verified = verify_stream_token(
            settings.effective_stream_token_secret(),
            token_of(started) if token_of is not None else started.custom_parameters.get(token_parameter),
            started.call_id,
        )
    except StreamTokenError as error:
        metrics.STREAM_REJECTED.labels("token").inc()
        log.warning("stream.rejected", provider=provider, reason=error.reason, call_id=started.call_id)
        await websocket.close(1008, "invalid stream token")
        return
    await _admit_and_bridge(gateway, websocket, dialect, started, verified.token_id, verified.expires_at, rest_transfer)


async def _admit_and_bridge(gateway: Gateway, websocket: MessageSocket, dialect: TelephonyDialect,
                            started: StreamStarted, token_id: str, expires_at: int,
                            rest_transfer: RestTransferFactory | None) -> None:
    """Single use of ``token_id`` and one live stream per call (``StreamGuard``), then the bridged call."""
    provider = dialect.name
    guard = stream_guard_for(gateway)
    admission = await guard.admit(token_id, expires_at, started.call_id, started.stream_id)
    if admission != "ok":  # a replayed token, or a parallel stream for a live call (docs/security.md)
        metrics.STREAM_REJECTED.labels(admission).inc()
        log.warning("stream.rejected", provider=provider, reason=admission, call_id=started.call_id)
        await websocket.close(1008, "stream refused")
        return
    try:
        await _bridge_stream(gateway, websocket, dialect, started, rest_transfer)
    finally:
        await guard.release(started.call_id, started.stream_id)


async def _bridge_stream(gateway: Gateway, websocket: MessageSocket, dialect: TelephonyDialect,
                         started: StreamStarted, rest_transfer_factory: RestTransferFactory | None) -> None:
    """Run one admitted stream's call to its end."""
    stream_started = time.monotonic()  # first words are counted from here (docs/first-words.md)
    settings = gateway.settings

    provider = dialect.name
    bind_call_context(call_id=started.call_id, stream_id=started.stream_id, provider=provider)
    metrics.CALLS_STARTED.labels(provider).inc()
    log.info(
        "call.started",
        caller=mask_number(started.custom_parameters.get("from")),
        callee=mask_number(started.custom_parameters.get("to")),
        realtime_provider=settings.provider,
    )

    seed = await _resume_seed(gateway, started.call_id)
    observer = build_observer(gateway, started, provider, seed.started_at if seed else "")
    rest_transfer = rest_transfer_factory(started) if rest_transfer_factory is not None else None

    runner = tool_runner_for(gateway)
    model = model_sessions.model_side(settings, (started.encoding, started.sample_rate))
    tools = CallTools(runner, started.call_id,
                      ToolContext(caller=mask_number(started.custom_parameters.get("from")),
                                  language=settings.transcription_language or ""),
                      observer.tool_result) if runner is not None else None
    warm = None
    if settings.prewarm and seed is None:  # a session opened when the voice webhook came (docs/first-words.md)
        warm = await prewarm_pool_for(gateway).claim(started.call_id, wait_s=settings.realtime_connect_timeout_s)
    session = CallSession(
        settings=settings,
        dialect=warm.dialect if warm is not None else model.dialect,
        session_config=warm.config if warm is not None else model.config,
        open_session=model.open,
        codec=(started.encoding, started.sample_rate),
        call_id=started.call_id,
        stream_id=started.stream_id,
        provider=dialect,
        socket=websocket,
        observer=observer,
        rest_transfer=rest_transfer,
        tools=tools,
        resume=(seed.turns, seed.line or settings.resume_line) if seed else None,
        model_slots=model_leases_for(gateway) if settings.max_model_sessions else None,
        prewarmed=warm,
        stream_started=stream_started,
        filler=filler_settings(settings.filler_after_ms, settings.filler_repeat_ms, settings.filler_file),
    )
    if seed is not None:
        session.bridge.stats.resumed = seed.resumes
        log.info("call.resumed", resumes=seed.resumes, turns=len(seed.turns))
    observer.attach(session.bridge)
    gateway.register(started.call_id, session)
    try:
        summary = await session.run()
        metrics.CALLS_ENDED.labels(summary["outcome"]).inc()
    finally:
        gateway.unregister(started.call_id)
        clear_call_context()


async def _resume_seed(gateway: Gateway, call_id: str) -> ResumeSeed | None:
    """The conversation so far if this stream resumes a dropped one (marked by after-stream)."""
    if gateway.state_store is None:
        return None
    try:
        return await asyncio.wait_for(take_resume_seed(gateway.state_store, call_id), timeout=2.0)
    except Exception as error:  # Redis down: the call goes on as a new conversation
        log.warning("call.resume_seed_failed", error=cap_text(repr(error), 200))
        return None


async def claim_resumption(gateway: Gateway, call_sid: str) -> bool:
    """Claim the resumption of a dropped stream in Redis (atomic; see ``service.state.resume``)."""
    store = gateway.state_store
    if not gateway.settings.resume_calls or store is None:
        return False
    try:
        verdict = await asyncio.wait_for(
            claim_resume(store.redis, store.keys, call_sid, gateway.settings.max_resumes), timeout=3.0)
    except Exception as error:  # Redis down: no resumption (the call is hung up as before)
        log.warning("call.resume_check_failed", call_id=call_sid, error=cap_text(repr(error), 200))
        return False
    if verdict == "too_many":
        log.warning("call.resume_refused", call_id=call_sid, reason="too many resumptions")
    return verdict == "resume"


class AsgiMessageSocket:
    """``MessageSocket`` over an accepted ASGI (Starlette) WebSocket: the route for any ASGI server.

    ``callbridge serve`` does not use it: there uvicorn hands the media paths to
    ``service.wsio.ServerWebSocket`` (see ``service.app.uvicorn_config``). ``upgrade`` carries the
    upgrade request's path, query and headers from the ASGI scope, as ``ServerWebSocket`` does.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        scope = websocket.scope
        self.upgrade = UpgradeRequest(
            str(scope.get("path", "")),
            bytes(scope.get("query_string", b"")).decode("latin-1"),
            tuple((bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in scope.get("headers", ())),
        )

    async def recv(self) -> Message:
        """Text as ``str``, binary as ``memoryview`` (the ``service.wsio`` convention)."""
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketClosed(int(message.get("code") or 1006), message.get("reason") or "")
        text = message.get("text")
        if text is not None:
            return str(text)
        return memoryview(message.get("bytes") or b"")

    async def send(self, data: str | bytes) -> None:
        try:
            if isinstance(data, str):
                await self._websocket.send_text(data)
            else:
                await self._websocket.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:  # RuntimeError: WebSocketDisconnected
            raise WebSocketClosed(getattr(error, "code", 1006)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await self._websocket.close(code=code, reason=reason)
