"""REST transfer for the carriers that have one (docs/transfer.md, "REST transfer per carrier"): move the
live call to the hand-off at once, instead of ending the stream and letting the after-stream markup run.

Pure builders (one per carrier; the request shapes are those of each carrier's own SDK or API
reference, see docs/providers/<carrier>.md) and one small httpx adapter that sends a ``RestRequest``:
one attempt plus one retry on a network error or a 5xx, bounded by ``timeout_s`` each; a 4xx is final
(the call is gone, or the credentials are wrong). The carriers' Python SDKs (``plivo``) are synchronous
and would block the event loop, so they are not used for the HTTP call itself.

- SignalWire (LaML, Twilio-shaped): ``POST {space}/api/laml/2010-04-01/Accounts/{project}/Calls/{sid}.json``,
  form ``Url`` = our after-stream webhook, HTTP Basic ``project:token``.
- Telnyx (Call Control): ``POST {api}/v2/calls/{call_control_id}/actions/transfer``, JSON ``{"to": ...}``,
  ``Authorization: Bearer <API key>``; numbers and SIP URIs only (a queue needs the TeXML after-stream).
- Plivo: ``POST {api}/v1/Account/{auth_id}/Call/{uuid}/``, form ``legs=aleg&aleg_url=<after-stream>``,
  HTTP Basic ``auth_id:auth_token``.
- Vonage: ``PUT {api}/v1/calls/{uuid}``, JSON ``{"action":"transfer","destination":{"type":"ncco","ncco":[...]}}``,
  ``Authorization: Bearer <application JWT>`` (RS256 with the application's private key, ``vonage-jwt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from service.providers.plivo.auth import transfer_request as plivo_transfer_body
from service.providers.transfer import TransferTarget
from service.providers.vonage.auth import transfer_request as vonage_transfer_body
from service.redaction import cap_text

__all__ = ["RestRequest", "plivo_request", "send_rest", "signalwire_request", "telnyx_request", "vonage_request"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One carrier REST call. ``basic`` is HTTP Basic (user, password); secrets never reach a log."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None
    json: Any = None
    basic: tuple[str, str] | None = None


def _base(url: str) -> str:
    return url.rstrip("/")


def signalwire_request(space_url: str, project_id: str, api_token: str, call_sid: str, after_stream_url: str) -> RestRequest:
    """SignalWire's "update a call": the call fetches ``after_stream_url`` (our signed after-stream webhook)."""
    return RestRequest("POST", f"{_base(space_url)}/api/laml/2010-04-01/Accounts/{project_id}/Calls/{call_sid}.json",
                       form={"Url": after_stream_url, "Method": "POST"}, basic=(project_id, api_token))


def telnyx_request(api_base: str, api_key: str, call_control_id: str, target: TransferTarget) -> RestRequest | None:
    """Telnyx Call Control ``transfer`` to a number or SIP URI; None for a queue (Call Control has none)."""
    if target.kind == "queue":
        return None
    to = target.value if target.kind == "sip" or target.value.startswith("+") else "+" + target.value
    return RestRequest("POST", f"{_base(api_base)}/v2/calls/{call_control_id}/actions/transfer",
                       headers={"Authorization": f"Bearer {api_key}"}, json={"to": to})


def plivo_request(api_base: str, auth_id: str, auth_token: str, call_uuid: str, after_stream_url: str) -> RestRequest:
    """Plivo's "transfer a call": the caller's leg fetches ``after_stream_url`` (our after-stream XML)."""
    return RestRequest("POST", f"{_base(api_base)}/v1/Account/{auth_id}/Call/{call_uuid}/",
                       form=plivo_transfer_body(after_stream_url), basic=(auth_id, auth_token))


def vonage_request(api_base: str, application_jwt: str, call_uuid: str, ncco: list[dict[str, Any]]) -> RestRequest:
    """Vonage's "modify a call" with an inline NCCO (e.g. ``transfer_ncco``)."""
    return RestRequest("PUT", f"{_base(api_base)}/v1/calls/{call_uuid}",
                       headers={"Authorization": f"Bearer {application_jwt}"}, json=vonage_transfer_body(ncco))


async def send_rest(request: RestRequest, *, provider: str, call_id: str, timeout_s: float = 5.0,
                    client: httpx.AsyncClient | None = None) -> bool:
    """Send ``request``; True once the carrier accepted it (2xx). Never raises for HTTP trouble."""
    owned = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    try:
        for attempt in (1, 2):
            try:
                response = await http.request(request.method, request.url, headers=request.headers,
                                              data=request.form, json=request.json,
                                              auth=request.basic if request.basic else None)
            except httpx.HTTPError as error:
                log.warning("provider.rest_transfer_failed", provider=provider, call_id=call_id, attempt=attempt,
                            error=type(error).__name__)
                continue
            if response.is_success:
                log.info("provider.rest_transfer", provider=provider, call_id=call_id, status=response.status_code)
                return True
            log.warning("provider.rest_transfer_rejected", provider=provider, call_id=call_id,
                        status=response.status_code, body=cap_text(response.text, 200), attempt=attempt)
            if response.status_code < 500:
                return False
        return False
    finally:
        if owned:
            await http.aclose()
