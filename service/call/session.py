"""Per-call wiring: one ``CallSession`` runs a bridged call from the accepted media stream to the
``call.summary`` line.

Tasks per call (all cancelled when the call ends, whichever side ends it):
- the provider reader: media-stream frames -> the bridge, in order. On a push socket
  (``service.wsio.ServerWebSocket``, what ``callbridge serve`` uses) caller audio is forwarded
  straight from the socket callback and only the rest goes through the task
  (``service.call.pump.ProviderPump``); on any other socket, every frame goes through the task;
- the Realtime reader: session events -> ``CallBridge.on_realtime_message`` (in order).
Sends happen inline from those; nothing else runs on the frame path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from service import metrics
from service.aio import cancel_and_wait
from service.call.bridge import QUOTA_CODES, CallBridge
from service.call.filler import FillerSettings
from service.call.firstwords import FirstWords
from service.call.interruption import InterruptPolicy
from service.call.observer import CallObserver
from service.call.pump import ProviderPump, PushSocket
from service.call.toolcalls import ToolBackend
from service.config import Settings
from service.providers.base import ENCODING_MULAW, TelephonyDialect
from service.realtime.events import (
    ImmediateSend,
    RealtimeClosed,
    RealtimeDialect,
    RealtimeTransport,
    SessionConfig,
    SessionUpdated,
)
from service.wsio import MessageSocket, WebSocketClosed

log = structlog.get_logger(__name__)

# WebSocket close codes worth a new session (the SDK's list; docs/models/realtime.md, "Errors"); 1000 ends the call.
_RETRYABLE_CLOSES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1015})
_MAX_RECONNECTS = 3

def _immediate(transport: RealtimeTransport) -> ImmediateSend | None:
    return transport if isinstance(transport, ImmediateSend) else None


class ModelSlots(Protocol):
    """The fleet-wide cap on model sessions (``service.state.model_leases.ModelLeases``)."""

    async def acquire(self, call_id: str) -> bool: ...

    async def release(self, call_id: str) -> None: ...


class Prewarmed(Protocol):
    """A model session opened and configured before the stream started
    (``service.realtime.prewarm.WarmSession``): its transport, and the model-session lease it holds."""

    @property
    def transport(self) -> RealtimeTransport: ...

    @property
    def lease_id(self) -> str: ...


class CallSession:
    """One bridged call. ``run`` returns when the call has ended and everything is closed."""

    def __init__(
        self,
        *,
        settings: Settings,
        call_id: str,
        stream_id: str,
        provider: TelephonyDialect,
        socket: MessageSocket,
        observer: CallObserver,
        dialect: RealtimeDialect,
        session_config: SessionConfig,
        open_session: Callable[[Settings], Awaitable[RealtimeTransport]],
        codec: tuple[str, int] = (ENCODING_MULAW, 8000),
        resume: tuple[tuple[tuple[str, str], ...], str] | None = None,
        model_slots: ModelSlots | None = None,
        rest_transfer: Callable[[], Awaitable[bool]] | None = None,
        prewarmed: Prewarmed | None = None,
        filler: FillerSettings | None = None,
        stream_started: float | None = None,
        tools: ToolBackend | None = None,
    ) -> None:
        self.settings = settings
        self.call_id = call_id
        self.stream_id = stream_id
        self._socket = socket
        self._open_session = open_session
        self._transport: RealtimeTransport | None = None
        self._slots = model_slots
        self._prewarmed = prewarmed
        # the lease this call holds against the model-session cap: a claimed pre-warmed session's own
        self._lease_id = prewarmed.lease_id if prewarmed is not None else call_id
        self._observer = observer
        self.bridge = CallBridge(
            call_id=call_id,
            provider=provider,
            realtime=dialect,
            session_config=session_config,
            to_provider=self._send_provider,
            close_provider=self._close_provider,
            greeting=settings.greeting,
            handoff_line=settings.handoff_line,
            observer=observer,
            rest_transfer=rest_transfer,
            max_malformed_frames=settings.max_malformed_frames,
            model_unavailable_action=settings.model_unavailable_action,
            codec=codec,
            resume=resume,
            filler=filler,
            first_words=FirstWords(time.monotonic, stream_started, prewarmed=prewarmed is not None),
            tools=tools,
            max_tool_calls=settings.tools_max_per_call,
            interruptions=InterruptPolicy.confirming_within(settings.interrupt_confirm_ms,
                                                            settings.interrupt_min_level_dbfs),
            playback_lead_ms=settings.playback_lead_ms,
        )

    async def run(self) -> dict[str, Any]:
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._provider_reader(), name="provider-reader")]
        try:
            opened = time.perf_counter()
            if self._prewarmed is not None:  # opened and configured already (docs/first-words.md)
                self._transport = self._prewarmed.transport
                await self.bridge.model.attach_configured(self._transport.send, _immediate(self._transport))
                await self.bridge.on_realtime_event(SessionUpdated({}))  # as if it had just been confirmed
                tasks.append(asyncio.create_task(self._realtime_reader(self._transport), name="realtime-reader"))
            elif self._slots is not None and not await self._slots.acquire(self._lease_id):
                await self.bridge.escalating.model_unavailable("cap", self.settings.model_unavailable_action)
            else:
                try:
                    self._transport = await asyncio.wait_for(
                        self._open_session(self.settings), timeout=self.settings.realtime_connect_timeout_s
                    )
                except Exception as error:
                    metrics.REALTIME_ERRORS.labels("connect").inc()
                    log.error("realtime.connect_failed", error=_short(error))
                    reason = "quota" if any(code in str(error) for code in QUOTA_CODES) else "connect_failed"
                    await self.bridge.escalating.model_unavailable(reason, self.settings.model_unavailable_action)
                else:
                    metrics.REALTIME_CONNECT_SECONDS.observe(time.perf_counter() - opened)
                    await self.bridge.model.attach(self._transport.send, _immediate(self._transport))
                    tasks.append(asyncio.create_task(self._realtime_reader(self._transport), name="realtime-reader"))
            await self.bridge.ended.wait()
        finally:
            if self._slots is not None:
                await self._slots.release(self._lease_id)  # every exit path, idempotent
            for task in tasks:  # re-cancels if a cancel is swallowed (3.11 wait_for); bounded
                with contextlib.suppress(Exception):
                    await cancel_and_wait(task)
            if self._transport is not None:
                with contextlib.suppress(Exception):
                    await self._transport.close()
            if not self.bridge.ended.is_set():  # cancelled from outside (shutdown)
                await self.bridge.end("gateway shutting down", close_code=1001)
            self.bridge.bot.stop()  # no paced bot audio outlives the call
        summary = self.bridge.finish()
        log.info("call.summary", **summary)
        return summary

    async def hand_off(self, reason: str) -> None:
        await self.bridge.escalating.hand_off(reason)

    async def let_go(self, reason: str) -> None:
        await self.bridge.let_go(reason)

    async def _send_provider(self, data: str | bytes) -> None:
        """Sends to a provider socket that has closed are dropped: the caller is gone, and the
        provider reader ends the call when it sees the end of the stream. ``bytes`` go as a binary frame."""
        try:
            await self._socket.send(data)
        except WebSocketClosed:
            self.bridge.stats.provider_sends_dropped += 1

    async def _close_provider(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._socket.close(code, reason)

    async def _provider_reader(self) -> None:
        try:
            if isinstance(self._socket, PushSocket):
                await ProviderPump(self.bridge, self._socket).run()
            else:
                while True:
                    try:
                        message = await self._socket.recv()
                    except WebSocketClosed:
                        break
                    await self.bridge.on_provider_message(message)
            await self.bridge.end("provider closed the stream")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug in one call never takes the process down
            log.exception("call.provider_reader_failed", error=_short(error))
            await self.bridge.fail("internal error (provider side)")

    async def _realtime_reader(self, transport: RealtimeTransport) -> None:
        """Read the Realtime session in order. A session that drops with a retryable close code
        (1001 going away/session expired, 1006, 1011, 1012, 1013) is replaced by a new one, at most
        ``_MAX_RECONNECTS`` times per call, while the caller's leg keeps running (docs/models/realtime.md, "Session limits and reconnects")."""
        reconnects = 0
        try:
            while True:
                try:
                    message = await transport.recv()
                except RealtimeClosed as closed:
                    if self.bridge.ended.is_set():
                        return
                    if closed.code in _RETRYABLE_CLOSES and reconnects < _MAX_RECONNECTS:
                        reconnects += 1
                        replacement = await self._reconnect(transport, closed, reconnects)
                        if replacement is not None:
                            transport = replacement
                            continue
                        # the model stays unreachable: the caller is not dropped
                        await self.bridge.escalating.model_unavailable("reconnect_failed", self.settings.model_unavailable_action)
                        return
                    if closed.code == 1000:
                        log.info("realtime.closed", code=closed.code, reason=closed.reason)
                        await self.bridge.end("realtime session closed")
                    else:
                        metrics.REALTIME_ERRORS.labels("closed").inc()
                        log.error("realtime.closed_abnormally", code=closed.code, reason=closed.reason)
                        await self.bridge.fail(f"realtime session closed ({closed.code})")
                    return
                await self.bridge.on_realtime_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("call.realtime_reader_failed", error=_short(error))
            await self.bridge.fail("internal error (realtime side)")

    async def _reconnect(
        self, old: RealtimeTransport, closed: RealtimeClosed, attempt_no: int
    ) -> RealtimeTransport | None:
        """Open a replacement session (backoff 0.5, 1, 2 s with jitter); None if every try fails."""
        log.warning("realtime.reconnecting", code=closed.code, reason=closed.reason, reconnect=attempt_no)
        self.bridge.model.lost()
        with contextlib.suppress(Exception):
            await old.close()
        for attempt in range(3):
            await asyncio.sleep(0.5 * (2**attempt) * random.uniform(0.75, 1.0))  # backoff, not synchronisation
            try:
                transport = await asyncio.wait_for(
                    self._open_session(self.settings), timeout=self.settings.realtime_connect_timeout_s
                )
            except Exception as error:
                log.warning("realtime.reconnect_failed", attempt=attempt + 1, error=_short(error))
                continue
            self._transport = transport
            await self.bridge.model.reattach(transport.send, _immediate(transport))
            metrics.REALTIME_RECONNECTS.inc()
            self._observer.model_reconnected(attempt_no)
            log.info("realtime.reconnected", reconnect=attempt_no, attempt=attempt + 1)
            return transport
        return None


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]
