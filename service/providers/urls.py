"""The gateway's public URL, as every provider's markup needs it (one definition for all carriers)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def public_parts(public_url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path prefix without trailing slash) of ``CALLBRIDGE_PUBLIC_URL``;
    ``ValueError`` unless it is an absolute http(s) URL without query or fragment."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("public_url must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError("public_url must not carry a query or fragment")
    return parts.scheme, parts.netloc, parts.path.rstrip("/")


def media_stream_url(public_url: str, media_path: str) -> str:
    """The media WebSocket URL on the public host: http->ws, https->wss, keeping port and path prefix."""
    scheme, netloc, prefix = public_parts(public_url)
    return urlunsplit(("wss" if scheme == "https" else "ws", netloc, prefix + media_path, "", ""))
