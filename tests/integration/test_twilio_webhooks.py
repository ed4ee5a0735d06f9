"""Twilio HTTP contract over a real socket: signature checks, TwiML shape, stream token gate (1008)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from service.providers.tokens import mint_stream_token
from tests.integration.conftest import AUTH_TOKEN, run_gateway

CALL_SID = "CA" + "a" * 32
FORM = {"CallSid": CALL_SID, "AccountSid": "AC" + "b" * 32, "From": "+15551234567", "To": "+15557654321",
        "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


def sign(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, form)


async def post_signed(base: str, path: str, form: dict[str, str], signature: str | None = None) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature if signature is not None else sign(base + path, form)}
    async with httpx.AsyncClient() as client:
        return await client.post(base + path, data=form, headers=headers)


async def test_voice_webhook_returns_connect_stream_with_token_and_redirect() -> None:
    async with run_gateway() as gw:
        response = await post_signed(gw.base_url, "/twilio/voice", FORM)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(response.text)
        stream = root.find("./Connect/Stream")
        assert stream is not None
        assert stream.get("url") == gw.base_url.replace("http://", "ws://") + "/twilio/media"
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert params["from"] == FORM["From"] and params["to"] == FORM["To"]
        assert params["stream_token"]
        redirect = root.find("./Redirect")
        assert redirect is not None and redirect.text == gw.base_url + "/twilio/after-stream"


@pytest.mark.parametrize("signature", ["", "bm90LXZhbGlk", None])
async def test_bad_signature_is_403_and_nothing_else(signature: str | None) -> None:
    async with run_gateway() as gw:
        headers = {} if signature is None else {"X-Twilio-Signature": signature}
        async with httpx.AsyncClient() as client:
            response = await client.post(gw.base_url + "/twilio/voice", data=FORM, headers=headers)
        assert response.status_code == 403
        assert "<Response" not in response.text


async def test_signature_over_tampered_form_is_rejected() -> None:
    async with run_gateway() as gw:
        good = sign(gw.base_url + "/twilio/voice", FORM)
        tampered = {**FORM, "From": "+15550000000"}
        response = await post_signed(gw.base_url, "/twilio/voice", tampered, signature=good)
        assert response.status_code == 403


async def test_https_public_url_gives_wss_stream() -> None:
    async with run_gateway() as gw:
        # The gateway signs against its configured public URL, whatever the local socket is.
        gw.settings.public_url = "https://gw.example.com"
        response = await post_signed(gw.base_url, "/twilio/voice", FORM,
                                     signature=sign("https://gw.example.com/twilio/voice", FORM))
        assert response.status_code == 200
        stream = ET.fromstring(response.text).find("./Connect/Stream")
        assert stream is not None and stream.get("url") == "wss://gw.example.com/twilio/media"


async def test_after_stream_hangs_up_normal_calls_and_enqueues_escalated_ones() -> None:
    async with run_gateway(transfer_queue="support") as gw:
        normal = await post_signed(gw.base_url, "/twilio/after-stream", FORM)
        assert normal.status_code == 200
        assert ET.fromstring(normal.text).find("./Hangup") is not None
        gw.gateway.mark_escalated(CALL_SID)
        escalated = await post_signed(gw.base_url, "/twilio/after-stream", FORM)
        enqueue = ET.fromstring(escalated.text).find("./Enqueue")
        assert enqueue is not None and enqueue.text == "support"
        forged = await post_signed(gw.base_url, "/twilio/after-stream", FORM, signature="x")
        assert forged.status_code == 403


async def test_draining_gateway_redirects_new_calls() -> None:
    async with run_gateway() as gw:
        gw.gateway.draining = True
        response = await post_signed(gw.base_url, "/twilio/voice", FORM)
        root = ET.fromstring(response.text)
        assert root.find("./Connect") is None
        redirect = root.find("./Redirect")
        assert redirect is not None and redirect.text == gw.base_url + "/twilio/voice"
        async with httpx.AsyncClient() as client:
            ready = await client.get(gw.base_url + "/readyz")
        assert ready.status_code == 503 and ready.json()["draining"] is True


def _start_message(token: str | None, call_sid: str = CALL_SID) -> str:
    params: dict[str, Any] = {"from": "+15551234567"}
    if token is not None:
        params["stream_token"] = token
    stream_sid = "MZ" + "c" * 32
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "AC" + "b" * 32, "streamSid": stream_sid, "callSid": call_sid,
                  "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                         "channels": 1},
                  "customParameters": params},
    })


async def _close_code_after(url: str, messages: list[str]) -> int | None:
    """Send ``connected`` then ``messages`` (the gateway may close before all arrive) and return the close code."""
    async with websockets.connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            for message in messages:
                await ws.send(message)
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        return ws.close_code


class _CountingOpen:
    def __init__(self) -> None:
        self.opened = 0

    async def __call__(self, _settings: Any) -> Any:
        self.opened += 1
        raise AssertionError("a Realtime session must not be opened for a rejected stream")


@pytest.mark.parametrize(
    "token_kind", ["missing", "expired", "forged", "other_call"],
)
async def test_stream_without_valid_token_is_closed_1008_without_realtime(
    token_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.realtime.sessions as session_module

    opener = _CountingOpen()
    monkeypatch.setattr(session_module, "open_realtime", opener)
    async with run_gateway() as gw:
        secret = gw.settings.effective_stream_token_secret()
        token = {
            "missing": None,
            "expired": mint_stream_token(secret, CALL_SID, 60, now=time.time() - 3600),
            "forged": mint_stream_token(b"some-other-secret-entirely", CALL_SID, 60),
            "other_call": mint_stream_token(secret, "CA" + "f" * 32, 60),
        }[token_kind]
        url = gw.base_url.replace("http://", "ws://") + "/twilio/media"
        code = await _close_code_after(url, [_start_message(token)])
        assert code == 1008
        assert opener.opened == 0


async def test_stream_without_start_is_closed_1008_after_timeout() -> None:
    async with run_gateway(stream_start_timeout_s=0.5) as gw:
        url = gw.base_url.replace("http://", "ws://") + "/twilio/media"
        started = time.monotonic()
        code = await _close_code_after(url, [])
        assert code == 1008
        assert 0.4 <= time.monotonic() - started < 5


async def test_without_any_secret_every_stream_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 12.1): with no auth token and no stream secret the key used to be a public
    constant, so anyone could mint a token; now the stream is closed 1008 and nothing opens."""
    import service.realtime.sessions as session_module

    opener = _CountingOpen()
    monkeypatch.setattr(session_module, "open_realtime", opener)
    async with run_gateway(twilio_auth_token="", stream_token_secret="") as gw:
        assert gw.settings.effective_stream_token_secret() == b""
        public_constant_key = b"callbridge-stream-token:"
        token = mint_stream_token(public_constant_key, CALL_SID, 60)
        url = gw.base_url.replace("http://", "ws://") + "/twilio/media"
        code = await _close_code_after(url, [_start_message(token)])
        assert code == 1008
        assert opener.opened == 0


class _HangingOpen:
    """An ``open_realtime`` that counts and never finishes: the admitted call stays live."""

    def __init__(self) -> None:
        self.opened = 0
        self.release = asyncio.Event()

    async def __call__(self, _settings: Any) -> Any:
        self.opened += 1
        await self.release.wait()
        raise ConnectionError("test over")


def _start_for_stream(token: str, stream_sid: str) -> str:
    message = json.loads(_start_message(token))
    message["streamSid"] = message["start"]["streamSid"] = stream_sid
    return json.dumps(message)


async def _open_admitted(url: str, token: str, stream_sid: str, opener: _HangingOpen, expected: int) -> Any:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(_start_for_stream(token, stream_sid))
    async with asyncio.timeout(10):
        while opener.opened < expected:  # bounded poll on the gateway's own counter
            await asyncio.sleep(0.01)
    return ws


@pytest.mark.parametrize("replicas", [1, 2])
async def test_tokens_are_single_use_and_a_live_call_takes_no_second_stream(
    replicas: int, monkeypatch: pytest.MonkeyPatch, redis_server: Any
) -> None:
    """Regression (issue 12.3): one token used to open 3 concurrent sessions, and a replayed signed voice
    webhook minted a fresh token that attached a parallel stream to a live call. Real Redis; with two
    gateways sharing it, the second replica is the one attacked."""
    import service.realtime.sessions as session_module

    opener = _HangingOpen()
    monkeypatch.setattr(session_module, "open_realtime", opener)
    common = {"start_services": True, "redis_url": redis_server.url, "stream_token_secret": "shared-secret"}
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(run_gateway(replica_id="r1", **common))
        other = first if replicas == 1 else await stack.enter_async_context(run_gateway(replica_id="r2", **common))
        url = first.base_url.replace("http://", "ws://") + "/twilio/media"
        attack_url = other.base_url.replace("http://", "ws://") + "/twilio/media"
        async with asyncio.timeout(10):  # the attacked replica's heartbeat is in Redis
            while not await first.gateway.state_store.redis.exists(first.gateway.state_store.keys.replica("r1")):
                await asyncio.sleep(0.02)
        secret = first.settings.effective_stream_token_secret()
        token = mint_stream_token(secret, CALL_SID, 60)
        victim = await _open_admitted(url, token, "MZ" + "1" * 32, opener, 1)
        try:
            reused = await _close_code_after(attack_url, [_start_for_stream(token, "MZ" + "2" * 32)])
            replayed = mint_stream_token(secret, CALL_SID, 60)  # what a replayed voice webhook hands out
            parallel = await _close_code_after(attack_url, [_start_for_stream(replayed, "MZ" + "3" * 32)])
            assert (reused, parallel) == (1008, 1008)
            assert opener.opened == 1
            assert len(first.gateway.calls) + (len(other.gateway.calls) if other is not first else 0) == 1
        finally:
            opener.release.set()
            await victim.close()
        async with asyncio.timeout(10):  # the call ended and gave its claim up: a new token streams again
            while first.gateway.calls:
                first.gateway.calls_changed.clear()
                await first.gateway.calls_changed.wait()
        fresh = await _open_admitted(attack_url, mint_stream_token(secret, CALL_SID, 60), "MZ" + "4" * 32, opener, 2)
        await fresh.close()
        assert opener.opened == 2


def _raw_request(port: int, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode("ascii"))
    return sock


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def _head(port: int, headers: dict[str, str]) -> str:
    lines = ["POST /twilio/voice HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(1 << 30)}, 403),
        ({"X-Twilio-Signature": "x", "Content-Type": "multipart/form-data; boundary=b",
          "Content-Length": str(1 << 30)}, 415),
        ({"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded",
          "Content-Length": str(1 << 30)}, 413),
    ],
)
async def test_webhook_refused_from_its_headers_alone(headers: dict[str, str], status: int) -> None:
    """Regression (issue 12.5): bodies used to be parsed (multipart spooled to disk) before the signature
    check. Measured: the gateway answers with the 1 GiB body announced and 0 bytes of it sent."""
    async with run_gateway() as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        sock = await asyncio.to_thread(_raw_request, port, _head(port, headers))
        try:
            assert await asyncio.to_thread(_read_status, sock) == status
        finally:
            sock.close()


async def test_chunked_webhook_body_is_cut_at_64_kib() -> None:
    """Regression (issue 12.5): a body without Content-Length is counted while read and refused past
    64 KiB; measured as the bytes the client had pushed when the 413 arrived (of 64 MiB it would send)."""
    async with run_gateway() as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        head = _head(port, {"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded",
                            "Transfer-Encoding": "chunked"})

        def push() -> tuple[int, int]:
            sock = _raw_request(port, head)
            chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
            sent = 0
            try:
                while sent < 64 << 20:
                    readable, _, _ = select.select([sock], [], [], 0.05)
                    if readable:
                        return sent, _read_status(sock)
                    try:
                        sock.sendall(chunk)
                    except OSError:  # the server closed after answering
                        return sent, _read_status(sock)
                    sent += 0x4000
                return sent, 0
            finally:
                sock.close()

        sent, status = await asyncio.to_thread(push)
        print(f"webhook chunked body: client had pushed {sent} bytes when the {status} arrived")
        assert status == 413
        assert sent < 8 << 20, f"pushed {sent} bytes before the refusal"


@pytest.mark.parametrize("call_sid", [CALL_SID + ":transcript", "CA" + "x" * 100_000, ""])
async def test_signed_voice_webhook_with_a_malformed_callsid_gets_400_and_no_token(call_sid: str) -> None:
    """Regression (issue 12.2): a webhook CallSid reaches the token, Redis keys and logs only in Twilio's format."""
    async with run_gateway() as gw:
        form = {**FORM, "CallSid": call_sid}
        response = await post_signed(gw.base_url, "/twilio/voice", form)
        assert response.status_code in (400, 413)
        assert "stream_token" not in response.text
