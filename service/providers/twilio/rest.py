"""Twilio REST adapter: redirect a live call to new TwiML (docs/providers/twilio.md#rest-transfer).

Used for mid-stream transfers when ``CALLBRIDGE_TRANSFER_VIA_REST`` is on: the call's TwiML is
replaced (``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with ``Twiml``), Twilio
ends the media stream and runs the transfer at once. One bounded attempt plus one retry on
timeouts/5xx; 404 (code 20404) means the call is gone. The TwiML itself comes from the ``twilio``
package (``after_stream_twiml``); the HTTP call uses httpx so it never blocks the event loop
(the ``twilio`` client's default transport is synchronous).
"""

from __future__ import annotations

import httpx
import structlog

log = structlog.get_logger(__name__)


async def update_call_twiml(
    *,
    api_base: str,
    account_sid: str,
    auth_token: str,
    call_sid: str,
    twiml: str,
    timeout_s: float = 5.0,
    client: httpx.AsyncClient | None = None,
) -> bool:
    """Replace a live call's TwiML; True when Twilio accepted it (2xx)."""
    url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
    owned = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    try:
        for attempt in (1, 2):
            try:
                response = await http.post(url, data={"Twiml": twiml}, auth=(account_sid, auth_token))
            except httpx.HTTPError as error:
                log.warning("twilio.rest_update_failed", call_id=call_sid, attempt=attempt, error=type(error).__name__)
                continue
            if response.is_success:
                log.info("twilio.rest_transfer", call_id=call_sid, status=response.status_code)
                return True
            log.warning("twilio.rest_update_rejected", call_id=call_sid, status=response.status_code,
                        body=response.text[:200], attempt=attempt)
            if response.status_code < 500:
                return False
        return False
    finally:
        if owned:
            await http.aclose()


async def create_call(
    *,
    api_base: str,
    account_sid: str,
    auth_token: str,
    form: dict[str, str],
    timeout_s: float = 5.0,
    client: httpx.AsyncClient | None = None,
) -> str | None:
    """Place an outbound call (``POST .../Accounts/{AccountSid}/Calls.json`` with ``To``, ``From``, ``Url``,
    ...); the new call's SID, or None when Twilio refused or could not be reached (one retry on
    network errors and 5xx, like ``update_call_twiml``). Used for the agent legs of a conference transfer."""
    url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls.json"
    owned = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    try:
        for attempt in (1, 2):
            try:
                response = await http.post(url, data=form, auth=(account_sid, auth_token))
            except httpx.HTTPError as error:
                log.warning("twilio.rest_create_failed", attempt=attempt, error=type(error).__name__)
                continue
            if response.is_success:
                try:
                    sid = response.json().get("sid")
                except ValueError:
                    sid = None
                return str(sid) if sid else ""
            log.warning("twilio.rest_create_rejected", status=response.status_code, body=response.text[:200],
                        attempt=attempt)
            if response.status_code < 500:
                return None
        return None
    finally:
        if owned:
            await http.aclose()
