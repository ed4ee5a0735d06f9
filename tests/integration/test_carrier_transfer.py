"""Transfer per carrier after the hand-off line, over a real gateway socket: for an escalated call each
carrier's after-stream webhook (signed as the carrier signs it) answers the hand-off in its own markup,
to the target its ``CALLBRIDGE_<CARRIER>_TRANSFER_TO`` names (a queue, a number or a SIP URI), falling
back to ``CALLBRIDGE_TRANSFER_NUMBER`` / ``_QUEUE``; a call that did not escalate is hung up.
The full escalation flow per carrier is covered by test_vonage_calls.py / test_exotel_calls.py and
test_call_bridge.py; here the call is marked escalated on the gateway directly so every shape is cheap."""

from __future__ import annotations

import base64
import json
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nacl.signing import SigningKey

from service.config import ConfigError, load_settings
from service.providers.base import StreamStarted
from service.providers.plivo.routes import _rest_transfer as plivo_rest
from service.providers.signalwire.routes import _rest_transfer as signalwire_rest
from service.providers.telnyx.routes import _rest_transfer as telnyx_rest
from service.providers.vonage.routes import _rest_transfer as vonage_rest
from tests.integration.conftest import RunningGateway, run_gateway
from tests.integration.test_vonage_calls import SECRET as VONAGE_SECRET
from tests.integration.test_vonage_calls import signed as vonage_signed
from tests.standins.carrier_rest import RestRecord, carrier_rest
from tests.standins.signalwire_caller import voice_webhook as signalwire_webhook
from tests.standins.telnyx_caller import new_call_control_id
from tests.standins.telnyx_caller import voice_webhook as telnyx_webhook
from tests.unit.test_provider_plivo import _v3

SIGNALWIRE_KEY = "PSK_signalwire_transfer_key_0123456789"
PLIVO_TOKEN = "MzRiNTQxMjQyYzAxOTdkNjhkMDk3Yz"
SIGNER = SigningKey.generate()
PUBLIC_KEY = base64.b64encode(bytes(SIGNER.verify_key)).decode()


def plivo_signed(public_url: str, path: str, form: dict[str, str]) -> dict[str, str]:
    """Plivo's V3 signature headers for a POST of ``form`` to ``public_url + path``."""
    nonce = "12345678901234567890"
    return {"X-Plivo-Signature-V3": _v3(PLIVO_TOKEN, "POST", public_url + path, form, nonce),
            "X-Plivo-Signature-V3-Nonce": nonce}


def _escalate(gw: RunningGateway, call_id: str) -> None:
    gw.gateway.escalated_recently[call_id] = time.time()


async def _signalwire(http: httpx.AsyncClient, gw: RunningGateway, call_id: str) -> ET.Element:
    form, headers = signalwire_webhook(SIGNALWIRE_KEY, gw.settings.public_url, call_id, path="/signalwire/after-stream")
    response = await http.post(gw.base_url + "/signalwire/after-stream", data=form, headers=headers)
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


async def _telnyx(http: httpx.AsyncClient, gw: RunningGateway, call_id: str) -> ET.Element:
    body, headers = telnyx_webhook(SIGNER, call_id, time.time())
    response = await http.post(gw.base_url + "/telnyx/after-stream", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


async def _plivo(http: httpx.AsyncClient, gw: RunningGateway, call_id: str) -> ET.Element:
    form = {"CallUUID": call_id, "From": "4915112345678", "To": "4930901820"}
    response = await http.post(gw.base_url + "/plivo/after-stream", data=form,
                               headers=plivo_signed(gw.settings.public_url, "/plivo/after-stream", form))
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


async def _vonage(http: httpx.AsyncClient, gw: RunningGateway, call_id: str) -> Any:
    raw, headers = vonage_signed({"uuid": str(uuid.uuid4()), "status": "disconnected",
                                  "headers": {"call_uuid": call_id, "stream_token": "spent"}})
    response = await http.post(gw.base_url + "/vonage/event", content=raw, headers=headers)
    return response.json() if response.status_code == 200 else response.status_code


def _dial(root: ET.Element) -> tuple[str, str]:
    dial = root.find("Dial")
    assert dial is not None and len(dial) == 1
    return dial[0].tag, (dial[0].text or "").strip()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "queue:support"),
        ({"transfer_queue": "tier2"}, "queue:tier2"),
        ({"transfer_number": "+4930901820"}, "number:+4930901820"),
        ({"transfer_number": "+4930901820", "signalwire_transfer_to": "sip:sw@pbx.example.test",
          "telnyx_transfer_to": "queue:telnyx-agents", "plivo_transfer_to": "+15550001111",
          "vonage_transfer_to": "queue:vonage-agents"}, "per-carrier"),
    ],
)
async def test_each_carrier_answers_the_hand_off_in_its_markup(overrides: dict[str, str], expected: str) -> None:
    async with run_gateway(public_url="https://callbridge.example.test", signalwire_signing_key=SIGNALWIRE_KEY,
                           telnyx_public_key=PUBLIC_KEY, plivo_auth_token=PLIVO_TOKEN,
                           vonage_signature_secret=VONAGE_SECRET, **overrides) as gw, httpx.AsyncClient() as http:
        sw_call, tx_call, pv_call, vg_call = str(uuid.uuid4()), new_call_control_id(), str(uuid.uuid4()), str(uuid.uuid4())
        for call_id in (sw_call, tx_call, pv_call, vg_call):
            _escalate(gw, call_id)
        sw, tx, pv, vg = (await _signalwire(http, gw, sw_call), await _telnyx(http, gw, tx_call),
                          await _plivo(http, gw, pv_call), await _vonage(http, gw, vg_call))
        if expected.startswith("queue:"):
            name = expected[6:]
            assert (sw.findtext("Enqueue"), tx.findtext("Enqueue")) == (name, name)
            assert pv.findtext("Conference") == name
            assert vg == [{"action": "conversation", "name": name}]
        elif expected.startswith("number:"):
            number = expected[7:]
            assert _dial(sw) == ("Number", number) and _dial(tx) == ("Number", number)
            assert _dial(pv) == ("Number", number)
            assert vg == [{"action": "connect", "timeout": 30, "endpoint": [{"type": "phone", "number": number[1:]}]}]
        else:
            assert _dial(sw) == ("Sip", "sip:sw@pbx.example.test")
            assert tx.findtext("Enqueue") == "telnyx-agents"
            assert _dial(pv) == ("Number", "+15550001111")
            assert vg == [{"action": "conversation", "name": "vonage-agents"}]


async def test_calls_that_did_not_escalate_are_hung_up_everywhere() -> None:
    async with run_gateway(public_url="https://callbridge.example.test", signalwire_signing_key=SIGNALWIRE_KEY,
                           telnyx_public_key=PUBLIC_KEY, plivo_auth_token=PLIVO_TOKEN,
                           vonage_signature_secret=VONAGE_SECRET) as gw, httpx.AsyncClient() as http:
        sw = await _signalwire(http, gw, str(uuid.uuid4()))
        tx = await _telnyx(http, gw, new_call_control_id())
        pv = await _plivo(http, gw, str(uuid.uuid4()))
        assert [e.tag for e in sw] == [e.tag for e in tx] == [e.tag for e in pv] == ["Hangup"]
        assert await _vonage(http, gw, str(uuid.uuid4())) == 204


@pytest.mark.parametrize("value", ["queue:", "queue:has space", "sip:a b", "12", "agents", "tel:+1555"])
def test_a_bad_transfer_target_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_VONAGE_TRANSFER_TO"):
        load_settings(vonage_transfer_to=value)


# --- REST transfer per carrier, against the carriers' REST stand-in -----------------------------------


def _started(call_id: str) -> StreamStarted:
    return StreamStarted(stream_id=call_id, call_id=call_id, account_id="")


def _basic(record: RestRecord) -> tuple[str, str]:
    user, _, password = base64.b64decode(record.headers["authorization"].removeprefix("Basic ")).decode().partition(":")
    return user, password


async def test_rest_transfer_requests_are_exactly_each_carriers_shape(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "vonage.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    async with carrier_rest() as api:
        settings = load_settings(
            public_url="https://callbridge.example.test", transfer_via_rest=True, transfer_number="+4930901820",
            signalwire_space_url=api.url, signalwire_project_id="proj-1", signalwire_api_token="sw-token",
            telnyx_api_key="KEYtelnyx", telnyx_api_base=api.url, telnyx_transfer_to="sip:agents@pbx.example.test",
            plivo_auth_id="MAXXXXXXXXXXXXXXXXXX", plivo_auth_token=PLIVO_TOKEN, plivo_api_base=api.url,
            vonage_application_id="aaaaaaaa-bbbb-cccc-dddd-0123456789ab", vonage_private_key_file=str(pem),
            vonage_api_base=api.url, vonage_transfer_to="queue:vonage-agents",
        )
        gateway = SimpleNamespace(settings=settings)
        sw_call, tx_call, pv_call, vg_call = str(uuid.uuid4()), new_call_control_id(), str(uuid.uuid4()), str(uuid.uuid4())
        for rest, call_id in ((signalwire_rest, sw_call), (telnyx_rest, tx_call), (plivo_rest, pv_call),
                              (vonage_rest, vg_call)):
            transfer = rest(gateway, _started(call_id))
            assert transfer is not None and await transfer()
        sw, tx, pv, vg = api.requests
        assert (sw.method, sw.path) == ("POST", f"/api/laml/2010-04-01/Accounts/proj-1/Calls/{sw_call}.json")
        assert _basic(sw) == ("proj-1", "sw-token")
        assert parse_qs(sw.body.decode()) == {"Url": ["https://callbridge.example.test/signalwire/after-stream"],
                                              "Method": ["POST"]}
        assert (tx.method, tx.path) == ("POST", f"/v2/calls/{tx_call}/actions/transfer")
        assert tx.headers["authorization"] == "Bearer KEYtelnyx"
        assert json.loads(tx.body) == {"to": "sip:agents@pbx.example.test"}
        assert (pv.method, pv.path) == ("POST", f"/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/{pv_call}/")
        assert _basic(pv) == ("MAXXXXXXXXXXXXXXXXXX", PLIVO_TOKEN)
        assert parse_qs(pv.body.decode()) == {"legs": ["aleg"], "aleg_method": ["POST"],
                                              "aleg_url": ["https://callbridge.example.test/plivo/after-stream"]}
        assert (vg.method, vg.path) == ("PUT", f"/v1/calls/{vg_call}")
        assert json.loads(vg.body) == {"action": "transfer", "destination": {
            "type": "ncco", "ncco": [{"action": "conversation", "name": "vonage-agents"}]}}
        claims = jwt.decode(vg.headers["authorization"].removeprefix("Bearer "), key.public_key(), algorithms=["RS256"])
        assert claims["application_id"] == "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


async def test_rest_transfer_retries_a_5xx_once_gives_up_on_a_4xx_and_is_off_without_credentials() -> None:
    async with carrier_rest() as api:
        settings = load_settings(public_url="https://callbridge.example.test", transfer_via_rest=True,
                                 plivo_auth_id="MAXXXXXXXXXXXXXXXXXX", plivo_auth_token=PLIVO_TOKEN, plivo_api_base=api.url,
                                 telnyx_api_key="KEYtelnyx", telnyx_api_base=api.url)
        gateway = SimpleNamespace(settings=settings)
        api.fail_status = [503]
        transfer = plivo_rest(gateway, _started(str(uuid.uuid4())))
        assert transfer is not None and await transfer() and len(api.requests) == 2
        api.fail_status = [404]
        transfer = plivo_rest(gateway, _started(str(uuid.uuid4())))
        assert transfer is not None and not await transfer() and len(api.requests) == 3
        assert telnyx_rest(gateway, _started(new_call_control_id())) is None  # a queue: left to the TeXML after-stream
        off = SimpleNamespace(settings=load_settings(transfer_via_rest=False, plivo_auth_id="MAX", plivo_auth_token="t"))
        assert plivo_rest(off, _started(str(uuid.uuid4()))) is None
        assert signalwire_rest(gateway, _started(str(uuid.uuid4()))) is None and vonage_rest(gateway, _started(str(uuid.uuid4()))) is None
