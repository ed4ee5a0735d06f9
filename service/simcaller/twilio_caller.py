"""A protocol-exact simulated Twilio caller: places a call on a gateway like Twilio does, and plays the bot.

Used by ``callbridge demo``, ``callbridge call``, the integration tests and the load generator.

The wire facts: ``docs/providers/twilio.md`` (cited below by anchor). Used by the bridge's integration tests and
the load generator. Everything runs on the asyncio loop clock (``loop.time()``); all recorded times are
loop times, and ``CallHandle.origin`` (the moment ``start`` was sent) is time zero of the audio timelines.

What it does, in order (``await TwilioCallerStandIn(base_url, auth_token).place_call()``):

1. POSTs the voice webhook to ``{base_url}/twilio/voice`` as a form (CallSid ``CA``+32 hex, AccountSid
   ``AC``+32 hex, From, To, CallStatus=ringing, Direction=inbound, ApiVersion, Caller, Called, ...) with
   ``X-Twilio-Signature`` computed by the ``twilio`` package over ``{public_url}/twilio/voice`` (#signatures).
2. Parses the TwiML: ``<Connect><Stream url>``, its ``<Parameter>``s and the verb after ``</Connect>``
   (normally ``<Redirect>``). No ``<Connect><Stream>`` -> ``CallRejected`` (carries the TwiML).
3. Opens the WebSocket to the Stream URL (rewritten onto ``base_url``'s host if the public host differs),
   sends ``connected``, ``start`` (``MZ``+32 hex, customParameters = the TwiML parameters), then one
   ``media`` frame every 20 ms on absolute deadlines ``origin + 20 ms * (k + 1)`` (frame k carries
   caller audio [20k, 20k + 20) ms, ``timestamp`` = 20k, ``chunk`` = k + 1). Like Twilio, media never
   stops: when the script is empty it sends mu-law silence (``continuous_media=False`` sends nothing).
   ``sequenceNumber`` counts every message from ``start`` = "1" (media, mark echoes, dtmf, stop).
4. Plays the bot: inbound ``media`` is appended to a ``PlaybackBuffer`` consumed at 8000 bytes/s of
   loop time; inbound ``mark``s sit at their byte position and are echoed when playback reaches them
   (at once if nothing is buffered); ``clear`` empties the buffer and echoes all pending marks at once
   (#marks-and-clear). Nothing acknowledges ``clear``.
5. Validates every gateway frame (text, JSON object, event in media/mark/clear, streamSid equal, payload
   non-empty strict base64 without a RIFF header, mark.name a string) into ``CallHandle.violations``.
6. When the gateway closes the socket, POSTs (signed) the ``<Redirect>`` URL like Twilio continuing the
   TwiML (#after-stream) and keeps the answer in ``CallHandle.after_stream_twiml``. Not after a caller hang-up.

Fault injection: ``parameter_overrides`` (replace, or ``None`` = omit, e.g. the stream token),
``start_call_sid`` (claim another CallSid in ``start``), ``sign_webhook=False`` / ``signature=...``,
``send_start=False`` + ``CallHandle.send_raw(...)`` / ``send_start()``, ``CallHandle.abort()`` (TCP reset,
no close frame), ``CallHandle.close_socket(code)`` (close without ``stop``).

Memory per call (everything is kept for assertions): caller timeline 8 KB/s, played bot audio 8 KB/s,
one small record per inbound frame (~150 B; raw text only with ``keep_raw=True``); the bot's unplayed
buffer is whatever the gateway queued ahead. The outgoing audio script is unbounded by design: it holds
exactly what the test queued (8 KB per second of audio).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import math
import secrets
import wave
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from service.providers.twilio.dialect import VOICE_PATH, compute_twilio_signature

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law


def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    return ulaw_to_pcm16(data)


def mulaw_frames(pcm8k: npt.NDArray[np.int16]) -> list[bytes]:
    """8 kHz PCM -> mu-law 20 ms frames of exactly 160 bytes (the last padded with mu-law silence)."""
    encoded = pcm16_to_ulaw(np.asarray(pcm8k, dtype=np.int16))
    frames = [encoded[i:i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + b"\xff" * (FRAME_BYTES - len(frames[-1]))
    return frames

__all__ = [
    "CallHandle",
    "CallRejected",
    "ClearRecord",
    "MarkRecord",
    "MediaRecord",
    "PlaybackBuffer",
    "ReceivedRecord",
    "TwilioCallerStandIn",
    "TwimlVerb",
    "new_sid",
    "parse_twiml",
    "validate_gateway_frame",
]

BYTES_PER_SECOND = 8000  # mu-law 8 kHz
FRAME_S = 0.020
SILENCE_FRAME = b"\xff" * FRAME_BYTES
_EPSILON_BYTES = 1e-6  # absorbs float error so a wake-up at a mark's due time reaches it


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


# --- the playback model (pure) --------------------------------------------------------------------


@dataclass
class MarkRecord:
    """One mark the gateway sent. ``position`` = bytes of bot audio queued before it (cumulative)."""

    name: str
    received_at: float
    position: int
    due_at: float | None = None
    """Time playback reached it, or the ``clear`` time; None while pending."""
    echoed_at: float | None = None
    """Loop time the echo was actually sent (set by the async layer)."""
    played_total: int | None = None
    """Cumulative bytes actually played when it was reached/flushed."""
    cleared: bool = False


@dataclass(frozen=True)
class MediaRecord:
    """One bot ``media`` message: arrival time, stream position of its first byte, length."""

    at: float
    position: int
    length: int


@dataclass(frozen=True)
class ClearRecord:
    at: float
    played_total: int
    discarded_bytes: int
    flushed_marks: tuple[str, ...]


class PlaybackBuffer:
    """Twilio's outbound playback queue (docs/providers/twilio.md#outbound-messages, #marks-and-clear) as a pure model with times passed in.

    Audio plays in arrival order at ``bytes_per_second`` from the moment it arrives at an idle buffer
    (an underrun leaves a gap, as on a phone). Stream positions count every byte ever queued, played or
    discarded. Marks are returned by the call that reaches them, in order, each exactly once.
    """

    def __init__(self, origin: float, bytes_per_second: int = BYTES_PER_SECOND) -> None:
        self.origin = origin
        self.bps = bytes_per_second
        self.queued_total = 0
        self.played_total = 0
        self.discarded_total = 0
        self.marks: list[MarkRecord] = []
        self.media: list[MediaRecord] = []
        self.clears: list[ClearRecord] = []
        self._pending = bytearray()
        self._consumed = 0  # stream position of _pending[0]
        self._pending_marks: deque[MarkRecord] = deque()
        self._run_time = origin
        self._run_pos = 0
        self._run_sample = 0
        self._discarded_ranges: list[tuple[int, int]] = []
        self._segments: list[tuple[int, bytearray]] = []  # (timeline sample offset, mu-law bytes)

    @property
    def buffered_bytes(self) -> int:
        return len(self._pending)

    @property
    def pending_marks(self) -> list[str]:
        return [mark.name for mark in self._pending_marks]

    def _time_of(self, position: int) -> float:
        return self._run_time + (position - self._run_pos) / self.bps

    def advance(self, now: float) -> list[MarkRecord]:
        """Play everything due by ``now``; return the marks reached (oldest first)."""
        reached: list[MarkRecord] = []
        if self._pending:
            reach = self._run_pos + math.floor((now - self._run_time) * self.bps + _EPSILON_BYTES)
            count = min(reach - self._consumed, len(self._pending))
            if count > 0:
                sample = self._run_sample + (self._consumed - self._run_pos)
                played = self._pending[:count]
                if self._segments and self._segments[-1][0] + len(self._segments[-1][1]) == sample:
                    self._segments[-1][1].extend(played)
                else:
                    self._segments.append((sample, bytearray(played)))
                del self._pending[:count]
                self._consumed += count
                self.played_total += count
        while self._pending_marks and self._pending_marks[0].position <= self._consumed:
            mark = self._pending_marks.popleft()
            mark.due_at = max(mark.received_at, self._time_of(mark.position))
            mark.played_total = mark.position - self.discarded_total
            reached.append(mark)
        return reached

    def add_media(self, now: float, mulaw: bytes) -> list[MarkRecord]:
        """Queue bot audio received at ``now``; returns marks reached up to ``now``."""
        reached = self.advance(now)
        if not self._pending:  # idle: a new playback run starts now
            self._run_time = now
            self._run_pos = self._consumed
            sample = round((now - self.origin) * self.bps)
            if self._segments:
                sample = max(sample, self._segments[-1][0] + len(self._segments[-1][1]))
            self._run_sample = max(sample, 0)
        self.media.append(MediaRecord(now, self.queued_total, len(mulaw)))
        self._pending.extend(mulaw)
        self.queued_total += len(mulaw)
        return reached

    def add_mark(self, now: float, name: str) -> list[MarkRecord]:
        """Queue a mark; it is in the returned list at once if everything before it has played."""
        mark = MarkRecord(name=name, received_at=now, position=self.queued_total)
        self.marks.append(mark)
        self._pending_marks.append(mark)
        return self.advance(now)

    def clear(self, now: float) -> list[MarkRecord]:
        """``clear``: marks reached before ``now``, then every pending mark (flagged ``cleared``)."""
        reached = self.advance(now)
        discarded = len(self._pending)
        if discarded:
            self._discarded_ranges.append((self._consumed, self._consumed + discarded))
        self._consumed += discarded
        self.discarded_total += discarded
        self._pending.clear()
        # Nothing is queued now: stream positions up to here are reached at `now` (the discarded bytes
        # never play), so a mark queued next on the idle buffer is due at once, not after them.
        self._run_time = now
        self._run_pos = self._consumed
        flushed = list(self._pending_marks)
        self._pending_marks.clear()
        for mark in flushed:
            mark.due_at = now
            mark.played_total = self.played_total
            mark.cleared = True
        self.clears.append(ClearRecord(now, self.played_total, discarded, tuple(m.name for m in flushed)))
        return reached + flushed

    def next_mark_due(self) -> float | None:
        """When the oldest pending mark will be reached if nothing changes (None: no pending mark)."""
        if not self._pending_marks:
            return None
        position = self._pending_marks[0].position
        if position <= self._consumed:
            return self._run_time if not self._pending else self._time_of(self._consumed)
        return self._time_of(position)

    def played_of_range(self, start: int, end: int) -> int:
        """Bytes of stream positions [start, end) that were actually played (not cleared, not pending)."""
        upper = min(end, self._consumed)
        if upper <= start:
            return 0
        total = upper - start
        for lo, hi in self._discarded_ranges:
            total -= max(0, min(hi, upper) - max(lo, start))
        return total

    def played_segments(self) -> list[tuple[int, bytes]]:
        """What played, as (byte offset on the timeline from ``origin``, audio bytes) runs in order."""
        return [(offset, bytes(data)) for offset, data in self._segments]

    def played_mulaw(self, total_samples: int | None = None) -> bytes:
        """Played bot audio on the timeline (sample 0 = ``origin``), mu-law silence in the gaps."""
        end = max((offset + len(data) for offset, data in self._segments), default=0)
        length = end if total_samples is None else total_samples
        timeline = bytearray(SILENCE_FRAME[:1] * length)
        for offset, data in self._segments:
            if offset < length:
                piece = data[: length - offset]
                timeline[offset:offset + len(piece)] = piece
        return bytes(timeline)


# --- TwiML and frame validation (pure) ------------------------------------------------------------


@dataclass
class TwimlVerb:
    """One TwiML element: tag name, attributes, text, children."""

    name: str
    attrs: dict[str, str]
    text: str = ""
    children: list[TwimlVerb] = field(default_factory=list)


def parse_twiml(text: str) -> list[TwimlVerb]:
    """Top-level verbs of a ``<Response>`` document; ``ValueError`` if it is not TwiML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise ValueError(f"TwiML is not XML: {error}") from None
    if root.tag != "Response":
        raise ValueError(f"TwiML root is <{root.tag}>, not <Response>")

    def convert(element: ET.Element) -> TwimlVerb:
        return TwimlVerb(element.tag, dict(element.attrib), (element.text or "").strip(),
                         [convert(child) for child in element])

    return [convert(child) for child in root]


def validate_gateway_frame(frame: str | bytes, stream_sid: str | None) -> tuple[dict[str, Any] | None, list[str]]:
    """Check one gateway->Twilio frame against docs/providers/twilio.md#outbound-messages. Returns (decoded object or None, violations)."""
    if not isinstance(frame, str):
        return None, ["binary frame (Twilio expects JSON text frames)"]
    try:
        msg = json.loads(frame)
    except ValueError:
        return None, ["frame is not JSON"]
    if not isinstance(msg, dict):
        return None, ["frame is not a JSON object"]
    problems: list[str] = []
    event = msg.get("event")
    if event not in ("media", "mark", "clear"):
        problems.append(f"unexpected event {event!r}")
    sid = msg.get("streamSid")
    if stream_sid is None:
        problems.append(f"{event!r} sent before start")
    elif sid != stream_sid:
        problems.append(f"{event!r} streamSid {sid!r} != {stream_sid!r}")
    if event == "media":
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str) or not payload:
            problems.append("media.payload missing or empty")
        else:
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError):
                problems.append("media.payload is not valid base64")
            else:
                if not audio:
                    problems.append("media.payload decodes to nothing")
                elif audio[:4] == b"RIFF":
                    problems.append("media.payload carries a WAV header (must be raw mu-law)")
    elif event == "mark":
        mark = msg.get("mark")
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
            problems.append("mark.name missing or not a string")
    return msg, problems


# --- the asyncio stand-in ---------------------------------------------------------------------------


class CallRejected(Exception):
    """The voice webhook did not answer with ``<Connect><Stream>`` (status, TwiML text and verbs kept)."""

    def __init__(self, status: int, twiml: str, verbs: list[TwimlVerb] | None) -> None:
        super().__init__(f"call not connected to a stream (HTTP {status}): {twiml[:200]}")
        self.status = status
        self.twiml = twiml
        self.verbs = verbs or []


@dataclass(frozen=True)
class ReceivedRecord:
    """One frame from the gateway: loop time, event, frame size, mark name, raw text if kept."""

    at: float
    event: str
    size: int
    mark: str | None = None
    raw: str | bytes | None = None


Segment = npt.NDArray[np.int16] | bytes


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))


def _retarget(url: str, base_url: str) -> str:
    """Aim ``url`` (public) at ``base_url``'s host, keeping path and query, scheme family preserved."""
    parts, base = urlsplit(url), urlsplit(base_url)
    if parts.netloc == base.netloc:
        return url
    ws = parts.scheme in ("ws", "wss")
    scheme = ("wss" if base.scheme == "https" else "ws") if ws else base.scheme
    return urlunsplit((scheme, base.netloc, parts.path, parts.query, ""))


class TwilioCallerStandIn:
    """Places calls on a gateway at ``base_url`` the way Twilio does. ``async with`` or ``aclose()``.

    ``public_url`` is the URL the gateway believes it is reached at (signatures are computed over it);
    default ``base_url``. ``auth_token`` signs the webhooks (an empty token sends no signature).
    """

    def __init__(
        self,
        base_url: str,
        auth_token: str,
        *,
        public_url: str | None = None,
        account_sid: str | None = None,
        http_timeout: float = 10.0,
        keep_raw: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or new_sid("AC")
        self.keep_raw = keep_raw
        self.http = httpx.AsyncClient(timeout=http_timeout, trust_env=False)

    async def __aenter__(self) -> TwilioCallerStandIn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def call_form(self, call_sid: str, from_: str, to: str, status: str = "ringing") -> dict[str, str]:
        """The form fields Twilio posts for an inbound call (docs/providers/twilio.md#call-setup)."""
        return {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid,
            "CallStatus": status, "Called": to, "Caller": from_, "Direction": "inbound",
            "From": from_, "FromCountry": "US", "To": to, "ToCountry": "US",
        }

    async def post_signed(
        self, public_url: str, form: Mapping[str, str], *, signature: str | bool | None = True,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``form`` to ``public_url`` (sent to ``base_url``'s host). ``signature``: True = compute it,
        False/None = no header, a str = send that header value."""
        sent_headers = dict(headers or {})
        if signature is True:
            if self.auth_token:
                sent_headers["X-Twilio-Signature"] = compute_twilio_signature(self.auth_token, public_url, form)
        elif isinstance(signature, str):
            sent_headers["X-Twilio-Signature"] = signature
        return await self.http.post(_retarget(public_url, self.base_url), data=dict(form), headers=sent_headers)

    async def place_call(
        self,
        *,
        from_: str = "+15551230000",
        to: str = "+15559870000",
        call_sid: str | None = None,
        extra_form: Mapping[str, str] | None = None,
        signature: str | bool | None = True,
        parameter_overrides: Mapping[str, str | None] | None = None,
        start_call_sid: str | None = None,
        send_connected: bool = True,
        send_start: bool = True,
        continuous_media: bool = True,
        follow_redirect: bool = True,
        upgrade_signature: bool = True,
        open_timeout: float = 10.0,
        stream_delay_s: float = 0.0,
    ) -> CallHandle:
        """Webhook -> TwiML -> WebSocket -> ``connected`` + ``start`` -> media flowing. See module doc.
        ``stream_delay_s`` simulates the carrier's time between the TwiML answer and opening the stream
        (Twilio parses it, sets up media and dials the WebSocket: typically a few hundred ms)."""
        call_sid = call_sid or new_sid("CA")
        form = self.call_form(call_sid, from_, to)
        form.update(extra_form or {})
        response = await self.post_signed(self.public_url + VOICE_PATH, form, signature=signature)
        if stream_delay_s > 0:
            await asyncio.sleep(stream_delay_s)  # a simulated carrier latency, not synchronisation
        return await self._connect_from(
            response.status_code, response.text, call_sid=call_sid, from_=from_, to=to,
            parameter_overrides=parameter_overrides, start_call_sid=start_call_sid, send_connected=send_connected,
            send_start=send_start, continuous_media=continuous_media, follow_redirect=follow_redirect,
            upgrade_signature=upgrade_signature, open_timeout=open_timeout)

    async def follow(self, handle: CallHandle, open_timeout: float = 10.0, twiml: str | None = None) -> CallHandle | None:
        """What Twilio does when the after-stream TwiML of ``handle`` (its stream ended, the call is up)
        holds a new ``<Connect><Stream>``: open that stream for the same call. None otherwise.
        ``twiml``: a later document of the same call instead (e.g. a transfer's fallback back to the bot)."""
        if twiml is None:
            twiml = handle.after_stream_twiml
            if handle.after_stream_status != 200:
                return None
        if not twiml or "<Connect" not in twiml:
            return None
        return await self._connect_from(
            200, twiml, call_sid=handle.call_sid, from_=handle.from_, to=handle.to, parameter_overrides=None,
            start_call_sid=None, send_connected=True, send_start=True, continuous_media=handle.continuous_media,
            follow_redirect=handle.follow_redirect, upgrade_signature=True, open_timeout=open_timeout)

    async def _connect_from(
        self, status: int, text: str, *, call_sid: str, from_: str, to: str,
        parameter_overrides: Mapping[str, str | None] | None, start_call_sid: str | None, send_connected: bool,
        send_start: bool, continuous_media: bool, follow_redirect: bool, upgrade_signature: bool,
        open_timeout: float,
    ) -> CallHandle:
        """Obey TwiML holding ``<Connect><Stream>``: open the stream (``CallRejected`` otherwise)."""
        verbs: list[TwimlVerb] | None = None
        with contextlib.suppress(ValueError):
            verbs = parse_twiml(text)
        connect_at = next((i for i, v in enumerate(verbs or []) if v.name == "Connect"), None)
        stream = None
        if verbs is not None and connect_at is not None:
            stream = next((c for c in verbs[connect_at].children if c.name == "Stream"), None)
        if status != 200 or verbs is None or connect_at is None or stream is None:
            raise CallRejected(status, text, verbs)
        assert verbs is not None and connect_at is not None
        parameters = {p.attrs.get("name", ""): p.attrs.get("value", "") for p in stream.children
                      if p.name == "Parameter"}
        for name, value in (parameter_overrides or {}).items():
            if value is None:
                parameters.pop(name, None)
            else:
                parameters[name] = value
        after = verbs[connect_at + 1:]
        handle = CallHandle(
            self, call_sid=call_sid, from_=from_, to=to, twiml=text, verbs=verbs,
            stream_url=stream.attrs.get("url", ""), parameters=parameters,
            after_connect=after, continuous_media=continuous_media, follow_redirect=follow_redirect,
        )
        if not handle.stream_url or urlsplit(handle.stream_url).query:
            handle.violations.append(f"<Stream url> must be absolute and without a query: {handle.stream_url!r}")
        if not after:
            handle.violations.append("no TwiML verb after </Connect>: the call would end when the socket closes")
        await handle._open(
            start_call_sid=start_call_sid or call_sid, send_connected=send_connected, send_start=send_start,
            upgrade_signature=upgrade_signature, open_timeout=open_timeout,
        )
        return handle


class CallHandle:
    """One live call of the stand-in. All methods run on the loop that placed the call.

    Public state (read freely; mutate never): ``call_sid``, ``stream_sid``, ``parameters``, ``twiml``,
    ``after_connect``, ``origin``, ``playback`` (``PlaybackBuffer``: marks, clears, media, counters),
    ``received`` (``ReceivedRecord`` list), ``violations``, ``close_code``/``close_reason``,
    ``after_stream_twiml``, ``media_sent``, ``pacing_lag_max_s``.
    """

    def __init__(
        self, standin: TwilioCallerStandIn, *, call_sid: str, from_: str, to: str, twiml: str,
        verbs: list[TwimlVerb], stream_url: str, parameters: dict[str, str], after_connect: list[TwimlVerb],
        continuous_media: bool, follow_redirect: bool,
    ) -> None:
        self.standin = standin
        self.call_sid = call_sid
        self.from_ = from_
        self.to = to
        self.twiml = twiml
        self.verbs = verbs
        self.stream_url = stream_url
        self.parameters = parameters
        self.after_connect = after_connect
        self.stream_sid = new_sid("MZ")
        self.continuous_media = continuous_media
        self.follow_redirect = follow_redirect
        self.received: list[ReceivedRecord] = []
        self.violations: list[str] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.after_stream_twiml: str | None = None
        self.after_stream_status: int | None = None
        self.media_sent = 0
        self.pacing_lag_max_s = 0.0
        self.hung_up = False
        self.origin = 0.0
        self.playback = PlaybackBuffer(0.0)
        self._loop = asyncio.get_running_loop()
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._started = False
        self._script: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._script_ready = asyncio.Event()
        self._player_wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()  # closed AND after-stream redirect done
        self._caller_audio = bytearray()
        self._tasks: list[asyncio.Task[None]] = []

    # --- set-up ----------------------------------------------------------------------------------

    async def _open(self, *, start_call_sid: str, send_connected: bool, send_start: bool,
                    upgrade_signature: bool, open_timeout: float) -> None:
        headers: dict[str, str] = {}
        if upgrade_signature and self.standin.auth_token:
            headers["X-Twilio-Signature"] = compute_twilio_signature(
                self.standin.auth_token, self.stream_url, {})
        target = _retarget(_ws_url(self.stream_url) if self.stream_url.startswith("http") else self.stream_url,
                           self.standin.base_url)
        self._ws = await connect(target, additional_headers=headers, open_timeout=open_timeout, proxy=None,
                                 max_size=2**20, ping_interval=None, compression=None)
        self._start_call_sid = start_call_sid
        self._tasks.append(asyncio.create_task(self._receiver(), name=f"twilio-standin-recv-{self.call_sid}"))
        if send_connected:
            await self.send_raw(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        if send_start:
            await self.send_start()

    async def send_start(self, call_sid: str | None = None) -> None:
        """Send ``start`` (sequenceNumber "1") and begin media pacing and playback; once per call."""
        if self._started:
            raise RuntimeError("start already sent")
        self._started = True
        self.origin = self._loop.time()
        self.playback = PlaybackBuffer(self.origin)
        await self._send({
            "event": "start",
            "start": {
                "accountSid": self.standin.account_sid, "streamSid": self.stream_sid,
                "callSid": call_sid or self._start_call_sid, "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(self.parameters),
            },
            "streamSid": self.stream_sid,
        })
        self._tasks.append(asyncio.create_task(self._sender(), name=f"twilio-standin-send-{self.call_sid}"))
        self._tasks.append(asyncio.create_task(self._player(), name=f"twilio-standin-play-{self.call_sid}"))

    # --- sending ---------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one JSON message with the next sequenceNumber (assigned under the lock: wire order)."""
        async with self._send_lock:
            if self._ws is None or self._closed.is_set():
                return
            self._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self._seq),
                       **{k: v for k, v in message.items() if k != "event"}}
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps(message, separators=(",", ":")))

    async def send_raw(self, frame: str | bytes) -> None:
        """Send any frame as is (malformed-input tests); no sequence number is consumed."""
        async with self._send_lock:
            if self._ws is not None and not self._closed.is_set():
                with contextlib.suppress(ConnectionClosed):
                    await self._ws.send(frame)

    def queue_audio(self, *segments: Segment) -> asyncio.Future[None]:
        """Append caller audio (int16 PCM 8 kHz arrays, or raw mu-law bytes) to the script; the future
        resolves when its last frame has been sent. Each segment is padded to whole 20 ms frames."""
        frames: list[bytes] = []
        for segment in segments:
            if isinstance(segment, bytes | bytearray):
                data = bytes(segment)
                padded = data + b"\xff" * (-len(data) % FRAME_BYTES)
                frames.extend(padded[i:i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES))
            else:
                frames.extend(mulaw_frames(segment))
        done: asyncio.Future[None] = self._loop.create_future()
        if not frames:
            done.set_result(None)
            return done
        for frame in frames[:-1]:
            self._script.append((frame, None))
        self._script.append((frames[-1], done))
        self._script_ready.set()
        return done

    async def send_audio(self, *segments: Segment, timeout_s: float | None = None) -> None:
        """``queue_audio`` and wait until it has all been sent (real time: ~20 ms per frame)."""
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
        """A ``dtmf`` message (track ``inbound_track``), interleaved with the media flow."""
        await self._send({"event": "dtmf", "streamSid": self.stream_sid,
                          "dtmf": {"track": "inbound_track", "digit": digit}})

    async def hang_up(self) -> None:
        """The caller hangs up: ``stop``, then the socket closes (1000). No after-stream redirect."""
        if self._closed.is_set():
            return
        self.hung_up = True
        await self._send({"event": "stop", "streamSid": self.stream_sid,
                          "stop": {"accountSid": self.standin.account_sid, "callSid": self.call_sid}})
        await self.close_socket(1000)

    stop = hang_up

    async def close_socket(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket cleanly without ``stop``, and wait for the close to finish."""
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(code, reason)
        await self.wait_closed(timeout_s=10)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self.hung_up = True
        transport = getattr(self._ws, "transport", None)
        if transport is not None:
            transport.abort()

    # --- receiving and playback --------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _echo(self, marks: list[MarkRecord]) -> None:
        for mark in marks:
            mark.echoed_at = self._loop.time()
            await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": mark.name}})

    async def _receiver(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for frame in ws:
                now = self._loop.time()
                msg, problems = validate_gateway_frame(frame, self.stream_sid if self._started else None)
                self.violations.extend(problems)
                event = str(msg.get("event")) if msg is not None else "?"
                mark_name = None
                echoes: list[MarkRecord] = []
                if msg is not None and not problems:
                    if event == "media":
                        echoes = self.playback.add_media(now, binascii.a2b_base64(msg["media"]["payload"]))
                    elif event == "mark":
                        mark_name = msg["mark"]["name"]
                        echoes = self.playback.add_mark(now, mark_name)
                    elif event == "clear":
                        echoes = self.playback.clear(now)
                self.received.append(ReceivedRecord(now, event, len(frame), mark_name,
                                                    frame if self.standin.keep_raw else None))
                await self._echo(echoes)
                self._player_wake.set()
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            await self._on_closed(ws)

    async def _on_closed(self, ws: ClientConnection) -> None:
        self.close_code = ws.close_code
        self.close_reason = ws.close_reason or ""
        if self._started:
            self.playback.advance(self._loop.time())  # what played until the line went dead
        self._closed.set()
        self._script_ready.set()
        self._player_wake.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for _frame, future in self._script:
            if future is not None and not future.done():
                future.cancel()
        await self._notify()
        if self.follow_redirect and not self.hung_up:
            redirect = next((v for v in self.after_connect if v.name == "Redirect"), None)
            if redirect is not None and redirect.text:
                form = self.standin.call_form(self.call_sid, self.from_, self.to, status="in-progress")
                for attempt in (1, 2, 3):  # a webhook whose connection failed is retried
                    try:
                        response = await self.standin.post_signed(redirect.text, form)
                        self.after_stream_status = response.status_code
                        self.after_stream_twiml = response.text
                        break
                    except httpx.TransportError as error:
                        if attempt == 3:
                            self.violations.append(f"after-stream redirect failed: {error!r}")
                    except (httpx.HTTPError, RuntimeError) as error:  # RuntimeError: the stand-in was closed
                        self.violations.append(f"after-stream redirect failed: {error!r}")
                        break
        self._finished.set()
        await self._notify()

    async def _player(self) -> None:
        """Echo marks when playback reaches them (wakes at the due time or on any inbound frame)."""
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
            echoes = self.playback.advance(self._loop.time())
            if echoes:
                await self._echo(echoes)
                await self._notify()

    async def _sender(self) -> None:
        """One media frame per 20 ms on absolute deadlines (origin + 20 ms * (k + 1))."""
        slot = 0
        while not self._closed.is_set():
            if not self._script and not self.continuous_media:
                self._script_ready.clear()
                await self._script_ready.wait()
                if self._closed.is_set():
                    return
                slot = max(slot, math.floor((self._loop.time() - self.origin) / FRAME_S))
            deadline = self.origin + FRAME_S * (slot + 1)
            delay = deadline - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing on the loop clock, not synchronisation
            self.pacing_lag_max_s = max(self.pacing_lag_max_s, self._loop.time() - deadline)
            frame, done = self._script.popleft() if self._script else (SILENCE_FRAME, None)
            offset = slot * FRAME_BYTES
            if len(self._caller_audio) < offset:
                self._caller_audio.extend(b"\xff" * (offset - len(self._caller_audio)))
            self._caller_audio[offset:offset + FRAME_BYTES] = frame
            payload = binascii.b2a_base64(frame, newline=False).decode("ascii")
            await self._send({"event": "media", "streamSid": self.stream_sid,
                              "media": {"track": "inbound", "chunk": str(self.media_sent + 1),
                                        "timestamp": str(slot * 20), "payload": payload}})
            self.media_sent += 1
            slot += 1
            if done is not None and not done.done():
                done.set_result(None)

    # --- waiting and results -------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (re-checked after every inbound frame, echo and close).
        Raises ``TimeoutError``."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_closed(self, timeout_s: float = 10.0) -> int | None:
        """Wait for the socket to close (and the after-stream redirect, if any); return the close code."""
        async with asyncio.timeout(timeout_s):
            await self._finished.wait()
        return self.close_code

    async def wait_mark_echoes(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until ``count`` marks have been echoed."""
        await self.wait_for(lambda: sum(m.echoed_at is not None for m in self.playback.marks) >= count,
                            timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def events(self, name: str) -> list[ReceivedRecord]:
        """Received frames of one event type, in arrival order."""
        return [r for r in self.received if r.event == name]

    def caller_mulaw(self) -> bytes:
        """What the caller sent, on the timeline (sample 0 = ``origin``)."""
        return bytes(self._caller_audio)

    def played_audio(self, total_samples: int | None = None) -> npt.NDArray[np.int16]:
        """Bot audio actually played, int16 8 kHz on the caller's timeline (sample 0 = ``origin``)."""
        return mulaw_decode(self.playback.played_mulaw(total_samples))

    def stereo(self) -> npt.NDArray[np.int16]:
        """(N, 2) int16: caller left, bot right, aligned on the stream timeline."""
        length = max(len(self._caller_audio), len(self.playback.played_mulaw()))
        caller = mulaw_decode(bytes(self._caller_audio) + b"\xff" * (length - len(self._caller_audio)))
        return np.stack([caller, self.played_audio(length)], axis=1)

    def write_wav(self, path: str | Path) -> Path:
        """Write ``stereo()`` as a 16-bit 8 kHz stereo WAV (caller left, bot right)."""
        target = Path(path)
        with wave.open(str(target), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(self.stereo().astype("<i2").tobytes())
        return target

    async def aclose(self) -> None:
        """Tear down: abort the socket if still open, cancel tasks. Idempotent."""
        if not self._closed.is_set():
            self.abort()
            with contextlib.suppress(TimeoutError):
                await self.wait_closed(timeout_s=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> CallHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

