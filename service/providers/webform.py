"""Bounded reading of provider webhook forms, refused before anything is parsed.

An unauthenticated peer controls the body of every webhook POST, and the signature can only be
checked once the form is parsed. So, in this order and without reading more than ``limit`` bytes
(docs/security.md, "Webhooks"):

1. no signature header -> 403 (nothing read);
2. a content type other than ``application/x-www-form-urlencoded`` (multipart included) -> 415
   (nothing read, nothing written to disk);
3. ``Content-Length`` above ``limit`` -> 413 (nothing read);
4. the body is read chunk by chunk and counted: past ``limit`` -> 413 (at most ``limit`` plus one
   chunk is held);
5. the form is parsed from memory (``urllib.parse.parse_qsl``, at most ``MAX_FIELDS`` fields).

Memory per request is bounded by ``limit`` (64 KiB; Twilio's forms are ~1-2 KiB).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect, Request

__all__ = [
    "MAX_FIELDS",
    "MAX_WEBHOOK_BODY_BYTES",
    "FormRefused",
    "read_json_webhook_body",
    "read_webhook_body",
    "read_webhook_form",
]

MAX_WEBHOOK_BODY_BYTES = 64 * 1024
MAX_FIELDS = 200
_FORM_TYPE = "application/x-www-form-urlencoded"


class FormRefused(Exception):
    """A webhook refused before parsing; ``status`` is the HTTP answer, ``reason`` a metric label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


async def read_webhook_form(
    request: Request, signature_header: str, limit: int = MAX_WEBHOOK_BODY_BYTES
) -> FormData:
    """The request's urlencoded form, or ``FormRefused`` (see the module doc for the order)."""
    return (await read_webhook_body(request, signature_header, limit))[1]


async def read_webhook_body(
    request: Request, signature_header: str, limit: int = MAX_WEBHOOK_BODY_BYTES
) -> tuple[bytes, FormData]:
    """The raw body (for schemes that sign the bytes, e.g. Telnyx) and its form, or ``FormRefused``."""
    body = await _read_body(request, signature_header, _FORM_TYPE, limit)
    try:
        pairs = parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, strict_parsing=False,
            encoding="utf-8", errors="replace", max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        raise FormRefused(413, "too_many_fields", f"more than {MAX_FIELDS} fields") from None
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return bytes(body), FormData(fields)


async def read_json_webhook_body(request: Request, signature_header: str, limit: int = MAX_WEBHOOK_BODY_BYTES) -> bytes:
    """The raw body of a JSON webhook (Vonage), with the same refusals in the same order as forms:
    403 without the signature header, 415 unless ``application/json``, 413 past ``limit``. The caller
    verifies the signature over these bytes before parsing them."""
    return bytes(await _read_body(request, signature_header, "application/json", limit))


async def _read_body(request: Request, signature_header: str, content_type: str, limit: int) -> bytearray:
    if request.headers.get(signature_header) is None:
        raise FormRefused(403, "missing_signature", "missing signature")
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != content_type:
        raise FormRefused(415, "unsupported_media_type", f"body must be {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 12 or int(declared) > limit):
        raise FormRefused(413, "too_large", f"body larger than {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise FormRefused(413, "too_large", f"body larger than {limit} bytes")
    except ClientDisconnect:
        raise FormRefused(400, "client_disconnect", "client went away mid-body") from None
    return body
