"""Console routes (docs/console.md): login, the pages (active calls, one call, escalations, fleet,
softphone), their JSON APIs and Server-Sent-Event feeds, re-delivery of dead letters, the softphone's
call issue, and the agent's signed view of one escalation.

Thin adapter: authentication rules are in ``service.console.auth``, view shaping in
``service.console.views``, HTML in ``service.console.pages``; data is read from Redis through the
gateway's ``StateStore`` so every replica shows the whole fleet. Every route checks the session
cookie or ``Authorization: Bearer``: APIs answer 401 with no data, pages redirect to the login form.
APIs refuse cross-site browser requests (403).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from redis.exceptions import RedisError

from service.console import auth, pages, views
from service.gateway import Gateway
from service.providers.browser import routes as softphone

log = structlog.get_logger(__name__)

LIST_LIMIT = 100
"""Most entries any list API returns (escalations, dead letters, replicas): bounds every response."""
ACTIVE_LIMIT = 500
"""Most active calls a list or feed carries."""
SSE_PERIOD_S = 1.0
SSE_HEARTBEAT_S = 15.0
SSE_MAX_LIFETIME_S = 3600.0
"""An SSE response ends after this long; browsers' EventSource reconnects on its own."""
SSE_SEND_TIMEOUT_S = 30.0
"""A client whose socket accepts nothing for this long is dropped (its connection is closed)."""


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that drops a client that stops reading.

    The generator is advanced only after the previous chunk was handed to the server, so at most one
    chunk per client is held beyond the socket buffers. When the server's ``send`` stays blocked
    (transport paused by a full socket) for ``SSE_SEND_TIMEOUT_S``, the response returns without
    completing, the server closes the connection, and the generator is closed.
    """

    def __init__(self, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._events = content

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self._events:
                message = {"type": "http.response.body", "body": chunk.encode(), "more_body": True}
                try:
                    await asyncio.wait_for(send(message), SSE_SEND_TIMEOUT_S)
                except TimeoutError:
                    log.warning("console.stream_client_dropped", reason="not reading")
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry(fields: dict[Any, Any], keep: tuple[str, ...]) -> dict[str, str]:
    """The named fields of a stream entry as short strings (receiver answers capped at 500 chars)."""
    out = {_text(k): _text(v) for k, v in fields.items() if _text(k) in keep}
    if "response" in out:
        out["response"] = out["response"][:500]
    return out


_STATIC = {"console.css": "text/css", "console.js": "text/javascript", "phone.js": "text/javascript",
           "phone-worklet.js": "text/javascript"}
"""The console's own static files (service/console/static/): no external fetches, no CDN."""


class SharedSnapshots:
    """One build per feed and period, shared by every client of that feed: ten operators watching the
    active calls cost one Redis round trip a second, not ten. Bounded: only the current period's
    snapshots are kept (expired ones are pruned on every build), at most ``MAX_FEEDS`` of them. A
    failed build fails every client waiting on it (each feed then keeps its last snapshot) and is
    retried at the next period. Cancel-safe: a client that goes away does not cancel the shared build."""

    MAX_FEEDS = 256

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, asyncio.Future[dict[str, Any]]]] = {}

    async def get(self, key: str, build: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            for stale in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
                del self._entries[stale]  # only snapshots of the current period stay in memory
            if len(self._entries) >= self.MAX_FEEDS:
                del self._entries[next(iter(self._entries))]
            entry = (now + SSE_PERIOD_S * 0.9, asyncio.ensure_future(build()))
            self._entries[key] = entry
        return await asyncio.shield(entry[1])


def _page(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


def mount(app: FastAPI, gateway: Gateway) -> None:
    """Add the console routes to ``app``; a no-op when ``CALLBRIDGE_CONSOLE_TOKEN`` is empty."""
    settings = gateway.settings
    token = settings.console_token.get_secret_value()
    if not token:
        return
    skey = auth.session_key(token)
    akey = auth.agent_link_key(token, settings.agent_link_secret.get_secret_value())
    router = APIRouter(prefix="/console")
    shared = SharedSnapshots()

    def authed(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return auth.token_matches(token, header[7:].strip())
        return auth.session_valid(skey, request.cookies.get(auth.SESSION_COOKIE), time.time())

    def api_refusal(request: Request) -> Response | None:
        if auth.cross_site(request.headers, request.headers.get("host", "")):
            log.warning("console.cross_site_refused", path=request.url.path)
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        if not authed(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if gateway.state_store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
        return None

    @router.get("/login")
    async def login_form(next_page: str = Query("/console", alias="next")) -> HTMLResponse:
        return _page(pages.login(auth.safe_next(next_page)))

    @router.post("/login")
    async def login(request: Request, token_field: str = Form("", alias="token"),
                    next_field: str = Form("/console", alias="next")) -> Response:
        if auth.cross_site(request.headers, request.headers.get("host", "")):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        if not auth.token_matches(token, token_field):
            log.warning("console.login_failed", client=request.client.host if request.client else None)
            return HTMLResponse("wrong token", status_code=401)
        response = RedirectResponse(auth.safe_next(next_field), status_code=303)
        response.set_cookie(
            auth.SESSION_COOKIE, auth.make_session(skey, time.time(), settings.console_session_ttl_s),
            max_age=settings.console_session_ttl_s, httponly=True, samesite="strict", path="/console",
            secure=settings.public_url.startswith("https://"),
        )
        return response

    @router.get("/static/{name}")
    async def static(request: Request, name: str) -> Response:
        """The console's own script and stylesheet (a fixed list; logged-in sessions only)."""
        if not authed(request):
            return Response(status_code=401)
        media = _STATIC.get(name)
        if media is None:
            return Response(status_code=404)
        body = resources.files("service.console").joinpath("static", name).read_bytes()
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    def page(build: Callable[[], str]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if not authed(request):
                return RedirectResponse("/console/login", status_code=303)
            return _page(build())
        return handler

    router.add_api_route("", page(pages.calls), methods=["GET"])
    router.add_api_route("/escalations", page(pages.escalations), methods=["GET"])
    router.add_api_route("/fleet", page(pages.fleet), methods=["GET"])
    router.add_api_route("/phone", page(pages.phone), methods=["GET"])

    @router.post("/api/phone/calls")
    async def phone_call(request: Request) -> Response:
        """A softphone call id and its single-use stream token for the logged-in page (POST,
        cross-site refused); the page opens the browser provider's socket with them."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        if not settings.streams_enabled:
            return JSONResponse({"error": "no stream-token key configured"}, status_code=503)
        issued = softphone.issue_call(settings)
        log.info("console.phone_call_issued", call_id=issued["call_id"])
        return JSONResponse(issued, headers={"Cache-Control": "no-store"})

    @router.get("/calls/{call_id}")
    async def call_page(request: Request, call_id: str) -> Response:
        if not authed(request):
            return RedirectResponse("/console/login", status_code=303)
        return _page(pages.call(call_id))

    async def active_rows() -> dict[str, Any]:
        """Every active call's row from ONE pipelined round trip: each call's hash and the tail of its
        sentiment series (what the sparkline needs), never the transcripts."""
        store = gateway.state_store
        call_ids = (await store.active_calls())[:ACTIVE_LIMIT]
        pipe = store.redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hgetall(store.keys.call(call_id))
            pipe.lrange(store.keys.sentiment(call_id), -views.SPARK_POINTS, -1)
        replies = await pipe.execute() if call_ids else []
        now = time.time()
        rows = [views.call_row(snap, now) for snap in (
            views.row_snapshot(call_id, raw_hash, raw_points)
            for call_id, raw_hash, raw_points in zip(call_ids, replies[0::2], replies[1::2], strict=True)
        ) if snap is not None]
        return {"calls": rows}

    async def call_detail(call_id: str) -> dict[str, Any] | None:
        snap = await gateway.state_store.load_call(call_id[:200])
        return None if snap is None else views.call_detail(snap, time.time())

    async def escalation_lists() -> dict[str, Any]:
        """Pending (outbox), the recent escalations with their delivery status, and dead letters with
        the receiver's answer, newest first; at most LIST_LIMIT of each."""
        store = gateway.state_store
        pending = await store.redis.xrange(store.keys.outbox, count=LIST_LIMIT)
        dead = await store.redis.xrevrange(store.keys.dead_letter, count=LIST_LIMIT)
        recent_ids = [_text(c) for c in await store.redis.zrevrange(store.keys.recent_escalations, 0, LIST_LIMIT - 1)]
        pipe = store.redis.pipeline(transaction=False)
        for call_id in recent_ids:
            pipe.hmget(store.keys.call(call_id), "escalation_id", "escalation_trigger", "escalation_status", "escalated_at")
        recent = []
        for call_id, values in zip(recent_ids, await pipe.execute() if recent_ids else [], strict=True):
            esc_id, trigger, status, at = (_text(v) if v is not None else "" for v in values)
            recent.append({"call_id": call_id, "escalation_id": esc_id, "trigger": trigger,
                           "status": status or "expired", "at": at})
        return {
            "pending": [{"id": _text(i), **_entry(f, ("escalation_id", "call_id", "trigger", "decided_at"))}
                        for i, f in pending],
            "recent": recent,
            "dead_letter": [{"id": _text(i), **_entry(f, ("escalation_id", "call_id", "status", "response", "dead_at"))}
                            for i, f in dead],
        }

    async def fleet_list() -> dict[str, Any]:
        """Live replicas (unexpired heartbeat keys, at most LIST_LIMIT) with their draining flag and
        the number of active calls each owns."""
        store = gateway.state_store
        owned: dict[str, int] = {}
        for row in (await active_rows())["calls"]:
            owned[row["replica"]] = owned.get(row["replica"], 0) + 1
        replicas: list[dict[str, Any]] = []
        async for key in store.redis.scan_iter(match=store.keys.replica_prefix + "*", count=100):
            raw = await store.redis.get(key)
            if raw is None:
                continue
            try:
                beat = json.loads(raw)
            except ValueError:
                continue
            if isinstance(beat, dict):
                name = str(beat.get("replica", ""))
                replicas.append({"replica": name, "ts": beat.get("ts"), "calls": beat.get("calls"),
                                 "draining": bool(beat.get("draining")), "active_calls": owned.get(name, 0)})
            if len(replicas) >= LIST_LIMIT:
                break
        replicas.sort(key=lambda r: r["replica"])
        return {"replicas": replicas}

    def json_api(build: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            refusal = api_refusal(request)
            if refusal is not None:
                return refusal
            return JSONResponse(await build(), headers={"Cache-Control": "no-store"})
        return handler

    def stream_api(name: str, build: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            refusal = api_refusal(request)
            if refusal is not None:
                return refusal
            return EventStreamResponse(snapshot_events(request, name, build))
        return handler

    router.add_api_route("/api/calls", json_api(active_rows), methods=["GET"])
    router.add_api_route("/api/escalations", json_api(escalation_lists), methods=["GET"])
    router.add_api_route("/api/fleet", json_api(fleet_list), methods=["GET"])
    router.add_api_route("/api/stream/calls", stream_api("calls", active_rows), methods=["GET"])
    router.add_api_route("/api/stream/escalations", stream_api("escalations", escalation_lists), methods=["GET"])
    router.add_api_route("/api/stream/fleet", stream_api("fleet", fleet_list), methods=["GET"])

    @router.get("/api/calls/{call_id}")
    async def call_api(request: Request, call_id: str) -> Response:
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        detail = await call_detail(call_id)
        if detail is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse(detail, headers={"Cache-Control": "no-store"})

    @router.get("/api/stream/calls/{call_id}")
    async def call_stream(request: Request, call_id: str) -> Response:
        """One call's page feed: an ``event: call`` with the whole detail (transcript, sentiment chart,
        events, escalation status) whenever it changes."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal

        async def build() -> dict[str, Any]:
            return await call_detail(call_id) or {"error": "no such call"}

        return EventStreamResponse(snapshot_events(request, "call", build))

    @router.post("/api/escalations/dead/{entry_id}/redeliver")
    async def redeliver(request: Request, entry_id: str) -> Response:
        """Move one dead letter back into the outbox (one MULTI: XADD to the outbox, XDEL from the dead
        letters), so the delivery worker sends the same body again under the same escalation id.
        POST only, cross-site refused: a link or a foreign form cannot trigger it."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        store = gateway.state_store
        found = await store.redis.xrange(store.keys.dead_letter, min=entry_id[:40], max=entry_id[:40], count=1)
        if not found:
            return JSONResponse({"error": "no such dead letter"}, status_code=404)
        raw = {_text(k): v for k, v in found[0][1].items()}
        # The body goes back byte-for-byte (same Idempotency-Key for the receiver); decided_at is unknown here.
        entry: dict[str, Any] = {"escalation_id": _text(raw.get("escalation_id", "")),
                                 "call_id": _text(raw.get("call_id", "")), "body": raw.get("body", b"")}
        pipe = store.redis.pipeline(transaction=True)
        pipe.xadd(store.keys.outbox, entry)
        pipe.xdel(store.keys.dead_letter, entry_id[:40])
        if entry["call_id"]:  # the escalations page shows it pending again
            pipe.hset(store.keys.call(entry["call_id"]), "escalation_status", "pending")
        await pipe.execute()
        log.info("console.redelivery_queued", escalation_id=entry["escalation_id"], call_id=entry["call_id"])
        return JSONResponse({"queued": entry["escalation_id"]})

    @router.get("/agent/{escalation_id}")
    async def agent_page(escalation_id: str, exp: str = "", sig: str = "") -> Response:
        """The receiving agent's view: valid only with an unexpired signature of this escalation id."""
        if not auth.agent_link_valid(akey, escalation_id, exp, sig, time.time()):
            return HTMLResponse("link invalid or expired", status_code=401)
        snap = await find_escalated_call(escalation_id)
        if snap is None:
            return HTMLResponse("escalation not found (expired)", status_code=404)
        return _page(pages.agent(views.agent_view(snap, escalation_id)))

    async def find_escalated_call(escalation_id: str) -> Any:
        """The call of one escalation: looked up in the recent-escalations index (bounded)."""
        store = gateway.state_store
        if store is None:
            return None
        call_ids = [_text(c) for c in await store.redis.zrevrange(store.keys.recent_escalations, 0, -1)]
        pipe = store.redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hget(store.keys.call(call_id), "escalation_id")
        for call_id, found in zip(call_ids, await pipe.execute() if call_ids else [], strict=True):
            if found is not None and _text(found) == escalation_id:
                return await store.load_call(call_id)
        return None

    async def snapshot_events(request: Request, name: str,
                              build: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[str]:
        """Server-Sent Events: ``event: <name>`` with the whole snapshot whenever it changes, checked
        every SSE_PERIOD_S, a comment heartbeat otherwise.

        Pull-based: a snapshot is built only after the previous one was handed to the server, so a
        client that stops reading holds at most one snapshot (no queue grows); the response ends
        after SSE_MAX_LIFETIME_S or when the client disconnects."""
        started = last_beat = time.monotonic()
        last = ""
        seq = 0
        yield "retry: 2000\n\n"
        while time.monotonic() - started < SSE_MAX_LIFETIME_S and not await request.is_disconnected():
            try:
                body = json.dumps(await shared.get(request.url.path, build), separators=(",", ":"))
            except (RedisError, OSError) as exc:  # Redis outage: keep the last snapshot, keep the stream
                log.warning("console.stream_read_failed", error=repr(exc))
                body = last
            now = time.monotonic()
            if body != last:
                seq += 1
                last = body
                last_beat = now
                yield f"id: {seq}\nevent: {name}\ndata: {body}\n\n"
            elif now - last_beat >= SSE_HEARTBEAT_S:
                last_beat = now
                yield ": heartbeat\n\n"
            await asyncio.sleep(SSE_PERIOD_S)

    app.include_router(router)
    # The softphone's media socket: a provider, but no carrier (no webhook, no carrier registry entry);
    # it exists only with the console, next to the carriers' sockets served by ``service.wsio``.
    websocket_routes = getattr(app.state, "websocket_routes", None)
    if websocket_routes is None:
        websocket_routes = app.state.websocket_routes = {}
    softphone.PROVIDER.install(app, gateway, websocket_routes)
    log.info("console.mounted")
