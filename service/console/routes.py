"""Console routes (docs/console.md): login, the active-calls and one-call views, their JSON APIs,
and the agent's signed view of one escalation.

Thin adapter: authentication rules are in ``service.console.auth``; data is read from Redis through
the gateway's ``StateStore`` so every replica shows the whole fleet. Every route checks the session
cookie or ``Authorization: Bearer``: APIs answer 401 with no data, pages redirect to the login form.
APIs refuse cross-site browser requests (403).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from redis.exceptions import RedisError

from service.console import auth
from service.gateway import Gateway

log = structlog.get_logger(__name__)

LIST_LIMIT = 100
"""Most entries any list API returns (escalations, dead letters, replicas): bounds every response."""
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

_STYLE = """<style>
body{font:16px/1.4 system-ui,sans-serif;margin:0;padding:1rem;max-width:80rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3rem;text-align:left}
a:focus,button:focus,input:focus{outline:3px solid #1a73e8;outline-offset:2px}
#calls{min-height:12rem}@media (max-width:600px){body{font-size:15px;padding:.5rem}}
</style>"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
        f"{_STYLE}</head><body>{body}</body></html>",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


def mount(app: FastAPI, gateway: Gateway) -> None:
    """Add the console routes to ``app``; a no-op when ``CALLBRIDGE_CONSOLE_TOKEN`` is empty."""
    settings = gateway.settings
    token = settings.console_token.get_secret_value()
    if not token:
        return
    skey = auth.session_key(token)
    akey = auth.agent_link_key(token, settings.agent_link_secret.get_secret_value())
    router = APIRouter(prefix="/console")

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
        return None

    @router.get("/login")
    async def login_form() -> HTMLResponse:
        return _page("callbridge console: log in", (
            "<h1>callbridge console</h1><form method=post action=/console/login>"
            "<label>Operator token <input name=token type=password autocomplete=current-password required></label> "
            "<button type=submit>Log in</button></form>"))

    @router.post("/login")
    async def login(request: Request, token_field: str = Form("", alias="token")) -> Response:
        if auth.cross_site(request.headers, request.headers.get("host", "")):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        if not auth.token_matches(token, token_field):
            log.warning("console.login_failed", client=request.client.host if request.client else None)
            return HTMLResponse("wrong token", status_code=401)
        response = RedirectResponse("/console", status_code=303)
        response.set_cookie(
            auth.SESSION_COOKIE, auth.make_session(skey, time.time(), settings.console_session_ttl_s),
            max_age=settings.console_session_ttl_s, httponly=True, samesite="strict", path="/console",
            secure=settings.public_url.startswith("https://"),
        )
        return response

    @router.get("")
    async def calls_page(request: Request) -> Response:
        if not authed(request):
            return RedirectResponse("/console/login", status_code=303)
        return _page("callbridge console: active calls", (
            "<h1>Active calls</h1><table><thead><tr><th>call</th><th>state</th><th>replica</th>"
            "<th>caller</th><th>duration</th></tr></thead><tbody id=calls></tbody></table>"
            "<script>function r(d){const b=document.getElementById('calls');b.textContent='';"
            "for(const c of d.calls){const t=document.createElement('tr');"
            "const a=document.createElement('a');a.href='/console/calls/'+encodeURIComponent(c.call_id);"
            "a.textContent=c.call_id;const f=[a,c.state,c.replica,c.caller,c.duration_s+' s'];"
            "for(const v of f){const td=document.createElement('td');"
            "if(typeof v==='string'||typeof v==='number')td.textContent=v;else td.append(v);t.append(td)}"
            "b.append(t)}}const es=new EventSource('/console/api/stream/calls');"
            "es.addEventListener('calls',e=>r(JSON.parse(e.data)))</script>"))

    @router.get("/api/calls")
    async def calls_api(request: Request) -> Response:
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        if gateway.state_store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
        rows = await active_rows()
        return JSONResponse({"calls": rows}, headers={"Cache-Control": "no-store"})

    async def active_rows() -> list[dict[str, Any]]:
        store = gateway.state_store
        now = time.time()
        rows: list[dict[str, Any]] = []
        for call_id in (await store.active_calls())[:500]:
            snap = await store.load_call(call_id)
            if snap is None:
                continue
            started = float(snap.fields.get("started_at") or now)
            rows.append({
                "call_id": call_id, "state": snap.fields.get("state", ""),
                "replica": snap.fields.get("replica", ""),
                "caller": snap.fields.get("from", ""),  # masked when written (docs/redis-schema.md)
                "duration_s": round(max(0.0, now - started)),
            })
        return rows

    @router.get("/api/escalations")
    async def escalations_api(request: Request) -> Response:
        """Pending (outbox) and dead-lettered escalations, newest dead letters first, at most LIST_LIMIT each."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        store = gateway.state_store
        if store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
        pending = await store.redis.xrange(store.keys.outbox, count=LIST_LIMIT)
        dead = await store.redis.xrevrange(store.keys.dead_letter, count=LIST_LIMIT)
        return JSONResponse({
            "pending": [{"id": _text(i), **_entry(f, ("escalation_id", "call_id", "trigger", "decided_at"))}
                        for i, f in pending],
            "dead_letter": [{"id": _text(i), **_entry(f, ("escalation_id", "call_id", "status", "response", "dead_at"))}
                            for i, f in dead],
        }, headers={"Cache-Control": "no-store"})

    @router.get("/api/fleet")
    async def fleet_api(request: Request) -> Response:
        """Live replicas (those with an unexpired heartbeat key), at most LIST_LIMIT."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        store = gateway.state_store
        if store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
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
                replicas.append({"replica": str(beat.get("replica", "")), "ts": beat.get("ts"),
                                 "calls": beat.get("calls")})
            if len(replicas) >= LIST_LIMIT:
                break
        return JSONResponse({"replicas": replicas}, headers={"Cache-Control": "no-store"})

    @router.get("/api/stream/calls")
    async def calls_stream(request: Request) -> Response:
        """Server-Sent Events: the active-calls list whenever it changes, a comment heartbeat otherwise.

        Pull-based: the generator builds one snapshot per period only when the previous one was sent,
        so a client that stops reading holds at most one snapshot (no queue grows); the response
        ends after SSE_MAX_LIFETIME_S or when the client disconnects.
        """
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        if gateway.state_store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)

        async def events() -> AsyncIterator[str]:
            started = last_beat = time.monotonic()
            last = ""
            seq = 0
            yield "retry: 2000\n\n"
            while time.monotonic() - started < SSE_MAX_LIFETIME_S and not await request.is_disconnected():
                try:
                    body = json.dumps({"calls": await active_rows()}, separators=(",", ":"))
                except (RedisError, OSError) as exc:  # Redis outage: keep the last list, keep the stream
                    log.warning("console.stream_read_failed", error=repr(exc))
                    body = last
                now = time.monotonic()
                if body != last:
                    seq += 1
                    last = body
                    last_beat = now
                    yield f"id: {seq}\nevent: calls\ndata: {body}\n\n"
                elif now - last_beat >= SSE_HEARTBEAT_S:
                    last_beat = now
                    yield ": heartbeat\n\n"
                await asyncio.sleep(SSE_PERIOD_S)

        return EventStreamResponse(events())

    @router.post("/api/escalations/dead/{entry_id}/redeliver")
    async def redeliver(request: Request, entry_id: str) -> Response:
        """Move one dead letter back into the outbox (one MULTI: XADD to the outbox, XDEL from the dead
        letters), so the delivery worker sends the same body again under the same escalation id.
        POST only, cross-site refused: a link or a foreign form cannot trigger it."""
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        store = gateway.state_store
        if store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
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
        await pipe.execute()
        log.info("console.redelivery_queued", escalation_id=entry["escalation_id"], call_id=entry["call_id"])
        return JSONResponse({"queued": entry["escalation_id"]})

    @router.get("/calls/{call_id}")
    async def call_page(request: Request, call_id: str) -> Response:
        if not authed(request):
            return RedirectResponse("/console/login", status_code=303)
        safe = html.escape(call_id[:200])
        return _page(f"call {safe}", (
            f"<p><a href=/console>All calls</a></p><h1>Call <span id=cid>{safe}</span></h1>"
            "<p>State: <span id=state>…</span></p><h2>Transcript</h2><ol id=turns style='min-height:20rem'></ol>"
            "<script>const id=document.getElementById('cid').textContent;async function r(){"
            "const x=await fetch('/console/api/calls/'+encodeURIComponent(id));if(!x.ok)return;const d=await x.json();"
            "document.getElementById('state').textContent=d.state;const o=document.getElementById('turns');"
            "o.textContent='';for(const t of d.transcript){const li=document.createElement('li');"
            "li.textContent=t.role+': '+t.text;o.append(li)}}r();setInterval(r,1000)</script>"))

    @router.get("/api/calls/{call_id}")
    async def call_api(request: Request, call_id: str) -> Response:
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        store = gateway.state_store
        if store is None:
            return JSONResponse({"error": "no state store"}, status_code=503)
        snap = await store.load_call(call_id[:200])
        if snap is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse({
            "call_id": call_id, "state": snap.state,
            "transcript": [{"role": t.role, "text": t.text} for t in snap.transcript[-200:]],
        })

    @router.get("/agent/{escalation_id}")
    async def agent_page(escalation_id: str, exp: str = "", sig: str = "") -> Response:
        if not auth.agent_link_valid(akey, escalation_id, exp, sig, time.time()):
            return HTMLResponse("link invalid or expired", status_code=401)
        return _page("escalation", f"<h1>Escalation {html.escape(escalation_id)}</h1>")

    app.include_router(router)
    log.info("console.mounted")
