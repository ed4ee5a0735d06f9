"""Console authentication: signed cookies and agent links expire and bind to their data; the
routes answer 401 with no data without a valid token or cookie, and refuse cross-site requests."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.console import auth

TOKEN = "operator-token-for-tests"


def test_session_cookie_expires_and_rejects_tampering() -> None:
    key = auth.session_key(TOKEN)
    cookie = auth.make_session(key, now=1000.0, ttl_s=60)
    assert auth.session_valid(key, cookie, now=1059.0)
    assert not auth.session_valid(key, cookie, now=1060.0)
    exp, mac = cookie.split(".")
    assert not auth.session_valid(key, f"{int(exp) + 3600}.{mac}", now=1000.0)
    assert not auth.session_valid(auth.session_key("other"), cookie, now=1000.0)
    for junk in ("", "x", ".", "abc.def", "9" * 500):
        assert not auth.session_valid(key, junk, now=0.0)


def test_agent_link_binds_id_and_expiry() -> None:
    key = auth.agent_link_key(TOKEN, "")
    url = auth.agent_link("https://gw.example/", key, "esc-1", now=1000.0, ttl_s=30)
    parts = urlsplit(url)
    assert parts.path == "/console/agent/esc-1"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert auth.agent_link_valid(key, "esc-1", query["exp"], query["sig"], now=1029.0)
    assert not auth.agent_link_valid(key, "esc-1", query["exp"], query["sig"], now=1030.0)
    assert not auth.agent_link_valid(key, "esc-2", query["exp"], query["sig"], now=1000.0)
    assert not auth.agent_link_valid(key, "esc-1", str(int(query["exp"]) + 1), query["sig"], now=1000.0)
    assert auth.agent_link_key(TOKEN, "dedicated") != key


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, False),
    ({"sec-fetch-site": "same-origin"}, False),
    ({"sec-fetch-site": "cross-site"}, True),
    ({"sec-fetch-site": "same-site"}, True),
    ({"origin": "http://gw:8080"}, False),
    ({"origin": "http://evil.example"}, True),
    ({"origin": "null"}, True),
])
def test_cross_site_detection(headers: dict[str, str], expected: bool) -> None:
    assert auth.cross_site(headers, "gw:8080") is expected


def _client(token: str = TOKEN) -> TestClient:
    settings = Settings(console_token=token, _env_file=None)  # type: ignore[arg-type, call-arg]
    return TestClient(create_app(settings, start_services=False), base_url="http://gw")


def test_console_off_without_token() -> None:
    with _client("") as client:
        assert client.get("/console/login").status_code == 404
        assert client.get("/console/api/calls", headers={"Authorization": "Bearer x"}).status_code == 404


def test_routes_require_token_or_cookie() -> None:
    with _client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "}):
            response = client.get("/console/api/calls", headers=headers)
            assert response.status_code == 401
            assert "calls" not in response.json()
        page = client.get("/console", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/console/login"
        assert client.post("/console/login", data={"token": "wrong"}).status_code == 401
        assert auth.SESSION_COOKIE not in client.cookies
        bad_agent = client.get("/console/agent/esc-1", params={"exp": "99999999999", "sig": "x"})
        assert bad_agent.status_code == 401 and "esc-1" not in bad_agent.text


def test_login_sets_strict_httponly_cookie_and_bearer_works() -> None:
    with _client() as client:
        response = client.post("/console/login", data={"token": TOKEN}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/console"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
        assert TOKEN not in cookie
        page = client.get("/console", follow_redirects=False)
        assert page.status_code == 200 and "id=calls" in page.text
        # No Redis in this app: an authenticated API call gets past auth and says so (503), not 401.
        assert client.get("/console/api/calls").status_code == 503
    with _client() as client:
        assert client.get("/console/api/calls", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 503


def test_apis_refuse_cross_site_even_when_authenticated() -> None:
    with _client() as client:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
        response = client.get("/console/api/calls", headers=headers)
        assert response.status_code == 403
        response = client.post("/console/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"},
                               follow_redirects=False)
        assert response.status_code == 403 and "set-cookie" not in response.headers


def test_valid_agent_link_passes_the_signature_check() -> None:
    """Without Redis the escalation cannot be found (404), but the link itself is accepted; the
    same link for another id is refused (401). The full view is tested against Redis."""
    key = auth.agent_link_key(TOKEN, "")
    url = auth.agent_link("http://gw", key, "esc-42", now=time.time(), ttl_s=60)
    with _client() as client:
        assert client.get(url).status_code == 404
        assert client.get(url.replace("esc-42", "esc-43")).status_code == 401


def test_event_stream_drops_a_client_that_stops_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's send blocks forever (full socket): the response gives up after the send
    timeout, having pulled exactly one chunk beyond what was sent, and closes its generator."""
    import asyncio

    from service.console import routes

    monkeypatch.setattr(routes, "SSE_SEND_TIMEOUT_S", 0.2)
    produced: list[int] = []
    state = {"closed": False}

    async def endless():  # type: ignore[no-untyped-def]
        try:
            n = 0
            while True:
                n += 1
                produced.append(n)
                yield f"data: {n}\n\n"
        finally:
            state["closed"] = True

    async def scenario() -> None:
        sent: list[dict[str, object]] = []
        stalled = asyncio.Event()

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) >= 3:
                stalled.set()
                await asyncio.Event().wait()  # the client never reads again

        response = routes.EventStreamResponse(endless())
        await asyncio.wait_for(response({}, None, send), 5.0)
        assert stalled.is_set()

    asyncio.run(scenario())
    assert produced == [1, 2]  # one chunk sent in full, the second blocked: nothing piles up
    assert state["closed"]


API_ROUTES = [
    ("GET", "/console/api/calls"), ("GET", "/console/api/calls/CA-1"), ("GET", "/console/api/escalations"),
    ("GET", "/console/api/fleet"), ("GET", "/console/api/stream/calls"), ("GET", "/console/api/stream/calls/CA-1"),
    ("GET", "/console/api/stream/escalations"), ("GET", "/console/api/stream/fleet"),
    ("POST", "/console/api/escalations/dead/1-0/redeliver"), ("POST", "/console/api/phone/calls"),
]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_every_api_refuses_missing_wrong_and_cross_site(method: str, path: str) -> None:
    """401 without a valid token (and no data), 403 for a cross-site request even with the token;
    with the token and no Redis the request gets past both checks (503 or, for the softphone, 503
    because no stream-token key is configured here)."""
    with _client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401 and response.json() == {"error": "unauthorized"}
        good = {"Authorization": f"Bearer {TOKEN}"}
        for cross in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            assert client.request(method, path, headers={**good, **cross}).status_code == 403
        assert client.request(method, path, headers={**good, "Sec-Fetch-Site": "same-origin"}).status_code == 503


@pytest.mark.parametrize("path", ["/console", "/console/escalations", "/console/fleet", "/console/phone",
                                  "/console/calls/CA-1"])
def test_pages_redirect_and_static_files_refuse_without_login(path: str) -> None:
    with _client() as client:
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/console/login"
        assert client.get("/console/static/console.js").status_code == 401
        client.post("/console/login", data={"token": TOKEN})
        assert client.get(path).status_code == 200
        script = client.get("/console/static/phone-worklet.js")
        assert script.status_code == 200 and "registerProcessor" in script.text
        assert client.get("/console/static/..%2Fauth.py").status_code == 404


@pytest.mark.parametrize(("wanted", "target"), [
    ("/console/phone", "/console/phone"), ("/console", "/console"), ("/console/calls/CA1", "/console/calls/CA1"),
    (None, "/console"), ("", "/console"), ("https://evil.example/console", "/console"),
    ("//evil.example/console", "/console"), ("/console//evil", "/console"), ("/consolex", "/console"),
    ("/console/\\evil", "/console"), ("/console/\nx", "/console"), ("/metrics", "/console"),
])
def test_login_goes_only_to_console_pages(wanted: str | None, target: str) -> None:
    assert auth.safe_next(wanted) == target


def test_login_form_carries_next_and_the_login_follows_it() -> None:
    with _client() as client:
        form = client.get("/console/login", params={"next": "/console/phone"})
        assert "value='/console/phone'" in form.text
        evil = client.get("/console/login", params={"next": "https://evil.example/'><script>"})
        assert "evil" not in evil.text and "value='/console'" in evil.text
        response = client.post("/console/login", data={"token": TOKEN, "next": "/console/phone"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/console/phone"
        response = client.post("/console/login", data={"token": TOKEN, "next": "//evil.example"}, follow_redirects=False)
        assert response.headers["location"] == "/console"
