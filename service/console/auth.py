"""Console authentication, pure: signed session cookies, signed agent links, cross-site checks.

No I/O and no clock of its own (callers pass ``now``), so every rule is unit-testable. Signatures are
HMAC-SHA256 over a purpose-tagged message, compared in constant time (docs/console.md, "Security").
A token or secret is never logged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode

SESSION_COOKIE = "cb_console"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(key: bytes, purpose: str, message: str) -> str:
    return _b64(hmac.new(key, f"{purpose}\n{message}".encode(), hashlib.sha256).digest())


def token_matches(expected: str, offered: str) -> bool:
    """Constant-time comparison of an offered operator token; an empty expected token matches nothing."""
    if not expected:
        return False
    return hmac.compare_digest(expected.encode(), offered.encode())


def session_key(console_token: str) -> bytes:
    """Cookie-signing key derived from the operator token (rotating the token logs everyone out)."""
    return hashlib.sha256(b"callbridge-console-session\n" + console_token.encode()).digest()


def agent_link_key(console_token: str, agent_link_secret: str) -> bytes:
    """Agent-link key: the dedicated secret if set, else derived from the operator token."""
    if agent_link_secret:
        return agent_link_secret.encode()
    return hashlib.sha256(b"callbridge-agent-link\n" + console_token.encode()).digest()


def make_session(key: bytes, now: float, ttl_s: int) -> str:
    """A cookie value ``<expiry>.<mac>``: valid until ``now + ttl_s``; carries no data beyond that."""
    exp = int(now) + ttl_s
    return f"{exp}.{_mac(key, 'session', str(exp))}"


def session_valid(key: bytes, cookie: str | None, now: float) -> bool:
    """True only for an unexpired cookie signed with ``key``; malformed values are simply invalid."""
    if not cookie or len(cookie) > 200:
        return False
    exp_text, _, mac = cookie.partition(".")
    if not exp_text.isdigit() or not mac:
        return False
    if not hmac.compare_digest(_mac(key, "session", exp_text), mac):
        return False
    return int(exp_text) > now


def sign_agent_link(key: bytes, escalation_id: str, now: float, ttl_s: int) -> tuple[int, str]:
    """``(exp, sig)`` for one escalation id; the link expires at ``exp`` (unix seconds)."""
    exp = int(now) + ttl_s
    return exp, _mac(key, "agent", f"{escalation_id}\n{exp}")


def agent_link(base_url: str, key: bytes, escalation_id: str, now: float, ttl_s: int) -> str:
    """The agent's URL for one escalation: ``<base>/console/agent/<id>?exp=..&sig=..``."""
    exp, sig = sign_agent_link(key, escalation_id, now, ttl_s)
    return f"{base_url.rstrip('/')}/console/agent/{escalation_id}?{urlencode({'exp': exp, 'sig': sig})}"


def agent_link_valid(key: bytes, escalation_id: str, exp: str, sig: str, now: float) -> bool:
    """True only for an unexpired signature of exactly this escalation id."""
    if not exp.isdigit() or len(exp) > 12 or not sig or len(sig) > 100:
        return False
    if not hmac.compare_digest(_mac(key, "agent", f"{escalation_id}\n{exp}"), sig):
        return False
    return int(exp) > now


def safe_next(path: str | None) -> str:
    """Where to go after logging in: ``path`` if it is a console page (``/console`` or below, no
    scheme, host, backslash or control character), else ``/console``: the login is no open redirect."""
    if not path or len(path) > 200 or not path.isprintable() or "\\" in path or "//" in path:
        return "/console"
    if path != "/console" and not path.startswith("/console/"):
        return "/console"
    return path


def cross_site(headers: Mapping[str, str], host: str) -> bool:
    """True if the request comes from another site (browser-sent ``Sec-Fetch-Site``/``Origin``).

    Requests without either header (curl, server-to-server with a bearer token) are not cross-site.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    authority = origin.split("://", 1)[-1]
    return authority != host
